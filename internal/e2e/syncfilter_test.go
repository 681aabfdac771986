package e2e

import (
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/machi-chat/machi/internal/testrig"
)

// TestSyncFilteredTimelineLimit: a timeline filtered by type reaches its
// limit through events the filter drops (SyTest's "A filtered timeline
// reaches its limit"), in an initial sync and in a gapped incremental one.
func TestSyncFilteredTimelineLimit(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice := register(t, srv, "alice")
		filter, err := alice.CreateFilter(ctxT(t), &mautrix.Filter{Room: &mautrix.RoomFilter{
			Timeline: &mautrix.FilterPart{Limit: 1, Types: []event.Type{event.EventMessage}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{})
		if err != nil {
			t.Fatal(err)
		}
		filler := event.Type{Type: "a.made.up.filler.type", Class: event.MessageEventType}
		sendFillers := func(n int) {
			t.Helper()
			for i := range n {
				if _, err := alice.SendMessageEvent(ctxT(t), room.RoomID, filler, map[string]any{"i": i}); err != nil {
					t.Fatal(err)
				}
			}
		}
		check := func(what string, since string, want string, limited bool) string {
			t.Helper()
			resp, err := alice.SyncRequest(ctxT(t), 0, since, filter.FilterID, false, "")
			if err != nil {
				t.Fatal(err)
			}
			jr, ok := resp.Rooms.Join[room.RoomID]
			if !ok {
				t.Fatalf("%s: room missing from sync", what)
			}
			if len(jr.Timeline.Events) != 1 || jr.Timeline.Events[0].Type != event.EventMessage {
				t.Fatalf("%s: timeline %d events, want the one message", what, len(jr.Timeline.Events))
			}
			if got := jr.Timeline.Events[0].Content.Raw["body"]; got != want {
				t.Fatalf("%s: timeline message %q, want %q", what, got, want)
			}
			// limited is the spec's: more events the filter keeps than the
			// limit let through.
			if jr.Timeline.Limited != limited || jr.Timeline.PrevBatch == "" {
				t.Fatalf("%s: limited=%v prev_batch=%q, want limited=%v and a prev_batch", what, jr.Timeline.Limited, jr.Timeline.PrevBatch, limited)
			}
			return resp.NextBatch
		}

		if _, err := alice.SendText(ctxT(t), room.RoomID, "My message"); err != nil {
			t.Fatal(err)
		}
		sendFillers(12)
		next := check("initial sync", "", "My message", false)

		if _, err := alice.SendText(ctxT(t), room.RoomID, "second"); err != nil {
			t.Fatal(err)
		}
		sendFillers(5)
		check("gapped incremental sync", next, "second", false)
		check("initial sync with an older message", "", "second", true)

		// With nothing the filter keeps in reach, the timeline is empty,
		// not an error, and bounded.
		sendFillers(9)
		resp, err := alice.SyncRequest(ctxT(t), 0, "", `{"room":{"timeline":{"limit":1,"types":["m.nothing"]}}}`, false, "")
		if err != nil {
			t.Fatal(err)
		}
		if jr := resp.Rooms.Join[room.RoomID]; jr == nil || len(jr.Timeline.Events) != 0 || jr.Timeline.Limited {
			t.Fatalf("filter keeping nothing: %+v", jr)
		}
	})
}

// TestSyncFilteredTimelineState: state events a timeline filter keeps out
// of the timeline are in the state section, which is the state at the
// first event shown (SyTest's gapped-sync test, its initial half).
func TestSyncFilteredTimelineState(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice := register(t, srv, "alice")
		stateType := event.Type{Type: "a.madeup.test.state", Class: event.StateEventType}
		filter, err := alice.CreateFilter(ctxT(t), &mautrix.Filter{Room: &mautrix.RoomFilter{
			Timeline: &mautrix.FilterPart{Limit: 1, Types: []event.Type{{Type: "a.made.up.filler.type"}}},
			State:    &mautrix.FilterPart{Types: []event.Type{stateType}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{})
		if err != nil {
			t.Fatal(err)
		}
		for _, key := range []string{"this_state_changes", "this_state_does_not_change"} {
			if _, err := alice.SendStateEvent(ctxT(t), room.RoomID, stateType, key, map[string]any{"my_key": 1}); err != nil {
				t.Fatal(err)
			}
		}
		resp, err := alice.SyncRequest(ctxT(t), 0, "", filter.FilterID, false, "")
		if err != nil {
			t.Fatal(err)
		}
		jr := resp.Rooms.Join[room.RoomID]
		if jr == nil {
			t.Fatal("room missing from sync")
		}
		if len(jr.Timeline.Events) != 0 || len(jr.State.Events) != 2 {
			t.Fatalf("timeline %d events, state %d events; want none and both state events", len(jr.Timeline.Events), len(jr.State.Events))
		}

		// With a filler shown, the state is that before it: both again.
		if _, err := alice.SendMessageEvent(ctxT(t), room.RoomID, event.Type{Type: "a.made.up.filler.type", Class: event.MessageEventType}, map[string]any{}); err != nil {
			t.Fatal(err)
		}
		if resp, err = alice.SyncRequest(ctxT(t), 0, "", filter.FilterID, false, ""); err != nil {
			t.Fatal(err)
		}
		if jr = resp.Rooms.Join[room.RoomID]; jr == nil || len(jr.Timeline.Events) != 1 || len(jr.State.Events) != 2 {
			t.Fatalf("with a filler: %+v, want it in the timeline and both state events", jr)
		}

		// Incrementally: a state change the timeline filter drops, then a
		// filler shown, all within the limit (so not limited). The change
		// is in the state section, not lost.
		next := resp.NextBatch
		roomy, err := alice.CreateFilter(ctxT(t), &mautrix.Filter{Room: &mautrix.RoomFilter{
			Timeline: &mautrix.FilterPart{Limit: 5, Types: []event.Type{{Type: "a.made.up.filler.type"}}},
			State:    &mautrix.FilterPart{Types: []event.Type{stateType}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendStateEvent(ctxT(t), room.RoomID, stateType, "this_state_changes", map[string]any{"my_key": 2}); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendMessageEvent(ctxT(t), room.RoomID, event.Type{Type: "a.made.up.filler.type", Class: event.MessageEventType}, map[string]any{}); err != nil {
			t.Fatal(err)
		}
		if resp, err = alice.SyncRequest(ctxT(t), 0, next, roomy.FilterID, false, ""); err != nil {
			t.Fatal(err)
		}
		jr = resp.Rooms.Join[room.RoomID]
		if jr == nil || len(jr.Timeline.Events) != 1 || jr.Timeline.Limited {
			t.Fatalf("incremental: %+v, want the filler in a timeline not limited", jr)
		}
		changed := false
		for _, ev := range jr.State.Events {
			if ev.StateKey != nil && *ev.StateKey == "this_state_changes" && ev.Content.Raw["my_key"] == float64(2) {
				changed = true
			}
		}
		if !changed {
			t.Fatalf("incremental: the state change the filter dropped is not in the state section: %d state events", len(jr.State.Events))
		}
	})
}

// TestSyncSummaryCountsNow: an initial sync's room summary counts the
// members as they are, including joins inside the timeline (SyTest's
// "Unnamed room comes with a name summary").
func TestSyncSummaryCountsNow(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice, bob, carol := register(t, srv, "alice"), register(t, srv, "bob"), register(t, srv, "carol")
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []*mautrix.Client{bob, carol} {
			if _, err := c.JoinRoomByID(ctxT(t), room.RoomID); err != nil {
				t.Fatal(err)
			}
		}
		resp, err := alice.SyncRequest(ctxT(t), 0, "", `{"room":{"state":{"lazy_load_members":true}}}`, false, "")
		if err != nil {
			t.Fatal(err)
		}
		jr := resp.Rooms.Join[room.RoomID]
		if jr == nil || jr.Summary.JoinedMemberCount == nil || jr.Summary.InvitedMemberCount == nil {
			t.Fatalf("no summary counts: %+v", jr)
		}
		if got := *jr.Summary.JoinedMemberCount; got != 3 {
			t.Fatalf("m.joined_member_count = %d, want 3", got)
		}
		if got := *jr.Summary.InvitedMemberCount; got != 0 {
			t.Fatalf("m.invited_member_count = %d, want 0", got)
		}
		if len(jr.Summary.Heroes) != 2 {
			t.Fatalf("m.heroes = %v, want bob and carol", jr.Summary.Heroes)
		}
	})
}
