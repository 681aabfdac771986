package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/png"
	"net/netip"
	"strings"
	"testing"
	"time"
)

var jst = time.FixedZone("JST", 9*3600)

// testEngine is an engine on the default policy whose clock the test sets,
// recording denials.
type testEngine struct {
	*Engine
	at     time.Time
	denied []Subject
}

func newTestEngine(t *testing.T, edit func(*Config)) *testEngine {
	t.Helper()
	cfg := DefaultConfig()
	if edit != nil {
		edit(&cfg)
	}
	te := &testEngine{at: time.Date(2026, 11, 25, 10, 0, 0, 0, jst)} // a Wednesday morning
	e, err := New(cfg, func() time.Time { return te.at }, func(_ context.Context, s Subject, _ *Denial) {
		te.denied = append(te.denied, s)
	})
	if err != nil {
		t.Fatal(err)
	}
	te.Engine = e
	return te
}

func message(sender, room string, class DeviceClass) EventInput {
	return EventInput{Sender: sender, RoomID: room, Type: "m.room.message", Content: json.RawMessage(`{"body":"x"}`),
		Actor: Actor{Origin: OriginClient, DeviceID: "DEV", Class: class}}
}

func TestDeviceClassByNetwork(t *testing.T) {
	e := newTestEngine(t, func(c *Config) {
		c.TrustedNetworks = []string{"10.20.0.0/16", "127.0.0.1/32"}
		c.TrustedProxies = []string{"192.0.2.10/32"}
	})
	for _, tc := range []struct {
		remote, xff string
		want        DeviceClass
	}{
		{"10.20.3.4:5555", "", ClassOffice},
		{"10.21.0.1:5555", "", ClassMobile},
		{"127.0.0.1:1", "", ClassOffice},
		{"127.0.0.2:1", "", ClassMobile},
		{"[::ffff:10.20.0.9]:80", "", ClassOffice},                 // IPv4-mapped
		{"203.0.113.5:443", "10.20.0.1", ClassMobile},              // not a proxy: its header is ignored
		{"192.0.2.10:443", "10.20.0.1", ClassOffice},               // through the proxy from LGWAN
		{"192.0.2.10:443", "10.20.0.1, 198.51.100.7", ClassMobile}, // the last untrusted hop counts
		{"192.0.2.10:443", "garbage", ClassMobile},                 // the proxy's own address, not office
		{"not an address", "", ClassMobile},
	} {
		got := e.Class(e.ClientAddr(tc.remote, tc.xff))
		if got != tc.want {
			t.Errorf("%s (XFF %q): %s, want %s", tc.remote, tc.xff, got, tc.want)
		}
	}
}

func TestWorkingHours(t *testing.T) {
	ctx := context.Background()
	e := newTestEngine(t, nil)
	const alice, room = "@alice:city", "!r:city"

	if d := e.CheckEvent(ctx, message(alice, room, ClassMobile)); d != nil {
		t.Fatalf("Wednesday 10:00 denied: %v", d)
	}
	e.at = time.Date(2026, 11, 25, 19, 0, 0, 0, jst)
	d := e.CheckEvent(ctx, message(alice, room, ClassMobile))
	if d == nil || d.RuleID != RuleWorkingHours {
		t.Fatalf("19:00 from a phone: %v, want %s", d, RuleWorkingHours)
	}
	if want := time.Date(2026, 11, 26, 8, 30, 0, 0, jst); !d.NextOpen.Equal(want) {
		t.Fatalf("next open %v, want %v", d.NextOpen, want)
	}
	if !strings.Contains(d.JA, "2026年11月26日 08:30") || !strings.Contains(d.EN, "Thu 26 Nov 2026 08:30") {
		t.Fatalf("messages lack the next opening: %q / %q", d.JA, d.EN)
	}
	if len(e.denied) != 1 || e.denied[0].UserID != alice || e.denied[0].DeviceID != "DEV" || e.denied[0].Target != room {
		t.Fatalf("denials reported: %+v", e.denied)
	}
	// Office devices are not subject by default; with applies_to: all they are.
	if d := e.CheckEvent(ctx, message(alice, room, ClassOffice)); d != nil {
		t.Fatalf("office device denied: %v", d)
	}
	all := DefaultConfig()
	all.WorkingHours.AppliesTo = "all"
	if err := e.SetConfig(all); err != nil {
		t.Fatal(err)
	}
	if d := e.CheckEvent(ctx, message(alice, room, ClassOffice)); d == nil {
		t.Fatal("applies_to all: office device allowed at 19:00")
	}
	if err := e.SetConfig(DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	// Leaving a room stays possible; admin notices are not subject.
	leave := EventInput{Sender: alice, RoomID: room, Type: "m.room.member", StateKey: ptr(alice),
		Content: json.RawMessage(`{"membership":"leave"}`), Actor: Actor{Origin: OriginClient, Class: ClassMobile}}
	if d := e.CheckEvent(ctx, leave); d != nil {
		t.Fatalf("leave denied: %v", d)
	}
	invite := leave
	invite.StateKey, invite.Content = ptr("@bob:city"), json.RawMessage(`{"membership":"invite"}`)
	if d := e.CheckEvent(ctx, invite); d == nil {
		t.Fatal("invite allowed out of hours")
	}
	notice := message("@notices:city", room, "")
	notice.Actor.Origin = OriginAdmin
	if d := e.CheckEvent(ctx, notice); d != nil {
		t.Fatalf("admin notice denied: %v", d)
	}
	// A holiday (勤労感謝の日) is closed at 10:00.
	e.at = time.Date(2026, 11, 23, 10, 0, 0, 0, jst)
	if d := e.CheckEvent(ctx, message(alice, room, ClassMobile)); d == nil {
		t.Fatal("holiday allowed")
	}
	// Push is held back exactly when sending is refused.
	if !e.HoldPush(alice, ClassMobile) || e.HoldPush(alice, ClassOffice) {
		t.Fatal("HoldPush disagrees with the rule")
	}
}

func TestEmergencyAndExemption(t *testing.T) {
	ctx := context.Background()
	e := newTestEngine(t, nil)
	e.at = time.Date(2026, 11, 28, 3, 0, 0, 0, jst) // Saturday night
	const alice, bob, flood, other = "@alice:city", "@bob:city", "!flood:city", "!other:city"

	e.SetEmergencies([]Emergency{{ID: "e1", Rooms: []string{flood}, Reason: "大雨", Ends: e.at.Add(time.Hour)}})
	if d := e.CheckEvent(ctx, message(alice, flood, ClassMobile)); d != nil {
		t.Fatalf("emergency room denied: %v", d)
	}
	if d := e.CheckEvent(ctx, message(alice, other, ClassMobile)); d == nil {
		t.Fatal("a room outside the emergency allowed")
	}
	e.at = e.at.Add(time.Hour) // the emergency ends
	if d := e.CheckEvent(ctx, message(alice, flood, ClassMobile)); d == nil {
		t.Fatal("allowed after the emergency ended")
	}
	e.SetEmergencies([]Emergency{{ID: "e2", Reason: "地震", Ends: e.at.Add(time.Hour)}}) // server-wide
	if d := e.CheckEvent(ctx, message(alice, other, ClassMobile)); d != nil {
		t.Fatalf("server-wide emergency: %v", d)
	}
	if _, _, d := e.CheckUpload(ctx, alice, Actor{Origin: OriginClient, Class: ClassMobile}, engineTestPNG(t)); d != nil {
		t.Fatalf("upload in a server-wide emergency: %v", d)
	}
	e.SetEmergencies(nil)
	if _, _, d := e.CheckUpload(ctx, alice, Actor{Origin: OriginClient, Class: ClassMobile}, engineTestPNG(t)); d == nil || d.RuleID != RuleWorkingHours {
		t.Fatalf("upload out of hours: %v", d)
	}
	e.SetExemptions([]string{bob})
	if d := e.CheckEvent(ctx, message(bob, other, ClassMobile)); d != nil {
		t.Fatalf("exempt user denied: %v", d)
	}
	if d := e.CheckEvent(ctx, message(alice, other, ClassMobile)); d == nil {
		t.Fatal("non-exempt user allowed")
	}
}

func TestFederationAllowList(t *testing.T) {
	ctx := context.Background()
	e := newTestEngine(t, func(c *Config) { c.Federation.AllowedServers = []string{"chat.city-b.lg.jp"} })
	if d := e.AllowServer(ctx, "chat.city-b.lg.jp"); d != nil {
		t.Fatalf("listed server refused: %v", d)
	}
	if d := e.AllowServer(ctx, "CHAT.CITY-B.LG.JP"); d != nil {
		t.Fatalf("server names are case-insensitive: %v", d)
	}
	d := e.AllowServer(ctx, "evil.example")
	if d == nil || d.RuleID != RuleFederation || !strings.Contains(d.JA, "evil.example") {
		t.Fatalf("unlisted server: %v", d)
	}
	if len(e.denied) != 1 || e.denied[0].Target != "evil.example" {
		t.Fatalf("denial not reported: %+v", e.denied)
	}
}

// TestFederationAllowAll: "*" lets every server in (SyTest's test network).
func TestFederationAllowAll(t *testing.T) {
	ctx := context.Background()
	e := newTestEngine(t, func(c *Config) { c.Federation.AllowedServers = []string{"*"} })
	for _, server := range []string{"localhost:35619", "chat.city-b.lg.jp"} {
		if d := e.AllowServer(ctx, server); d != nil {
			t.Fatalf("%s refused with \"*\" listed: %v", server, d)
		}
	}
	if len(e.denied) != 0 {
		t.Fatalf("denials reported: %+v", e.denied)
	}
}

func TestConfigValidation(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
	c.TrustedNetworks = []string{"10.0.0.0/33"}
	c.WorkingHours.AppliesTo = "phones"
	c.Enrollment.CodeTTL = 0
	c.Federation.AllowedServers = []string{"bad server"}
	err := c.Validate()
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"trusted_networks", "applies_to", "code_ttl", "allowed_servers"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if _, err := New(c, nil, nil); err == nil {
		t.Fatal("New accepted a bad config")
	}
	var d Duration
	if err := d.UnmarshalText([]byte("72h")); err != nil || d.D() != 72*time.Hour {
		t.Fatalf("duration: %v %v", d, err)
	}
	if _, err := netip.ParsePrefix("10.0.0.0/8"); err != nil {
		t.Fatal(err)
	}
}

func ptr(s string) *string { return &s }

func engineTestPNG(t *testing.T) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 4, 4))
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
