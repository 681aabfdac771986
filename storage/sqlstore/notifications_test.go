package sqlstore_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/machi-chat/machi/internal/testrig"
	"github.com/machi-chat/machi/storage"
)

func TestNotifications(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		db := testrig.OpenStore(t, engine)
		createRoom(t, db)
		const bob, carol = "@bob:test", "@carol:test"
		// Messages at positions 3..102; bob is notified of all, carol of
		// every tenth; each tenth highlights; 50.. are in a thread.
		var commits []storage.EventCommit
		var ns []storage.Notification
		for pos := int64(3); pos <= 102; pos++ {
			id := fmt.Sprintf("$m%d", pos)
			c := storage.EventCommit{Event: storage.Event{Pos: pos, EventID: id, RoomID: roomID, Type: "m.room.message",
				Sender: "@alice:test", Depth: pos, StateGroup: 2, JSON: []byte(`{"type":"m.room.message","content":{}}`)},
				Latest: []string{id}, Depth: pos, StateGroup: 2}
			thread := "main"
			if pos >= 50 {
				thread = "$m3"
			}
			n := storage.Notification{UserID: bob, RoomID: roomID, EventID: id, Pos: pos, ThreadID: thread, Notify: true,
				Highlight: pos%10 == 0, Actions: []byte(`["notify"]`), TS: 1000 + pos}
			ns = append(ns, n)
			if pos%10 == 0 {
				n.UserID = carol
				ns = append(ns, n)
			}
			commits = append(commits, c)
		}
		must(t, db.CommitEvents(ctx, commits))
		must(t, db.PutNotifications(ctx, ns[:1]))
		must(t, db.PutNotifications(ctx, ns[1:])) // 109 rows: 6×16+3×4+1
		again := ns[0]
		again.Highlight = true
		must(t, db.PutNotifications(ctx, []storage.Notification{again})) // kept as it was
		must(t, db.PutNotifications(ctx, nil))                           // nothing is fine

		all, err := db.UserNotifications(ctx, bob)
		must(t, err)
		if len(all) != 100 || all[0].Pos != 3 || all[99].Pos != 102 || string(all[0].Actions) != `["notify"]` || !all[0].Notify || all[0].Highlight || !all[7].Highlight || all[60].ThreadID != "$m3" {
			t.Fatalf("bob's notifications: %d, first %+v", len(all), all[0])
		}
		if c, _ := db.UserNotifications(ctx, carol); len(c) != 10 {
			t.Fatalf("carol's notifications: %d", len(c))
		}

		// Pages, newest first.
		page, err := db.ListNotifications(ctx, storage.NotificationQuery{UserID: bob, Limit: 30})
		must(t, err)
		if len(page) != 30 || page[0].Pos != 102 || page[29].Pos != 73 {
			t.Fatalf("first page: %d, %d..%d", len(page), page[0].Pos, page[len(page)-1].Pos)
		}
		page, err = db.ListNotifications(ctx, storage.NotificationQuery{UserID: bob, Before: 73, Limit: 30, OnlyHighlight: true})
		must(t, err)
		if len(page) != 7 || page[0].Pos != 70 || page[6].Pos != 10 || !page[0].Highlight {
			t.Fatalf("highlights: %+v", page)
		}

		// Prune: bob read the main timeline up to $m20 (unthreaded
		// receipt up to $m40 would clear the thread too; a main receipt
		// does not).
		must(t, db.PutReceipt(ctx, storage.Receipt{RoomID: roomID, UserID: bob, Type: "m.read", ThreadID: "main", EventID: "$m60", TS: 1, Pos: 200}))
		must(t, db.PutReceipt(ctx, storage.Receipt{RoomID: roomID, UserID: bob, Type: "m.read.private", ThreadID: "", EventID: "$m20", TS: 1, Pos: 201}))
		must(t, db.PutReceipt(ctx, storage.Receipt{RoomID: roomID, UserID: bob, Type: "m.read", ThreadID: "$m3", EventID: "$m55", TS: 1, Pos: 202}))
		n, err := db.PruneNotifications(ctx, 1000+90, 0) // read and older than pos 90
		must(t, err)
		// main: 3..49 read by the main receipt (47 rows); thread: 50..55.
		if n != 47+6 {
			t.Fatalf("pruned %d rows, want %d", n, 47+6)
		}
		left, _ := db.UserNotifications(ctx, bob)
		if len(left) != 47 || left[0].Pos != 56 {
			t.Fatalf("after prune: %d rows from %d", len(left), left[0].Pos)
		}
		if c, _ := db.UserNotifications(ctx, carol); len(c) != 10 {
			t.Fatalf("carol's unread notifications were pruned: %d", len(c))
		}
		// A deactivated account's notifications go with it.
		must(t, db.CreateUser(ctx, storage.User{UserID: carol, CreatedTS: 1}))
		must(t, db.DeactivateUser(ctx, carol))
		if c, _ := db.UserNotifications(ctx, carol); len(c) != 0 {
			t.Fatalf("a deactivated user's notifications: %d", len(c))
		}
		n, err = db.PruneNotifications(ctx, 0, 1000+100) // anything older than pos 100
		must(t, err)
		if left, _ := db.UserNotifications(ctx, bob); n != 44 || len(left) != 3 {
			t.Fatalf("pruned %d by age, %d left", n, len(left))
		}
	})
}

// BenchmarkPutNotifications is one message's notifications in a room of 50
// (49 rows, for the same 49 users every time), and 100 messages' at once.
func BenchmarkPutNotifications(b *testing.B) {
	for _, events := range []int{1, 100} {
		b.Run(fmt.Sprintf("events=%d", events), func(b *testing.B) {
			db := testrig.OpenStore(b, "sqlite")
			ctx := context.Background()
			pos := int64(0)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				ns := make([]storage.Notification, 0, 49*events)
				for e := 0; e < events; e++ {
					pos++
					for j := 0; j < 49; j++ {
						ns = append(ns, storage.Notification{UserID: fmt.Sprintf("@member%d:city.example.jp", j), RoomID: "!abcdefghijklmnopqrstuvwx:city.example.jp",
							EventID: fmt.Sprintf("$abcdefghijklmnopqrstuvwxyz0123456789ABCDE%d", pos), Pos: pos, ThreadID: "main", Notify: true, Actions: []byte(`["notify"]`), TS: 123456789})
					}
				}
				if err := db.PutNotifications(ctx, ns); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
