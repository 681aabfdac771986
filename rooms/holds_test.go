package rooms

import (
	"context"
	"testing"
	"time"

	"github.com/machi-chat/machi/internal/testrig"
)

// TestReplyHold: an event sent with WakeSenderLater is committed and
// visible to everyone but its sender's /sync, whose wake-up waits for
// Replied; other members are woken at the commit.
func TestReplyHold(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		s := newService(t, testrig.OpenStore(t, engine), nil)
		const alice, bob = "@alice:test.local", "@bob:test.local"
		roomID, err := s.CreateRoom(ctx, &CreateRequest{Creator: alice, Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		bobKey := bob
		if _, err := s.Submit(ctx, &Request{RoomID: roomID, Sender: bob, Type: "m.room.member", StateKey: &bobKey, Content: []byte(`{"membership":"join"}`)}); err != nil {
			t.Fatal(err)
		}
		aliceWake, aliceRelease := s.Notifier().Listen(alice)
		defer aliceRelease()
		bobWake, bobRelease := s.Notifier().Listen(bob)
		defer bobRelease()

		ev, err := s.Submit(ctx, &Request{RoomID: roomID, Sender: alice, Type: "m.room.message", Content: msg("hi"),
			TxnDevice: "DEV", TxnID: "t1", WakeSenderLater: true})
		if err != nil {
			t.Fatal(err)
		}
		cur := s.Stream().Current()
		if cur < ev.Pos {
			t.Fatalf("Current %d is behind the committed event at %d", cur, ev.Pos)
		}
		if got := s.SyncCeiling(alice, cur); got != ev.Pos-1 {
			t.Errorf("alice's ceiling before the reply = %d, want %d", got, ev.Pos-1)
		}
		if got := s.SyncCeiling(bob, cur); got != cur {
			t.Errorf("bob's ceiling = %d, want Current %d", got, cur)
		}
		select {
		case <-bobWake:
		case <-time.After(5 * time.Second):
			t.Fatal("bob was not woken by the commit")
		}
		select {
		case <-aliceWake:
			t.Fatal("alice was woken before her reply")
		default:
		}
		s.Replied(alice, ev)
		if got := s.SyncCeiling(alice, cur); got != cur {
			t.Errorf("alice's ceiling after the reply = %d, want %d", got, cur)
		}
		select {
		case <-aliceWake:
		case <-time.After(5 * time.Second):
			t.Fatal("alice was not woken by Replied")
		}
		// A send that fails holds nothing back.
		if _, err := s.Submit(ctx, &Request{RoomID: "!nope:test.local", Sender: alice, Type: "m.room.message", Content: msg("x"), WakeSenderLater: true}); err == nil {
			t.Fatal("send to an unknown room succeeded")
		}
		if got := s.SyncCeiling(alice, s.Stream().Current()); got != s.Stream().Current() {
			t.Errorf("ceiling after a failed send = %d, want %d", got, s.Stream().Current())
		}
	})
}
