package e2e

import (
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/machi-chat/machi/internal/testrig"
)

// TestReceiptsAndUnread: unread counts rise with messages and fall with a
// read receipt; a public receipt reaches the other member's /sync, a
// private one does not; receipts survive in an initial sync.
func TestReceiptsAndUnread(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice, bob := register(t, srv, "alice"), register(t, srv, "bob")
		ctx := ctxT(t)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		var first, last id.EventID
		for _, body := range []string{"一", "二", "@bob 三"} {
			resp, err := alice.SendText(ctx, room.RoomID, body)
			if err != nil {
				t.Fatal(err)
			}
			last = resp.EventID
			if first == "" {
				first = resp.EventID
			}
		}
		bsince := waitFor(t, bob, "", func(r *mautrix.RespSync) bool {
			jr, ok := r.Rooms.Join[room.RoomID]
			return ok && jr.UnreadNotifications != nil && jr.UnreadNotifications.NotificationCount == 3
		})
		asince := waitFor(t, alice, "", func(r *mautrix.RespSync) bool { return roomTimelineHas(r, room.RoomID, "@bob 三") })

		// A private receipt clears bob's count and is not shown to alice.
		if err := bob.SendReceipt(ctx, room.RoomID, last, event.ReceiptTypeReadPrivate, nil); err != nil {
			t.Fatal(err)
		}
		bsince = waitFor(t, bob, bsince, func(r *mautrix.RespSync) bool {
			jr, ok := r.Rooms.Join[room.RoomID]
			return ok && jr.UnreadNotifications != nil && jr.UnreadNotifications.NotificationCount == 0
		})
		// Then a public one, which alice sees — and her /sync must not
		// have carried the private one before it.
		if err := bob.MarkRead(ctx, room.RoomID, last); err != nil {
			t.Fatal(err)
		}
		sawPrivate := false
		waitFor(t, alice, asince, func(r *mautrix.RespSync) bool {
			for _, ev := range r.Rooms.Join[room.RoomID].Ephemeral.Events {
				if ev.Type != event.EphemeralEventReceipt {
					continue
				}
				_ = ev.Content.ParseRaw(ev.Type)
				rc := *ev.Content.AsReceipt()
				if _, ok := rc[last][event.ReceiptTypeReadPrivate][bob.UserID]; ok {
					sawPrivate = true
				}
				if _, ok := rc[last][event.ReceiptTypeRead][bob.UserID]; ok {
					return true
				}
			}
			return false
		})
		if sawPrivate {
			t.Error("alice saw bob's private receipt")
		}
		// Receipts only move forwards: one for an earlier event is taken
		// (200) and dropped.
		if err := bob.MarkRead(ctx, room.RoomID, first); err != nil {
			t.Fatal(err)
		}
		if err := bob.SendReceipt(ctx, room.RoomID, first, event.ReceiptTypeReadPrivate, nil); err != nil {
			t.Fatal(err)
		}
		bfull, err := bob.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		if jr := bfull.Rooms.Join[room.RoomID]; jr == nil || jr.UnreadNotifications == nil || jr.UnreadNotifications.NotificationCount != 0 {
			t.Errorf("bob's unread count after an older receipt: %+v", jr)
		}
		// An initial sync carries the receipt too.
		full, err := alice.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, ev := range full.Rooms.Join[room.RoomID].Ephemeral.Events {
			if ev.Type == event.EphemeralEventReceipt {
				_ = ev.Content.ParseRaw(ev.Type)
				_, found = (*ev.Content.AsReceipt())[last][event.ReceiptTypeRead][bob.UserID]
			}
		}
		if !found {
			t.Error("initial sync lacks bob's read receipt")
		}
	})
}
