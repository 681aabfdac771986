package sqlstore_test

import (
	"context"
	"testing"

	"github.com/machi-chat/machi/internal/testrig"
	"github.com/machi-chat/machi/storage"
)

// TestReplaceRoom: an upgrade moves the old room's aliases and its
// directory listing to the new room, and leaves other rooms alone.
func TestReplaceRoom(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		db := testrig.OpenStore(t, engine)
		createRoom(t, db)
		const newRoom = "!new:test"
		must(t, db.CommitEvents(ctx, []storage.EventCommit{{
			Event:   storage.Event{Pos: 10, EventID: "$newcreate", RoomID: newRoom, Type: "m.room.create", StateKey: strp(""), Sender: "@alice:test", Depth: 1, JSON: []byte(`{}`)},
			NewRoom: &storage.Room{RoomID: newRoom, Version: "12", Creator: "@alice:test", CreatedTS: 1, Latest: []string{"$newcreate"}, Depth: 1},
			Latest:  []string{"$newcreate"}, Depth: 1,
		}}))
		must(t, db.PutAlias(ctx, "#bousai:test", roomID, "@alice:test"))
		must(t, db.PutAlias(ctx, "#bousai-old:test", roomID, "@bob:test"))
		must(t, db.PutAlias(ctx, "#elsewhere:test", "!elsewhere:test", "@bob:test"))
		must(t, db.SetPublished(ctx, roomID, true))

		must(t, db.ReplaceRoom(ctx, roomID, newRoom))
		aliases, err := db.RoomAliases(ctx, newRoom)
		must(t, err)
		deepEqual(t, "new room's aliases", aliases, []string{"#bousai-old:test", "#bousai:test"})
		if old, _ := db.RoomAliases(ctx, roomID); len(old) != 0 {
			t.Fatalf("old room kept aliases %v", old)
		}
		if id, _ := db.GetAlias(ctx, "#elsewhere:test"); id != "!elsewhere:test" {
			t.Fatalf("another room's alias moved to %q", id)
		}
		pub, err := db.PublishedRooms(ctx)
		must(t, err)
		deepEqual(t, "published rooms", pub, []string{newRoom})

		// An unpublished room replaced leaves the new one unpublished.
		must(t, db.ReplaceRoom(ctx, roomID, newRoom))
		pub, _ = db.PublishedRooms(ctx)
		deepEqual(t, "published rooms after a second move", pub, []string(nil))
	})
}
