package sqlstore_test

import (
	"context"
	"errors"
	"testing"

	"github.com/machi-chat/machi/internal/testrig"
	"github.com/machi-chat/machi/storage"
)

func TestRemoteInvites(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		db := testrig.OpenStore(t, engine)
		const room, bob = "!committee:city-a.test", "@bob:city-b.test"
		inv := storage.RemoteInvite{RoomID: room, UserID: bob, EventID: "$inv", Sender: "@alice:city-a.test", RoomVersion: "10",
			Event: []byte(`{"type":"m.room.member"}`), InviteState: []byte(`[{"type":"m.room.name"}]`), Pos: 7, CreatedTS: 1}
		must(t, db.PutRemoteInvite(ctx, inv))
		got, err := db.GetRemoteInvite(ctx, room, bob)
		must(t, err)
		if got.EventID != "$inv" || got.Pos != 7 || string(got.InviteState) != string(inv.InviteState) || got.RoomVersion != "10" {
			t.Fatalf("invite: %+v", got)
		}
		ms, err := db.UserMemberships(ctx, bob)
		must(t, err)
		if len(ms) != 1 || ms[0].Membership != "invite" || ms[0].Pos != 7 {
			t.Fatalf("memberships: %+v", ms)
		}
		if _, err := db.GetRemoteLeave(ctx, room, bob); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("leave before rejection: %v", err)
		}
		leave := storage.RemoteLeave{EventID: "$leave", RoomVersion: "10", Event: []byte(`{"type":"m.room.member","content":{"membership":"leave"}}`)}
		must(t, db.EndRemoteInvite(ctx, room, bob, "leave", "$leave", 9, &leave))
		if got, err := db.GetRemoteLeave(ctx, room, bob); err != nil || got.EventID != "$leave" || got.RoomVersion != "10" || string(got.Event) != string(leave.Event) {
			t.Fatalf("kept leave: %+v %v", got, err)
		}
		if _, err := db.GetRemoteInvite(ctx, room, bob); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("invite after rejection: %v", err)
		}
		ms, _ = db.UserMemberships(ctx, bob)
		if len(ms) != 1 || ms[0].Membership != "leave" || ms[0].Pos != 9 || ms[0].EventID != "$leave" {
			t.Fatalf("memberships after rejection: %+v", ms)
		}
	})
}
