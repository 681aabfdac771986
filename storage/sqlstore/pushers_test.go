package sqlstore_test

import (
	"context"
	"testing"

	"github.com/machi-chat/machi/internal/testrig"
	"github.com/machi-chat/machi/storage"
)

func TestPushers(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		db := testrig.OpenStore(t, engine)
		const alice, bob = "@alice:test", "@bob:test"
		p := storage.Pusher{UserID: alice, DeviceID: "PHONE", AppID: "jp.city.chat", PushKey: "key1", Kind: "http",
			AppDisplayName: "Chat", DeviceDisplayName: "iPhone", Lang: "ja", Data: []byte(`{"url":"http://127.0.0.1/_matrix/push/v1/notify"}`), CreatedTS: 1}
		must(t, db.PutPusher(ctx, p, false))
		p.DeviceDisplayName = "iPhone 2"
		must(t, db.PutPusher(ctx, p, false)) // replaces
		list, err := db.UserPushers(ctx, alice)
		must(t, err)
		if len(list) != 1 || list[0].DeviceDisplayName != "iPhone 2" || string(list[0].Data) != string(p.Data) {
			t.Fatalf("pushers: %+v", list)
		}
		// Without append, bob taking the same key removes alice's.
		q := p
		q.UserID, q.DeviceID = bob, "BOBPHONE"
		must(t, db.PutPusher(ctx, q, true))
		if list, _ := db.UserPushers(ctx, alice); len(list) != 1 {
			t.Fatalf("append removed alice's pusher: %+v", list)
		}
		must(t, db.PutPusher(ctx, q, false))
		if list, _ := db.UserPushers(ctx, alice); len(list) != 0 {
			t.Fatalf("alice's pusher survived bob's: %+v", list)
		}
		// A deleted device takes its pushers along.
		must(t, db.PutPusher(ctx, p, true))
		must(t, db.PutDevice(ctx, storage.Device{UserID: alice, DeviceID: "PHONE", TokenHash: "t", CreatedTS: 1}))
		_, err = db.DeleteDevices(ctx, alice, []string{"PHONE"}, "")
		must(t, err)
		if list, _ := db.UserPushers(ctx, alice); len(list) != 0 {
			t.Fatalf("pusher survived its device: %+v", list)
		}
		must(t, db.DeletePushKey(ctx, "jp.city.chat", "key1"))
		if list, _ := db.UserPushers(ctx, bob); len(list) != 0 {
			t.Fatalf("rejected key kept: %+v", list)
		}
		must(t, db.DeletePusher(ctx, bob, "x", "y")) // deleting nothing is fine
	})
}
