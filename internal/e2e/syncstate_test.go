package e2e

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/machi-chat/machi/internal/testrig"
)

// syncBody is the part of a /sync answer these tests read.
type syncBody struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join  map[id.RoomID]syncRoomBody `json:"join"`
		Leave map[id.RoomID]syncRoomBody `json:"leave"`
	} `json:"rooms"`
	Presence struct {
		Events []syncEv `json:"events"`
	} `json:"presence"`
}

type syncRoomBody struct {
	State struct {
		Events []syncEv `json:"events"`
	} `json:"state"`
	Timeline struct {
		Events  []syncEv `json:"events"`
		Limited bool     `json:"limited"`
	} `json:"timeline"`
}

type syncEv struct {
	Type     string          `json:"type"`
	StateKey *string         `json:"state_key"`
	Sender   string          `json:"sender"`
	EventID  string          `json:"event_id"`
	Content  json.RawMessage `json:"content"`
}

// rawSync calls /sync as c with the given filter (an ID or inline JSON),
// since and extra parameters.
func rawSync(t *testing.T, c *mautrix.Client, filter, since string, extra ...string) syncBody {
	t.Helper()
	q := url.Values{"timeout": {"0"}}
	if filter != "" {
		q.Set("filter", filter)
	}
	if since != "" {
		q.Set("since", since)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	var out syncBody
	code, me := do(t, http.DefaultClient, "GET", c.HomeserverURL.String()+"/_matrix/client/v3/sync?"+q.Encode(), c.AccessToken, nil, &out)
	if code != 200 {
		t.Fatalf("sync: %d %+v", code, me)
	}
	return out
}

// stateKeys lists a state section as "type|state_key", sorted.
func stateKeys(evs []syncEv) []string {
	out := []string{}
	for _, e := range evs {
		sk := ""
		if e.StateKey != nil {
			sk = *e.StateKey
		}
		out = append(out, e.Type+"|"+sk)
	}
	sort.Strings(out)
	return out
}

func members(ids ...id.UserID) []string {
	out := []string{}
	for _, u := range ids {
		out = append(out, "m.room.member|"+string(u))
	}
	sort.Strings(out)
	return out
}

func mkFilter(t *testing.T, c *mautrix.Client, f any) string {
	t.Helper()
	var out struct {
		FilterID string `json:"filter_id"`
	}
	code, me := do(t, http.DefaultClient, "POST", c.HomeserverURL.String()+"/_matrix/client/v3/user/"+url.PathEscape(string(c.UserID))+"/filter", c.AccessToken, f, &out)
	if code != 200 {
		t.Fatalf("create filter: %d %+v", code, me)
	}
	return out.FilterID
}

var filler = event.Type{Type: "a.made.up.filler.type", Class: event.MessageEventType}

func sendN(t *testing.T, c *mautrix.Client, room id.RoomID, n int) {
	t.Helper()
	for i := range n {
		if _, err := c.SendMessageEvent(ctxT(t), room, filler, map[string]any{"filler": i}); err != nil {
			t.Fatal(err)
		}
	}
}

func putState(t *testing.T, c *mautrix.Client, room id.RoomID, typ, key string, content any) id.EventID {
	t.Helper()
	resp, err := c.SendStateEvent(ctxT(t), room, event.Type{Type: typ, Class: event.StateEventType}, key, content)
	if err != nil {
		t.Fatal(err)
	}
	return resp.EventID
}

// TestSyncStateDelta: an incremental sync after a gap carries the state
// that changed since the token, not all of it (sync.yaml: "Updates to the
// state, between the time indicated by the since parameter, and the start
// of the timeline"); a displayname change is no new join (SyTest
// 06state.pl).
func TestSyncStateDelta(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice := register(t, srv, "alice")
		gapped := mkFilter(t, alice, map[string]any{"room": map[string]any{
			"timeline": map[string]any{"types": []string{filler.Type}, "limit": 1},
			"state":    map[string]any{"types": []string{"a.madeup.test.state"}},
		}})
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{})
		if err != nil {
			t.Fatal(err)
		}
		putState(t, alice, room.RoomID, "a.madeup.test.state", "changes", map[string]any{"my_key": 1})
		putState(t, alice, room.RoomID, "a.madeup.test.state", "stays", map[string]any{"my_key": 1})
		first := rawSync(t, alice, gapped, "")
		if got := stateKeys(first.Rooms.Join[room.RoomID].State.Events); len(got) != 2 {
			t.Fatalf("initial state %v, want both state events", got)
		}
		putState(t, alice, room.RoomID, "a.madeup.test.state", "changes", map[string]any{"my_key": 2})
		sendN(t, alice, room.RoomID, 5)
		next := rawSync(t, alice, gapped, first.NextBatch)
		jr := next.Rooms.Join[room.RoomID]
		if got := stateKeys(jr.State.Events); !slices.Equal(got, []string{"a.madeup.test.state|changes"}) || !jr.Timeline.Limited {
			t.Fatalf("gapped state %v (limited %v), want only the changed event", got, jr.Timeline.Limited)
		}
		if string(jr.State.Events[0].Content) != `{"my_key":2}` {
			t.Fatalf("changed state content %s", jr.State.Events[0].Content)
		}

		// A displayname change with a filter that drops it: nothing to say.
		quiet := mkFilter(t, alice, map[string]any{"room": map[string]any{
			"timeline": map[string]any{"types": []string{}},
			"state":    map[string]any{"types": []string{"a.madeup.test.state"}},
		}})
		s1 := rawSync(t, alice, quiet, "")
		putState(t, alice, room.RoomID, "m.room.member", string(alice.UserID), map[string]any{"membership": "join", "displayname": "boris"})
		if _, err := alice.SendText(ctxT(t), room.RoomID, "wake"); err != nil {
			t.Fatal(err)
		}
		if s2 := rawSync(t, alice, quiet, s1.NextBatch); len(s2.Rooms.Join) != 0 {
			t.Fatalf("a filtered-out displayname change synced rooms %v", s2.Rooms.Join)
		}

		// Unfiltered, the change and the message are the timeline, not the
		// room's whole history.
		s3 := rawSync(t, alice, "", "")
		ev1 := putState(t, alice, room.RoomID, "m.room.member", string(alice.UserID), map[string]any{"membership": "join", "displayname": "natasha"})
		ev2, err := alice.SendText(ctxT(t), room.RoomID, "after")
		if err != nil {
			t.Fatal(err)
		}
		tl := rawSync(t, alice, "", s3.NextBatch).Rooms.Join[room.RoomID].Timeline
		if len(tl.Events) != 2 || tl.Events[0].EventID != string(ev1) || tl.Events[1].EventID != string(ev2.EventID) || tl.Limited {
			t.Fatalf("timeline after a displayname change: %d events, limited %v", len(tl.Events), tl.Limited)
		}
	})
}

// TestSyncJoinLeaveSameBatch: a room joined and left between two syncs
// comes in rooms.leave with its state (SyTest: "When user joins and leaves
// a room in the same batch, the full state is still included").
func TestSyncJoinLeaveSameBatch(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice, bob := register(t, srv, "alice"), register(t, srv, "bob")
		f := map[string]any{"room": map[string]any{
			"timeline":      map[string]any{"types": []string{}},
			"state":         map[string]any{"types": []string{"a.madeup.test.state"}},
			"include_leave": true,
		}}
		fb := mkFilter(t, bob, f)
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		putState(t, alice, room.RoomID, "a.madeup.test.state", "", map[string]any{"my_key": 1})
		s1 := rawSync(t, bob, fb, "")
		if _, err := bob.JoinRoomByID(ctxT(t), room.RoomID); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.LeaveRoom(ctxT(t), room.RoomID); err != nil {
			t.Fatal(err)
		}
		lr, ok := rawSync(t, bob, fb, s1.NextBatch).Rooms.Leave[room.RoomID]
		if !ok {
			t.Fatal("left room missing")
		}
		if got := stateKeys(lr.State.Events); !slices.Equal(got, []string{"a.madeup.test.state|"}) {
			t.Fatalf("left room state %v", got)
		}
	})
}

// TestSyncLazyMembersIncremental: with lazy_load_members an incremental
// sync sends the member events of the timeline's senders the client does
// not hold yet (include_redundant_members: held or not), every member
// change of a gap, and the same again when a client retries a token.
func TestSyncLazyMembersIncremental(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice, bob, charlie, dave := register(t, srv, "alice"), register(t, srv, "bob"), register(t, srv, "charlie"), register(t, srv, "dave")
		lazy := mkFilter(t, alice, map[string]any{"room": map[string]any{
			"state":    map[string]any{"lazy_load_members": true},
			"timeline": map[string]any{"limit": 10},
		}})
		redundant := mkFilter(t, alice, map[string]any{"room": map[string]any{
			"state":    map[string]any{"lazy_load_members": true, "include_redundant_members": true},
			"timeline": map[string]any{"limit": 10},
		}})
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []*mautrix.Client{bob, charlie, dave} {
			if _, err := c.JoinRoomByID(ctxT(t), room.RoomID); err != nil {
				t.Fatal(err)
			}
		}
		sendN(t, bob, room.RoomID, 10)
		memberState := func(b syncBody) []string {
			out := []string{}
			for _, k := range stateKeys(b.Rooms.Join[room.RoomID].State.Events) {
				if len(k) > 14 && k[:14] == "m.room.member|" {
					out = append(out, k)
				}
			}
			return out
		}
		s1 := rawSync(t, alice, lazy, "")
		if got := memberState(s1); !slices.Equal(got, members(alice.UserID, bob.UserID)) {
			t.Fatalf("initial lazy members %v", got)
		}
		// No gap: charlie speaks, his member event comes; bob's does not.
		sendN(t, charlie, room.RoomID, 1)
		sendN(t, bob, room.RoomID, 1)
		s2 := rawSync(t, alice, lazy, s1.NextBatch)
		if got := memberState(s2); !slices.Equal(got, members(charlie.UserID)) {
			t.Fatalf("incremental lazy members %v, want charlie's only", got)
		}
		// The same token again (a lost response): the same members.
		if got := memberState(rawSync(t, alice, lazy, s1.NextBatch)); !slices.Equal(got, members(charlie.UserID)) {
			t.Fatalf("retried token: lazy members %v, want charlie's again", got)
		}
		// Nothing new: no room at all.
		s3 := rawSync(t, alice, lazy, s2.NextBatch)
		if len(s3.Rooms.Join) != 0 {
			t.Fatalf("nothing new synced %v", s3.Rooms.Join)
		}
		// Redundant members when asked for.
		sendN(t, bob, room.RoomID, 1)
		sendN(t, charlie, room.RoomID, 1)
		s4 := rawSync(t, alice, redundant, s3.NextBatch)
		if got := memberState(s4); !slices.Equal(got, members(bob.UserID, charlie.UserID)) {
			t.Fatalf("include_redundant_members: %v", got)
		}
		// A gap: dave leaves, bob talks past the limit. Dave's leave comes
		// (a member change of the gap); bob's member, held, does not.
		if _, err := dave.LeaveRoom(ctxT(t), room.RoomID); err != nil {
			t.Fatal(err)
		}
		sendN(t, bob, room.RoomID, 12)
		s5 := rawSync(t, alice, lazy, s4.NextBatch)
		jr := s5.Rooms.Join[room.RoomID]
		if got := memberState(s5); !slices.Equal(got, members(dave.UserID)) || !jr.Timeline.Limited {
			t.Fatalf("gapped lazy members %v (limited %v), want dave's leave", got, jr.Timeline.Limited)
		}
		for _, e := range jr.State.Events {
			if e.Type == "m.room.member" && string(e.Content) != `{"membership":"leave"}` {
				t.Fatalf("dave's member event %s", e.Content)
			}
			if e.Type != "m.room.member" {
				t.Fatalf("gapped sync sent unchanged state %s", e.Type)
			}
		}
	})
}

// TestSyncJoinedHistoryCurrentState: under history_visibility joined, a
// join that happened while the user was away is current state and comes
// in the timeline of their next sync (SyTest: "Current state appears in
// timeline in private history").
func TestSyncJoinedHistoryCurrentState(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		creator, syncer, invitee := register(t, srv, "creator"), register(t, srv, "syncer"), register(t, srv, "invitee")
		room, err := creator.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := syncer.JoinRoomByID(ctxT(t), room.RoomID); err != nil {
			t.Fatal(err)
		}
		putState(t, creator, room.RoomID, "m.room.history_visibility", "", map[string]any{"history_visibility": "joined"})
		s1 := rawSync(t, syncer, "", "")
		if _, err := syncer.LeaveRoom(ctxT(t), room.RoomID); err != nil {
			t.Fatal(err)
		}
		if _, err := creator.SendText(ctxT(t), room.RoomID, "while away"); err != nil {
			t.Fatal(err)
		}
		if _, err := invitee.JoinRoomByID(ctxT(t), room.RoomID); err != nil {
			t.Fatal(err)
		}
		if _, err := syncer.JoinRoomByID(ctxT(t), room.RoomID); err != nil {
			t.Fatal(err)
		}
		tl := rawSync(t, syncer, "", s1.NextBatch).Rooms.Join[room.RoomID].Timeline.Events
		sawJoin := false
		for _, e := range tl {
			if e.Type == "m.room.member" && e.StateKey != nil && *e.StateKey == string(invitee.UserID) {
				sawJoin = true
			}
			if e.Type == "m.room.message" {
				t.Fatalf("a message sent while away under joined visibility was shown: %s", e.Content)
			}
		}
		if !sawJoin {
			t.Fatalf("the invitee's join is not in the timeline (%d events)", len(tl))
		}
	})
}

// TestSyncFilterValidation: filters the schema forbids are refused with
// M_BAD_JSON (tests/80torture/10filters.pl); an inline filter works, and a
// timeline limit of 0 means no events (13filtered_sync.pl).
func TestSyncFilterValidation(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice := register(t, srv, "alice")
		u := baseURL(srv) + "/_matrix/client/v3/user/" + url.PathEscape(string(alice.UserID)) + "/filter"
		for _, f := range []string{
			`{"presence":"not_an_object"}`,
			`{"room":{"timeline":"not_an_object"}}`,
			`{"room":{"timeline":{"rooms":"not_a_list"}}}`,
			`{"room":{"timeline":{"types":[0]}}}`,
			`{"room":{"timeline":{"rooms":["not_a_room_id"]}}}`,
			`{"room":{"timeline":{"senders":["not_a_sender_id"]}}}`,
			`{"room":{"state":{"not_senders":["@nodomain"]}}}`,
			`{"room":{"rooms":["x"]}}`,
			`{"room":{"timeline":{"limit":-1}}}`,
			`{"event_format":"xml"}`,
			`{"room":{"state":{"lazy_load_members":"true"}}}`,
		} {
			code, me := do(t, http.DefaultClient, "POST", u, alice.AccessToken, []byte(f), nil)
			if code != 400 || me.Code != "M_BAD_JSON" {
				t.Errorf("filter %s: %d %s, want 400 M_BAD_JSON", f, code, me.Code)
			}
		}
		if code, me := do(t, http.DefaultClient, "GET", baseURL(srv)+"/_matrix/client/v3/sync?filter="+url.QueryEscape(`{"room":{"timeline":{"senders":["x"]}}}`), alice.AccessToken, nil, nil); code != 400 || me.Code != "M_BAD_JSON" {
			t.Errorf("bad inline filter: %d %s", code, me.Code)
		}
		if code, me := do(t, http.DefaultClient, "GET", baseURL(srv)+"/_matrix/client/v3/sync?filter="+url.QueryEscape(`{"room":`), alice.AccessToken, nil, nil); code != 400 || me.Code != "M_BAD_JSON" {
			t.Errorf("inline filter that is not JSON: %d %s", code, me.Code)
		}
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{})
		if err != nil {
			t.Fatal(err)
		}
		jr := rawSync(t, alice, `{"room":{"state":{"types":["m.room.member"]},"timeline":{"limit":0}}}`, "").Rooms.Join[room.RoomID]
		if len(jr.Timeline.Events) != 0 || !jr.Timeline.Limited {
			t.Fatalf("limit 0: %d timeline events, limited %v", len(jr.Timeline.Events), jr.Timeline.Limited)
		}
		if got := stateKeys(jr.State.Events); !slices.Equal(got, members(alice.UserID)) {
			t.Fatalf("inline state filter: %v", got)
		}
	})
}

// TestSyncPresenceOffline: a user whose client syncs with
// set_presence=offline stays offline though they send; their first sync
// without it makes them online, which they and their roommates see in
// their next incremental syncs (SyTest 31sync/05presence.pl).
func TestSyncPresenceOffline(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice, bob := register(t, srv, "alice"), register(t, srv, "bob")
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctxT(t), room.RoomID); err != nil {
			t.Fatal(err)
		}
		presenceOf := func(b syncBody, u id.UserID) string {
			for _, e := range b.Presence.Events {
				if e.Sender == string(u) {
					var c struct {
						Presence string `json:"presence"`
					}
					_ = json.Unmarshal(e.Content, &c)
					return c.Presence
				}
			}
			return ""
		}
		a1 := rawSync(t, alice, "", "", "set_presence", "offline")
		if p := presenceOf(a1, alice.UserID); p != "" && p != "offline" {
			t.Fatalf("alice is %s after set_presence=offline", p)
		}
		if _, err := alice.SendText(ctxT(t), room.RoomID, "quietly"); err != nil {
			t.Fatal(err)
		}
		b1 := rawSync(t, bob, "", "", "set_presence", "offline")
		if p := presenceOf(b1, alice.UserID); p == "online" {
			t.Fatal("alice's send brought her online")
		}
		// Alice syncs for real: she and bob see her online next.
		rawSync(t, alice, "", "")
		if p := presenceOf(rawSync(t, alice, "", a1.NextBatch, "set_presence", "offline"), alice.UserID); p != "online" {
			t.Fatalf("alice sees herself %q, want online", p)
		}
		b2 := rawSync(t, bob, "", b1.NextBatch, "set_presence", "offline")
		if p := presenceOf(b2, alice.UserID); p != "online" {
			t.Fatalf("bob sees alice %q, want online", p)
		}
		// A new roommate's presence comes with their join, changed or not.
		carol := register(t, srv, "carol")
		if _, err := carol.JoinRoomByID(ctxT(t), room.RoomID); err != nil {
			t.Fatal(err)
		}
		if p := presenceOf(rawSync(t, bob, "", b2.NextBatch, "set_presence", "offline"), carol.UserID); p != "offline" {
			t.Fatalf("bob sees new member carol as %q, want offline", p)
		}
	})
}
