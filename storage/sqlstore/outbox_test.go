package sqlstore_test

import (
	"context"
	"testing"

	"github.com/machi-chat/machi/internal/testrig"
	"github.com/machi-chat/machi/storage"
)

func TestOutbox(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		db := testrig.OpenStore(t, engine)
		if id, err := db.MaxOutboundID(ctx); err != nil || id != 0 {
			t.Fatalf("empty outbox max id = %d, %v", id, err)
		}
		var items []storage.OutboundItem
		for i := int64(1); i <= 5; i++ {
			dest := "city-b.test"
			if i == 3 {
				dest = "pref.test"
			}
			items = append(items, storage.OutboundItem{ID: i, Destination: dest, Kind: "edu", Payload: []byte(`{"n":` + string(rune('0'+i)) + `}`), CreatedTS: i})
		}
		items = append(items, storage.OutboundItem{ID: 6, Destination: "city-b.test", Kind: "pdu", Payload: []byte(`{}`), CreatedTS: 6})
		must(t, db.EnqueueOutbound(ctx, items))
		// An ID used twice is refused, and nothing of that batch is kept.
		if err := db.EnqueueOutbound(ctx, []storage.OutboundItem{{ID: 7, Destination: "x", Kind: "edu", Payload: []byte(`{}`)}, {ID: 1, Destination: "x", Kind: "edu", Payload: []byte(`{}`)}}); err == nil {
			t.Fatal("duplicate ID accepted")
		}
		if id, _ := db.MaxOutboundID(ctx); id != 6 {
			t.Fatalf("max id = %d, want 6 (the failed batch left nothing)", id)
		}
		dests, err := db.OutboundDestinations(ctx)
		must(t, err)
		if len(dests) != 2 || dests[0] != "city-b.test" || dests[1] != "pref.test" {
			t.Fatalf("destinations: %v", dests)
		}
		got, err := db.PendingOutbound(ctx, "city-b.test", "edu", 0, 2)
		must(t, err)
		if len(got) != 2 || got[0].ID != 1 || got[1].ID != 2 || string(got[0].Payload) != `{"n":1}` {
			t.Fatalf("first page: %+v", got)
		}
		got, _ = db.PendingOutbound(ctx, "city-b.test", "edu", 2, 10)
		if len(got) != 2 || got[0].ID != 4 || got[1].ID != 5 {
			t.Fatalf("second page: %+v", got)
		}
		must(t, db.DeleteOutbound(ctx, "city-b.test", []int64{1, 2, 4, 5}))
		if got, _ := db.PendingOutbound(ctx, "city-b.test", "edu", 0, 10); len(got) != 0 {
			t.Fatalf("delivered items left: %+v", got)
		}
		if got, _ := db.PendingOutbound(ctx, "city-b.test", "pdu", 0, 10); len(got) != 1 {
			t.Fatalf("pdus: %+v", got)
		}
	})
}
