package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/machi-chat/machi/internal/testrig"
)

// TestFederatedCommitteeRoom: a joint committee room on city-a, joined
// from city-b; messages and state both ways, concurrent sends that fork
// the room's history and merge again, and an outage of city-b after which
// it has everything, in order.
func TestFederatedCommitteeRoom(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		const a, b = "city-a.test", "city-b.test"
		cities := startFederation(t, engine, []string{a, b}, map[string][]string{a: {b}, b: {a}}, nil)
		alice := register(t, cities[a].srv, "alice")
		bob := register(t, cities[b].srv, "bob")
		name := "合同委員会"
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat", Name: name})
		if err != nil {
			t.Fatal(err)
		}
		// city-b finds the room by city-a's alias, and joins by it.
		alias := "#goudou:" + a
		if code, me := do(t, http.DefaultClient, "PUT", baseURL(cities[a].srv)+"/_matrix/client/v3/directory/room/"+url.PathEscape(alias),
			alice.AccessToken, map[string]string{"room_id": string(room.RoomID)}, nil); code != 200 {
			t.Fatalf("alias: %d %+v", code, me)
		}
		var dir struct {
			RoomID  string   `json:"room_id"`
			Servers []string `json:"servers"`
		}
		if code, me := do(t, http.DefaultClient, "GET", baseURL(cities[b].srv)+"/_matrix/client/v3/directory/room/"+url.PathEscape(alias),
			bob.AccessToken, nil, &dir); code != 200 || dir.RoomID != string(room.RoomID) || !slices.Contains(dir.Servers, a) {
			t.Fatalf("remote alias from city-b: %d %+v %+v", code, me, dir)
		}
		if code, me := do(t, http.DefaultClient, "GET", baseURL(cities[b].srv)+"/_matrix/client/v3/directory/room/"+url.PathEscape("#nothing:"+a),
			bob.AccessToken, nil, nil); code != 404 || me.Code != "M_NOT_FOUND" {
			t.Fatalf("unknown remote alias: %d %+v", code, me)
		}
		var joined struct {
			RoomID string `json:"room_id"`
		}
		if code, me := do(t, http.DefaultClient, "POST", baseURL(cities[b].srv)+"/_matrix/client/v3/join/"+url.PathEscape(alias),
			bob.AccessToken, map[string]any{}, &joined); code != 200 || joined.RoomID != string(room.RoomID) {
			t.Fatalf("join from city-b: %d %+v %+v", code, me, joined)
		}
		// city-b has the room's state; city-a has bob's join.
		var nameState struct {
			Name string `json:"name"`
		}
		if code, me := do(t, http.DefaultClient, "GET", baseURL(cities[b].srv)+"/_matrix/client/v3/rooms/"+string(room.RoomID)+"/state/m.room.name/",
			bob.AccessToken, nil, &nameState); code != 200 || nameState.Name != name {
			t.Fatalf("room name on city-b: %d %+v %+v", code, me, nameState)
		}
		sinceA := waitFor(t, alice, "", func(r *mautrix.RespSync) bool { return memberIn(r, room.RoomID, bob.UserID, "join") })

		// Messages both ways.
		if _, err := alice.SendText(ctxT(t), room.RoomID, "第1回会議は月曜です"); err != nil {
			t.Fatal(err)
		}
		sinceB := waitFor(t, bob, "", func(r *mautrix.RespSync) bool { return roomTimelineHas(r, room.RoomID, "第1回会議は月曜です") })
		if _, err := bob.SendText(ctxT(t), room.RoomID, "了解しました"); err != nil {
			t.Fatal(err)
		}
		sinceA = waitFor(t, alice, sinceA, func(r *mautrix.RespSync) bool { return roomTimelineHas(r, room.RoomID, "了解しました") })

		// Typing and read receipts cross.
		if _, err := alice.UserTyping(ctxT(t), room.RoomID, true, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		sinceB = waitFor(t, bob, sinceB, func(r *mautrix.RespSync) bool {
			if r.Rooms.Join[room.RoomID] == nil {
				return false
			}
			for _, ev := range r.Rooms.Join[room.RoomID].Ephemeral.Events {
				if ev.Type != event.EphemeralEventTyping {
					continue
				}
				ids, _ := ev.Content.Raw["user_ids"].([]any)
				if slices.Contains(ids, any(string(alice.UserID))) {
					return true
				}
			}
			return false
		})
		reply := waitHistoryEvent(t, bob, room.RoomID, "第1回会議は月曜です")
		if err := bob.SendReceipt(ctxT(t), room.RoomID, reply, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		sinceA = waitFor(t, alice, sinceA, func(r *mautrix.RespSync) bool {
			if r.Rooms.Join[room.RoomID] == nil {
				return false
			}
			for _, ev := range r.Rooms.Join[room.RoomID].Ephemeral.Events {
				if ev.Type == event.EphemeralEventReceipt {
					if _, ok := ev.Content.Raw[string(reply)]; ok {
						return true
					}
				}
			}
			return false
		})

		// Both at once: the history forks and merges; both cities end
		// with every message.
		done := make(chan error, 2)
		for _, c := range []*mautrix.Client{alice, bob} {
			go func() {
				for i := range 5 {
					if _, err := c.SendText(ctxT(t), room.RoomID, fmt.Sprintf("%s %d", c.UserID.Localpart(), i)); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
		}
		for range 2 {
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range []*mautrix.Client{alice, bob} {
			waitHistory(t, c, room.RoomID, func(bodies []string) bool {
				return slices.Contains(bodies, alice.UserID.Localpart()+" 4") && slices.Contains(bodies, bob.UserID.Localpart()+" 4")
			})
		}
		// State from city-b reaches city-a.
		if _, err := bob.SendStateEvent(ctxT(t), room.RoomID, event.StateTopic, "", map[string]string{"topic": "議事録は共有フォルダへ"}); err == nil {
			t.Fatal("bob (no power) set the topic")
		}
		if _, err := alice.SendStateEvent(ctxT(t), room.RoomID, event.StateTopic, "", map[string]string{"topic": "議事録は共有フォルダへ"}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, bob, sinceB, func(r *mautrix.RespSync) bool {
			if r.Rooms.Join[room.RoomID] == nil {
				return false
			}
			for _, ev := range r.Rooms.Join[room.RoomID].Timeline.Events {
				if ev.Type == event.StateTopic {
					return true
				}
			}
			return false
		})

		// Redactions cross too: bob's of his own message, alice's (she has
		// the power) of another of his.
		own, err := bob.SendText(ctxT(t), room.RoomID, "誤送信")
		if err != nil {
			t.Fatal(err)
		}
		other, err := bob.SendText(ctxT(t), room.RoomID, "不適切な投稿")
		if err != nil {
			t.Fatal(err)
		}
		waitHistory(t, alice, room.RoomID, func(bodies []string) bool { return slices.Contains(bodies, "不適切な投稿") })
		if _, err := bob.RedactEvent(ctxT(t), room.RoomID, own.EventID); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.RedactEvent(ctxT(t), room.RoomID, other.EventID); err != nil {
			t.Fatal(err)
		}
		waitHistory(t, alice, room.RoomID, func(bodies []string) bool { return !slices.Contains(bodies, "誤送信") })
		waitHistory(t, bob, room.RoomID, func(bodies []string) bool { return !slices.Contains(bodies, "不適切な投稿") })

		// city-b is down while city-a talks; back, it gets it all in order.
		cities[b].stop()
		for i := range 3 {
			if _, err := alice.SendText(ctxT(t), room.RoomID, fmt.Sprintf("停止中 %d", i)); err != nil {
				t.Fatal(err)
			}
		}
		cities[b].start(t)
		if _, err := bob.SendText(ctxT(t), room.RoomID, "戻りました"); err != nil { // contacts city-a
			t.Fatal(err)
		}

		waitHistory(t, bob, room.RoomID, func(bodies []string) bool {
			i0, i2 := slices.Index(bodies, "停止中 0"), slices.Index(bodies, "停止中 2")
			return i0 >= 0 && i2 > i0 && slices.Index(bodies, "停止中 1") > i0
		})
		waitHistory(t, alice, room.RoomID, func(bodies []string) bool { return slices.Contains(bodies, "戻りました") })
	})
}

// waitHistoryEvent finds the ID of the message with body in the history.
func waitHistoryEvent(t *testing.T, c *mautrix.Client, roomID id.RoomID, body string) id.EventID {
	t.Helper()
	resp, err := c.Messages(ctxT(t), roomID, "", "", mautrix.DirectionBackward, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range resp.Chunk {
		if b, _ := ev.Content.Raw["body"].(string); b == body {
			return ev.ID
		}
	}
	t.Fatalf("%s has no message %q", c.UserID, body)
	return ""
}

func memberIn(r *mautrix.RespSync, roomID id.RoomID, user id.UserID, membership string) bool {
	if r.Rooms.Join[roomID] == nil {
		return false
	}
	for _, ev := range r.Rooms.Join[roomID].Timeline.Events {
		if ev.Type == event.StateMember && ev.GetStateKey() == string(user) {
			if m, _ := ev.Content.Raw["membership"].(string); m == membership {
				return true
			}
		}
	}
	return false
}

// waitHistory pages the room's history (newest 100) until ok likes the
// message bodies, oldest first; bounded.
func waitHistory(t *testing.T, c *mautrix.Client, roomID id.RoomID, ok func([]string) bool) {
	t.Helper()
	var bodies []string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		resp, err := c.Messages(ctxT(t), roomID, "", "", mautrix.DirectionBackward, nil, 100)
		if err != nil {
			t.Fatalf("messages: %v", err)
		}
		bodies = bodies[:0]
		for i := len(resp.Chunk) - 1; i >= 0; i-- {
			if b, _ := resp.Chunk[i].Content.Raw["body"].(string); b != "" {
				bodies = append(bodies, b)
			}
		}
		if ok(bodies) {
			return
		}
	}
	t.Fatalf("%s's history never got there: %q", c.UserID, bodies)
}

// TestFederatedInvites: a private committee room invites staff of another
// city; one joins, one refuses; a city off the allow-list can't be invited.
func TestFederatedInvites(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		const a, b = "city-a.test", "city-b.test"
		cities := startFederation(t, engine, []string{a, b}, map[string][]string{a: {b}, b: {a}}, nil)
		alice := register(t, cities[a].srv, "alice")
		bob, carol := register(t, cities[b].srv, "bob"), register(t, cities[b].srv, "carol")
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "防災連絡会議"})
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range []id.UserID{bob.UserID, carol.UserID} {
			if _, err := alice.InviteUser(ctxT(t), room.RoomID, &mautrix.ReqInviteUser{UserID: u}); err != nil {
				t.Fatalf("invite %s: %v", u, err)
			}
		}
		code, me := do(t, http.DefaultClient, "POST", baseURL(cities[a].srv)+"/_matrix/client/v3/rooms/"+string(room.RoomID)+"/invite",
			alice.AccessToken, map[string]string{"user_id": "@dave:city-z.test"}, nil)
		if code != 403 || me.Rule != "federation-not-allowed" {
			t.Fatalf("invite to a server off the allow-list: %d %+v", code, me)
		}

		// carol refuses before anyone of city-b is in the room; city-a hears
		// of it, and carol's next sync moves the room from invite to leave.
		carolBefore := waitFor(t, carol, "", func(r *mautrix.RespSync) bool { _, ok := r.Rooms.Invite[room.RoomID]; return ok })
		if _, err := carol.LeaveRoom(ctxT(t), room.RoomID); err != nil {
			t.Fatalf("carol refuses: %v", err)
		}
		waitFor(t, carol, carolBefore, func(r *mautrix.RespSync) bool { _, left := r.Rooms.Leave[room.RoomID]; return left })
		waitFor(t, alice, "", func(r *mautrix.RespSync) bool { return memberIn(r, room.RoomID, carol.UserID, "leave") })
		if resp, err := carol.SyncRequest(ctxT(t), 0, "", "", false, ""); err != nil || len(resp.Rooms.Invite) != 0 {
			t.Fatalf("carol's invites after refusing: %v %+v", err, resp.Rooms.Invite)
		}

		// bob sees the invite, with the room's name, and joins.
		waitFor(t, bob, "", func(r *mautrix.RespSync) bool {
			inv, ok := r.Rooms.Invite[room.RoomID]
			if !ok {
				return false
			}
			for _, ev := range inv.State.Events {
				if ev.Type == event.StateRoomName && ev.Content.Raw["name"] == "防災連絡会議" {
					return true
				}
			}
			return false
		})
		if _, err := bob.JoinRoomByID(ctxT(t), room.RoomID); err != nil {
			t.Fatalf("bob joins: %v", err)
		}
		if _, err := alice.SendText(ctxT(t), room.RoomID, "ようこそ"); err != nil {
			t.Fatal(err)
		}
		waitHistory(t, bob, room.RoomID, func(bodies []string) bool { return slices.Contains(bodies, "ようこそ") })

		// alice removes bob; city-b shows him out.
		before, err := bob.SyncRequest(ctxT(t), 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.KickUser(ctxT(t), room.RoomID, &mautrix.ReqKickUser{UserID: bob.UserID, Reason: "任期満了"}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, bob, before.NextBatch, func(r *mautrix.RespSync) bool { _, left := r.Rooms.Leave[room.RoomID]; return left })
	})
}

// TestFederatedStateConflicts: three servers (two cities and the
// prefecture) in one room; concurrent conflicting changes of the topic and
// of power levels end the same on every server.
func TestFederatedStateConflicts(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		const a, b, p = "city-a.test", "city-b.test", "pref.test"
		all := []string{a, b, p}
		cities := startFederation(t, engine, all, map[string][]string{a: {b, p}, b: {a, p}, p: {a, b}}, nil)
		alice := register(t, cities[a].srv, "alice")
		bob := register(t, cities[b].srv, "bob")
		pat := register(t, cities[p].srv, "pat")
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "県市町村連絡会"})
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range []struct {
			c   *mautrix.Client
			srv string
		}{{bob, b}, {pat, p}} {
			if code, me := do(t, http.DefaultClient, "POST", baseURL(cities[j.srv].srv)+"/_matrix/client/v3/join/"+string(room.RoomID)+"?server_name="+a,
				j.c.AccessToken, map[string]any{}, nil); code != 200 {
				t.Fatalf("%s joins: %d %+v", j.c.UserID, code, me)
			}
		}
		// Everyone may change the topic; bob and pat may change power.
		pl := map[string]any{"users": map[string]int{string(alice.UserID): 100, string(bob.UserID): 100, string(pat.UserID): 100},
			"events": map[string]int{"m.room.topic": 0}, "state_default": 50}
		if _, err := alice.SendStateEvent(ctxT(t), room.RoomID, event.StatePowerLevels, "", pl); err != nil {
			t.Fatal(err)
		}
		// pat (joined through city-a) hears city-b's messages directly,
		// once city-b has heard of pat's join (city-a passes it on).
		waitState(t, bob, room.RoomID, event.StateMember, func(map[string]any) bool { return true }, string(pat.UserID))
		if _, err := bob.SendText(ctxT(t), room.RoomID, "市から県へ"); err != nil {
			t.Fatal(err)
		}
		waitHistory(t, pat, room.RoomID, func(bodies []string) bool { return slices.Contains(bodies, "市から県へ") })
		for _, c := range []*mautrix.Client{bob, pat} {
			waitState(t, c, room.RoomID, event.StatePowerLevels, func(content map[string]any) bool {
				users, _ := content["users"].(map[string]any)
				return users[string(pat.UserID)] != nil
			})
		}

		clients := map[string]*mautrix.Client{a: alice, b: bob, p: pat}
		for round := range 3 {
			done := make(chan error, 3)
			for _, srv := range all {
				c := clients[srv]
				go func() {
					_, err := c.SendStateEvent(ctxT(t), room.RoomID, event.StateTopic, "", map[string]string{"topic": fmt.Sprintf("%s案 %d", srv, round)})
					if err == nil && srv != a { // and a power change racing the topics
						levels := map[string]any{"users": map[string]int{string(alice.UserID): 100, string(bob.UserID): 100, string(pat.UserID): 100,
							"@round" + fmt.Sprint(round) + ":" + srv: 10}, "events": map[string]int{"m.room.topic": 0}, "state_default": 50}
						_, err = c.SendStateEvent(ctxT(t), room.RoomID, event.StatePowerLevels, "", levels)
					}
					done <- err
				}()
			}
			for range all {
				if err := <-done; err != nil {
					t.Fatal(err)
				}
			}
		}
		// Every server settles on the same topic and power levels.
		for _, typ := range []event.Type{event.StateTopic, event.StatePowerLevels} {
			var first string
			deadline := time.Now().Add(30 * time.Second)
			for {
				var got []string
				for _, srv := range all {
					var content json.RawMessage
					do(t, http.DefaultClient, "GET", baseURL(cities[srv].srv)+"/_matrix/client/v3/rooms/"+string(room.RoomID)+"/state/"+typ.Type+"/",
						clients[srv].AccessToken, nil, &content)
					got = append(got, string(content))
				}
				first = got[0]
				if got[0] == got[1] && got[1] == got[2] {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s differs between servers: %q", typ.Type, got)
				}
				time.Sleep(200 * time.Millisecond)
			}
			t.Logf("%s on every server: %s", typ.Type, first)
		}
	})
}

// waitState reads the room's state event of typ (and state key, "" by
// default) until ok likes it; bounded.
func waitState(t *testing.T, c *mautrix.Client, roomID id.RoomID, typ event.Type, ok func(map[string]any) bool, stateKey ...string) {
	t.Helper()
	key := ""
	if len(stateKey) > 0 {
		key = stateKey[0]
	}
	var content map[string]any
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		content = nil
		if err := c.StateEvent(ctxT(t), roomID, typ, key, &content); err == nil && ok(content) {
			return
		}
	}
	t.Fatalf("%s: %s never got there: %v", c.UserID, typ.Type, content)
}

// TestFederatedBackfill: a member of another city who joins late pages
// back through the committee's history from before the join, in order.
func TestFederatedBackfill(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		const a, b = "city-a.test", "city-b.test"
		cities := startFederation(t, engine, []string{a, b}, map[string][]string{a: {b}, b: {a}}, nil)
		alice := register(t, cities[a].srv, "alice")
		bob := register(t, cities[b].srv, "bob")
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "議事録"})
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for i := range 30 {
			body := fmt.Sprintf("第%d回 議事録", i)
			if _, err := alice.SendText(ctxT(t), room.RoomID, body); err != nil {
				t.Fatal(err)
			}
			want = append(want, body)
		}
		if code, me := do(t, http.DefaultClient, "POST", baseURL(cities[b].srv)+"/_matrix/client/v3/join/"+string(room.RoomID), bob.AccessToken, map[string]any{}, nil); code != 200 {
			t.Fatalf("join: %d %+v", code, me)
		}
		// Page back from now, ten at a time, to the room's creation.
		var got []string
		var types []string
		from := ""
		for page := 0; page < 20; page++ {
			resp, err := bob.Messages(ctxT(t), room.RoomID, from, "", mautrix.DirectionBackward, nil, 10)
			if err != nil {
				t.Fatalf("messages: %v", err)
			}
			for _, ev := range resp.Chunk {
				types = append(types, ev.Type.Type)
				if b, _ := ev.Content.Raw["body"].(string); b != "" {
					got = append(got, b)
				}
			}
			if resp.End == "" {
				break
			}
			from = resp.End
		}
		slices.Reverse(got)
		if !slices.Equal(got, want) {
			t.Fatalf("bob's history: %q\nwant %q", got, want)
		}
		if types[len(types)-1] != "m.room.create" {
			t.Fatalf("history does not reach the room's creation: %v", types)
		}
		// Paging forward from the start gives the same order.
		resp, err := bob.Messages(ctxT(t), room.RoomID, "", "", mautrix.DirectionForward, nil, 100)
		if err != nil {
			t.Fatal(err)
		}
		var fwd []string
		for _, ev := range resp.Chunk {
			if b, _ := ev.Content.Raw["body"].(string); b != "" {
				fwd = append(fwd, b)
			}
		}
		if !slices.Equal(fwd, want) {
			t.Fatalf("forward from the start: %q", fwd)
		}
	})
}
