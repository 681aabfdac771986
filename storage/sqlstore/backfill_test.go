package sqlstore_test

import (
	"context"
	"math"
	"testing"

	"github.com/machi-chat/machi/internal/testrig"
	"github.com/machi-chat/machi/storage"
)

func TestPutBackfill(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		db := testrig.OpenStore(t, engine)
		const room = "!committee:city-a.test"
		ev := func(pos int64, id string, outlier bool) storage.Event {
			return storage.Event{Pos: pos, EventID: id, RoomID: room, Type: "m.room.message", Sender: "@alice:city-a.test", Depth: 1,
				JSON: []byte(`{}`), Outlier: outlier}
		}
		must(t, db.CommitEvents(ctx, []storage.EventCommit{
			{Event: ev(-1, "$create", true), NewRoom: &storage.Room{RoomID: room, Version: "10", Latest: []string{}}},
			{Event: ev(5, "$join", false), Latest: []string{"$join"}, Depth: 5},
		}))
		timeline := func() []string {
			rows, err := db.RoomEvents(ctx, room, math.MinInt64, math.MaxInt64, 10, false)
			must(t, err)
			var ids []string
			for _, r := range rows {
				ids = append(ids, r.EventID)
			}
			return ids
		}
		if got := timeline(); len(got) != 1 || got[0] != "$join" {
			t.Fatalf("timeline before backfill: %v (the outlier must not show)", got)
		}
		// The outlier joins the timeline at its new position; a new event
		// is inserted.
		must(t, db.PutBackfill(ctx, []storage.Event{ev(-3, "$msg", false), ev(-4, "$create", false)}))
		if got := timeline(); len(got) != 3 || got[0] != "$create" || got[1] != "$msg" || got[2] != "$join" {
			t.Fatalf("timeline after backfill: %v", got)
		}
		rows, err := db.GetEvents(ctx, []string{"$create"})
		must(t, err)
		if len(rows) != 1 || rows[0].Outlier || rows[0].Pos != -4 {
			t.Fatalf("promoted outlier: %+v", rows)
		}
		if pos, _ := db.MinEventPos(ctx); pos != -4 {
			t.Fatalf("lowest position = %d", pos)
		}
	})
}
