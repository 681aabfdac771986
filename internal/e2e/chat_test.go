package e2e

import (
	"errors"
	"fmt"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/machi-chat/machi/internal/testrig"
)

// TestNewcomerPath is the README's path with a real client: two users, a
// room, an invite, a conversation, history that paginates.
func TestNewcomerPath(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice := register(t, srv, "alice")
		bob := register(t, srv, "bob")
		ctx := ctxT(t)

		// Bob's initial sync first, so we can long-poll for the invite.
		first, err := bob.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "防災会議", Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		since := waitFor(t, bob, first.NextBatch, func(r *mautrix.RespSync) bool {
			_, ok := r.Rooms.Invite[room.RoomID]
			return ok
		})
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		since = waitFor(t, bob, since, func(r *mautrix.RespSync) bool {
			_, ok := r.Rooms.Join[room.RoomID]
			return ok
		})
		for i := 0; i < 30; i++ {
			if _, err := alice.SendText(ctx, room.RoomID, fmt.Sprintf("message %d", i)); err != nil {
				t.Fatal(err)
			}
		}
		since = waitFor(t, bob, since, func(r *mautrix.RespSync) bool { return roomTimelineHas(r, room.RoomID, "message 29") })
		if _, err := bob.SendText(ctx, room.RoomID, "了解しました"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, alice, "", func(r *mautrix.RespSync) bool { return roomTimelineHas(r, room.RoomID, "了解しました") })

		// History paginates backwards to the room's creation.
		var bodies []string
		from := ""
		sawCreate := false
		for page := 0; page < 20; page++ {
			msgs, err := bob.Messages(ctx, room.RoomID, from, "", mautrix.DirectionBackward, nil, 7)
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range msgs.Chunk {
				if ev.Type == event.EventMessage {
					bodies = append(bodies, ev.Content.Raw["body"].(string))
				}
				if ev.Type == event.StateCreate {
					sawCreate = true
				}
			}
			if msgs.End == "" {
				break
			}
			from = msgs.End
		}
		if got, want := len(bodies), 31; got != want {
			t.Fatalf("paginated %d messages, want %d", got, want)
		}
		if bodies[0] != "了解しました" || bodies[30] != "message 0" {
			t.Fatalf("pagination order wrong: first %q last %q", bodies[0], bodies[30])
		}
		if !sawCreate {
			t.Fatal("pagination never reached m.room.create")
		}

		members, err := alice.JoinedMembers(ctx, room.RoomID)
		if err != nil {
			t.Fatal(err)
		}
		if len(members.Joined) != 2 {
			t.Fatalf("joined members = %v", members.Joined)
		}
		var name struct {
			Name string `json:"name"`
		}
		if err := bob.StateEvent(ctx, room.RoomID, event.StateRoomName, "", &name); err != nil || name.Name != "防災会議" {
			t.Fatalf("room name = %q, %v", name.Name, err)
		}
	})
}

// TestMembershipLifecycle covers leave, kick, ban, unban and forget.
func TestMembershipLifecycle(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice, bob := register(t, srv, "alice"), register(t, srv, "bob")
		ctx := ctxT(t)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		mustJoin := func() {
			t.Helper()
			if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
				t.Fatal(err)
			}
		}
		mustJoin()
		if _, err := bob.LeaveRoom(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		mustJoin()
		if _, err := alice.KickUser(ctx, room.RoomID, &mautrix.ReqKickUser{UserID: bob.UserID, Reason: "test"}); err != nil {
			t.Fatal(err)
		}
		mustJoin()
		if _, err := alice.BanUser(ctx, room.RoomID, &mautrix.ReqBanUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); !errors.Is(err, mautrix.MForbidden) {
			t.Fatalf("banned join: err = %v, want M_FORBIDDEN", err)
		}
		// A ban takes the room's history and state with it.
		if _, err := bob.Messages(ctx, room.RoomID, "", "", mautrix.DirectionBackward, nil, 10); !errors.Is(err, mautrix.MForbidden) {
			t.Fatalf("banned /messages: err = %v, want M_FORBIDDEN", err)
		}
		if _, err := bob.State(ctx, room.RoomID); !errors.Is(err, mautrix.MForbidden) {
			t.Fatalf("banned /state: err = %v, want M_FORBIDDEN", err)
		}
		// Bob may not kick alice: power levels.
		if _, err := bob.KickUser(ctx, room.RoomID, &mautrix.ReqKickUser{UserID: alice.UserID}); !errors.Is(err, mautrix.MForbidden) {
			t.Fatalf("bob kicks alice: err = %v, want M_FORBIDDEN", err)
		}
		if _, err := alice.UnbanUser(ctx, room.RoomID, &mautrix.ReqUnbanUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		mustJoin()
		joined, err := bob.JoinedRooms(ctx)
		if err != nil || len(joined.JoinedRooms) != 1 {
			t.Fatalf("joined rooms = %v, %v", joined, err)
		}
		if _, err := bob.LeaveRoom(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.MakeRequest(ctx, "POST", bob.BuildClientURL("v3", "rooms", room.RoomID, "forget"), struct{}{}, nil); err != nil {
			t.Fatal(err)
		}
		// A forgotten room is no longer in an initial sync with include_leave.
		resp, err := bob.SyncRequest(ctx, 0, "", `{"room":{"include_leave":true}}`, false, "")
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := resp.Rooms.Leave[room.RoomID]; ok {
			t.Fatal("forgotten room still in sync")
		}
	})
}

// TestSameStateTwice: state identical to the current state, from the same
// sender, adds no event (a second click on "join", a client re-sending the
// topic); other content, or another sender, does.
func TestSameStateTwice(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice, bob := register(t, srv, "alice"), register(t, srv, "bob")
		ctx := ctxT(t)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat",
			PowerLevelOverride: &event.PowerLevelsEventContent{Users: map[id.UserID]int{alice.UserID: 100, bob.UserID: 100}}})
		if err != nil {
			t.Fatal(err)
		}
		topic := func(c *mautrix.Client, text string) id.EventID {
			t.Helper()
			resp, err := c.SendStateEvent(ctx, room.RoomID, event.StateTopic, "", &event.TopicEventContent{Topic: text})
			if err != nil {
				t.Fatal(err)
			}
			return resp.EventID
		}
		first := topic(alice, "予算委員会")
		if again := topic(alice, "予算委員会"); again != first {
			t.Errorf("the same topic again: %s, want the current %s", again, first)
		}
		if other := topic(alice, "予算委員会（第2回）"); other == first {
			t.Error("a new topic made no event")
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		bobTopic := topic(bob, "予算委員会（第2回）")
		if bobTopic == first {
			t.Error("the same topic from another sender made no event")
		}
		join1, err := bob.JoinRoomByID(ctx, room.RoomID)
		if err != nil {
			t.Fatal(err)
		}
		memberID := func() id.EventID {
			t.Helper()
			state, err := bob.State(ctx, room.RoomID)
			if err != nil {
				t.Fatal(err)
			}
			return state[event.StateMember][bob.UserID.String()].ID
		}
		member := memberID()
		if join1.RoomID != room.RoomID || member == "" {
			t.Fatalf("join = %+v, member %+v", join1, member)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		if again := memberID(); again != member {
			t.Errorf("joining twice made a new member event %s (was %s)", again, member)
		}
	})
}

// TestMessagesForwardEnd: paging forwards to the live end still gives an
// end token, and the events sent later come from it; paging back past the
// room's start gives none.
func TestMessagesForwardEnd(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice := register(t, srv, "alice")
		ctx := ctxT(t)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendText(ctx, room.RoomID, "一通目"); err != nil {
			t.Fatal(err)
		}
		back, err := alice.Messages(ctx, room.RoomID, "", "", mautrix.DirectionBackward, nil, 100)
		if err != nil {
			t.Fatal(err)
		}
		if back.End != "" {
			t.Errorf("back past the room's start: end = %q, want none", back.End)
		}
		fwd, err := alice.Messages(ctx, room.RoomID, back.Start, "", mautrix.DirectionForward, nil, 100)
		if err != nil {
			t.Fatal(err)
		}
		if fwd.End == "" || len(fwd.Chunk) != 0 {
			t.Fatalf("forwards from the live end: %d events, end %q; want none and an end", len(fwd.Chunk), fwd.End)
		}
		second, err := alice.SendText(ctx, room.RoomID, "二通目")
		if err != nil {
			t.Fatal(err)
		}
		next, err := alice.Messages(ctx, room.RoomID, fwd.End, "", mautrix.DirectionForward, nil, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(next.Chunk) != 1 || next.Chunk[0].ID != second.EventID || next.End == "" {
			t.Fatalf("forwards from end: %d events, end %q; want only %s", len(next.Chunk), next.End, second.EventID)
		}
	})
}
