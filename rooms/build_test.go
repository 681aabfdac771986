package rooms

import (
	"bytes"
	"crypto/ed25519"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// TestFastBuildMatchesGMSL: fastBuild's events are byte for byte those of
// gomatrixserverlib's EventBuilder.Build, and their signatures verify.
func TestFastBuildMatchesGMSL(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(nil)
	now := time.UnixMilli(1764000000123)
	sk := func(s string) *string { return &s }
	prev := []string{"$prev1", "$prev2"}
	auth := []string{"$create", "$pl", "$member"}
	protos := map[string]gomatrixserverlib.ProtoEvent{
		"message": {SenderID: "@alice:test.local", RoomID: "!r:test.local", Type: "m.room.message", Depth: 7,
			Content: spec.RawJSON(`{"msgtype":"m.text","body":"課内会議 <資料> & \"quotes\" \u2028 \n end"}`)},
		"member": {SenderID: "@bob:test.local", RoomID: "!r:test.local", Type: "m.room.member", StateKey: sk("@bob:test.local"), Depth: 8,
			Content:  spec.RawJSON(`{"membership":"join","displayname":"ボブ"}`),
			Unsigned: spec.RawJSON(`{"prev_content":{"membership":"invite"},"prev_sender":"@alice:test.local","replaces_state":"$inv"}`)},
		"name": {SenderID: "@alice:test.local", RoomID: "!r:test.local", Type: "m.room.name", StateKey: sk(""), Depth: 9,
			Content: spec.RawJSON(`{"name":"防災会議"}`)},
		"power levels": {SenderID: "@alice:test.local", RoomID: "!r:test.local", Type: "m.room.power_levels", StateKey: sk(""), Depth: 10,
			Content: spec.RawJSON(`{"users":{"@alice:test.local":100,"@bob:test.local":50},"events":{"m.room.name":50},"ban":50,"users_default":0}`)},
		"slash state key": {SenderID: "@alice:test.local", RoomID: "!r:test.local", Type: "org.machi.note", StateKey: sk("a/b/c"), Depth: 11,
			Content: spec.RawJSON(`{ "z": 1, "a": [1, 2, {"y": true, "b": null}] }`)},
		"redaction": {SenderID: "@alice:test.local", RoomID: "!r:test.local", Type: "m.room.redaction", Depth: 12,
			Redacts: "$victim", Content: spec.RawJSON(`{"redacts":"$victim","reason":"誤送信"}`)},
	}
	for _, v := range []gomatrixserverlib.RoomVersion{"3", "4", "5", "6", "7", "8", "9", "10", "11", "12"} {
		version := gomatrixserverlib.MustGetRoomVersion(v)
		for name, proto := range protos {
			t.Run(string(v)+"/"+name, func(t *testing.T) {
				a, b := proto, proto
				a.PrevEvents, a.AuthEvents, a.Version = prev, auth, version
				b.PrevEvents, b.AuthEvents, b.Version = prev, auth, version
				want, err := version.NewEventBuilderFromProtoEvent(&a).Build(now, "test.local", "ed25519:k", key)
				if err != nil {
					t.Fatal(err)
				}
				got, ok, err := fastBuild(version, &b, now, "test.local", "ed25519:k", key)
				if err != nil || !ok {
					t.Fatalf("fastBuild: ok %v, %v", ok, err)
				}
				if !bytes.Equal(got.JSON(), want.JSON()) {
					t.Fatalf("JSON differs:\nfast %s\ngmsl %s", got.JSON(), want.JSON())
				}
				if got.EventID() != want.EventID() {
					t.Fatalf("event ID %s, want %s", got.EventID(), want.EventID())
				}
				// v3 event IDs are standard base64, v4 and later URL-safe.
				if v == "3" && strings.ContainsAny(got.EventID(), "-_") || v != "3" && strings.ContainsAny(got.EventID(), "+/") {
					t.Fatalf("event ID %s has the wrong base64 alphabet for version %s", got.EventID(), v)
				}
				redacted, err := version.RedactEventJSON(got.JSON())
				if err != nil {
					t.Fatal(err)
				}
				if err := gomatrixserverlib.VerifyJSON("test.local", "ed25519:k", key.Public().(ed25519.PublicKey), redacted); err != nil {
					t.Fatalf("signature does not verify: %v", err)
				}
			})
		}
	}
	// What it does not handle goes to Build.
	v10 := gomatrixserverlib.MustGetRoomVersion("10")
	p := protos["message"]
	p.PrevEvents, p.AuthEvents = nil, auth
	if _, ok, _ := fastBuild(v10, &p, now, "test.local", "ed25519:k", key); ok {
		t.Error("nil prev_events taken by the fast path")
	}
	v1 := gomatrixserverlib.MustGetRoomVersion("1")
	p.PrevEvents = prev
	if _, ok, _ := fastBuild(v1, &p, now, "test.local", "ed25519:k", key); ok {
		t.Error("room version 1 taken by the fast path")
	}
}
