package sqlstore_test

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"testing"

	"github.com/machi-chat/machi/internal/testrig"
	"github.com/machi-chat/machi/storage"
	"github.com/machi-chat/machi/storage/sqlstore"
)

// The suite: every test body runs on SQLite and, when configured, PostgreSQL.

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantErr(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("got error %v, want %v", err, target)
	}
}

func deepEqual(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got  %+v\n want %+v", what, got, want)
	}
}

func strp(s string) *string { return &s }

func sortEntries(es []storage.StateEntry) []storage.StateEntry {
	out := slices.Clone(es)
	sort.Slice(out, func(i, j int) bool {
		if out[i].Type != out[j].Type {
			return out[i].Type < out[j].Type
		}
		return out[i].StateKey < out[j].StateKey
	})
	return out
}

// resolveGroup walks a state group's delta chain down to a whole group and
// returns the full state, the way the rooms package reads it.
func resolveGroup(t *testing.T, db storage.Store, id int64) []storage.StateEntry {
	t.Helper()
	ctx := context.Background()
	var chain []storage.StateGroup
	for id != 0 {
		g, err := db.GetStateGroup(ctx, id)
		must(t, err)
		chain = append(chain, g)
		if len(chain) > 100 {
			t.Fatalf("state group chain from %d does not end", chain[0].ID)
		}
		id = g.Prev
	}
	state := map[[2]string]string{}
	for i := len(chain) - 1; i >= 0; i-- {
		for _, e := range chain[i].Entries {
			state[[2]string{e.Type, e.StateKey}] = e.EventID
		}
	}
	var out []storage.StateEntry
	for k, v := range state {
		out = append(out, storage.StateEntry{Type: k[0], StateKey: k[1], EventID: v})
	}
	return sortEntries(out)
}

func TestAccounts(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		db := testrig.OpenStore(t, engine)

		alice := storage.User{UserID: "@alice:test", PasswordHash: "hash1", DisplayName: "Alice", AvatarURL: "mxc://test/a", CreatedTS: 1000}
		must(t, db.CreateUser(ctx, alice))
		must(t, db.CreateUser(ctx, storage.User{UserID: "@bob:test", IsAdmin: true, CreatedTS: 2000}))
		wantErr(t, db.CreateUser(ctx, storage.User{UserID: "@alice:test", CreatedTS: 3000}), storage.ErrConflict)

		got, err := db.GetUser(ctx, "@alice:test")
		must(t, err)
		deepEqual(t, "alice", got, alice)
		_, err = db.GetUser(ctx, "@nobody:test")
		wantErr(t, err, storage.ErrNotFound)

		users, err := db.ListUsers(ctx)
		must(t, err)
		if len(users) != 2 || users[0].UserID != "@alice:test" || users[1].UserID != "@bob:test" || !users[1].IsAdmin {
			t.Fatalf("ListUsers = %+v", users)
		}

		must(t, db.SetPasswordHash(ctx, "@alice:test", "hash2"))
		must(t, db.SetAdmin(ctx, "@alice:test", true))
		must(t, db.SetDisplayName(ctx, "@alice:test", "Alice 2"))
		must(t, db.SetAvatarURL(ctx, "@alice:test", "mxc://test/b"))
		got, err = db.GetUser(ctx, "@alice:test")
		must(t, err)
		if got.PasswordHash != "hash2" || !got.IsAdmin || got.DisplayName != "Alice 2" || got.AvatarURL != "mxc://test/b" || got.Deactivated {
			t.Fatalf("after updates: %+v", got)
		}
		must(t, db.SetAdmin(ctx, "@alice:test", false))
		got, err = db.GetUser(ctx, "@alice:test")
		must(t, err)
		if got.IsAdmin {
			t.Fatal("SetAdmin(false) did not clear the flag")
		}
		wantErr(t, db.SetPasswordHash(ctx, "@nobody:test", "x"), storage.ErrNotFound)
		wantErr(t, db.SetAdmin(ctx, "@nobody:test", true), storage.ErrNotFound)
		wantErr(t, db.SetDisplayName(ctx, "@nobody:test", "x"), storage.ErrNotFound)

		// Devices.
		d1 := storage.Device{UserID: "@alice:test", DeviceID: "DEV1", DisplayName: "phone", TokenHash: "th1", LastSeenTS: 10, LastSeenIP: "10.0.0.1", CreatedTS: 10, Class: "mobile"}
		must(t, db.PutDevice(ctx, d1))
		must(t, db.PutDevice(ctx, storage.Device{UserID: "@alice:test", DeviceID: "DEV2", TokenHash: "th2", CreatedTS: 20}))
		must(t, db.PutDevice(ctx, storage.Device{UserID: "@alice:test", DeviceID: "DEV3", TokenHash: "th3", CreatedTS: 30}))
		must(t, db.PutDevice(ctx, storage.Device{UserID: "@bob:test", DeviceID: "BOB1", TokenHash: "thb", CreatedTS: 40}))
		// A token hash belongs to one device only.
		wantErr(t, db.PutDevice(ctx, storage.Device{UserID: "@bob:test", DeviceID: "BOB2", TokenHash: "th1", CreatedTS: 50}), storage.ErrConflict)

		dev, err := db.DeviceByTokenHash(ctx, "th1")
		must(t, err)
		deepEqual(t, "device by token", dev, d1)
		_, err = db.DeviceByTokenHash(ctx, "nope")
		wantErr(t, err, storage.ErrNotFound)
		_, err = db.GetDevice(ctx, "@alice:test", "NOPE")
		wantErr(t, err, storage.ErrNotFound)

		// Re-putting a device rotates its token and keeps its name when
		// none is given.
		must(t, db.PutDevice(ctx, storage.Device{UserID: "@alice:test", DeviceID: "DEV1", TokenHash: "th1b", LastSeenTS: 11, CreatedTS: 99}))
		_, err = db.DeviceByTokenHash(ctx, "th1")
		wantErr(t, err, storage.ErrNotFound)
		dev, err = db.DeviceByTokenHash(ctx, "th1b")
		must(t, err)
		if dev.DeviceID != "DEV1" || dev.DisplayName != "phone" || dev.CreatedTS != 10 || dev.LastSeenTS != 11 {
			t.Fatalf("re-put device: %+v", dev)
		}

		must(t, db.SetDeviceName(ctx, "@alice:test", "DEV2", "laptop"))
		wantErr(t, db.SetDeviceName(ctx, "@alice:test", "NOPE", "x"), storage.ErrNotFound)
		must(t, db.TouchDevice(ctx, "@alice:test", "DEV2", "192.0.2.7", 777))
		dev, err = db.GetDevice(ctx, "@alice:test", "DEV2")
		must(t, err)
		if dev.DisplayName != "laptop" || dev.LastSeenIP != "192.0.2.7" || dev.LastSeenTS != 777 || dev.TokenHash != "th2" {
			t.Fatalf("DEV2 after rename/touch: %+v", dev)
		}

		devs, err := db.ListDevices(ctx, "@alice:test")
		must(t, err)
		var ids []string
		for _, d := range devs {
			ids = append(ids, d.DeviceID)
		}
		deepEqual(t, "alice's devices", ids, []string{"DEV1", "DEV2", "DEV3"})

		// Delete named devices; a device of someone else is untouched.
		deleted, err := db.DeleteDevices(ctx, "@alice:test", []string{"DEV3", "BOB1", "NOPE"}, "")
		must(t, err)
		deepEqual(t, "deleted", deleted, []string{"DEV3"})
		_, err = db.GetDevice(ctx, "@bob:test", "BOB1")
		must(t, err)
		must(t, db.PutDevice(ctx, storage.Device{UserID: "@alice:test", DeviceID: "DEV4", TokenHash: "th4", CreatedTS: 60}))
		// Delete all but one.
		deleted, err = db.DeleteDevices(ctx, "@alice:test", nil, "DEV2")
		must(t, err)
		sort.Strings(deleted)
		deepEqual(t, "deleted all but DEV2", deleted, []string{"DEV1", "DEV4"})
		devs, err = db.ListDevices(ctx, "@alice:test")
		must(t, err)
		if len(devs) != 1 || devs[0].DeviceID != "DEV2" {
			t.Fatalf("after delete-all-but-one: %+v", devs)
		}

		// Filters: IDs are per user and increase.
		f0, err := db.CreateFilter(ctx, "@alice:test", []byte(`{"room":{"timeline":{"limit":10}}}`))
		must(t, err)
		f1, err := db.CreateFilter(ctx, "@alice:test", []byte(`{"presence":{"not_types":["*"]}}`))
		must(t, err)
		if f0 == f1 {
			t.Fatalf("two filters got the same ID %q", f0)
		}
		js, err := db.GetFilter(ctx, "@alice:test", f0)
		must(t, err)
		if string(js) != `{"room":{"timeline":{"limit":10}}}` {
			t.Fatalf("filter %s = %s", f0, js)
		}
		js, err = db.GetFilter(ctx, "@alice:test", f1)
		must(t, err)
		if string(js) != `{"presence":{"not_types":["*"]}}` {
			t.Fatalf("filter %s = %s", f1, js)
		}
		_, err = db.GetFilter(ctx, "@bob:test", f0)
		wantErr(t, err, storage.ErrNotFound)
		_, err = db.GetFilter(ctx, "@alice:test", "not-a-number")
		wantErr(t, err, storage.ErrNotFound)
		_, err = db.GetFilter(ctx, "@alice:test", "9999")
		wantErr(t, err, storage.ErrNotFound)

		// Deactivation clears password and profile and drops every device.
		must(t, db.PutDevice(ctx, storage.Device{UserID: "@alice:test", DeviceID: "DEV5", TokenHash: "th5", CreatedTS: 70}))
		must(t, db.DeactivateUser(ctx, "@alice:test"))
		got, err = db.GetUser(ctx, "@alice:test")
		must(t, err)
		if !got.Deactivated || got.PasswordHash != "" || got.DisplayName != "" || got.AvatarURL != "" {
			t.Fatalf("after deactivation: %+v", got)
		}
		devs, err = db.ListDevices(ctx, "@alice:test")
		must(t, err)
		if len(devs) != 0 {
			t.Fatalf("devices left after deactivation: %+v", devs)
		}
		_, err = db.DeviceByTokenHash(ctx, "th2")
		wantErr(t, err, storage.ErrNotFound)
		_, err = db.GetDevice(ctx, "@bob:test", "BOB1")
		must(t, err)
		wantErr(t, db.DeactivateUser(ctx, "@nobody:test"), storage.ErrNotFound)
	})
}

const roomID = "!room:test"

// createRoom commits a room's first events: create (group 1, whole) and the
// creator's join (group 2, a delta on 1), in one batch, at positions 1 and 2.
func createRoom(t *testing.T, db storage.Store) {
	t.Helper()
	ctx := context.Background()
	create := storage.Event{Pos: 1, EventID: "$create", RoomID: roomID, Type: "m.room.create", StateKey: strp(""),
		Sender: "@alice:test", Depth: 1, StateGroup: 0, JSON: []byte(`{"type":"m.room.create","content":{"creator":"@alice:test"}}`)}
	join := storage.Event{Pos: 2, EventID: "$join", RoomID: roomID, Type: "m.room.member", StateKey: strp("@alice:test"),
		Sender: "@alice:test", Depth: 2, StateGroup: 1, JSON: []byte(`{"type":"m.room.member","content":{"membership":"join"}}`)}
	must(t, db.CommitEvents(ctx, []storage.EventCommit{
		{
			Event:   create,
			NewRoom: &storage.Room{RoomID: roomID, Version: "10", Creator: "@alice:test", CreatedTS: 5000, Latest: []string{"$create"}, Depth: 1, StateGroup: 1},
			Latest:  []string{"$create"}, Depth: 1, StateGroup: 1,
			NewGroup: &storage.StateGroup{ID: 1, RoomID: roomID, Prev: 0, Depth: 0,
				Entries: []storage.StateEntry{{Type: "m.room.create", StateKey: "", EventID: "$create"}}},
		},
		{
			Event:  join,
			Latest: []string{"$join"}, Depth: 2, StateGroup: 2,
			NewGroup: &storage.StateGroup{ID: 2, RoomID: roomID, Prev: 1, Depth: 1,
				Entries: []storage.StateEntry{{Type: "m.room.member", StateKey: "@alice:test", EventID: "$join"}}},
			Membership: &storage.Membership{RoomID: roomID, UserID: "@alice:test", Membership: "join", EventID: "$join", Pos: 2},
		},
	}))
}

func TestRooms(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		db := testrig.OpenStore(t, engine)

		pos, err := db.MaxStreamPos(ctx)
		must(t, err)
		sg, err := db.MaxStateGroup(ctx)
		must(t, err)
		if pos != 0 || sg != 0 {
			t.Fatalf("empty store: MaxStreamPos %d, MaxStateGroup %d", pos, sg)
		}
		_, err = db.GetRoom(ctx, roomID)
		wantErr(t, err, storage.ErrNotFound)

		createRoom(t, db)

		room, err := db.GetRoom(ctx, roomID)
		must(t, err)
		deepEqual(t, "room", room, storage.Room{RoomID: roomID, Version: "10", Creator: "@alice:test", CreatedTS: 5000,
			Latest: []string{"$join"}, Depth: 2, StateGroup: 2})

		evs, err := db.GetEvents(ctx, []string{"$create", "$join", "$missing"})
		must(t, err)
		if len(evs) != 2 {
			t.Fatalf("GetEvents returned %d events, want 2: %+v", len(evs), evs)
		}
		byID := map[string]storage.Event{}
		for _, e := range evs {
			byID[e.EventID] = e
		}
		deepEqual(t, "create event", byID["$create"], storage.Event{Pos: 1, EventID: "$create", RoomID: roomID, Type: "m.room.create",
			StateKey: strp(""), Sender: "@alice:test", Depth: 1, StateGroup: 0,
			JSON: []byte(`{"type":"m.room.create","content":{"creator":"@alice:test"}}`)})
		if e := byID["$join"]; e.StateKey == nil || *e.StateKey != "@alice:test" || e.StateGroup != 1 || e.Pos != 2 {
			t.Fatalf("join event: %+v", e)
		}

		// A message sent by a device with a transaction ID; not state.
		msg := storage.Event{Pos: 3, EventID: "$msg", RoomID: roomID, Type: "m.room.message", Sender: "@alice:test",
			Depth: 3, StateGroup: 2, JSON: []byte(`{"type":"m.room.message","content":{"body":"secret"}}`),
			TxnDevice: "DEV1", TxnID: "txn1"}
		must(t, db.CommitEvents(ctx, []storage.EventCommit{{Event: msg, Latest: []string{"$msg"}, Depth: 3, StateGroup: 2}}))
		evs, err = db.GetEvents(ctx, []string{"$msg"})
		must(t, err)
		if len(evs) != 1 || evs[0].StateKey != nil || evs[0].TxnID != "txn1" || string(evs[0].JSON) != string(msg.JSON) {
			t.Fatalf("message event: %+v", evs)
		}
		id, err := db.EventByTxn(ctx, "@alice:test", "DEV1", "txn1")
		must(t, err)
		if id != "$msg" {
			t.Fatalf("EventByTxn = %q", id)
		}
		_, err = db.EventByTxn(ctx, "@alice:test", "DEV2", "txn1")
		wantErr(t, err, storage.ErrNotFound)

		// Name the room: group 3, a delta on group 2; then rename: group 4,
		// a delta on 3 that replaces the name.
		must(t, db.CommitEvents(ctx, []storage.EventCommit{
			{
				Event: storage.Event{Pos: 4, EventID: "$name1", RoomID: roomID, Type: "m.room.name", StateKey: strp(""),
					Sender: "@alice:test", Depth: 4, StateGroup: 2, JSON: []byte(`{"type":"m.room.name","content":{"name":"one"}}`)},
				Latest: []string{"$name1"}, Depth: 4, StateGroup: 3,
				NewGroup: &storage.StateGroup{ID: 3, RoomID: roomID, Prev: 2, Depth: 2,
					Entries: []storage.StateEntry{{Type: "m.room.name", StateKey: "", EventID: "$name1"}}},
			},
			{
				Event: storage.Event{Pos: 5, EventID: "$name2", RoomID: roomID, Type: "m.room.name", StateKey: strp(""),
					Sender: "@alice:test", Depth: 5, StateGroup: 3, JSON: []byte(`{"type":"m.room.name","content":{"name":"two"}}`)},
				Latest: []string{"$name2"}, Depth: 5, StateGroup: 4,
				NewGroup: &storage.StateGroup{ID: 4, RoomID: roomID, Prev: 3, Depth: 3,
					Entries: []storage.StateEntry{{Type: "m.room.name", StateKey: "", EventID: "$name2"}}},
			},
		}))

		g1, err := db.GetStateGroup(ctx, 1)
		must(t, err)
		deepEqual(t, "group 1", g1, storage.StateGroup{ID: 1, RoomID: roomID, Prev: 0, Depth: 0,
			Entries: []storage.StateEntry{{Type: "m.room.create", StateKey: "", EventID: "$create"}}})
		g3, err := db.GetStateGroup(ctx, 3)
		must(t, err)
		deepEqual(t, "group 3 (delta on 2)", g3, storage.StateGroup{ID: 3, RoomID: roomID, Prev: 2, Depth: 2,
			Entries: []storage.StateEntry{{Type: "m.room.name", StateKey: "", EventID: "$name1"}}})
		_, err = db.GetStateGroup(ctx, 99)
		wantErr(t, err, storage.ErrNotFound)

		wantAt3 := []storage.StateEntry{
			{Type: "m.room.create", StateKey: "", EventID: "$create"},
			{Type: "m.room.member", StateKey: "@alice:test", EventID: "$join"},
			{Type: "m.room.name", StateKey: "", EventID: "$name1"},
		}
		deepEqual(t, "resolved state of group 3", resolveGroup(t, db, 3), wantAt3)
		wantAt4 := []storage.StateEntry{
			{Type: "m.room.create", StateKey: "", EventID: "$create"},
			{Type: "m.room.member", StateKey: "@alice:test", EventID: "$join"},
			{Type: "m.room.name", StateKey: "", EventID: "$name2"},
		}
		deepEqual(t, "resolved state of group 4", resolveGroup(t, db, 4), wantAt4)

		cur, err := db.CurrentState(ctx, roomID)
		must(t, err)
		deepEqual(t, "current state", sortEntries(cur), wantAt4)

		// Memberships.
		ms, err := db.UserMemberships(ctx, "@alice:test")
		must(t, err)
		deepEqual(t, "alice's memberships", ms, []storage.Membership{
			{RoomID: roomID, UserID: "@alice:test", Membership: "join", EventID: "$join", Pos: 2}})
		ms, err = db.UserMemberships(ctx, "@bob:test")
		must(t, err)
		if len(ms) != 0 {
			t.Fatalf("bob's memberships: %+v", ms)
		}
		// Bob is invited, then joins: one row per user, updated in place.
		must(t, db.CommitEvents(ctx, []storage.EventCommit{
			{
				Event: storage.Event{Pos: 6, EventID: "$invbob", RoomID: roomID, Type: "m.room.member", StateKey: strp("@bob:test"),
					Sender: "@alice:test", Depth: 6, StateGroup: 4, JSON: []byte(`{"type":"m.room.member","content":{"membership":"invite"}}`)},
				Latest: []string{"$invbob"}, Depth: 6, StateGroup: 5,
				NewGroup: &storage.StateGroup{ID: 5, RoomID: roomID, Prev: 4, Depth: 4,
					Entries: []storage.StateEntry{{Type: "m.room.member", StateKey: "@bob:test", EventID: "$invbob"}}},
				Membership: &storage.Membership{RoomID: roomID, UserID: "@bob:test", Membership: "invite", EventID: "$invbob", Pos: 6},
			},
			{
				Event: storage.Event{Pos: 7, EventID: "$joinbob", RoomID: roomID, Type: "m.room.member", StateKey: strp("@bob:test"),
					Sender: "@bob:test", Depth: 7, StateGroup: 5, JSON: []byte(`{"type":"m.room.member","content":{"membership":"join"}}`)},
				Latest: []string{"$joinbob"}, Depth: 7, StateGroup: 6,
				NewGroup: &storage.StateGroup{ID: 6, RoomID: roomID, Prev: 0, Depth: 0, Entries: []storage.StateEntry{
					{Type: "m.room.create", StateKey: "", EventID: "$create"},
					{Type: "m.room.member", StateKey: "@alice:test", EventID: "$join"},
					{Type: "m.room.member", StateKey: "@bob:test", EventID: "$joinbob"},
					{Type: "m.room.name", StateKey: "", EventID: "$name2"},
				}},
				Membership: &storage.Membership{RoomID: roomID, UserID: "@bob:test", Membership: "join", EventID: "$joinbob", Pos: 7},
			},
		}))
		ms, err = db.UserMemberships(ctx, "@bob:test")
		must(t, err)
		deepEqual(t, "bob's memberships", ms, []storage.Membership{
			{RoomID: roomID, UserID: "@bob:test", Membership: "join", EventID: "$joinbob", Pos: 7}})
		ms, err = db.RoomMemberships(ctx, roomID)
		must(t, err)
		if len(ms) != 2 {
			t.Fatalf("room memberships: %+v", ms)
		}
		wantAt5 := []storage.StateEntry{
			{Type: "m.room.create", StateKey: "", EventID: "$create"},
			{Type: "m.room.member", StateKey: "@alice:test", EventID: "$join"},
			{Type: "m.room.member", StateKey: "@bob:test", EventID: "$invbob"},
			{Type: "m.room.name", StateKey: "", EventID: "$name2"},
		}
		deepEqual(t, "resolved state of group 5 (chain of four deltas)", resolveGroup(t, db, 5), wantAt5)
		wantAt6 := slices.Clone(wantAt5)
		wantAt6[2].EventID = "$joinbob"
		deepEqual(t, "resolved whole group 6", resolveGroup(t, db, 6), wantAt6)
		cur, err = db.CurrentState(ctx, roomID)
		must(t, err)
		deepEqual(t, "current state after bob joined", sortEntries(cur), resolveGroup(t, db, 6))
		must(t, db.ForgetRoom(ctx, "@bob:test", roomID))
		ms, err = db.UserMemberships(ctx, "@bob:test")
		must(t, err)
		if len(ms) != 1 || !ms[0].Forgotten {
			t.Fatalf("after ForgetRoom: %+v", ms)
		}
		wantErr(t, db.ForgetRoom(ctx, "@carol:test", roomID), storage.ErrNotFound)

		// Redaction: the redacted event's JSON is replaced and it records
		// what redacted it.
		stripped := []byte(`{"type":"m.room.message","content":{}}`)
		must(t, db.CommitEvents(ctx, []storage.EventCommit{{
			Event: storage.Event{Pos: 8, EventID: "$redact", RoomID: roomID, Type: "m.room.redaction", Sender: "@alice:test",
				Depth: 8, StateGroup: 6, JSON: []byte(`{"type":"m.room.redaction","redacts":"$msg"}`)},
			Latest: []string{"$redact"}, Depth: 8, StateGroup: 6,
			Redacts: "$msg", RedactedJSON: stripped,
		}}))
		evs, err = db.GetEvents(ctx, []string{"$msg"})
		must(t, err)
		if len(evs) != 1 || string(evs[0].JSON) != string(stripped) || evs[0].RedactedBy != "$redact" {
			t.Fatalf("redacted event: %+v (json %s)", evs, evs[0].JSON)
		}
		if evs[0].Pos != 3 || evs[0].Type != "m.room.message" {
			t.Fatalf("redaction changed more than the JSON: %+v", evs[0])
		}

		// Room events by position.
		fwd, err := db.RoomEvents(ctx, roomID, 0, 8, 100, false)
		must(t, err)
		var order []int64
		for _, e := range fwd {
			order = append(order, e.Pos)
		}
		deepEqual(t, "forward positions", order, []int64{1, 2, 3, 4, 5, 6, 7, 8})
		back, err := db.RoomEvents(ctx, roomID, 2, 6, 3, true)
		must(t, err)
		order = order[:0]
		for _, e := range back {
			order = append(order, e.Pos)
		}
		deepEqual(t, "backward positions (2,6] limit 3", order, []int64{6, 5, 4})

		// Events of some types across rooms, for the search index.
		types := []string{"m.room.message", "m.room.name", "m.room.redaction"}
		after, err := db.EventsAfter(ctx, 0, 8, types, 100)
		must(t, err)
		order = order[:0]
		for _, e := range after {
			order = append(order, e.Pos)
		}
		deepEqual(t, "events after 0 up to 8 of three types", order, []int64{3, 4, 5, 8})
		after, err = db.EventsAfter(ctx, 3, 7, types, 1)
		must(t, err)
		if len(after) != 1 || after[0].EventID != "$name1" {
			t.Fatalf("events after 3 up to 7, limit 1: %+v", after)
		}
		after, err = db.EventsAfter(ctx, 0, 8, nil, 100)
		must(t, err)
		if len(after) != 0 {
			t.Fatalf("events after with no types: %+v", after)
		}

		room, err = db.GetRoom(ctx, roomID)
		must(t, err)
		if room.Depth != 8 || room.StateGroup != 6 || !reflect.DeepEqual(room.Latest, []string{"$redact"}) {
			t.Fatalf("room head after commits: %+v", room)
		}
		pos, err = db.MaxStreamPos(ctx)
		must(t, err)
		sg, err = db.MaxStateGroup(ctx)
		must(t, err)
		if pos != 8 || sg != 6 {
			t.Fatalf("MaxStreamPos %d (want 8), MaxStateGroup %d (want 6)", pos, sg)
		}

		// A batch is all or nothing: the second event reuses an event ID,
		// so the first (and its state group) must not be kept either.
		err = db.CommitEvents(ctx, []storage.EventCommit{
			{
				Event: storage.Event{Pos: 9, EventID: "$topic", RoomID: roomID, Type: "m.room.topic", StateKey: strp(""),
					Sender: "@alice:test", Depth: 9, StateGroup: 6, JSON: []byte(`{}`)},
				Latest: []string{"$topic"}, Depth: 9, StateGroup: 7,
				NewGroup: &storage.StateGroup{ID: 7, RoomID: roomID, Prev: 6, Depth: 1,
					Entries: []storage.StateEntry{{Type: "m.room.topic", StateKey: "", EventID: "$topic"}}},
			},
			{
				Event:  storage.Event{Pos: 10, EventID: "$msg", RoomID: roomID, Type: "m.room.message", Sender: "@alice:test", Depth: 10, StateGroup: 7, JSON: []byte(`{}`)},
				Latest: []string{"$msg"}, Depth: 10, StateGroup: 7,
			},
		})
		wantErr(t, err, storage.ErrConflict)
		evs, err = db.GetEvents(ctx, []string{"$topic"})
		must(t, err)
		if len(evs) != 0 {
			t.Fatalf("event of a failed batch was kept: %+v", evs)
		}
		_, err = db.GetStateGroup(ctx, 7)
		wantErr(t, err, storage.ErrNotFound)
		pos, err = db.MaxStreamPos(ctx)
		must(t, err)
		sg, err = db.MaxStateGroup(ctx)
		must(t, err)
		if pos != 8 || sg != 6 {
			t.Fatalf("after failed batch: MaxStreamPos %d, MaxStateGroup %d", pos, sg)
		}
		cur, err = db.CurrentState(ctx, roomID)
		must(t, err)
		deepEqual(t, "current state after failed batch", sortEntries(cur), resolveGroup(t, db, 6))
		room, err = db.GetRoom(ctx, roomID)
		must(t, err)
		if room.Depth != 8 || room.StateGroup != 6 {
			t.Fatalf("room head after failed batch: %+v", room)
		}
		// Creating the same room again conflicts.
		err = db.CommitEvents(ctx, []storage.EventCommit{{
			Event:   storage.Event{Pos: 11, EventID: "$create2", RoomID: roomID, Type: "m.room.create", StateKey: strp(""), Sender: "@alice:test", JSON: []byte(`{}`)},
			NewRoom: &storage.Room{RoomID: roomID, Version: "10", Creator: "@alice:test", Latest: []string{"$create2"}},
		}})
		wantErr(t, err, storage.ErrConflict)

		// Aliases.
		must(t, db.PutAlias(ctx, "#main:test", roomID, "@alice:test"))
		must(t, db.PutAlias(ctx, "#alt:test", roomID, "@bob:test"))
		wantErr(t, db.PutAlias(ctx, "#main:test", "!other:test", "@bob:test"), storage.ErrConflict)
		got, err := db.GetAlias(ctx, "#main:test")
		must(t, err)
		if got != roomID {
			t.Fatalf("GetAlias = %q", got)
		}
		aliases, err := db.RoomAliases(ctx, roomID)
		must(t, err)
		deepEqual(t, "room aliases", aliases, []string{"#alt:test", "#main:test"})
		must(t, db.DeleteAlias(ctx, "#main:test"))
		_, err = db.GetAlias(ctx, "#main:test")
		wantErr(t, err, storage.ErrNotFound)
		wantErr(t, db.DeleteAlias(ctx, "#main:test"), storage.ErrNotFound)
		aliases, err = db.RoomAliases(ctx, roomID)
		must(t, err)
		deepEqual(t, "room aliases after delete", aliases, []string{"#alt:test"})

		// Room directory.
		pub, err := db.PublishedRooms(ctx)
		must(t, err)
		if len(pub) != 0 {
			t.Fatalf("published rooms before publishing: %v", pub)
		}
		must(t, db.SetPublished(ctx, roomID, true))
		pub, err = db.PublishedRooms(ctx)
		must(t, err)
		deepEqual(t, "published rooms", pub, []string{roomID})
		room, err = db.GetRoom(ctx, roomID)
		must(t, err)
		if !room.Published {
			t.Fatal("room not marked published")
		}
		wantErr(t, db.SetPublished(ctx, "!nope:test", true), storage.ErrNotFound)
	})
}

func TestStreams(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		db := testrig.OpenStore(t, engine)
		const alice = "@alice:test"

		// Account data, global and per room.
		must(t, db.PutAccountData(ctx, storage.AccountData{UserID: alice, Type: "m.push_rules", Content: []byte(`{"v":1}`), Pos: 1}))
		must(t, db.PutAccountData(ctx, storage.AccountData{UserID: alice, RoomID: roomID, Type: "m.tag", Content: []byte(`{"tags":{}}`), Pos: 2}))
		must(t, db.PutAccountData(ctx, storage.AccountData{UserID: "@bob:test", Type: "m.push_rules", Content: []byte(`{"bob":true}`), Pos: 3}))

		c, err := db.GetAccountData(ctx, alice, "", "m.push_rules")
		must(t, err)
		if string(c) != `{"v":1}` {
			t.Fatalf("global account data = %s", c)
		}
		c, err = db.GetAccountData(ctx, alice, roomID, "m.tag")
		must(t, err)
		if string(c) != `{"tags":{}}` {
			t.Fatalf("room account data = %s", c)
		}
		_, err = db.GetAccountData(ctx, alice, roomID, "m.push_rules")
		wantErr(t, err, storage.ErrNotFound)
		_, err = db.GetAccountData(ctx, alice, "", "m.tag")
		wantErr(t, err, storage.ErrNotFound)

		// Overwrite moves the entry to the new position.
		must(t, db.PutAccountData(ctx, storage.AccountData{UserID: alice, Type: "m.push_rules", Content: []byte(`{"v":2}`), Pos: 4}))
		c, err = db.GetAccountData(ctx, alice, "", "m.push_rules")
		must(t, err)
		if string(c) != `{"v":2}` {
			t.Fatalf("overwritten account data = %s", c)
		}
		since, err := db.AccountDataSince(ctx, alice, 0, 10)
		must(t, err)
		deepEqual(t, "account data since 0", since, []storage.AccountData{
			{UserID: alice, RoomID: roomID, Type: "m.tag", Content: []byte(`{"tags":{}}`), Pos: 2},
			{UserID: alice, Type: "m.push_rules", Content: []byte(`{"v":2}`), Pos: 4},
		})
		since, err = db.AccountDataSince(ctx, alice, 2, 10)
		must(t, err)
		if len(since) != 1 || since[0].Pos != 4 {
			t.Fatalf("account data since 2: %+v", since)
		}
		since, err = db.AccountDataSince(ctx, alice, 0, 3)
		must(t, err)
		if len(since) != 1 || since[0].Type != "m.tag" {
			t.Fatalf("account data in (0,3]: %+v", since)
		}

		// Receipts: one per (room, user, type, thread), updated in place.
		must(t, db.PutReceipt(ctx, storage.Receipt{RoomID: roomID, UserID: alice, Type: "m.read", EventID: "$e1", TS: 100, Pos: 5}))
		must(t, db.PutReceipt(ctx, storage.Receipt{RoomID: roomID, UserID: alice, Type: "m.read.private", EventID: "$e1", TS: 101, Pos: 6}))
		must(t, db.PutReceipt(ctx, storage.Receipt{RoomID: "!other:test", UserID: "@bob:test", Type: "m.read", EventID: "$o1", TS: 102, Pos: 7}))
		must(t, db.PutReceipt(ctx, storage.Receipt{RoomID: roomID, UserID: alice, Type: "m.read", EventID: "$e2", TS: 103, Pos: 8}))
		rs, err := db.UserReceipts(ctx, alice)
		must(t, err)
		deepEqual(t, "alice's receipts", rs, []storage.Receipt{
			{RoomID: roomID, UserID: alice, Type: "m.read.private", EventID: "$e1", TS: 101, Pos: 6},
			{RoomID: roomID, UserID: alice, Type: "m.read", EventID: "$e2", TS: 103, Pos: 8},
		})
		rs, err = db.ReceiptsSince(ctx, []string{roomID}, 6, 100)
		must(t, err)
		if len(rs) != 1 || rs[0].EventID != "$e2" {
			t.Fatalf("receipts in room since 6: %+v", rs)
		}
		rs, err = db.ReceiptsSince(ctx, []string{roomID, "!other:test"}, 0, 7)
		must(t, err)
		if len(rs) != 2 || rs[0].Pos != 6 || rs[1].Pos != 7 {
			t.Fatalf("receipts in two rooms (0,7]: %+v", rs)
		}

		// To-device.
		must(t, db.PutToDevice(ctx, []storage.ToDevice{
			{Pos: 9, UserID: alice, DeviceID: "DEV1", Sender: "@bob:test", Type: "m.room_key", Content: []byte(`{"n":1}`)},
			{Pos: 10, UserID: alice, DeviceID: "DEV2", Sender: "@bob:test", Type: "m.room_key", Content: []byte(`{"n":2}`)},
			{Pos: 11, UserID: alice, DeviceID: "DEV1", Sender: "@bob:test", Type: "m.room_key", Content: []byte(`{"n":3}`)},
			{Pos: 12, UserID: alice, DeviceID: "DEV1", Sender: "@carol:test", Type: "m.dummy", Content: []byte(`{"n":4}`)},
		}))
		msgs, err := db.ToDeviceSince(ctx, alice, "DEV1", 0, 100, 100)
		must(t, err)
		deepEqual(t, "DEV1 to-device", msgs, []storage.ToDevice{
			{Pos: 9, UserID: alice, DeviceID: "DEV1", Sender: "@bob:test", Type: "m.room_key", Content: []byte(`{"n":1}`)},
			{Pos: 11, UserID: alice, DeviceID: "DEV1", Sender: "@bob:test", Type: "m.room_key", Content: []byte(`{"n":3}`)},
			{Pos: 12, UserID: alice, DeviceID: "DEV1", Sender: "@carol:test", Type: "m.dummy", Content: []byte(`{"n":4}`)},
		})
		msgs, err = db.ToDeviceSince(ctx, alice, "DEV1", 9, 100, 1)
		must(t, err)
		if len(msgs) != 1 || msgs[0].Pos != 11 {
			t.Fatalf("DEV1 since 9 limit 1: %+v", msgs)
		}
		msgs, err = db.ToDeviceSince(ctx, alice, "DEV1", 0, 11, 100)
		must(t, err)
		if len(msgs) != 2 || msgs[1].Pos != 11 {
			t.Fatalf("DEV1 in (0,11]: %+v", msgs)
		}
		// A batch with a duplicate (user, device, pos) is refused whole.
		err = db.PutToDevice(ctx, []storage.ToDevice{
			{Pos: 13, UserID: alice, DeviceID: "DEV1", Sender: "@bob:test", Type: "x", Content: []byte(`{}`)},
			{Pos: 9, UserID: alice, DeviceID: "DEV1", Sender: "@bob:test", Type: "x", Content: []byte(`{}`)},
		})
		wantErr(t, err, storage.ErrConflict)
		msgs, err = db.ToDeviceSince(ctx, alice, "DEV1", 12, 100, 100)
		must(t, err)
		if len(msgs) != 0 {
			t.Fatalf("message of a failed batch was kept: %+v", msgs)
		}

		must(t, db.DeleteToDevice(ctx, alice, "DEV1", 11))
		msgs, err = db.ToDeviceSince(ctx, alice, "DEV1", 0, 100, 100)
		must(t, err)
		if len(msgs) != 1 || msgs[0].Pos != 12 {
			t.Fatalf("DEV1 after delete up to 11: %+v", msgs)
		}
		msgs, err = db.ToDeviceSince(ctx, alice, "DEV2", 0, 100, 100)
		must(t, err)
		if len(msgs) != 1 || msgs[0].Pos != 10 {
			t.Fatalf("DEV2 touched by DEV1's delete: %+v", msgs)
		}

		pos, err := db.MaxStreamPos(ctx)
		must(t, err)
		if pos != 12 {
			t.Fatalf("MaxStreamPos = %d, want 12", pos)
		}
		// Deleting the message holding the highest position must not move
		// MaxStreamPos back.
		must(t, db.DeleteToDevice(ctx, alice, "DEV1", 12))
		must(t, db.DeleteToDevice(ctx, alice, "DEV2", 12))
		msgs, err = db.ToDeviceSince(ctx, alice, "DEV1", 0, 100, 100)
		must(t, err)
		if len(msgs) != 0 {
			t.Fatalf("DEV1 after delete up to 12: %+v", msgs)
		}
		pos, err = db.MaxStreamPos(ctx)
		must(t, err)
		if pos != 12 {
			t.Fatalf("MaxStreamPos after deleting to-device = %d, want 12", pos)
		}
	})
}

func TestMedia(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		db := testrig.OpenStore(t, engine)
		m := storage.MediaItem{MediaID: "abcDEF123", ContentType: "image/png", Size: 12345, Filename: "cat.png",
			SHA256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", Uploader: "@alice:test", CreatedTS: 42}
		must(t, db.PutMedia(ctx, m))
		got, err := db.GetMedia(ctx, "abcDEF123")
		must(t, err)
		deepEqual(t, "media", got, m)
		_, err = db.GetMedia(ctx, "abcdef123")
		wantErr(t, err, storage.ErrNotFound)
		wantErr(t, db.PutMedia(ctx, m), storage.ErrConflict)
	})
}

// TestReopen closes a store and opens it again: the data is still there and
// the migrations, already applied, are not applied twice.
func TestReopen(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		var open func() (*sqlstore.DB, error)
		switch engine {
		case "sqlite":
			path := filepath.Join(t.TempDir(), "m.db")
			open = func() (*sqlstore.DB, error) { return sqlstore.OpenSQLite(ctx, path, false) }
		case "postgres":
			dsn := testrig.PostgresDSN(t)
			open = func() (*sqlstore.DB, error) { return sqlstore.OpenPostgres(ctx, dsn) }
		default:
			t.Fatalf("unknown engine %q", engine)
		}

		db, err := open()
		must(t, err)
		if db.Dialect() != engine {
			t.Fatalf("Dialect() = %q, want %q", db.Dialect(), engine)
		}
		must(t, db.CreateUser(ctx, storage.User{UserID: "@alice:test", PasswordHash: "h", CreatedTS: 1}))
		must(t, db.PutDevice(ctx, storage.Device{UserID: "@alice:test", DeviceID: "DEV1", TokenHash: "tok", CreatedTS: 1}))
		createRoom(t, db)
		must(t, db.PutToDevice(ctx, []storage.ToDevice{{Pos: 3, UserID: "@alice:test", DeviceID: "DEV1", Sender: "@bob:test", Type: "x", Content: []byte(`{}`)}}))
		must(t, db.DeleteToDevice(ctx, "@alice:test", "DEV1", 3))
		must(t, db.Close())

		for i := 0; i < 2; i++ {
			db, err = open()
			must(t, err)
			u, err := db.GetUser(ctx, "@alice:test")
			must(t, err)
			if u.PasswordHash != "h" {
				t.Fatalf("reopen %d: user %+v", i, u)
			}
			d, err := db.DeviceByTokenHash(ctx, "tok")
			must(t, err)
			if d.DeviceID != "DEV1" {
				t.Fatalf("reopen %d: device %+v", i, d)
			}
			room, err := db.GetRoom(ctx, roomID)
			must(t, err)
			if room.StateGroup != 2 || !reflect.DeepEqual(room.Latest, []string{"$join"}) {
				t.Fatalf("reopen %d: room %+v", i, room)
			}
			deepEqual(t, "state after reopen", resolveGroup(t, db, 2), []storage.StateEntry{
				{Type: "m.room.create", StateKey: "", EventID: "$create"},
				{Type: "m.room.member", StateKey: "@alice:test", EventID: "$join"},
			})
			pos, err := db.MaxStreamPos(ctx)
			must(t, err)
			sg, err := db.MaxStateGroup(ctx)
			must(t, err)
			if pos != 3 || sg != 2 {
				t.Fatalf("reopen %d: MaxStreamPos %d (want 3), MaxStateGroup %d (want 2)", i, pos, sg)
			}
			// The store is writable after reopening.
			must(t, db.PutMedia(ctx, storage.MediaItem{MediaID: "m" + string(rune('0'+i)), ContentType: "text/plain", CreatedTS: int64(i)}))
			must(t, db.Close())
		}
	})
}
