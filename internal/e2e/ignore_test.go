package e2e

import (
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/machi-chat/machi/internal/testrig"
)

// TestIgnoredUsers: with bob in alice's m.ignored_user_list, bob's
// messages are left out of alice's /sync (initial and incremental) and
// /messages, but his state events are not; his invites are not shown,
// in a full or an incremental sync; carol is unaffected. Taking bob off
// the list shows his new messages again (spec: "Ignoring Users"; SyTest's
// 49ignore.pl).
func TestIgnoredUsers(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice, bob, carol := register(t, srv, "alice"), register(t, srv, "bob"), register(t, srv, "carol")
		ctx := ctxT(t)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []*mautrix.Client{bob, carol} {
			if _, err := c.JoinRoomByID(ctx, room.RoomID); err != nil {
				t.Fatal(err)
			}
		}
		send := func(c *mautrix.Client, body string) {
			t.Helper()
			if _, err := c.SendText(ctx, room.RoomID, body); err != nil {
				t.Fatal(err)
			}
		}
		// Bob may set the topic (public_chat: state_default 50 is not
		// his); a name he sets through a power level alice grants.
		if _, err := alice.SendStateEvent(ctx, room.RoomID, event.StatePowerLevels, "", map[string]any{
			"users": map[string]any{alice.UserID.String(): 100, bob.UserID.String(): 50}}); err != nil {
			t.Fatal(err)
		}
		send(alice, "alice-1")
		send(bob, "bob-1")
		send(carol, "carol-1")
		if _, err := bob.SendStateEvent(ctx, room.RoomID, event.StateTopic, "", map[string]any{"topic": "防災訓練"}); err != nil {
			t.Fatal(err)
		}
		if err := alice.SetAccountData(ctx, "m.ignored_user_list", map[string]any{"ignored_users": map[string]any{bob.UserID.String(): map[string]any{}}}); err != nil {
			t.Fatal(err)
		}

		bodies := func(evs []*event.Event) (msgs []string, topic bool) {
			for _, ev := range evs {
				if b, ok := ev.Content.Raw["body"].(string); ok {
					msgs = append(msgs, b)
				}
				if ev.Type == event.StateTopic {
					topic = true
				}
			}
			return msgs, topic
		}
		resp, err := alice.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		msgs, topic := bodies(resp.Rooms.Join[room.RoomID].Timeline.Events)
		deepEq(t, "initial sync messages", msgs, []string{"alice-1", "carol-1"})
		if !topic {
			t.Error("bob's topic change left out of the timeline: state events of ignored users are sent")
		}
		since := resp.NextBatch

		msgsResp, err := alice.Messages(ctx, room.RoomID, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := bodies(msgsResp.Chunk)
		deepEq(t, "/messages (newest first)", got, []string{"carol-1", "alice-1"})

		// An incremental sync with only bob's message has nothing for
		// the room; carol's next one comes alone.
		send(bob, "bob-2")
		resp, err = alice.SyncRequest(ctx, 0, since, "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		if jr, ok := resp.Rooms.Join[room.RoomID]; ok && len(jr.Timeline.Events) > 0 {
			t.Fatalf("bob's message reached alice's incremental sync: %v", jr.Timeline.Events)
		}
		since = resp.NextBatch
		send(carol, "carol-2")
		since = waitFor(t, alice, since, func(r *mautrix.RespSync) bool {
			jr, ok := r.Rooms.Join[room.RoomID]
			if !ok {
				return false
			}
			msgs, _ := bodies(jr.Timeline.Events)
			deepEq(t, "incremental sync", msgs, []string{"carol-2"})
			return true
		})

		// Bob's invites: not in an incremental sync, nor a full one;
		// carol's are.
		bobsRoom, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{alice.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		carolsRoom, err := carol.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{alice.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, alice, since, func(r *mautrix.RespSync) bool {
			if _, ok := r.Rooms.Invite[bobsRoom.RoomID]; ok {
				t.Fatal("bob's invite in an incremental sync")
			}
			_, ok := r.Rooms.Invite[carolsRoom.RoomID]
			return ok
		})
		resp, err = alice.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := resp.Rooms.Invite[bobsRoom.RoomID]; ok {
			t.Fatal("bob's invite in a full sync")
		}
		if _, ok := resp.Rooms.Invite[carolsRoom.RoomID]; !ok {
			t.Fatal("carol's invite missing from a full sync")
		}
		since = resp.NextBatch

		// Carol's view is untouched.
		cresp, err := carol.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		msgs, _ = bodies(cresp.Rooms.Join[room.RoomID].Timeline.Events)
		deepEq(t, "carol's timeline", msgs, []string{"alice-1", "bob-1", "carol-1", "bob-2", "carol-2"})

		// Un-ignored: bob's new messages come again.
		if err := alice.SetAccountData(ctx, "m.ignored_user_list", map[string]any{"ignored_users": map[string]any{}}); err != nil {
			t.Fatal(err)
		}
		send(bob, "bob-3")
		waitFor(t, alice, since, func(r *mautrix.RespSync) bool {
			jr, ok := r.Rooms.Join[room.RoomID]
			if !ok {
				return false
			}
			msgs, _ := bodies(jr.Timeline.Events)
			return len(msgs) == 1 && msgs[0] == "bob-3"
		})
	})
}
