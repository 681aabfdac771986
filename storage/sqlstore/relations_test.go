package sqlstore_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/machi-chat/machi/internal/testrig"
	"github.com/machi-chat/machi/storage"
)

// relEvent commits one message at pos, relating to parent with relType
// when relType is set.
func relEvent(t *testing.T, db storage.Store, pos int64, id, sender, typ, parent, relType, key string) {
	t.Helper()
	relEventIn(t, db, roomID, pos, id, sender, typ, parent, relType, key)
}

func relEventIn(t *testing.T, db storage.Store, roomID string, pos int64, id, sender, typ, parent, relType, key string) {
	t.Helper()
	c := storage.EventCommit{
		Event: storage.Event{Pos: pos, EventID: id, RoomID: roomID, Type: typ, Sender: sender, Depth: pos, StateGroup: 2,
			JSON: []byte(fmt.Sprintf(`{"type":%q,"content":{}}`, typ))},
		Latest: []string{id}, Depth: pos, StateGroup: 2,
	}
	if relType != "" {
		c.Relation = &storage.Relation{EventID: id, RoomID: roomID, Parent: parent, RelType: relType, Sender: sender, Type: typ, Key: key, OriginTS: 1000 + pos, Pos: pos}
	}
	must(t, db.CommitEvents(context.Background(), []storage.EventCommit{c}))
}

func eventIDs(evs []storage.Event) []string {
	out := []string{}
	for _, e := range evs {
		out = append(out, e.EventID)
	}
	return out
}

func TestRelations(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		db := testrig.OpenStore(t, engine)
		createRoom(t, db)
		const alice, bob = "@alice:test", "@bob:test"
		relEvent(t, db, 10, "$root", alice, "m.room.message", "", "", "")
		relEvent(t, db, 11, "$t1", bob, "m.room.message", "$root", "m.thread", "")
		relEvent(t, db, 12, "$react", bob, "m.reaction", "$root", "m.annotation", "👍")
		relEvent(t, db, 13, "$t2", bob, "m.room.message", "$root", "m.thread", "")
		relEvent(t, db, 14, "$edit", alice, "m.room.message", "$root", "m.replace", "")
		relEvent(t, db, 15, "$root2", bob, "m.room.message", "", "", "")
		relEvent(t, db, 16, "$u1", alice, "m.room.message", "$root2", "m.thread", "")
		relEvent(t, db, 17, "$ref", alice, "m.room.message", "$t1", "m.reference", "")
		// Events of another room may name $root as their parent; they are
		// no part of its relations.
		const mallory = "@mallory:test"
		relEventIn(t, db, "!other:test", 18, "$x1", mallory, "m.room.message", "$root", "m.thread", "")
		relEventIn(t, db, "!other:test", 19, "$x2", alice, "m.room.message", "$root", "m.replace", "")
		relEventIn(t, db, "!other:test", 20, "$x3", mallory, "m.reaction", "$root", "m.annotation", "👎")
		relEventIn(t, db, "!other:test", 21, "$x4", mallory, "m.room.message", "$root", "m.reference", "")

		all := storage.RelationQuery{RoomID: roomID, Parents: []string{"$root"}, From: 0, To: 100, Limit: 10}
		evs, err := db.RelatedEvents(ctx, all)
		must(t, err)
		deepEqual(t, "children of $root, oldest first", eventIDs(evs), []string{"$t1", "$react", "$t2", "$edit"})
		back := all
		back.Backwards, back.Limit = true, 2
		evs, err = db.RelatedEvents(ctx, back)
		must(t, err)
		deepEqual(t, "children of $root, newest two", eventIDs(evs), []string{"$edit", "$t2"})
		page := all
		page.From, page.To = 11, 13
		evs, err = db.RelatedEvents(ctx, page)
		must(t, err)
		deepEqual(t, "children in (11, 13]", eventIDs(evs), []string{"$react", "$t2"})
		threadOnly := all
		threadOnly.RelType = "m.thread"
		evs, err = db.RelatedEvents(ctx, threadOnly)
		must(t, err)
		deepEqual(t, "thread children", eventIDs(evs), []string{"$t1", "$t2"})
		typed := all
		typed.RelType, typed.Type = "m.annotation", "m.reaction"
		evs, err = db.RelatedEvents(ctx, typed)
		must(t, err)
		deepEqual(t, "reactions", eventIDs(evs), []string{"$react"})
		typed.Type = "m.room.message"
		evs, err = db.RelatedEvents(ctx, typed)
		must(t, err)
		deepEqual(t, "annotations of type m.room.message", eventIDs(evs), []string{})
		other := all
		other.RoomID = "!other:test"
		evs, err = db.RelatedEvents(ctx, other)
		must(t, err)
		deepEqual(t, "children in the other room", eventIDs(evs), []string{"$x1", "$x2", "$x3", "$x4"})

		for _, relType := range []string{"m.replace", "m.reference"} {
			rels, err := db.RelationsTo(ctx, roomID, []string{"$root"}, relType, 100, 10)
			must(t, err)
			for _, r := range rels {
				if r.RoomID != roomID {
					t.Fatalf("%s relations of $root include %s from %s", relType, r.EventID, r.RoomID)
				}
			}
		}
		if dup, err := db.HasAnnotation(ctx, roomID, "$root", mallory, "m.reaction", "👎"); err != nil || dup {
			t.Fatalf("another room's annotation counts here: %v %v", dup, err)
		}
		sums, err := db.ThreadSummaries(ctx, roomID, []string{"$root", "$root2", "$t1"}, bob, 100)
		must(t, err)
		got := map[string]storage.ThreadSummary{}
		for _, s := range sums {
			got[s.Root] = s
		}
		deepEqual(t, "threads seen by bob", got, map[string]storage.ThreadSummary{
			"$root":  {Root: "$root", Count: 2, Latest: "$t2", LatestPos: 13, Participated: true},
			"$root2": {Root: "$root2", Count: 1, Latest: "$u1", LatestPos: 16, Participated: false},
		})
		sums, err = db.ThreadSummaries(ctx, roomID, []string{"$root"}, alice, 12)
		must(t, err)
		deepEqual(t, "thread of $root up to 12", sums, []storage.ThreadSummary{{Root: "$root", Count: 1, Latest: "$t1", LatestPos: 11}})

		edits, err := db.RelationsTo(ctx, roomID, []string{"$root", "$root2"}, "m.replace", 100, 10)
		must(t, err)
		deepEqual(t, "edits", edits, []storage.Relation{{EventID: "$edit", RoomID: roomID, Parent: "$root", RelType: "m.replace",
			Sender: alice, Type: "m.room.message", OriginTS: 1014, Pos: 14}})

		roots, err := db.ThreadRoots(ctx, storage.ThreadQuery{RoomID: roomID, Before: 1 << 60, UpTo: 100, Limit: 10})
		must(t, err)
		deepEqual(t, "thread roots, latest first", roots, []storage.ThreadSummary{{Root: "$root2", LatestPos: 16}, {Root: "$root", LatestPos: 13}})
		roots, err = db.ThreadRoots(ctx, storage.ThreadQuery{RoomID: roomID, Before: 16, UpTo: 100, Limit: 10})
		must(t, err)
		deepEqual(t, "thread roots after the first page", roots, []storage.ThreadSummary{{Root: "$root", LatestPos: 13}})
		// Alice sent $root and replied in $root2's thread; bob sent
		// $root2 and replied in $root's. Carol took part in neither.
		for _, who := range []string{alice, bob} {
			roots, err = db.ThreadRoots(ctx, storage.ThreadQuery{RoomID: roomID, UserID: who, Before: 1 << 60, UpTo: 100, Limit: 10})
			must(t, err)
			if len(roots) != 2 {
				t.Fatalf("%s participated in %+v, want both threads", who, roots)
			}
		}
		roots, err = db.ThreadRoots(ctx, storage.ThreadQuery{RoomID: roomID, UserID: "@carol:test", Before: 1 << 60, UpTo: 100, Limit: 10})
		must(t, err)
		deepEqual(t, "carol's threads", len(roots), 0)
		roots, err = db.ThreadRoots(ctx, storage.ThreadQuery{RoomID: roomID, UserID: alice, Before: 1 << 60, UpTo: 15, Limit: 10})
		must(t, err)
		deepEqual(t, "alice's threads up to 15", roots, []storage.ThreadSummary{{Root: "$root", LatestPos: 13}})

		for _, tc := range []struct {
			relTypes, senders, want []string
		}{
			{[]string{"m.thread"}, nil, []string{"$root", "$root2"}},
			{[]string{"m.thread"}, []string{alice}, []string{"$root2"}},
			{nil, []string{alice}, []string{"$root", "$root2", "$t1"}},
			{[]string{"m.annotation", "m.reference"}, nil, []string{"$root", "$t1"}},
			{[]string{"m.thread"}, []string{mallory}, nil},
			{[]string{}, nil, nil},
		} {
			got, err := db.RelatedParents(ctx, roomID, []string{"$root", "$root2", "$t1", "$t2"}, tc.relTypes, tc.senders, 100)
			must(t, err)
			slices.Sort(got)
			deepEqual(t, fmt.Sprintf("parents related by %v from %v", tc.relTypes, tc.senders), got, tc.want)
		}
		has, err := db.HasRelation(ctx, roomID, "$root", "m.thread")
		must(t, err)
		hasNot, err := db.HasRelation(ctx, roomID, "$t1", "m.thread")
		must(t, err)
		if !has || hasNot {
			t.Fatalf("HasRelation: $root %v (want true), $t1 %v (want false)", has, hasNot)
		}
		rel, err := db.Relation(ctx, "$t2")
		must(t, err)
		if rel.Parent != "$root" || rel.RelType != "m.thread" {
			t.Fatalf("Relation($t2) = %+v", rel)
		}
		_, err = db.Relation(ctx, "$root")
		wantErr(t, err, storage.ErrNotFound)
		dup, err := db.HasAnnotation(ctx, roomID, "$root", bob, "m.reaction", "👍")
		must(t, err)
		if !dup {
			t.Fatal("bob's 👍 on $root not found")
		}

		// A redaction of the reaction and of a thread reply removes their
		// relations in the same commit.
		for i, target := range []string{"$react", "$t2"} {
			pos := int64(40 + i)
			id := fmt.Sprintf("$redact%d", i)
			must(t, db.CommitEvents(ctx, []storage.EventCommit{{
				Event: storage.Event{Pos: pos, EventID: id, RoomID: roomID, Type: "m.room.redaction", Sender: alice, Depth: pos, StateGroup: 2,
					JSON: []byte(`{"type":"m.room.redaction","content":{}}`)},
				Latest: []string{id}, Depth: pos, StateGroup: 2,
				Redacts: target, RedactedJSON: []byte(`{"type":"redacted","content":{}}`),
			}}))
		}
		dup, err = db.HasAnnotation(ctx, roomID, "$root", bob, "m.reaction", "👍")
		must(t, err)
		if dup {
			t.Fatal("redacted reaction still counts as an annotation")
		}
		evs, err = db.RelatedEvents(ctx, all)
		must(t, err)
		deepEqual(t, "children of $root after redactions", eventIDs(evs), []string{"$t1", "$edit"})
		sums, err = db.ThreadSummaries(ctx, roomID, []string{"$root"}, bob, 100)
		must(t, err)
		deepEqual(t, "thread of $root after redaction", sums, []storage.ThreadSummary{{Root: "$root", Count: 1, Latest: "$t1", LatestPos: 11, Participated: true}})

		// A relation row that cannot be written fails the whole commit:
		// the event is not stored either.
		err = db.CommitEvents(ctx, []storage.EventCommit{{
			Event: storage.Event{Pos: 50, EventID: "$dupe", RoomID: roomID, Type: "m.room.message", Sender: alice, Depth: 50, StateGroup: 2,
				JSON: []byte(`{}`)},
			Latest: []string{"$dupe"}, Depth: 50, StateGroup: 2,
			Relation: &storage.Relation{EventID: "$t1", RoomID: roomID, Parent: "$root", RelType: "m.thread", Sender: alice, Type: "m.room.message", Pos: 50},
		}})
		if err == nil {
			t.Fatal("a commit with a conflicting relation row succeeded")
		}
		evs, err = db.GetEvents(ctx, []string{"$dupe"})
		must(t, err)
		deepEqual(t, "event of the failed commit", len(evs), 0)
	})
}
