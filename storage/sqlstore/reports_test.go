package sqlstore_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/machi-chat/machi/internal/testrig"
	"github.com/machi-chat/machi/storage"
)

func TestReports(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		db := testrig.OpenStore(t, engine)
		room := storage.Report{TS: 10, Reporter: "@bob:test", RoomID: "!a:test", Reason: "勧誘のスパム"}
		ev := storage.Report{TS: 11, Reporter: "@carol:test", RoomID: "!b:test", EventID: "$e", Reason: "",
			EventJSON: []byte(`{"type":"m.room.message","content":{"body":"x"}}`)}
		id1, err := db.PutReport(ctx, room, storage.AuditEntry{TS: 10, Actor: "@bob:test", Action: "report.room", Target: "!a:test"})
		must(t, err)
		id2, err := db.PutReport(ctx, ev, storage.AuditEntry{TS: 11, Actor: "@carol:test", Action: "report.event", Target: "!b:test", Detail: `{"event_id":"$e"}`})
		must(t, err)
		if id2 <= id1 {
			t.Fatalf("report IDs %d then %d", id1, id2)
		}
		room.ID, ev.ID = id1, id2
		all, err := db.ListReports(ctx, storage.ReportQuery{})
		must(t, err)
		deepEqual(t, "all reports", all, []storage.Report{room, ev})
		inB, err := db.ListReports(ctx, storage.ReportQuery{RoomID: "!b:test"})
		must(t, err)
		deepEqual(t, "reports in !b", inB, []storage.Report{ev})
		after, err := db.ListReports(ctx, storage.ReportQuery{AfterID: id1, Limit: 1})
		must(t, err)
		deepEqual(t, "reports after the first", after, []storage.Report{ev})

		// Each report wrote its audit entry, in the same transaction.
		entries, err := db.QueryAudit(ctx, storage.AuditQuery{Action: "report.event"})
		must(t, err)
		if len(entries) != 1 || entries[0].Actor != "@carol:test" || entries[0].Detail != `{"event_id":"$e"}` {
			t.Fatalf("audit entries: %+v", entries)
		}
		entries, _ = db.QueryAudit(ctx, storage.AuditQuery{Action: "report.room"})
		if len(entries) != 1 || entries[0].Detail != "{}" {
			t.Fatalf("room report audit entries: %+v", entries)
		}
	})
}

// TestEventsAtTS: events are found by origin_server_ts in both directions,
// ties broken by stream position, other rooms left out.
func TestEventsAtTS(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		db := testrig.OpenStore(t, engine)
		createRoom(t, db)
		var commits []storage.EventCommit
		for i, ts := range []int64{1000, 2000, 2000, 3000} {
			pos := int64(10 + i)
			id := fmt.Sprintf("$m%d", i)
			commits = append(commits, storage.EventCommit{Event: storage.Event{Pos: pos, EventID: id, RoomID: roomID, Type: "m.room.message",
				Sender: "@alice:test", Depth: pos, StateGroup: 2, OriginTS: ts,
				JSON: []byte(fmt.Sprintf(`{"type":"m.room.message","origin_server_ts":%d}`, ts))}, Latest: []string{id}, Depth: pos, StateGroup: 2})
		}
		// An outlier (known from another server's auth chain, in no
		// timeline) at the same time is not found.
		commits = append(commits, storage.EventCommit{Event: storage.Event{Pos: -5, Outlier: true, EventID: "$outlier", RoomID: roomID, Type: "m.room.message",
			Sender: "@zed:elsewhere", Depth: 1, StateGroup: 0, OriginTS: 2000, JSON: []byte(`{}`)}, Latest: []string{"$m3"}, Depth: 13, StateGroup: 2})
		commits = append(commits, storage.EventCommit{Event: storage.Event{Pos: 20, EventID: "$other", RoomID: "!other:test", Type: "m.room.message",
			Sender: "@alice:test", Depth: 1, StateGroup: 2, OriginTS: 2500, JSON: []byte(`{}`)}, Latest: []string{"$other"}, Depth: 1})
		must(t, db.CommitEvents(ctx, commits))
		ids := func(evs []storage.Event) []string {
			out := []string{}
			for _, e := range evs {
				out = append(out, e.EventID)
			}
			return out
		}
		for _, c := range []struct {
			ts      int64
			forward bool
			want    []string
		}{
			{1500, true, []string{"$m1", "$m2"}},
			{2000, true, []string{"$m1", "$m2"}},
			{2500, false, []string{"$m2", "$m1"}},
			{2000, false, []string{"$m2", "$m1"}},
			{3001, true, []string{}},
			// The fixture's create and join carry no timestamp (0).
			{999, false, []string{"$join", "$create"}},
		} {
			evs, err := db.EventsAtTS(ctx, roomID, c.ts, c.forward, 2)
			must(t, err)
			deepEqual(t, fmt.Sprintf("EventsAtTS(%d, forward=%v)", c.ts, c.forward), ids(evs), c.want)
		}
		evs, err := db.EventsAtTS(ctx, roomID, 3000, true, 5)
		must(t, err)
		if len(evs) != 1 || evs[0].OriginTS != 3000 {
			t.Fatalf("stored origin_ts: %+v", evs)
		}
	})
}
