package sqlstore_test

import (
	"context"
	"reflect"
	"testing"

	"github.com/machi-chat/machi/internal/testrig"
	"github.com/machi-chat/machi/storage"
)

func TestPresence(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		db := testrig.OpenStore(t, engine)
		const alice, bob = "@alice:test", "@bob:test"
		if list, err := db.AllPresence(ctx); err != nil || len(list) != 0 {
			t.Fatalf("empty store: %+v, %v", list, err)
		}
		a := storage.PresenceState{UserID: alice, Presence: "online", StatusMsg: "会議中", LastActiveTS: 10}
		must(t, db.PutPresence(ctx, a))
		a.Presence, a.StatusMsg, a.LastActiveTS = "unavailable", "昼休み", 20
		must(t, db.PutPresence(ctx, a)) // replaces
		b := storage.PresenceState{UserID: bob, Presence: "offline", LastActiveTS: 5}
		must(t, db.PutPresence(ctx, b))
		list, err := db.AllPresence(ctx)
		must(t, err)
		if want := []storage.PresenceState{a, b}; !reflect.DeepEqual(list, want) {
			t.Fatalf("AllPresence = %+v, want %+v", list, want)
		}
		// A deactivated account's presence goes with it.
		must(t, db.CreateUser(ctx, storage.User{UserID: alice, CreatedTS: 1}))
		must(t, db.DeactivateUser(ctx, alice))
		list, err = db.AllPresence(ctx)
		must(t, err)
		if want := []storage.PresenceState{b}; !reflect.DeepEqual(list, want) {
			t.Fatalf("after deactivation AllPresence = %+v, want %+v", list, want)
		}
	})
}
