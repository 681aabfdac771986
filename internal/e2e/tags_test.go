package e2e

import (
	"net/http"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/machi-chat/machi/internal/testrig"
)

// TestRoomTags: tags are set, read and removed through the tag API, and
// reach /sync as the room's m.tag account data; only one's own, with an
// order in [0, 1].
func TestRoomTags(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice, bob := register(t, srv, "alice"), register(t, srv, "bob")
		ctx := ctxT(t)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "防災課"})
		if err != nil {
			t.Fatal(err)
		}
		sync, err := alice.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		if tags, err := alice.GetTags(ctx, room.RoomID); err != nil || len(tags.Tags) != 0 {
			t.Fatalf("tags of an untagged room: %+v %v", tags, err)
		}
		if err := alice.AddTag(ctx, room.RoomID, event.RoomTagFavourite, 0.25); err != nil {
			t.Fatal(err)
		}
		if err := alice.AddTagWithCustomData(ctx, room.RoomID, "u.災害対応", map[string]any{}); err != nil {
			t.Fatal(err)
		}
		tags, err := alice.GetTags(ctx, room.RoomID)
		if err != nil {
			t.Fatal(err)
		}
		if len(tags.Tags) != 2 || tags.Tags[event.RoomTagFavourite].Order != "0.25" && tags.Tags[event.RoomTagFavourite].Order != "2.5e-01" {
			t.Fatalf("tags: %+v", tags.Tags)
		}
		// /sync delivers them as room account data.
		hasTags := func(resp *mautrix.RespSync, want ...event.RoomTag) bool {
			jr, ok := resp.Rooms.Join[room.RoomID]
			if !ok {
				return false
			}
			for _, ev := range jr.AccountData.Events {
				if ev.Type.Type != "m.tag" {
					continue
				}
				got, _ := ev.Content.Raw["tags"].(map[string]any)
				if len(got) != len(want) {
					return false
				}
				for _, w := range want {
					if _, ok := got[string(w)]; !ok {
						return false
					}
				}
				return true
			}
			return false
		}
		since := waitFor(t, alice, sync.NextBatch, func(r *mautrix.RespSync) bool { return hasTags(r, event.RoomTagFavourite, "u.災害対応") })
		if err := alice.RemoveTag(ctx, room.RoomID, event.RoomTagFavourite); err != nil {
			t.Fatal(err)
		}
		if err := alice.RemoveTag(ctx, room.RoomID, event.RoomTagFavourite); err != nil {
			t.Fatalf("removing a removed tag: %v", err)
		}
		waitFor(t, alice, since, func(r *mautrix.RespSync) bool { return hasTags(r, "u.災害対応") })

		// Error paths; none changes the tags.
		tagURL := func(user id.UserID, room id.RoomID, tag string) string {
			return alice.BuildClientURL("v3", "user", user, "rooms", room, "tags", tag)
		}
		long := make([]byte, 256)
		for i := range long {
			long[i] = 'x'
		}
		for _, c := range []struct {
			method, url string
			token       string
			body        any
			status      int
			code        string
		}{
			{"PUT", tagURL(bob.UserID, room.RoomID, "m.lowpriority"), alice.AccessToken, map[string]any{}, 403, "M_FORBIDDEN"},
			{"DELETE", tagURL(alice.UserID, room.RoomID, "u.災害対応"), bob.AccessToken, nil, 403, "M_FORBIDDEN"},
			{"GET", alice.BuildClientURL("v3", "user", alice.UserID, "rooms", room.RoomID, "tags"), bob.AccessToken, nil, 403, "M_FORBIDDEN"},
			{"PUT", tagURL(alice.UserID, room.RoomID, "m.lowpriority"), alice.AccessToken, map[string]any{"order": 1.5}, 400, "M_INVALID_PARAM"},
			{"PUT", tagURL(alice.UserID, room.RoomID, "m.lowpriority"), alice.AccessToken, map[string]any{"order": -0.1}, 400, "M_INVALID_PARAM"},
			{"PUT", tagURL(alice.UserID, room.RoomID, "m.lowpriority"), alice.AccessToken, map[string]any{"order": "first"}, 400, "M_BAD_JSON"},
			{"PUT", tagURL(alice.UserID, room.RoomID, "m.lowpriority"), alice.AccessToken, []byte("[1]"), 400, "M_BAD_JSON"},
			{"PUT", tagURL(alice.UserID, room.RoomID, "m.lowpriority"), alice.AccessToken, []byte("{"), 400, "M_NOT_JSON"},
			{"PUT", tagURL(alice.UserID, room.RoomID, string(long)), alice.AccessToken, map[string]any{}, 400, "M_INVALID_PARAM"},
			{"PUT", tagURL(alice.UserID, "!nowhere:"+id.RoomID(alice.UserID.Homeserver()), "m.lowpriority"), alice.AccessToken, map[string]any{}, 404, "M_NOT_FOUND"},
		} {
			if code, me := do(t, http.DefaultClient, c.method, c.url, c.token, c.body, nil); code != c.status || me.Code != c.code {
				t.Errorf("%s %s: %d %+v, want %d %s", c.method, c.url, code, me, c.status, c.code)
			}
		}
		tags, err = alice.GetTags(ctx, room.RoomID)
		if err != nil || len(tags.Tags) != 1 {
			t.Errorf("tags after refused changes: %+v %v", tags.Tags, err)
		}
	})
}

// TestThreePIDs: no account has a third-party identifier, and none can be
// added: each endpoint answers with the spec's error for a server that
// does not support them.
func TestThreePIDs(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice := register(t, srv, "alice")
		var resp struct {
			ThreePIDs []any `json:"threepids"`
		}
		if _, err := alice.MakeRequest(ctxT(t), "GET", alice.BuildClientURL("v3", "account", "3pid"), nil, &resp); err != nil || resp.ThreePIDs == nil || len(resp.ThreePIDs) != 0 {
			t.Fatalf("3pids: %+v %v", resp, err)
		}
		v3 := baseURL(srv) + "/_matrix/client/v3"
		tok := alice.AccessToken
		email := map[string]any{"client_secret": "s3cret", "email": "tanaka@city.example", "send_attempt": 1}
		for _, c := range []struct {
			path   string
			token  string
			body   any
			status int
			code   string
		}{
			{"/account/3pid/add", tok, map[string]any{"client_secret": "s", "sid": "1"}, 403, "M_THREEPID_DENIED"},
			{"/account/3pid/add", tok, map[string]any{}, 400, "M_MISSING_PARAM"},
			{"/account/3pid/bind", tok, map[string]any{"client_secret": "s", "sid": "1", "id_server": "id.example", "id_access_token": "x"}, 403, "M_THREEPID_DENIED"},
			{"/account/3pid/delete", tok, map[string]any{"medium": "email", "address": "tanaka@city.example"}, 400, "M_THREEPID_NOT_FOUND"},
			{"/account/3pid/unbind", tok, map[string]any{"medium": "msisdn", "address": "81312345678"}, 400, "M_THREEPID_NOT_FOUND"},
			{"/account/3pid/delete", tok, map[string]any{"medium": "fax", "address": "1"}, 400, "M_INVALID_PARAM"},
			{"/account/3pid/delete", tok, map[string]any{"medium": "email"}, 400, "M_MISSING_PARAM"},
			{"/account/3pid/delete", tok, []byte("nope"), 400, "M_NOT_JSON"},
			{"/account/3pid/email/requestToken", tok, email, 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED"},
			{"/account/3pid/msisdn/requestToken", tok, map[string]any{"client_secret": "s", "country": "JP", "phone_number": "0312345678", "send_attempt": 1}, 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED"},
			{"/account/password/email/requestToken", "", email, 403, "M_THREEPID_DENIED"},
			{"/register/email/requestToken", "", email, 403, "M_THREEPID_DENIED"},
			{"/register/msisdn/requestToken", "", map[string]any{"client_secret": "s", "country": "JP", "phone_number": "0312345678", "send_attempt": 1}, 403, "M_THREEPID_DENIED"},
		} {
			if code, me := do(t, http.DefaultClient, "POST", v3+c.path, c.token, c.body, nil); code != c.status || me.Code != c.code {
				t.Errorf("POST %s: %d %+v, want %d %s", c.path, code, me, c.status, c.code)
			}
		}
		// The capability says so.
		caps, err := alice.Capabilities(ctxT(t))
		if err != nil || caps.ThreePIDChanges == nil || caps.ThreePIDChanges.Enabled {
			t.Errorf("m.3pid_changes: %+v %v", caps, err)
		}
	})
}

// TestTimestampToEvent: the event nearest a time, in either direction,
// among those the user may see: a newcomer to a "joined" room finds
// nothing from before they joined; an outsider is refused.
func TestTimestampToEvent(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice, bob, carol := register(t, srv, "alice"), register(t, srv, "bob"), register(t, srv, "carol")
		ctx := ctxT(t)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{{
			Type: event.StateHistoryVisibility, StateKey: new(string),
			Content: event.Content{Parsed: &event.HistoryVisibilityEventContent{HistoryVisibility: event.HistoryVisibilityJoined}},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		send := func(c *mautrix.Client, body string) (id.EventID, time.Time) {
			t.Helper()
			time.Sleep(3 * time.Millisecond) // distinct timestamps
			resp, err := c.SendText(ctx, room.RoomID, body)
			if err != nil {
				t.Fatal(err)
			}
			ev, err := c.GetEvent(ctx, room.RoomID, resp.EventID)
			if err != nil {
				t.Fatal(err)
			}
			return resp.EventID, time.UnixMilli(ev.Timestamp)
		}
		first, firstTS := send(alice, "第1報")
		second, secondTS := send(alice, "第2報")
		find := func(c *mautrix.Client, at time.Time, dir mautrix.Direction) (id.EventID, error) {
			resp, err := c.TimestampToEvent(ctx, room.RoomID, at, dir)
			if err != nil {
				return "", err
			}
			return resp.EventID, nil
		}
		for _, c := range []struct {
			at   time.Time
			dir  mautrix.Direction
			want id.EventID
		}{
			{firstTS, mautrix.DirectionForward, first},
			{firstTS.Add(time.Millisecond), mautrix.DirectionForward, second},
			{secondTS.Add(-time.Millisecond), mautrix.DirectionBackward, first},
			{secondTS.Add(time.Hour), mautrix.DirectionBackward, second},
		} {
			if got, err := find(alice, c.at, c.dir); err != nil || got != c.want {
				t.Errorf("alice at %d %c: %s %v, want %s", c.at.UnixMilli(), c.dir, got, err, c.want)
			}
		}
		if _, err := find(alice, secondTS.Add(time.Hour), mautrix.DirectionForward); httpErr(t, err).Code != "M_NOT_FOUND" {
			t.Errorf("nothing after the last event: %v", err)
		}

		// Bob joins later: before his join he finds only his own join.
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		third, _ := send(alice, "第3報")
		if got, err := find(bob, firstTS, mautrix.DirectionForward); err != nil || got == first || got == second {
			t.Errorf("bob found %s (%v) before his join", got, err)
		}
		if got, err := find(bob, secondTS.Add(time.Hour), mautrix.DirectionBackward); err != nil || got != third {
			t.Errorf("bob's latest: %s %v, want %s", got, err, third)
		}
		// Backwards from before his join: nothing sent under "joined"
		// (only the room's first events, sent before that setting, under
		// the default "shared").
		if got, err := find(bob, secondTS, mautrix.DirectionBackward); err != nil || got == first || got == second {
			t.Errorf("bob found %s (%v) from before his join", got, err)
		}
		// After bob leaves, what is sent is not his to find.
		if _, err := bob.LeaveRoom(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		_, fourthTS := send(alice, "第4報（退室後）")
		if got, err := find(bob, fourthTS, mautrix.DirectionForward); err == nil {
			t.Errorf("bob found %s, sent after he left", got)
		} else if me := httpErr(t, err); me.Code != "M_NOT_FOUND" {
			t.Errorf("after leaving: %+v", me)
		}
		if _, err := find(carol, firstTS, mautrix.DirectionForward); httpErr(t, err).Code != "M_FORBIDDEN" {
			t.Errorf("outsider: %v", err)
		}
		base := alice.BuildClientURL("v1", "rooms", room.RoomID, "timestamp_to_event")
		for _, q := range []string{"", "?ts=1", "?dir=f", "?ts=x&dir=f", "?ts=-1&dir=f", "?ts=1&dir=up"} {
			want := "M_INVALID_PARAM"
			if q == "" || q == "?ts=1" || q == "?dir=f" {
				want = "M_MISSING_PARAM"
			}
			if code, me := do(t, http.DefaultClient, "GET", base+q, alice.AccessToken, nil, nil); code != 400 || me.Code != want {
				t.Errorf("timestamp_to_event%s: %d %+v, want 400 %s", q, code, me, want)
			}
		}
	})
}
