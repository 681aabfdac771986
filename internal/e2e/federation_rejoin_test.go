package e2e

import (
	"net/http"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/machi-chat/machi/internal/testrig"
)

// TestFederatedRejoin: everyone of city-b leaves a joint committee room
// on city-a, which goes on without city-b (a new topic, new messages);
// city-b's member comes back, by a join (public room) or through a new
// invite (private room), and has the room as it is now, not as city-b
// last saw it.
func TestFederatedRejoin(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		const a, b = "city-a.test", "city-b.test"
		cities := startFederation(t, engine, []string{a, b}, map[string][]string{a: {b}, b: {a}}, nil)
		alice := register(t, cities[a].srv, "alice")
		bob := register(t, cities[b].srv, "bob")

		t.Run("public room, joined again", func(t *testing.T) {
			room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "合同委員会", Topic: "第1回"})
			if err != nil {
				t.Fatal(err)
			}
			joinVia(t, cities[b], bob, room.RoomID, a)
			leaveAndGoOn(t, alice, bob, room.RoomID, "第2回")
			// bob comes back by the room ID alone: city-b still knows the
			// room, and that city-a was in it.
			since := syncToken(t, bob)
			if _, err := bob.JoinRoomByID(ctxT(t), room.RoomID); err != nil {
				t.Fatalf("bob joins again: %v", err)
			}
			checkBack(t, alice, bob, since, room.RoomID, "第2回")

			// After a restart of city-b, the room is loaded as it was
			// rejoined: current state and where its timeline may start.
			cities[b].stop()
			cities[b].start(t)
			resp, err := bob.SyncRequest(ctxT(t), 0, "", "", false, "")
			if err != nil {
				t.Fatal(err)
			}
			jr := resp.Rooms.Join[room.RoomID]
			if jr == nil {
				t.Fatal("the room is not joined after a restart")
			}
			for _, ev := range slices.Concat(jr.State.Events, jr.Timeline.Events) {
				if ev.Type == event.StateTopic && ev.Content.Raw["topic"] != "第2回" {
					t.Fatalf("a stale topic after a restart: %v", ev.Content.Raw)
				}
			}
			var st struct {
				Topic string `json:"topic"`
			}
			if err := bob.StateEvent(ctxT(t), room.RoomID, event.StateTopic, "", &st); err != nil || st.Topic != "第2回" {
				t.Fatalf("topic after a restart: %v %q", err, st.Topic)
			}
		})

		t.Run("private room, invited again", func(t *testing.T) {
			room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "人事委員会", Topic: "第1回",
				Invite: []id.UserID{bob.UserID}})
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, bob, "", func(r *mautrix.RespSync) bool { _, ok := r.Rooms.Invite[room.RoomID]; return ok })
			if _, err := bob.JoinRoomByID(ctxT(t), room.RoomID); err != nil {
				t.Fatalf("bob joins: %v", err)
			}
			leaveAndGoOn(t, alice, bob, room.RoomID, "第2回")
			// Without an invite, the room refuses him (city-a decides,
			// not city-b's stale state).
			if code, me := do(t, http.DefaultClient, "POST", baseURL(cities[b].srv)+"/_matrix/client/v3/rooms/"+string(room.RoomID)+"/join",
				bob.AccessToken, map[string]any{}, nil); code != 403 {
				t.Fatalf("join without an invite: %d %+v", code, me)
			}

			// Invited again, he refuses: city-a hears of it.
			if _, err := alice.InviteUser(ctxT(t), room.RoomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
				t.Fatalf("invite again: %v", err)
			}
			since := waitInvite(t, bob, "", room.RoomID, "第2回")
			if _, err := bob.LeaveRoom(ctxT(t), room.RoomID); err != nil {
				t.Fatalf("bob refuses: %v", err)
			}
			waitFor(t, bob, since, func(r *mautrix.RespSync) bool { _, ok := r.Rooms.Leave[room.RoomID]; return ok })
			waitFor(t, alice, "", func(r *mautrix.RespSync) bool { return memberIn(r, room.RoomID, bob.UserID, "leave") })

			// Invited once more, he accepts.
			if _, err := alice.InviteUser(ctxT(t), room.RoomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
				t.Fatalf("invite once more: %v", err)
			}
			since = waitInvite(t, bob, since, room.RoomID, "第2回")
			waitInvite(t, bob, "", room.RoomID, "第2回") // an initial sync too
			if _, err := bob.JoinRoomByID(ctxT(t), room.RoomID); err != nil {
				t.Fatalf("bob accepts: %v", err)
			}
			checkBack(t, alice, bob, since, room.RoomID, "第2回")
		})
	})
}

// joinVia joins c to a room through server.
func joinVia(t *testing.T, city *fedCity, c *mautrix.Client, roomID id.RoomID, server string) {
	t.Helper()
	if code, me := do(t, http.DefaultClient, "POST", baseURL(city.srv)+"/_matrix/client/v3/join/"+string(roomID)+"?server_name="+server,
		c.AccessToken, map[string]any{}, nil); code != 200 {
		t.Fatalf("%s joins: %d %+v", c.UserID, code, me)
	}
}

// leaveAndGoOn: the remote member leaves; the room goes on at the host
// (a new topic, a message) without the remote's server.
func leaveAndGoOn(t *testing.T, host, remote *mautrix.Client, roomID id.RoomID, topic string) {
	t.Helper()
	if _, err := host.SendText(ctxT(t), roomID, "開会します"); err != nil {
		t.Fatal(err)
	}
	waitHistory(t, remote, roomID, func(bodies []string) bool { return slices.Contains(bodies, "開会します") })
	if _, err := remote.LeaveRoom(ctxT(t), roomID); err != nil {
		t.Fatalf("%s leaves: %v", remote.UserID, err)
	}
	waitFor(t, host, "", func(r *mautrix.RespSync) bool { return memberIn(r, roomID, remote.UserID, "leave") })
	if _, err := host.SendStateEvent(ctxT(t), roomID, event.StateTopic, "", map[string]string{"topic": topic}); err != nil {
		t.Fatal(err)
	}
	if _, err := host.SendText(ctxT(t), roomID, "留守中の議事"); err != nil {
		t.Fatal(err)
	}
}

// waitInvite waits for an invite to the room whose stripped state has
// the topic.
func waitInvite(t *testing.T, c *mautrix.Client, since string, roomID id.RoomID, topic string) string {
	t.Helper()
	return waitFor(t, c, since, func(r *mautrix.RespSync) bool {
		inv, ok := r.Rooms.Invite[roomID]
		if !ok {
			return false
		}
		for _, ev := range inv.State.Events {
			if ev.Type == event.StateTopic && ev.Content.Raw["topic"] == topic {
				return true
			}
		}
		return false
	})
}

// checkBack: the remote member is back, with the room's current state and
// its new messages both ways.
func checkBack(t *testing.T, host, remote *mautrix.Client, since string, roomID id.RoomID, topic string) {
	t.Helper()
	var st struct {
		Topic string `json:"topic"`
	}
	if err := remote.StateEvent(ctxT(t), roomID, event.StateTopic, "", &st); err != nil || st.Topic != topic {
		t.Fatalf("topic at %s after rejoining: %v %q, want %q", remote.UserID.Homeserver(), err, st.Topic, topic)
	}
	// The next sync shows the room joined, with the current topic (the
	// state before the join is the state city-a gave; the timeline does
	// not reach back past it), and so does an initial sync.
	for _, from := range []string{since, ""} {
		waitFor(t, remote, from, func(r *mautrix.RespSync) bool {
			jr, ok := r.Rooms.Join[roomID]
			if !ok {
				return false
			}
			for _, ev := range slices.Concat(jr.State.Events, jr.Timeline.Events) {
				if ev.Type == event.StateTopic && ev.Content.Raw["topic"] != topic {
					t.Fatalf("a stale topic in the sync after rejoining (since %q): %v", from, ev.Content.Raw)
				}
			}
			for _, ev := range jr.State.Events {
				if ev.Type == event.StateTopic {
					return true
				}
			}
			return false
		})
	}
	if _, err := host.SendText(ctxT(t), roomID, "お帰りなさい"); err != nil {
		t.Fatal(err)
	}
	waitHistory(t, remote, roomID, func(bodies []string) bool { return slices.Contains(bodies, "お帰りなさい") })
	if _, err := remote.SendText(ctxT(t), roomID, "ただいま"); err != nil {
		t.Fatal(err)
	}
	waitHistory(t, host, roomID, func(bodies []string) bool { return slices.Contains(bodies, "ただいま") })
	resp, err := remote.JoinedMembers(ctxT(t), roomID)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := resp.Joined[remote.UserID]; !ok || len(resp.Joined) != 2 {
		t.Fatalf("joined members at %s: %+v", remote.UserID.Homeserver(), resp.Joined)
	}
}

// syncToken is the client's sync position now.
func syncToken(t *testing.T, c *mautrix.Client) string {
	t.Helper()
	resp, err := c.SyncRequest(ctxT(t), 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	return resp.NextBatch
}

// TestFederatedInviteRefusalLeave: a refused invite to a room on another
// server shows its leave in /sync's leave section, whether the inviting
// server took it or, unreachable, the leave is this server's own.
func TestFederatedInviteRefusalLeave(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		const a, b = "city-a.test", "city-b.test"
		cities := startFederation(t, engine, []string{a, b}, map[string][]string{a: {b}, b: {a}}, nil)
		alice := register(t, cities[a].srv, "alice")
		bob, carol := register(t, cities[b].srv, "bob"), register(t, cities[b].srv, "carol")
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "防災連絡会議",
			Invite: []id.UserID{bob.UserID, carol.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		refuse := func(c *mautrix.Client) {
			t.Helper()
			since := waitFor(t, c, "", func(r *mautrix.RespSync) bool { _, ok := r.Rooms.Invite[room.RoomID]; return ok })
			if _, err := c.LeaveRoom(ctxT(t), room.RoomID); err != nil {
				t.Fatalf("%s refuses: %v", c.UserID, err)
			}
			check := func(r *mautrix.RespSync) bool {
				lr, ok := r.Rooms.Leave[room.RoomID]
				if !ok {
					return false
				}
				if len(lr.Timeline.Events) != 1 {
					t.Fatalf("%s's left room: %d timeline events, want the leave", c.UserID, len(lr.Timeline.Events))
				}
				ev := lr.Timeline.Events[0]
				if ev.Type != event.StateMember || ev.GetStateKey() != string(c.UserID) || ev.Sender != c.UserID ||
					ev.Content.Raw["membership"] != "leave" || ev.ID == "" || ev.RoomID != room.RoomID {
					t.Fatalf("%s's leave: %+v", c.UserID, ev)
				}
				return true
			}
			waitFor(t, c, since, check)
			// An initial sync with include_leave shows it too.
			resp, err := c.FullSyncRequest(ctxT(t), mautrix.ReqSync{FilterID: `{"room":{"include_leave":true}}`})
			if err != nil || !check(resp) {
				t.Fatalf("%s's initial sync with include_leave: %v", c.UserID, err)
			}
		}
		// city-a takes bob's refusal.
		refuse(bob)
		waitFor(t, alice, "", func(r *mautrix.RespSync) bool { return memberIn(r, room.RoomID, bob.UserID, "leave") })
		// city-a is down: carol's refusal is city-b's own leave.
		cities[a].stop()
		refuse(carol)
	})
}
