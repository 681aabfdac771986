package e2e

import (
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/machi-chat/machi/internal/testrig"
)

// TestContextLazyLoadMembers: /context with lazy_load_members returns the
// member events of the senders of the events it returns, and no others
// (SyTest's "/context/ with lazy_load_members filter works").
func TestContextLazyLoadMembers(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice, bob, carol := register(t, srv, "alice"), register(t, srv, "bob"), register(t, srv, "carol")
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []*mautrix.Client{bob, carol} {
			if _, err := c.JoinRoomByID(ctxT(t), room.RoomID); err != nil {
				t.Fatal(err)
			}
		}
		var last id.EventID
		for _, body := range []string{"hello 1", "hello 2", "hello 3"} {
			resp, err := alice.SendText(ctxT(t), room.RoomID, body)
			if err != nil {
				t.Fatal(err)
			}
			last = resp.EventID
		}
		members := func(filter *mautrix.FilterPart) []string {
			t.Helper()
			resp, err := alice.Context(ctxT(t), room.RoomID, last, filter, 2)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, ev := range resp.State {
				if ev.Type == event.StateMember {
					out = append(out, *ev.StateKey)
				}
			}
			return out
		}
		if got := members(&mautrix.FilterPart{LazyLoadMembers: true}); len(got) != 1 || got[0] != string(alice.UserID) {
			t.Fatalf("lazy members: %v, want only %s", got, alice.UserID)
		}
		if got := members(nil); len(got) != 3 {
			t.Fatalf("members without lazy loading: %v, want all three", got)
		}
	})
}
