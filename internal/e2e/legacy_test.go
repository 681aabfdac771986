package e2e

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/machi-chat/machi/internal/testrig"
)

// legacyEvent is an event of the deprecated endpoints' answers.
type legacyEvent struct {
	Type    string         `json:"type"`
	EventID string         `json:"event_id"`
	RoomID  string         `json:"room_id"`
	Sender  string         `json:"sender"`
	UserID  string         `json:"user_id"`
	Content map[string]any `json:"content"`
}

type legacyEvents struct {
	Chunk []legacyEvent `json:"chunk"`
	Start string        `json:"start"`
	End   string        `json:"end"`
}

type legacyRoom struct {
	RoomID     string        `json:"room_id"`
	Membership string        `json:"membership"`
	Visibility string        `json:"visibility"`
	State      []legacyEvent `json:"state"`
	Messages   struct {
		Chunk []legacyEvent `json:"chunk"`
		Start string        `json:"start"`
		End   string        `json:"end"`
	} `json:"messages"`
	Presence    []legacyEvent `json:"presence"`
	Receipts    []legacyEvent `json:"receipts"`
	AccountData []legacyEvent `json:"account_data"`
}

func legacyURL(c *mautrix.Client, q url.Values, path ...any) string {
	u := c.BuildClientURL(append([]any{"v3"}, path...)...)
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

// getEvents calls GET /events and fails the test on anything but a 200.
func getEvents(t *testing.T, c *mautrix.Client, q url.Values) legacyEvents {
	t.Helper()
	var out legacyEvents
	if code, me := do(t, http.DefaultClient, "GET", legacyURL(c, q, "events"), c.AccessToken, nil, &out); code != 200 {
		t.Fatalf("GET /events?%s: %d %v", q.Encode(), code, me)
	}
	return out
}

// awaitEvent reads /events from *from until fn matches an event.
func awaitEvent(t *testing.T, c *mautrix.Client, from *string, q url.Values, fn func(legacyEvent) bool) legacyEvent {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		qq := url.Values{"from": {*from}, "timeout": {"5000"}}
		for k, v := range q {
			qq[k] = v
		}
		resp := getEvents(t, c, qq)
		*from = resp.End
		for _, ev := range resp.Chunk {
			if fn(ev) {
				return ev
			}
		}
	}
	t.Fatal("timed out waiting for an event in /events")
	return legacyEvent{}
}

func bodyOf(ev legacyEvent) string { b, _ := ev.Content["body"].(string); return b }

// TestLegacyEventStream: GET /events long-polls for room events, typing,
// receipts, presence and account data after its token, catches up in
// order with a small limit, and refuses bad parameters with 400s; GET
// /events/{eventId} serves an event to a member and 404 to anyone else.
func TestLegacyEventStream(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice, bob, carol := register(t, srv, "alice"), register(t, srv, "bob"), register(t, srv, "carol")
		ctx := ctxT(t)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		first := getEvents(t, alice, url.Values{"timeout": {"0"}})
		if first.End == "" || first.Chunk == nil {
			t.Fatalf("first /events: %+v", first)
		}
		from := first.End

		// A long-poll is woken by the message.
		done := make(chan legacyEvents, 1)
		go func() {
			var out legacyEvents
			code, _ := do(t, http.DefaultClient, "GET", legacyURL(alice, url.Values{"from": {from}, "timeout": {"20000"}}, "events"), alice.AccessToken, nil, &out)
			if code != 200 {
				out.Start = "failed"
			}
			done <- out
		}()
		time.Sleep(200 * time.Millisecond)
		sent, err := bob.SendText(ctx, room.RoomID, "防災訓練は10時から")
		if err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-done:
			if len(got.Chunk) == 0 || got.Chunk[0].EventID != sent.EventID.String() || got.Chunk[0].UserID != bob.UserID.String() || got.Chunk[0].RoomID != room.RoomID.String() {
				t.Fatalf("long-poll answered %+v", got)
			}
			from = got.End
		case <-time.After(15 * time.Second):
			t.Fatal("the long-poll was not woken by the message")
		}

		// Typing, receipts, account data and presence come as events too.
		if _, err := bob.UserTyping(ctx, room.RoomID, true, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		ev := awaitEvent(t, alice, &from, nil, func(ev legacyEvent) bool { return ev.Type == "m.typing" })
		if ev.RoomID != room.RoomID.String() {
			t.Errorf("m.typing: %+v", ev)
		}
		if err := bob.MarkRead(ctx, room.RoomID, sent.EventID); err != nil {
			t.Fatal(err)
		}
		ev = awaitEvent(t, alice, &from, nil, func(ev legacyEvent) bool { return ev.Type == "m.receipt" })
		if _, ok := ev.Content[sent.EventID.String()]; !ok || ev.RoomID != room.RoomID.String() {
			t.Errorf("m.receipt: %+v", ev)
		}
		if err := alice.SetRoomAccountData(ctx, room.RoomID, "org.example.legacy", map[string]any{"n": 1}); err != nil {
			t.Fatal(err)
		}
		ev = awaitEvent(t, alice, &from, nil, func(ev legacyEvent) bool { return ev.Type == "org.example.legacy" })
		if ev.RoomID != room.RoomID.String() {
			t.Errorf("room account data: %+v", ev)
		}
		if err := bob.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: "会議中"}); err != nil {
			t.Fatal(err)
		}
		ev = awaitEvent(t, alice, &from, nil, func(ev legacyEvent) bool {
			return ev.Type == "m.presence" && ev.Content["user_id"] == bob.UserID.String() && ev.Content["presence"] == "unavailable"
		})
		if ev.Sender != bob.UserID.String() || ev.Content["status_msg"] != "会議中" {
			t.Errorf("m.presence: %+v", ev)
		}

		// Catching up with limit=2: every message, once, in order.
		var want []string
		for _, b := range []string{"一", "二", "三", "四", "五"} {
			r, err := bob.SendText(ctx, room.RoomID, b)
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, r.EventID.String())
		}
		var got []string
		for i := 0; i < 10 && len(got) < len(want); i++ {
			resp := getEvents(t, alice, url.Values{"from": {from}, "timeout": {"1000"}, "limit": {"2"}})
			from = resp.End
			n := 0
			for _, ev := range resp.Chunk {
				if ev.Type == "m.room.message" {
					got = append(got, ev.EventID)
					n++
				}
			}
			if n > 2 {
				t.Errorf("limit=2 gave %d messages", n)
			}
		}
		deepEq(t, "messages caught up", got, want)

		// Bad parameters.
		for _, q := range []url.Values{
			{"from": {"bogus"}}, {"from": {"s12_x"}}, {"limit": {"-2"}}, {"limit": {"hello"}}, {"timeout": {"hello"}},
		} {
			if code, me := do(t, http.DefaultClient, "GET", legacyURL(alice, q, "events"), alice.AccessToken, nil, nil); code != 400 || me.Code != "M_INVALID_PARAM" {
				t.Errorf("GET /events?%s: %d %v", q.Encode(), code, me)
			}
		}

		// GET /events/{eventId}.
		var one legacyEvent
		if code, me := do(t, http.DefaultClient, "GET", legacyURL(alice, nil, "events", sent.EventID), alice.AccessToken, nil, &one); code != 200 || bodyOf(one) != "防災訓練は10時から" {
			t.Errorf("GET /events/{eventId}: %d %v %+v", code, me, one)
		}
		for _, id := range []string{sent.EventID.String(), "$nosuchevent"} {
			if code, me := do(t, http.DefaultClient, "GET", legacyURL(carol, nil, "events", id), carol.AccessToken, nil, nil); code != 404 || me.Code != "M_NOT_FOUND" {
				t.Errorf("carol GET /events/%s: %d %v", id, code, me)
			}
		}
	})
}

// TestLegacyInitialSync: GET /initialSync lists joined rooms with their
// state, latest messages, visibility, account data, receipts and presence,
// left rooms only with archived=true and as they were at the leave; GET
// /rooms/{roomId}/initialSync serves the same for one room, a left room
// up to the leave, and 403 to someone who was never in it.
func TestLegacyInitialSync(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice, bob, carol := register(t, srv, "alice"), register(t, srv, "bob"), register(t, srv, "carol")
		ctx := ctxT(t)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", Topic: "庁内連絡"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		before, err := alice.SendText(ctx, room.RoomID, "退室前")
		if err != nil {
			t.Fatal(err)
		}
		if err := bob.MarkRead(ctx, room.RoomID, before.EventID); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.LeaveRoom(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendText(ctx, room.RoomID, "退室後"); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendStateEvent(ctx, room.RoomID, event.StateTopic, "", &event.TopicEventContent{Topic: "退室後の題"}); err != nil {
			t.Fatal(err)
		}
		if err := alice.SetRoomAccountData(ctx, room.RoomID, "org.example.note", map[string]any{"n": 1}); err != nil {
			t.Fatal(err)
		}

		type initial struct {
			End      string        `json:"end"`
			Rooms    []legacyRoom  `json:"rooms"`
			Presence []legacyEvent `json:"presence"`
			Receipts []legacyEvent `json:"receipts"`
		}
		find := func(rs []legacyRoom, roomID id.RoomID) *legacyRoom {
			for i := range rs {
				if rs[i].RoomID == roomID.String() {
					return &rs[i]
				}
			}
			return nil
		}
		topic := func(r *legacyRoom) string {
			for _, ev := range r.State {
				if ev.Type == "m.room.topic" {
					s, _ := ev.Content["topic"].(string)
					return s
				}
			}
			return ""
		}
		var a initial
		if code, me := do(t, http.DefaultClient, "GET", legacyURL(alice, url.Values{"limit": {"3"}}, "initialSync"), alice.AccessToken, nil, &a); code != 200 {
			t.Fatalf("alice /initialSync: %d %v", code, me)
		}
		r := find(a.Rooms, room.RoomID)
		if r == nil || r.Membership != "join" || r.Visibility != "public" || topic(r) != "退室後の題" || len(r.Messages.Chunk) != 3 || r.Messages.End == "" {
			t.Fatalf("alice's room: %+v", r)
		}
		if len(r.AccountData) != 1 || r.AccountData[0].Type != "org.example.note" {
			t.Errorf("alice's room account data: %+v", r.AccountData)
		}
		if len(a.Receipts) != 1 || a.Receipts[0].RoomID != room.RoomID.String() {
			t.Errorf("alice's receipts: %+v", a.Receipts)
		}
		selfPresence := false
		for _, p := range a.Presence {
			selfPresence = selfPresence || p.Content["user_id"] == alice.UserID.String()
		}
		if !selfPresence {
			t.Errorf("alice's presence is not in %+v", a.Presence)
		}
		// The end token streams on with /events.
		if resp := getEvents(t, alice, url.Values{"from": {a.End}, "timeout": {"0"}}); len(resp.Chunk) != 0 {
			t.Errorf("/events after initialSync's end: %+v", resp.Chunk)
		}
		if code, me := do(t, http.DefaultClient, "GET", legacyURL(alice, url.Values{"limit": {"0"}}, "initialSync"), alice.AccessToken, nil, &a); code != 200 || len(find(a.Rooms, room.RoomID).Messages.Chunk) != 0 {
			t.Errorf("/initialSync?limit=0: %d %v", code, me)
		}
		if code, me := do(t, http.DefaultClient, "GET", legacyURL(alice, url.Values{"limit": {"hello"}}, "initialSync"), alice.AccessToken, nil, nil); code != 400 {
			t.Errorf("/initialSync?limit=hello: %d %v", code, me)
		}

		// Bob left: only with archived=true, as it was when he left.
		var b initial
		if code, me := do(t, http.DefaultClient, "GET", legacyURL(bob, nil, "initialSync"), bob.AccessToken, nil, &b); code != 200 || find(b.Rooms, room.RoomID) != nil {
			t.Errorf("bob /initialSync without archived: %d %v %+v", code, me, b.Rooms)
		}
		if code, me := do(t, http.DefaultClient, "GET", legacyURL(bob, url.Values{"archived": {"true"}, "limit": {"2"}}, "initialSync"), bob.AccessToken, nil, &b); code != 200 {
			t.Fatalf("bob /initialSync archived: %d %v", code, me)
		}
		checkLeft := func(what string, r *legacyRoom) {
			t.Helper()
			if r == nil || r.Membership != "leave" || topic(r) != "庁内連絡" || len(r.Messages.Chunk) != 2 ||
				bodyOf(r.Messages.Chunk[0]) != "退室前" || r.Messages.Chunk[1].Type != "m.room.member" {
				t.Errorf("%s: %+v", what, r)
			}
		}
		checkLeft("bob's archived room", find(b.Rooms, room.RoomID))
		var one legacyRoom
		if code, me := do(t, http.DefaultClient, "GET", legacyURL(bob, url.Values{"limit": {"2"}}, "rooms", room.RoomID, "initialSync"), bob.AccessToken, nil, &one); code != 200 {
			t.Fatalf("bob room initialSync: %d %v", code, me)
		}
		checkLeft("bob's room initialSync", &one)
		if len(one.Presence) != 0 || len(one.Receipts) != 0 {
			t.Errorf("bob's left room has presence %v, receipts %v", one.Presence, one.Receipts)
		}
		// Alice's room initialSync has the members' presence and receipts.
		if code, me := do(t, http.DefaultClient, "GET", legacyURL(alice, nil, "rooms", room.RoomID, "initialSync"), alice.AccessToken, nil, &one); code != 200 || one.Membership != "join" || len(one.Receipts) != 1 || len(one.Presence) == 0 {
			t.Errorf("alice room initialSync: %d %v %+v", code, me, one)
		}
		// Carol was never in it.
		if code, me := do(t, http.DefaultClient, "GET", legacyURL(carol, nil, "rooms", room.RoomID, "initialSync"), carol.AccessToken, nil, nil); code != 403 || me.Code != "M_FORBIDDEN" {
			t.Errorf("carol room initialSync: %d %v", code, me)
		}
	})
}

// TestWorldReadable: someone who is not in a world_readable room reads
// it — /messages, /state, /state/{type}/{key}, /event, /context, room
// initialSync — and peeks into it with /events?room_id=, seeing only what
// was sent while it was world_readable (and the change to it); in a room
// that is not world_readable each of these is refused.
func TestWorldReadable(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice, carol, dave := register(t, srv, "alice"), register(t, srv, "carol"), register(t, srv, "dave")
		ctx := ctxT(t)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dave.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		private, err := alice.SendText(ctx, room.RoomID, "共有のみ")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dave.LeaveRoom(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendText(ctx, room.RoomID, "退室後の共有"); err != nil {
			t.Fatal(err)
		}
		get := func(c *mautrix.Client, out any, q url.Values, path ...any) (int, matrixErr) {
			return do(t, http.DefaultClient, "GET", legacyURL(c, q, path...), c.AccessToken, nil, out)
		}
		reads := [][]any{
			{"rooms", room.RoomID, "messages"},
			{"rooms", room.RoomID, "state"},
			{"rooms", room.RoomID, "state", "m.room.create", ""},
			{"rooms", room.RoomID, "event", private.EventID},
			{"rooms", room.RoomID, "initialSync"},
		}
		q := url.Values{"dir": {"b"}}
		for _, p := range reads {
			if code, _ := get(carol, nil, q, p...); code != 403 && code != 404 {
				t.Errorf("carol GET %v of a shared room: %d", p, code)
			}
		}
		if code, me := get(carol, nil, url.Values{"room_id": {room.RoomID.String()}, "timeout": {"0"}}, "events"); code != 403 {
			t.Errorf("carol peeks into a shared room: %d %v", code, me)
		}

		hv, err := alice.SendStateEvent(ctx, room.RoomID, event.StateHistoryVisibility, "",
			&event.HistoryVisibilityEventContent{HistoryVisibility: event.HistoryVisibilityWorldReadable})
		if err != nil {
			t.Fatal(err)
		}
		public, err := alice.SendText(ctx, room.RoomID, "公開")
		if err != nil {
			t.Fatal(err)
		}
		var msgs struct {
			Chunk []legacyEvent `json:"chunk"`
		}
		if code, me := get(carol, &msgs, q, "rooms", room.RoomID, "messages"); code != 200 {
			t.Fatalf("carol /messages: %d %v", code, me)
		}
		var ids []string
		for _, ev := range msgs.Chunk {
			ids = append(ids, ev.EventID)
		}
		deepEq(t, "carol's /messages", ids, []string{public.EventID.String(), hv.EventID.String()})
		for _, p := range [][]any{
			{"rooms", room.RoomID, "state"},
			{"rooms", room.RoomID, "state", "m.room.member", alice.UserID},
			{"rooms", room.RoomID, "event", public.EventID},
			{"rooms", room.RoomID, "context", public.EventID},
		} {
			if code, me := get(carol, nil, nil, p...); code != 200 {
				t.Errorf("carol GET %v: %d %v", p, code, me)
			}
		}
		if code, _ := get(carol, nil, nil, "rooms", room.RoomID, "event", private.EventID); code != 404 {
			t.Errorf("carol reads an event sent before the room was world_readable: %d", code)
		}
		// Dave, who left while the room was shared, reads what was sent
		// up to his leave and from the switch to world_readable, not what
		// was shared in between.
		if code, me := get(dave, &msgs, q, "rooms", room.RoomID, "messages"); code != 200 {
			t.Fatalf("dave /messages: %d %v", code, me)
		}
		bodies := map[string]bool{}
		for _, ev := range msgs.Chunk {
			bodies[bodyOf(ev)] = true
		}
		if !bodies["共有のみ"] || !bodies["公開"] || bodies["退室後の共有"] {
			t.Errorf("dave's /messages: %v", bodies)
		}
		var one legacyRoom
		if code, me := get(carol, &one, nil, "rooms", room.RoomID, "initialSync"); code != 200 {
			t.Fatalf("carol room initialSync: %d %v", code, me)
		}
		ids = nil
		for _, ev := range one.Messages.Chunk {
			ids = append(ids, ev.EventID)
		}
		deepEq(t, "carol's room initialSync messages", ids, []string{hv.EventID.String(), public.EventID.String()})
		if one.Membership != "" || len(one.State) == 0 {
			t.Errorf("carol room initialSync: %+v", one)
		}

		// Peeking from the room initialSync's end: woken by a new message.
		from := one.Messages.End
		peek := url.Values{"room_id": {room.RoomID.String()}}
		done := make(chan legacyEvent, 1)
		go func() {
			done <- awaitEvent(t, carol, &from, peek, func(ev legacyEvent) bool { return ev.Type == "m.room.message" })
		}()
		time.Sleep(200 * time.Millisecond)
		start := time.Now()
		later, err := alice.SendText(ctx, room.RoomID, "覗き見")
		if err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-done:
			if ev.EventID != later.EventID.String() {
				t.Errorf("peek: %+v", ev)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("the peek took %v: not woken", d)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("peek saw nothing")
		}
		if _, err := alice.UserTyping(ctx, room.RoomID, true, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		ev := awaitEvent(t, carol, &from, peek, func(ev legacyEvent) bool { return ev.Type == "m.typing" })
		if users, _ := ev.Content["user_ids"].([]any); len(users) != 1 || users[0] != alice.UserID.String() {
			t.Errorf("peeked m.typing: %+v", ev)
		}
		// Carol is still not a member: joined_members and sending stay closed.
		if code, _ := get(carol, nil, nil, "rooms", room.RoomID, "joined_members"); code != 403 {
			t.Errorf("carol joined_members: %d", code)
		}
		if _, err := carol.SendText(ctx, room.RoomID, "書けない"); err == nil {
			t.Error("carol sent to a room she is not in")
		}
	})
}
