package rooms

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/internal/testrig"
)

// benchRoom makes a room with ten members.
func benchRoom(b *testing.B, s *Service) string {
	b.Helper()
	ctx := context.Background()
	var invite []string
	for i := 0; i < 9; i++ {
		invite = append(invite, fmt.Sprintf("@u%d:test.local", i))
	}
	roomID, err := s.CreateRoom(ctx, &CreateRequest{Creator: "@alice:test.local", Preset: "public_chat", Invite: invite})
	if err != nil {
		b.Fatal(err)
	}
	for _, u := range invite {
		u := u
		if _, err := s.Submit(ctx, &Request{RoomID: roomID, Sender: u, Type: spec.MRoomMember, StateKey: &u, Content: []byte(`{"membership":"join"}`)}); err != nil {
			b.Fatal(err)
		}
	}
	return roomID
}

// BenchmarkBuildSignAuth is the CPU cost of one event before storage:
// build the PDU, hash and sign it, run the auth rules.
func BenchmarkBuildSignAuth(b *testing.B) {
	store := testrig.OpenStore(b, "sqlite")
	s := newServiceB(b, store)
	roomID := benchRoom(b, s)
	r, err := s.room(context.Background(), roomID)
	if err != nil {
		b.Fatal(err)
	}
	content := msg("hello")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		proto := gomatrixserverlib.ProtoEvent{SenderID: "@alice:test.local", RoomID: roomID, Type: "m.room.message",
			PrevEvents: r.latest, Depth: r.depth + 1, Content: spec.RawJSON(content)}
		pdu, err := s.build(r.version, r.snap, &proto)
		if err != nil {
			b.Fatal(err)
		}
		if err := gomatrixserverlib.Allowed(pdu, authProvider{r.snap}, userIDForSender); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSubmit is one send through the whole write path, committed,
// with parallel senders over 20 rooms so group commit can batch.
func BenchmarkSubmit(b *testing.B) {
	for _, engine := range testrig.Engines(b) {
		b.Run(engine, func(b *testing.B) {
			store := testrig.OpenStore(b, engine)
			s := newServiceB(b, store)
			var rooms []string
			for i := 0; i < 20; i++ {
				rooms = append(rooms, benchRoom(b, s))
			}
			var n atomic.Int64
			content := msg("hello")
			b.ReportAllocs()
			b.SetParallelism(25) // 50 senders on 2 cores
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					i := n.Add(1)
					if _, err := s.Submit(ctx, &Request{RoomID: rooms[i%20], Sender: "@alice:test.local", Type: "m.room.message", Content: content}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
