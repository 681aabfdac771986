package clientapi

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/internal/config"
	"github.com/machi-chat/machi/internal/testrig"
	"github.com/machi-chat/machi/policy"
	"github.com/machi-chat/machi/rooms"
)

// BenchmarkSync is /sync assembly (no HTTP) for a user in 20 rooms of 10
// holding 2,000 messages: the initial sync with the default filter, and an
// incremental sync that finds one new message.
func BenchmarkSync(b *testing.B) {
	ctx := context.Background()
	store := testrig.OpenStore(b, "sqlite")
	_, key, _ := ed25519.GenerateKey(nil)
	rs, err := rooms.New(ctx, rooms.Config{ServerName: "test.local", KeyID: "ed25519:a", Key: key, DefaultVersion: "10"}, store, allowAll{}) // rooms under test, not policy
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(rs.Close)
	cfg := config.Default()
	cfg.ServerName = "test.local"
	pol, err := policy.New(cfg.Policy, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	s := New(&cfg, Deps{Store: store, Rooms: rs, Policy: pol, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	b.Cleanup(s.Close)

	reader := "@reader:test.local"
	var roomIDs []string
	for i := 0; i < 20; i++ {
		creator := fmt.Sprintf("@c%d:test.local", i)
		var invite []string
		for j := 0; j < 8; j++ {
			invite = append(invite, fmt.Sprintf("@u%d-%d:test.local", i, j))
		}
		roomID, err := rs.CreateRoom(ctx, &rooms.CreateRequest{Creator: creator, Preset: "public_chat", Invite: invite})
		if err != nil {
			b.Fatal(err)
		}
		for _, u := range append(invite, reader) {
			if _, err := rs.Submit(ctx, &rooms.Request{RoomID: roomID, Sender: u, Type: spec.MRoomMember, StateKey: &u, Content: []byte(`{"membership":"join"}`)}); err != nil {
				b.Fatal(err)
			}
		}
		for j := 0; j < 100; j++ {
			if _, err := rs.Submit(ctx, &rooms.Request{RoomID: roomID, Sender: invite[j%8], Type: "m.room.message",
				Content: []byte(fmt.Sprintf(`{"msgtype":"m.text","body":"message %d"}`, j))}); err != nil {
				b.Fatal(err)
			}
		}
		roomIDs = append(roomIDs, roomID)
	}
	dev := &Device{UserID: reader, DeviceID: "BENCH"}

	b.Run("initial", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			body, _, err := s.buildSync(ctx, &syncRequest{dev: dev, filter: &Filter{}})
			if err != nil || len(body) < 1000 {
				b.Fatalf("sync: %v, %d bytes", err, len(body))
			}
		}
	})
	b.Run("incremental", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			since := syncToken{pos: rs.Stream().Current()}
			if _, err := rs.Submit(ctx, &rooms.Request{RoomID: roomIDs[i%20], Sender: fmt.Sprintf("@u%d-0:test.local", i%20),
				Type: "m.room.message", Content: []byte(`{"msgtype":"m.text","body":"new"}`)}); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			_, empty, err := s.buildSync(ctx, &syncRequest{dev: dev, since: &since, filter: &Filter{}})
			if err != nil || empty {
				b.Fatalf("incremental sync: %v, empty %v", err, empty)
			}
		}
	})
	// A sync woken by a roommate's presence change (one user of 200 known).
	for i := 0; i < 200; i++ {
		s.presence.Active(fmt.Sprintf("@u%d-%d:test.local", i%20, i/20%8))
	}
	n := 0
	b.Run("presence", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			since := syncToken{pos: rs.Stream().Current(), presence: s.presence.Current()}
			n++
			msg := fmt.Sprintf("in meeting %d", n)
			s.presence.Set(fmt.Sprintf("@u%d-0:test.local", i%20), presOnline, &msg)
			b.StartTimer()
			body, empty, err := s.buildSync(ctx, &syncRequest{dev: dev, since: &since, filter: &Filter{}})
			if err != nil || empty || !bytes.Contains(body, []byte("m.presence")) {
				b.Fatalf("presence sync: %v, empty %v", err, empty)
			}
		}
	})
}

type allowAll struct{}

func (allowAll) CheckEvent(context.Context, policy.EventInput) *policy.Denial { return nil }

// BenchmarkSubmit50 is one send into rooms of 50 local members: "plain" is
// the rooms service alone, "notify" has the client API attached, so every
// send is evaluated against 49 members' push rules, counted, and its 49
// notification rows committed with it. "parallel" has 50 senders over 20
// rooms, as in rooms.BenchmarkSubmit (throughput); "serial" one sender
// (latency).
func BenchmarkSubmit50(b *testing.B) {
	for _, engine := range testrig.Engines(b) {
		for _, mode := range []string{"plain/parallel", "notify/parallel", "plain/serial", "notify/serial"} {
			b.Run(engine+"/"+mode, func(b *testing.B) {
				ctx := context.Background()
				store := testrig.OpenStore(b, engine)
				_, key, _ := ed25519.GenerateKey(nil)
				rs, err := rooms.New(ctx, rooms.Config{ServerName: "test.local", KeyID: "ed25519:a", Key: key, DefaultVersion: "10",
					Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, store, allowAll{})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(rs.Close)
				if strings.HasPrefix(mode, "notify") {
					cfg := config.Default()
					cfg.ServerName = "test.local"
					pol, err := policy.New(cfg.Policy, nil, nil)
					if err != nil {
						b.Fatal(err)
					}
					s := New(&cfg, Deps{Store: store, Rooms: rs, Policy: pol, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
					b.Cleanup(s.Close)
				}
				var roomIDs []string
				for i := 0; i < 20; i++ {
					var invite []string
					for j := 0; j < 49; j++ {
						invite = append(invite, fmt.Sprintf("@m%d:test.local", j))
					}
					roomID, err := rs.CreateRoom(ctx, &rooms.CreateRequest{Creator: "@alice:test.local", Preset: "public_chat", Invite: invite})
					if err != nil {
						b.Fatal(err)
					}
					for _, u := range invite {
						if _, err := rs.Submit(ctx, &rooms.Request{RoomID: roomID, Sender: u, Type: spec.MRoomMember, StateKey: &u, Content: []byte(`{"membership":"join"}`)}); err != nil {
							b.Fatal(err)
						}
					}
					roomIDs = append(roomIDs, roomID)
				}
				var n atomic.Int64
				content := []byte(`{"msgtype":"m.text","body":"hello"}`)
				b.ReportAllocs()
				if strings.HasSuffix(mode, "serial") {
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						if _, err := rs.Submit(ctx, &rooms.Request{RoomID: roomIDs[i%20], Sender: "@alice:test.local", Type: "m.room.message", Content: content}); err != nil {
							b.Fatal(err)
						}
					}
					return
				}
				b.SetParallelism(25)
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						i := n.Add(1)
						if _, err := rs.Submit(ctx, &rooms.Request{RoomID: roomIDs[i%20], Sender: "@alice:test.local", Type: "m.room.message", Content: content}); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}
