package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/machi-chat/machi/internal/testrig"
)

// relWorld is a room with a thread, a reaction, edits, references and a
// poll, as three members see it.
type relWorld struct {
	srv              string
	alice, bob, dave *mautrix.Client
	carol            *mautrix.Client // never in the room
	room             id.RoomID
	root, t1, t2     id.EventID // alice's root; bob's and alice's replies
	react, edit      id.EventID
	react2           id.EventID // bob's second reaction, another key
	bobEdit, ref     id.EventID // an edit of alice's root by bob (invalid)
	refT1            id.EventID // a reference to t1: two levels below root
	rootB, b1        id.EventID // bob's thread, replied to by bob
	poll             id.EventID
	votes            []id.EventID
}

func send(t *testing.T, c *mautrix.Client, room id.RoomID, typ event.Type, content any) id.EventID {
	t.Helper()
	resp, err := c.SendMessageEvent(ctxT(t), room, typ, content)
	if err != nil {
		t.Fatalf("%s sends %s: %v", c.UserID, typ.Type, err)
	}
	return resp.EventID
}

func text(body string, rel *event.RelatesTo) map[string]any {
	c := map[string]any{"msgtype": "m.text", "body": body}
	if rel != nil {
		c["m.relates_to"] = rel
	}
	return c
}

func newRelWorld(t *testing.T, engine string) *relWorld {
	srv := startServer(t, engine)
	w := &relWorld{srv: baseURL(srv), alice: register(t, srv, "alice"), bob: register(t, srv, "bob"),
		dave: register(t, srv, "dave"), carol: register(t, srv, "carol")}
	ctx := ctxT(t)
	room, err := w.alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	w.room = room.RoomID
	for _, c := range []*mautrix.Client{w.bob, w.dave} {
		if _, err := c.JoinRoomByID(ctx, w.room); err != nil {
			t.Fatal(err)
		}
	}
	r := w.room
	w.root = send(t, w.alice, r, event.EventMessage, text("root", nil))
	w.t1 = send(t, w.bob, r, event.EventMessage, text("reply one", (&event.RelatesTo{}).SetThread(w.root, w.root)))
	w.react = send(t, w.bob, r, event.EventReaction, map[string]any{"m.relates_to": (&event.RelatesTo{}).SetAnnotation(w.root, "👍")})
	w.edit = send(t, w.alice, r, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "* root, edited",
		"m.new_content": text("root, edited", nil), "m.relates_to": (&event.RelatesTo{}).SetReplace(w.root)})
	w.bobEdit = send(t, w.bob, r, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "* hijacked",
		"m.new_content": text("hijacked", nil), "m.relates_to": (&event.RelatesTo{}).SetReplace(w.root)})
	w.rootB = send(t, w.bob, r, event.EventMessage, text("bob's root", nil))
	w.t2 = send(t, w.alice, r, event.EventMessage, text("reply two", (&event.RelatesTo{}).SetThread(w.root, w.t1)))
	w.ref = send(t, w.alice, r, event.EventMessage, text("see above", &event.RelatesTo{Type: event.RelReference, EventID: w.root}))
	w.refT1 = send(t, w.bob, r, event.EventMessage, text("about reply one", &event.RelatesTo{Type: event.RelReference, EventID: w.t1}))
	w.b1 = send(t, w.bob, r, event.EventMessage, text("bob replies to himself", (&event.RelatesTo{}).SetThread(w.rootB, w.rootB)))

	// A poll (MSC3381, as Element sends it): responses are m.reference
	// relations of the poll start, relayed like any event.
	w.poll = send(t, w.alice, r, event.EventUnstablePollStart, map[string]any{
		"org.matrix.msc3381.poll.start": map[string]any{"kind": "org.matrix.msc3381.poll.disclosed", "max_selections": 1,
			"question": map[string]any{"org.matrix.msc1767.text": "お昼は?"},
			"answers":  []map[string]any{{"id": "a", "org.matrix.msc1767.text": "そば"}, {"id": "b", "org.matrix.msc1767.text": "うどん"}}},
		"org.matrix.msc1767.text": "お昼は? そば / うどん"})
	for _, c := range []*mautrix.Client{w.bob, w.dave} {
		w.votes = append(w.votes, send(t, c, r, event.EventUnstablePollResponse, map[string]any{
			"m.relates_to":                     map[string]any{"rel_type": "m.reference", "event_id": w.poll},
			"org.matrix.msc3381.poll.response": map[string]any{"answers": []string{"a"}}}))
	}
	// Bob's own room, whose events name the root as their parent: they
	// must not show up in the root's room.
	elsewhere, err := w.bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
	if err != nil {
		t.Fatal(err)
	}
	send(t, w.bob, elsewhere.RoomID, event.EventMessage, text("forged reply", (&event.RelatesTo{}).SetThread(w.root, w.root)))
	send(t, w.bob, elsewhere.RoomID, event.EventMessage, text("forged reference", &event.RelatesTo{Type: event.RelReference, EventID: w.root}))
	send(t, w.bob, elsewhere.RoomID, event.EventReaction, map[string]any{"m.relates_to": (&event.RelatesTo{}).SetAnnotation(w.root, "👍")})
	return w
}

// relationsOf decodes a raw event's bundled aggregations.
func relationsOf(t *testing.T, ev *event.Event) *event.Relations {
	t.Helper()
	if ev == nil {
		t.Fatal("no event")
	}
	return ev.Unsigned.Relations
}

// checkRootBundle checks root's bundled aggregations as viewer sees them.
func (w *relWorld) checkRootBundle(t *testing.T, where string, ev *event.Event, participated bool) {
	t.Helper()
	rel := relationsOf(t, ev)
	if rel == nil || rel.Thread == nil {
		t.Fatalf("%s: root has no m.thread aggregation: %+v", where, ev.Unsigned)
	}
	if got, want := rel.Thread.Count, 2; got != want {
		t.Errorf("%s: thread count = %d, want %d", where, got, want)
	}
	if rel.Thread.LatestEvent == nil || rel.Thread.LatestEvent.ID != w.t2 {
		t.Errorf("%s: latest_event = %+v, want %s", where, rel.Thread.LatestEvent, w.t2)
	}
	if rel.Thread.CurrentUserParticipated != participated {
		t.Errorf("%s: current_user_participated = %v, want %v", where, rel.Thread.CurrentUserParticipated, participated)
	}
	if rel.LatestEdit == nil || rel.LatestEdit.ID != w.edit {
		t.Errorf("%s: m.replace = %+v, want alice's edit %s (bob's is not a valid replacement)", where, rel.LatestEdit, w.edit)
	}
	if got := rel.References.GetEventIDs(); !slices.Equal(got, []id.EventID{w.ref}) {
		t.Errorf("%s: m.reference = %v, want [%s]", where, got, w.ref)
	}
	if body, _ := ev.Content.Raw["body"].(string); body != "root" {
		t.Errorf("%s: root's content was rewritten: body %q", where, body)
	}
}

func (w *relWorld) relations(t *testing.T, c *mautrix.Client, parent id.EventID, req *mautrix.ReqGetRelations) *mautrix.RespGetRelations {
	t.Helper()
	resp, err := c.GetRelations(ctxT(t), w.room, parent, req)
	if err != nil {
		t.Fatalf("relations of %s (%+v): %v", parent, req, err)
	}
	return resp
}

func ids(evs []*event.Event) []id.EventID {
	out := []id.EventID{}
	for _, ev := range evs {
		out = append(out, ev.ID)
	}
	return out
}

// TestRelations: threads, reactions, edits, references and polls, through
// /relations, /threads, and the bundled aggregations of /event, /messages,
// /context and /sync; pagination both ways; threaded receipts; redactions
// that undo relations; and the error paths.
func TestRelations(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		w := newRelWorld(t, engine)
		ctx := ctxT(t)

		t.Run("bundles", func(t *testing.T) { w.testBundles(t, "from memory") })
		t.Run("relations", w.testRelations)
		t.Run("filters", w.testFilters)
		t.Run("threads", w.testThreads)
		t.Run("receipts", w.testReceipts)
		t.Run("pinned", w.testPinned)
		t.Run("errors", w.testErrors)

		// Push the thread out of the rooms' in-memory window: the same
		// aggregations now come from the database.
		for i := 0; i < 70; i++ {
			send(t, w.dave, w.room, event.EventMessage, text(fmt.Sprintf("filler %d", i), nil))
		}
		t.Run("bundles from the database", func(t *testing.T) { w.testBundles(t, "from the database") })
		t.Run("threads from the database", w.testThreads)
		t.Run("filters from the database", w.testFilters)

		// Redactions undo relations: t2 leaves the thread, the reaction
		// goes and bob may react again.
		if _, err := w.alice.RedactEvent(ctx, w.room, w.t2); err != nil {
			t.Fatal(err)
		}
		if _, err := w.bob.RedactEvent(ctx, w.room, w.react); err != nil {
			t.Fatal(err)
		}
		ev, err := w.bob.GetEvent(ctx, w.room, w.root)
		if err != nil {
			t.Fatal(err)
		}
		if th := relationsOf(t, ev).GetThread(); th == nil || th.Count != 1 || th.LatestEvent == nil || th.LatestEvent.ID != w.t1 {
			t.Errorf("thread after redacting t2: %+v, want count 1, latest %s", th, w.t1)
		}
		got := ids(w.relations(t, w.bob, w.root, &mautrix.ReqGetRelations{RelationType: event.RelAnnotation}).Chunk)
		if !slices.Equal(got, []id.EventID{w.react2}) {
			t.Errorf("annotations after redacting the 👍 = %v, want only the 🎉 %s", got, w.react2)
		}
		if _, err := w.bob.SendReaction(ctx, w.room, w.root, "👍"); err != nil {
			t.Errorf("react again after redacting the first: %v", err)
		}
		// Redacting the original hides its edit.
		if _, err := w.alice.RedactEvent(ctx, w.room, w.root); err != nil {
			t.Fatal(err)
		}
		if ev, err = w.bob.GetEvent(ctx, w.room, w.root); err != nil {
			t.Fatal(err)
		}
		if e := relationsOf(t, ev).GetLatestEdit(); e != nil {
			t.Errorf("a redacted event still bundles its edit %s", e.ID)
		}
		t.Run("incremental sync", w.testIncrementalSync)
	})
}

func (w *relWorld) testBundles(t *testing.T, how string) {
	ctx := ctxT(t)
	// /event, for each viewer: alice sent the root and t2, bob sent t1,
	// dave took no part.
	for _, v := range []struct {
		c            *mautrix.Client
		participated bool
	}{{w.alice, true}, {w.bob, true}, {w.dave, false}} {
		ev, err := v.c.GetEvent(ctx, w.room, w.root)
		if err != nil {
			t.Fatal(err)
		}
		w.checkRootBundle(t, how+": /event for "+v.c.UserID.String(), ev, v.participated)
	}
	// A poll bundles its responses as references.
	poll, err := w.bob.GetEvent(ctx, w.room, w.poll)
	if err != nil {
		t.Fatal(err)
	}
	if got := relationsOf(t, poll).GetReferences().GetEventIDs(); !slices.Equal(got, w.votes) {
		t.Errorf("%s: poll references = %v, want %v", how, got, w.votes)
	}
	// An event with no children bundles nothing.
	if ev, err := w.bob.GetEvent(ctx, w.room, w.ref); err != nil || ev.Unsigned.Relations != nil {
		t.Errorf("%s: childless event: %v, unsigned %+v", how, err, ev.Unsigned)
	}

	// /messages.
	var found *event.Event
	for from, page := "", 0; page < 10 && found == nil; page++ {
		msgs, err := w.bob.Messages(ctx, w.room, from, "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range msgs.Chunk {
			if ev.ID == w.root {
				found = ev
			}
		}
		if msgs.End == "" {
			break
		}
		from = msgs.End
	}
	w.checkRootBundle(t, how+": /messages", found, true)

	// /context, on the root and around it.
	cx, err := w.bob.Context(ctx, w.room, w.root, nil, 4)
	if err != nil {
		t.Fatal(err)
	}
	w.checkRootBundle(t, how+": /context event", cx.Event, true)
	cx, err = w.bob.Context(ctx, w.room, w.t1, nil, 4)
	if err != nil {
		t.Fatal(err)
	}
	found = nil
	for _, ev := range cx.EventsBefore {
		if ev.ID == w.root {
			found = ev
		}
	}
	w.checkRootBundle(t, how+": /context events_before", found, true)
	if got := relationsOf(t, cx.Event).GetReferences().GetEventIDs(); !slices.Equal(got, []id.EventID{w.refT1}) {
		t.Errorf("%s: t1's references in /context = %v", how, got)
	}

	// /sync: an initial sync whose timeline reaches back to the root.
	resp, err := w.dave.SyncRequest(ctx, 0, "", `{"room":{"timeline":{"limit":200}}}`, false, "")
	if err != nil {
		t.Fatal(err)
	}
	found = nil
	for _, ev := range resp.Rooms.Join[w.room].Timeline.Events {
		if ev.ID == w.root {
			found = ev
		}
	}
	w.checkRootBundle(t, how+": initial /sync", found, false)
}

func (w *relWorld) testRelations(t *testing.T) {
	all := []id.EventID{w.ref, w.t2, w.bobEdit, w.edit, w.react, w.t1} // newest first
	got := w.relations(t, w.bob, w.root, &mautrix.ReqGetRelations{})
	if !slices.Equal(ids(got.Chunk), all) {
		t.Fatalf("children of root = %v, want %v", ids(got.Chunk), all)
	}
	if got.NextBatch != "" || got.PrevBatch != "" || got.RecursionDepth != 0 {
		t.Errorf("one whole page: next %q prev %q depth %d", got.NextBatch, got.PrevBatch, got.RecursionDepth)
	}
	for _, tc := range []struct {
		req  mautrix.ReqGetRelations
		want []id.EventID
	}{
		{mautrix.ReqGetRelations{RelationType: event.RelThread}, []id.EventID{w.t2, w.t1}},
		{mautrix.ReqGetRelations{RelationType: event.RelThread, Dir: mautrix.DirectionForward}, []id.EventID{w.t1, w.t2}},
		{mautrix.ReqGetRelations{RelationType: event.RelReplace, EventType: event.EventMessage}, []id.EventID{w.bobEdit, w.edit}},
		{mautrix.ReqGetRelations{RelationType: event.RelAnnotation, EventType: event.EventReaction}, []id.EventID{w.react}},
		{mautrix.ReqGetRelations{RelationType: event.RelAnnotation, EventType: event.EventMessage}, []id.EventID{}},
		{mautrix.ReqGetRelations{RelationType: "org.example.none"}, []id.EventID{}},
	} {
		if got := ids(w.relations(t, w.bob, w.root, &tc.req).Chunk); !slices.Equal(got, tc.want) {
			t.Errorf("relations %+v = %v, want %v", tc.req, got, tc.want)
		}
	}
	// The thread's events carry their own bundles (t1 is referenced).
	for _, ev := range w.relations(t, w.bob, w.root, &mautrix.ReqGetRelations{RelationType: event.RelThread}).Chunk {
		if ev.ID == w.t1 && !slices.Equal(relationsOf(t, ev).GetReferences().GetEventIDs(), []id.EventID{w.refT1}) {
			t.Errorf("t1 in /relations lacks its reference bundle: %+v", ev.Unsigned)
		}
	}

	// Pages of two, both ways, cover everything once and stop.
	for _, dir := range []mautrix.Direction{mautrix.DirectionBackward, mautrix.DirectionForward} {
		var seen []id.EventID
		from := ""
		for page := 0; ; page++ {
			if page > 5 {
				t.Fatalf("dir %c: pagination does not end", dir)
			}
			resp := w.relations(t, w.bob, w.root, &mautrix.ReqGetRelations{Dir: dir, Limit: 2, From: from})
			if len(resp.Chunk) > 2 {
				t.Fatalf("dir %c: page of %d with limit 2", dir, len(resp.Chunk))
			}
			if from != "" && resp.PrevBatch != from {
				t.Errorf("dir %c: prev_batch %q, want the from token %q", dir, resp.PrevBatch, from)
			}
			seen = append(seen, ids(resp.Chunk)...)
			if resp.NextBatch == "" {
				break
			}
			from = resp.NextBatch
		}
		want := slices.Clone(all)
		if dir == mautrix.DirectionForward {
			slices.Reverse(want)
		}
		if !slices.Equal(seen, want) {
			t.Errorf("dir %c pages = %v, want %v", dir, seen, want)
		}
	}
	// to stops a page: forwards from the start to the end of the first
	// page of two gives just those two; backwards from the end of that
	// page to nothing gives the first.
	first := w.relations(t, w.bob, w.root, &mautrix.ReqGetRelations{Dir: mautrix.DirectionForward, Limit: 2})
	if got := ids(w.relations(t, w.bob, w.root, &mautrix.ReqGetRelations{Dir: mautrix.DirectionForward, To: first.NextBatch}).Chunk); !slices.Equal(got, []id.EventID{w.t1, w.react}) {
		t.Errorf("forwards up to the first page's end = %v", got)
	}
	if got := ids(w.relations(t, w.bob, w.root, &mautrix.ReqGetRelations{From: first.NextBatch}).Chunk); !slices.Equal(got, []id.EventID{w.react, w.t1}) {
		t.Errorf("backwards from the first page's end = %v", got)
	}

	// recurse follows the reference to t1 as well.
	rec := w.relations(t, w.bob, w.root, &mautrix.ReqGetRelations{Recurse: true})
	if want := append([]id.EventID{w.refT1}, all...); !slices.Equal(ids(rec.Chunk), want) {
		t.Errorf("recursive children = %v, want %v", ids(rec.Chunk), want)
	}
	if rec.RecursionDepth != 3 {
		t.Errorf("recursion_depth = %d, want 3", rec.RecursionDepth)
	}
	// Poll responses, by relation and type.
	votes := w.relations(t, w.alice, w.poll, &mautrix.ReqGetRelations{RelationType: event.RelReference, EventType: event.EventUnstablePollResponse, Dir: mautrix.DirectionForward})
	if !slices.Equal(ids(votes.Chunk), w.votes) {
		t.Errorf("poll responses = %v, want %v", ids(votes.Chunk), w.votes)
	}
}

type threadsResp struct {
	Chunk     []*event.Event `json:"chunk"`
	NextBatch string         `json:"next_batch"`
}

func (w *relWorld) threads(t *testing.T, c *mautrix.Client, query string) threadsResp {
	t.Helper()
	var out threadsResp
	code, me := do(t, http.DefaultClient, "GET", w.srv+"/_matrix/client/v1/rooms/"+url.PathEscape(string(w.room))+"/threads?"+query, c.AccessToken, nil, &out)
	if code != 200 {
		t.Fatalf("threads?%s: %d %+v", query, code, me)
	}
	return out
}

func (w *relWorld) testThreads(t *testing.T) {
	// rootB's latest reply (b1) is newer than root's (t2).
	if got := ids(w.threads(t, w.dave, "").Chunk); !slices.Equal(got, []id.EventID{w.rootB, w.root}) {
		t.Errorf("all threads = %v, want [rootB root]", got)
	}
	for _, tc := range []struct {
		c    *mautrix.Client
		want []id.EventID
	}{{w.alice, []id.EventID{w.root}}, {w.bob, []id.EventID{w.rootB, w.root}}, {w.dave, []id.EventID{}}} {
		if got := ids(w.threads(t, tc.c, "include=participated").Chunk); !slices.Equal(got, tc.want) {
			t.Errorf("threads %s participated in = %v, want %v", tc.c.UserID, got, tc.want)
		}
	}
	page := w.threads(t, w.bob, "limit=1")
	if !slices.Equal(ids(page.Chunk), []id.EventID{w.rootB}) || page.NextBatch == "" {
		t.Fatalf("first page of one: %v next %q", ids(page.Chunk), page.NextBatch)
	}
	if th := relationsOf(t, page.Chunk[0]).GetThread(); th == nil || th.Count != 1 || !th.CurrentUserParticipated || th.LatestEvent.ID != w.b1 {
		t.Errorf("rootB's bundle in /threads: %+v", th)
	}
	page = w.threads(t, w.bob, "limit=1&from="+url.QueryEscape(page.NextBatch))
	if !slices.Equal(ids(page.Chunk), []id.EventID{w.root}) {
		t.Fatalf("second page: %v", ids(page.Chunk))
	}
	w.checkRootBundle(t, "/threads", page.Chunk[0], true)
	if page.NextBatch != "" {
		page = w.threads(t, w.bob, "limit=1&from="+url.QueryEscape(page.NextBatch))
		if len(page.Chunk) != 0 || page.NextBatch != "" {
			t.Errorf("past the last thread: %v next %q", ids(page.Chunk), page.NextBatch)
		}
	}
}

func (w *relWorld) testReceipts(t *testing.T) {
	ctx := ctxT(t)
	since := waitFor(t, w.alice, "", func(*mautrix.RespSync) bool { return true })
	if err := w.bob.SendReceipt(ctx, w.room, w.t1, event.ReceiptTypeRead, &mautrix.ReqSendReceipt{ThreadID: string(w.root)}); err != nil {
		t.Fatalf("threaded receipt: %v", err)
	}
	if err := w.bob.SendReceipt(ctx, w.room, w.rootB, event.ReceiptTypeRead, &mautrix.ReqSendReceipt{ThreadID: "main"}); err != nil {
		t.Fatalf("main-timeline receipt: %v", err)
	}
	// Alice's /sync carries both, each with its thread_id.
	want := map[id.EventID]string{w.t1: string(w.root), w.rootB: "main"}
	got := map[id.EventID]string{}
	waitFor(t, w.alice, since, func(r *mautrix.RespSync) bool {
		for _, ev := range r.Rooms.Join[w.room].Ephemeral.Events {
			if ev.Type != event.EphemeralEventReceipt {
				continue
			}
			_ = ev.Content.ParseRaw(ev.Type)
			for eid, byType := range *ev.Content.AsReceipt() {
				if rc, ok := byType[event.ReceiptTypeRead][w.bob.UserID]; ok {
					got[eid] = rc.ThreadID.String()
				}
			}
		}
		return len(got) == len(want)
	})
	for eid, th := range want {
		if got[eid] != th {
			t.Errorf("receipt on %s: thread_id %q, want %q", eid, got[eid], th)
		}
	}
	base := w.srv + "/_matrix/client/v3/rooms/" + url.PathEscape(string(w.room)) + "/receipt/"
	for _, tc := range []struct {
		name, typ string
		ev        id.EventID
		body      string
	}{
		{"thread_id not a root", "m.read", w.refT1, `{"thread_id":"` + string(w.t1) + `"}`},
		{"event not in the thread", "m.read", w.rootB, `{"thread_id":"` + string(w.root) + `"}`},
		{"thread_id unknown", "m.read", w.t1, `{"thread_id":"$nope"}`},
		{"thread_id empty", "m.read", w.t1, `{"thread_id":""}`},
		{"thread_id not a string", "m.read", w.t1, `{"thread_id":5}`},
		{"fully_read threaded", "m.fully_read", w.t1, `{"thread_id":"` + string(w.root) + `"}`},
	} {
		code, me := do(t, http.DefaultClient, "POST", base+tc.typ+"/"+url.PathEscape(string(tc.ev)), w.bob.AccessToken, []byte(tc.body), nil)
		if code != 400 || me.Code != "M_INVALID_PARAM" {
			t.Errorf("%s: %d %+v, want 400 M_INVALID_PARAM", tc.name, code, me)
		}
	}
}

func (w *relWorld) testPinned(t *testing.T) {
	ctx := ctxT(t)
	if _, err := w.alice.SendStateEvent(ctx, w.room, event.StatePinnedEvents, "", &event.PinnedEventsEventContent{Pinned: []id.EventID{w.root, w.poll}}); err != nil {
		t.Fatal(err)
	}
	var pinned event.PinnedEventsEventContent
	if err := w.dave.StateEvent(ctx, w.room, event.StatePinnedEvents, "", &pinned); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pinned.Pinned, []id.EventID{w.root, w.poll}) {
		t.Errorf("pinned = %v", pinned.Pinned)
	}
	// Dave may not pin (power level 50 needed for state).
	if _, err := w.dave.SendStateEvent(ctx, w.room, event.StatePinnedEvents, "", &event.PinnedEventsEventContent{}); err == nil {
		t.Error("a member without power changed the pinned events")
	}
}

func (w *relWorld) testErrors(t *testing.T) {
	ctx := ctxT(t)
	// A second identical reaction.
	_, err := w.bob.SendReaction(ctx, w.room, w.root, "👍")
	if me := httpErr(t, err); me.Code != "M_DUPLICATE_ANNOTATION" {
		t.Errorf("duplicate reaction: %+v, want M_DUPLICATE_ANNOTATION", me)
	}
	// A different key, or another sender, is fine.
	if resp, err := w.bob.SendReaction(ctx, w.room, w.root, "🎉"); err != nil {
		t.Errorf("another key: %v", err)
	} else {
		w.react2 = resp.EventID
	}
	if _, err := w.dave.SendReaction(ctx, w.room, w.poll, "👍"); err != nil {
		t.Errorf("another event: %v", err)
	}

	// A room with history visible to members only from their join: an
	// event from before dave's join is not there for him.
	hidden, err := w.alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat",
		InitialState: []*event.Event{{Type: event.StateHistoryVisibility, Content: event.Content{Parsed: &event.HistoryVisibilityEventContent{HistoryVisibility: event.HistoryVisibilityJoined}}}}})
	if err != nil {
		t.Fatal(err)
	}
	early := send(t, w.alice, hidden.RoomID, event.EventMessage, text("before dave", nil))
	send(t, w.alice, hidden.RoomID, event.EventMessage, text("reply", (&event.RelatesTo{}).SetThread(early, early)))
	if _, err := w.dave.JoinRoomByID(ctx, hidden.RoomID); err != nil {
		t.Fatal(err)
	}

	v1 := w.srv + "/_matrix/client/v1/rooms/"
	rel := v1 + url.PathEscape(string(w.room)) + "/relations/" + url.PathEscape(string(w.root))
	threads := v1 + url.PathEscape(string(w.room)) + "/threads"
	for _, tc := range []struct {
		name, url string
		c         *mautrix.Client
		status    int
		code      string
	}{
		{"unknown parent", v1 + url.PathEscape(string(w.room)) + "/relations/$nope", w.bob, 404, "M_NOT_FOUND"},
		{"parent in another room", v1 + url.PathEscape(string(hidden.RoomID)) + "/relations/" + url.PathEscape(string(w.root)), w.alice, 404, "M_NOT_FOUND"},
		{"invisible parent", v1 + url.PathEscape(string(hidden.RoomID)) + "/relations/" + url.PathEscape(string(early)), w.dave, 404, "M_NOT_FOUND"},
		{"not in the room", rel, w.carol, 403, "M_FORBIDDEN"},
		{"unknown room", v1 + "!nope:localhost/relations/" + url.PathEscape(string(w.root)), w.bob, 403, "M_FORBIDDEN"},
		{"bad dir", rel + "?dir=x", w.bob, 400, "M_INVALID_PARAM"},
		{"negative limit", rel + "?limit=-1", w.bob, 400, "M_INVALID_PARAM"},
		{"bad limit", rel + "?limit=ten", w.bob, 400, "M_INVALID_PARAM"},
		{"bad from", rel + "?from=garbage", w.bob, 400, "M_INVALID_PARAM"},
		{"bad to", rel + "/m.thread?to=tnope", w.bob, 400, "M_INVALID_PARAM"},
		{"bad recurse", rel + "?recurse=maybe", w.bob, 400, "M_INVALID_PARAM"},
		{"threads not in the room", threads, w.carol, 403, "M_FORBIDDEN"},
		{"threads bad include", threads + "?include=mine", w.bob, 400, "M_INVALID_PARAM"},
		{"threads zero limit", threads + "?limit=0", w.bob, 400, "M_INVALID_PARAM"},
		{"threads bad from", threads + "?from=garbage", w.bob, 400, "M_INVALID_PARAM"},
	} {
		code, me := do(t, http.DefaultClient, "GET", tc.url, tc.c.AccessToken, nil, nil)
		if code != tc.status || me.Code != tc.code {
			t.Errorf("%s: %d %+v, want %d %s", tc.name, code, me, tc.status, tc.code)
		}
	}
	// Dave sees the thread root he may see, not the one before his join.
	var out threadsResp
	if code, me := do(t, http.DefaultClient, "GET", v1+url.PathEscape(string(hidden.RoomID))+"/threads", w.dave.AccessToken, nil, &out); code != 200 || len(out.Chunk) != 0 {
		t.Errorf("threads of the hidden room for dave: %d %+v %v", code, me, ids(out.Chunk))
	}
}

func (w *relWorld) testIncrementalSync(t *testing.T) {
	ctx := ctxT(t)
	first, err := w.dave.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	root := send(t, w.alice, w.room, event.EventMessage, text("new topic", nil))
	reply := send(t, w.bob, w.room, event.EventMessage, text("on it", (&event.RelatesTo{}).SetThread(root, root)))
	// Both are committed: one incremental sync carries them, the root
	// with its thread so far.
	resp, err := w.dave.SyncRequest(ctx, 0, first.NextBatch, "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	var got []id.EventID
	var th *event.ThreadAggregation
	for _, ev := range resp.Rooms.Join[w.room].Timeline.Events {
		got = append(got, ev.ID)
		if ev.ID == root {
			th = relationsOf(t, ev).GetThread()
		}
	}
	if !slices.Equal(got, []id.EventID{root, reply}) {
		t.Fatalf("incremental timeline = %v, want [%s %s]", got, root, reply)
	}
	if th == nil || th.Count != 1 || th.LatestEvent == nil || th.LatestEvent.ID != reply || th.CurrentUserParticipated {
		t.Errorf("root's thread in the incremental sync: %+v", th)
	}
}

// testFilters: related_by_rel_types and related_by_senders in /messages
// and /sync select events by their children.
func (w *relWorld) testFilters(t *testing.T) {
	ctx := ctxT(t)
	for _, tc := range []struct {
		filter string
		want   []id.EventID // newest first
	}{
		{`{"related_by_rel_types":["m.thread"]}`, []id.EventID{w.rootB, w.root}},
		{`{"related_by_rel_types":["m.thread"],"related_by_senders":["` + string(w.alice.UserID) + `"]}`, []id.EventID{w.root}},
		{`{"related_by_senders":["` + string(w.dave.UserID) + `"]}`, []id.EventID{w.poll}},
		{`{"related_by_rel_types":["m.reference"]}`, []id.EventID{w.poll, w.t1, w.root}},
		{`{"related_by_rel_types":["m.thread"],"related_by_senders":["` + string(w.carol.UserID) + `"]}`, []id.EventID{}},
	} {
		var got []id.EventID
		from := ""
		// mautrix's FilterPart has no related_by fields: send the
		// filter as the spec writes it.
		q := url.Values{"dir": {"b"}, "limit": {"100"}, "filter": {tc.filter}}
		for page := 0; page < 20; page++ {
			if from != "" {
				q.Set("from", from)
			}
			var resp mautrix.RespMessages
			code, me := do(t, http.DefaultClient, "GET", w.srv+"/_matrix/client/v3/rooms/"+url.PathEscape(string(w.room))+"/messages?"+q.Encode(), w.bob.AccessToken, nil, &resp)
			if code != 200 {
				t.Fatalf("messages with %s: %d %+v", tc.filter, code, me)
			}
			got = append(got, ids(resp.Chunk)...)
			if resp.End == "" {
				break
			}
			from = resp.End
		}
		if got == nil {
			got = []id.EventID{}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("/messages with %s = %v, want %v", tc.filter, got, tc.want)
		}
	}
	// The same filter on a /sync timeline.
	resp, err := w.bob.SyncRequest(ctx, 0, "", `{"room":{"timeline":{"limit":200,"related_by_rel_types":["m.thread"]}}}`, false, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(resp.Rooms.Join[w.room].Timeline.Events); !slices.Equal(got, []id.EventID{w.root, w.rootB}) {
		t.Errorf("/sync timeline with related_by_rel_types = %v, want [root rootB]", got)
	}
}
