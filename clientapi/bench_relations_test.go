package clientapi

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/internal/config"
	"github.com/machi-chat/machi/internal/testrig"
	"github.com/machi-chat/machi/policy"
	"github.com/machi-chat/machi/rooms"
)

// BenchmarkSyncThreads is the cost of bundled aggregations in /sync: one
// room whose last 60 events are 20 thread roots, each with two replies,
// and a reaction, an edit and a reference on every root. The initial sync's
// timeline (limit 60) holds them all; the aggregations come from memory.
func BenchmarkSyncThreads(b *testing.B) {
	ctx := context.Background()
	store := testrig.OpenStore(b, "sqlite")
	_, key, _ := ed25519.GenerateKey(nil)
	rs, err := rooms.New(ctx, rooms.Config{ServerName: "test.local", KeyID: "ed25519:a", Key: key, DefaultVersion: "10"}, store, allowAll{})
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

	const alice, bob = "@alice:test.local", "@bob:test.local"
	roomID, err := rs.CreateRoom(ctx, &rooms.CreateRequest{Creator: alice, Preset: "public_chat"})
	if err != nil {
		b.Fatal(err)
	}
	bobKey := bob
	if _, err := rs.Submit(ctx, &rooms.Request{RoomID: roomID, Sender: bob, Type: spec.MRoomMember, StateKey: &bobKey, Content: []byte(`{"membership":"join"}`)}); err != nil {
		b.Fatal(err)
	}
	send := func(sender, typ, content string) string {
		ev, err := rs.Submit(ctx, &rooms.Request{RoomID: roomID, Sender: sender, Type: typ, Content: []byte(content)})
		if err != nil {
			b.Fatal(err)
		}
		return ev.ID()
	}
	for i := 0; i < 20; i++ {
		root := send(alice, "m.room.message", fmt.Sprintf(`{"msgtype":"m.text","body":"root %d"}`, i))
		rel := func(relType string) string {
			return fmt.Sprintf(`"m.relates_to":{"rel_type":%q,"event_id":%q}`, relType, root)
		}
		send(bob, "m.room.message", `{"msgtype":"m.text","body":"reply",`+rel("m.thread")+`}`)
		send(alice, "m.room.message", `{"msgtype":"m.text","body":"reply",`+rel("m.thread")+`}`)
		send(bob, "m.reaction", `{"m.relates_to":{"rel_type":"m.annotation","event_id":"`+root+`","key":"👍"}}`)
		send(alice, "m.room.message", `{"msgtype":"m.text","body":"* edit","m.new_content":{"msgtype":"m.text","body":"edit"},`+rel("m.replace")+`}`)
		send(bob, "m.room.message", `{"msgtype":"m.text","body":"see",`+rel("m.reference")+`}`)
	}
	dev := &Device{UserID: bob, DeviceID: "BENCH"}
	filter := &Filter{Room: RoomFilter{Timeline: RoomEventFilter{EventFilter: EventFilter{Limit: func() *int { n := 60; return &n }()}}}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		body, _, err := s.buildSync(ctx, &syncRequest{dev: dev, filter: filter})
		if err != nil || !strings.Contains(string(body), `"m.thread"`) {
			b.Fatalf("sync: %v, no bundled thread in %d bytes", err, len(body))
		}
	}
}
