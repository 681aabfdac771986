package e2e

import (
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/machi-chat/machi/internal/testrig"
)

// TestKnocking: a room whose join rule is knock. Bob knocks; the room's
// members see it, bob sees the room in the knock section of his /sync
// (and nothing of its history); alice lets him in with an invite. Carol
// knocks through the alias and is turned away with a kick, still having
// seen nothing. Knocks the rules do not allow are refused.
func TestKnocking(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice, bob, carol, dave := register(t, srv, "alice"), register(t, srv, "bob"), register(t, srv, "carol"), register(t, srv, "dave")
		ctx := ctxT(t)
		hs := alice.UserID.Homeserver()
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "防災課", RoomAliasName: "bousai", InitialState: []*event.Event{{
			Type: event.StateJoinRules, StateKey: new(string), Content: event.Content{Parsed: &event.JoinRulesEventContent{JoinRule: event.JoinRuleKnock}},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendText(ctx, room.RoomID, "内部の連絡"); err != nil {
			t.Fatal(err)
		}
		aliceSync, err := alice.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		bobSync, err := bob.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}

		resp, err := bob.KnockRoom(ctx, string(room.RoomID), &mautrix.ReqKnockRoom{Reason: "配属されました"})
		if err != nil || resp.RoomID != room.RoomID {
			t.Fatalf("knock: %+v %v", resp, err)
		}
		waitFor(t, alice, aliceSync.NextBatch, func(r *mautrix.RespSync) bool {
			for _, ev := range r.Rooms.Join[room.RoomID].Timeline.Events {
				if ev.Type == event.StateMember && ev.GetStateKey() == string(bob.UserID) {
					return ev.Content.Raw["membership"] == "knock" && ev.Content.Raw["reason"] == "配属されました"
				}
			}
			return false
		})
		bobSince := waitFor(t, bob, bobSync.NextBatch, func(r *mautrix.RespSync) bool {
			kr, ok := r.Rooms.Knock[room.RoomID]
			if !ok {
				return false
			}
			var rules, own bool
			for _, ev := range kr.State.Events {
				rules = rules || ev.Type == event.StateJoinRules
				own = own || (ev.Type == event.StateMember && ev.GetStateKey() == string(bob.UserID) && ev.Content.Raw["membership"] == "knock")
			}
			return rules && own
		})
		if _, err := bob.Messages(ctx, room.RoomID, "", "", mautrix.DirectionBackward, nil, 10); httpErr(t, err).Code != "M_FORBIDDEN" {
			t.Errorf("a knocker read the room: %v", err)
		}
		if _, err := bob.SendText(ctx, room.RoomID, "入れて"); httpErr(t, err).Code != "M_FORBIDDEN" {
			t.Errorf("a knocker sent a message: %v", err)
		}
		// Let in: an invite, then a join.
		if _, err := alice.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, bob, bobSince, func(r *mautrix.RespSync) bool { _, ok := r.Rooms.Invite[room.RoomID]; return ok })
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}

		// Turned away: a kick.
		if resp, err := carol.KnockRoom(ctx, "#bousai:"+hs, nil); err != nil || resp.RoomID != room.RoomID {
			t.Fatalf("knock by alias: %+v %v", resp, err)
		}
		if _, err := alice.KickUser(ctx, room.RoomID, &mautrix.ReqKickUser{UserID: carol.UserID, Reason: "別の課です"}); err != nil {
			t.Fatalf("kick a knocker: %v", err)
		}
		var member struct {
			Membership string `json:"membership"`
		}
		if err := alice.StateEvent(ctx, room.RoomID, event.StateMember, string(carol.UserID), &member); err != nil || member.Membership != "leave" {
			t.Fatalf("carol after the kick: %+v %v", member, err)
		}
		if msgs, err := carol.Messages(ctx, room.RoomID, "", "", mautrix.DirectionBackward, nil, 50); err == nil {
			for _, ev := range msgs.Chunk {
				if ev.Type == event.EventMessage || ev.Type == event.StateRoomName {
					t.Errorf("turned-away knocker saw %s %v", ev.Type.Type, ev.Content.Raw)
				}
			}
		} else if httpErr(t, err).Code != "M_FORBIDDEN" {
			t.Errorf("carol's /messages: %v", err)
		}
		// She may knock again; dave, banned, may not.
		if _, err := alice.BanUser(ctx, room.RoomID, &mautrix.ReqBanUser{UserID: dave.UserID}); err != nil {
			t.Fatal(err)
		}
		private, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			who    *mautrix.Client
			target string
			status int
			code   string
		}{
			{dave, string(room.RoomID), 403, "M_FORBIDDEN"},
			{bob, string(room.RoomID), 403, "M_FORBIDDEN"},
			{carol, string(private.RoomID), 403, "M_FORBIDDEN"},
			{carol, "!nowhere:" + hs, 404, "M_NOT_FOUND"},
			{carol, "#nowhere:" + hs, 404, "M_NOT_FOUND"},
			{carol, "nowhere", 400, "M_INVALID_PARAM"},
		} {
			code, me := do(t, http.DefaultClient, "POST", carol.BuildClientURL("v3", "knock", c.target), c.who.AccessToken, map[string]any{}, nil)
			if code != c.status || me.Code != c.code {
				t.Errorf("%s knocks on %s: %d %+v, want %d %s", c.who.UserID, c.target, code, me, c.status, c.code)
			}
		}
		if _, err := carol.KnockRoom(ctx, string(room.RoomID), nil); err != nil {
			t.Errorf("knock again after a refusal: %v", err)
		}
	})
}

// TestSharedHistoryAfterLeave: under "shared", a member who joined and
// left still reads what was sent before they joined, up to their leave;
// nothing after it.
func TestSharedHistoryAfterLeave(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice, bob := register(t, srv, "alice"), register(t, srv, "bob")
		ctx := ctxT(t)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		for _, step := range []func() error{
			func() error { _, err := alice.SendText(ctx, room.RoomID, "参加前の話"); return err },
			func() error { _, err := bob.JoinRoomByID(ctx, room.RoomID); return err },
			func() error { _, err := alice.SendText(ctx, room.RoomID, "参加中の話"); return err },
			func() error { _, err := bob.LeaveRoom(ctx, room.RoomID); return err },
			func() error { _, err := alice.SendText(ctx, room.RoomID, "退室後の話"); return err },
		} {
			if err := step(); err != nil {
				t.Fatal(err)
			}
		}
		msgs, err := bob.Messages(ctx, room.RoomID, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, ev := range msgs.Chunk {
			if b, _ := ev.Content.Raw["body"].(string); b != "" {
				got[b] = true
			}
		}
		if !got["参加前の話"] || !got["参加中の話"] || got["退室後の話"] {
			t.Errorf("bob's /messages after leaving: %v", got)
		}
	})
}
