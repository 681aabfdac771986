package sqlstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/machi-chat/machi/internal/testrig"
	"github.com/machi-chat/machi/storage"
)

const megolmBackup = "m.megolm_backup.v1.curve25519-aes-sha2"

func wantWrongVersion(t *testing.T, err error, current string) {
	t.Helper()
	var wv *storage.WrongBackupVersionError
	if !errors.As(err, &wv) || wv.Current != current {
		t.Fatalf("got error %v, want wrong version with current %s", err, current)
	}
}

func TestKeyBackupVersions(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		db := testrig.OpenStore(t, engine)
		const alice, bob = "@alice:test", "@bob:test"

		_, err := db.KeyBackup(ctx, alice, "")
		wantErr(t, err, storage.ErrNotFound)
		v1, err := db.CreateKeyBackup(ctx, alice, megolmBackup, []byte(`{"public_key":"pk1"}`))
		must(t, err)
		v2, err := db.CreateKeyBackup(ctx, alice, megolmBackup, []byte(`{"public_key":"pk2"}`))
		must(t, err)
		vb, err := db.CreateKeyBackup(ctx, bob, megolmBackup, []byte(`{"public_key":"bob"}`))
		must(t, err)
		if v1 != "1" || v2 != "2" || vb != "1" {
			t.Fatalf("versions %s %s %s, want 1 2 1 (numbered per user)", v1, v2, vb)
		}
		cur, err := db.KeyBackup(ctx, alice, "")
		must(t, err)
		deepEqual(t, "current", cur, storage.KeyBackup{Version: "2", Algorithm: megolmBackup, AuthData: []byte(`{"public_key":"pk2"}`),
			BackupStats: storage.BackupStats{Count: 0, ETag: "0"}})
		old, err := db.KeyBackup(ctx, alice, "1")
		must(t, err)
		if string(old.AuthData) != `{"public_key":"pk1"}` {
			t.Fatalf("version 1: %+v", old)
		}
		for _, v := range []string{"3", "01", "x", "-1", "0"} {
			_, err := db.KeyBackup(ctx, alice, v)
			wantErr(t, err, storage.ErrNotFound)
		}

		must(t, db.UpdateKeyBackup(ctx, alice, "1", []byte(`{"public_key":"pk1b"}`)))
		old, _ = db.KeyBackup(ctx, alice, "1")
		if string(old.AuthData) != `{"public_key":"pk1b"}` {
			t.Fatalf("updated auth data: %s", old.AuthData)
		}
		wantErr(t, db.UpdateKeyBackup(ctx, alice, "9", []byte(`{}`)), storage.ErrNotFound)

		// Deleting the current version makes the one before current; a
		// deleted version stays deleted, and its number is not reused.
		must(t, db.DeleteKeyBackup(ctx, alice, "2"))
		must(t, db.DeleteKeyBackup(ctx, alice, "2"))
		wantErr(t, db.DeleteKeyBackup(ctx, alice, "7"), storage.ErrNotFound)
		wantErr(t, db.DeleteKeyBackup(ctx, alice, "nope"), storage.ErrNotFound)
		_, err = db.KeyBackup(ctx, alice, "2")
		wantErr(t, err, storage.ErrNotFound)
		wantErr(t, db.UpdateKeyBackup(ctx, alice, "2", []byte(`{}`)), storage.ErrNotFound)
		if cur, _ := db.KeyBackup(ctx, alice, ""); cur.Version != "1" {
			t.Fatalf("current after deleting 2: %+v", cur)
		}
		v3, err := db.CreateKeyBackup(ctx, alice, megolmBackup, []byte(`{"public_key":"pk3"}`))
		must(t, err)
		if v3 != "3" {
			t.Fatalf("new version after a deletion: %s, want 3", v3)
		}

		// Creations at once get distinct versions.
		var wg sync.WaitGroup
		got := make([]string, 4)
		for i := range got {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				v, err := db.CreateKeyBackup(ctx, bob, megolmBackup, []byte(`{}`))
				if err != nil {
					t.Error(err)
				}
				got[i] = v
			}(i)
		}
		wg.Wait()
		seen := map[string]bool{vb: true}
		for _, v := range got {
			if seen[v] {
				t.Fatalf("racing creations: %v", got)
			}
			seen[v] = true
		}
	})
}

func TestKeyBackupKeys(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		db := testrig.OpenStore(t, engine)
		const alice, bob = "@alice:test", "@bob:test"
		const room1, room2 = "!one:test", "!two:test"

		_, err := db.PutBackupKeys(ctx, alice, "1", []storage.BackupKey{{RoomID: room1, SessionID: "s"}})
		wantErr(t, err, storage.ErrNotFound) // no backup at all
		_, err = db.CreateKeyBackup(ctx, alice, megolmBackup, []byte(`{}`))
		must(t, err)
		v2, err := db.CreateKeyBackup(ctx, alice, megolmBackup, []byte(`{}`))
		must(t, err)
		_, err = db.PutBackupKeys(ctx, alice, "1", []storage.BackupKey{{RoomID: room1, SessionID: "s"}})
		wantWrongVersion(t, err, v2)
		_, err = db.PutBackupKeys(ctx, alice, "garbage", []storage.BackupKey{{RoomID: room1, SessionID: "s"}})
		wantWrongVersion(t, err, v2)

		key := func(room, session string, verified bool, first, fwd int64, data string) storage.BackupKey {
			return storage.BackupKey{RoomID: room, SessionID: session, IsVerified: verified, FirstMessageIndex: first, ForwardedCount: fwd,
				SessionData: []byte(`{"ciphertext":"` + data + `"}`)}
		}
		stats, err := db.PutBackupKeys(ctx, alice, v2, []storage.BackupKey{
			key(room1, "a", false, 5, 2, "a1"),
			key(room1, "b", true, 0, 0, "b1"),
			key(room2, "c", false, 0, 0, "c1"),
		})
		must(t, err)
		deepEqual(t, "stats after the first put", stats, storage.BackupStats{Count: 3, ETag: "1"})

		// The spec's order of preference, for session a (unverified, 5, 2).
		for _, tc := range []struct {
			k    storage.BackupKey
			keep string // the ciphertext stored after
		}{
			{key(room1, "a", false, 6, 0, "worse index"), "a1"},
			{key(room1, "a", false, 5, 3, "more forwards"), "a1"},
			{key(room1, "a", false, 5, 2, "equal"), "a1"},
			{key(room1, "a", false, 5, 1, "fewer forwards"), "fewer forwards"},
			{key(room1, "a", false, 4, 9, "lower index"), "lower index"},
			{key(room1, "a", true, 99, 99, "verified"), "verified"},
			{key(room1, "a", false, 0, 0, "unverified"), "verified"},
		} {
			replaced := string(tc.k.SessionData) == `{"ciphertext":"`+tc.keep+`"}`
			before, _ := db.KeyBackup(ctx, alice, v2)
			stats, err := db.PutBackupKeys(ctx, alice, v2, []storage.BackupKey{tc.k})
			must(t, err)
			got, err := db.BackupKeys(ctx, alice, v2, room1, "a")
			must(t, err)
			if len(got) != 1 || string(got[0].SessionData) != `{"ciphertext":"`+tc.keep+`"}` {
				t.Fatalf("after putting %q: %+v, want %q kept", tc.k.SessionData, got, tc.keep)
			}
			if replaced == (stats.ETag == before.ETag) {
				t.Fatalf("after putting %q: etag %s → %s (replaced=%v)", tc.k.SessionData, before.ETag, stats.ETag, replaced)
			}
			if stats.Count != 3 {
				t.Fatalf("count %d, want 3", stats.Count)
			}
		}
		got, err := db.BackupKeys(ctx, alice, v2, room1, "a")
		must(t, err)
		deepEqual(t, "the verified key", got, []storage.BackupKey{key(room1, "a", true, 99, 99, "verified")})

		// Two copies of one key in one call: the better one is kept.
		stats, err = db.PutBackupKeys(ctx, alice, v2, []storage.BackupKey{
			key(room2, "dup", false, 9, 0, "first copy"), key(room2, "dup", false, 2, 0, "better copy"), key(room2, "dup", false, 4, 0, "third copy"),
		})
		must(t, err)
		if got, _ := db.BackupKeys(ctx, alice, v2, room2, "dup"); len(got) != 1 || string(got[0].SessionData) != `{"ciphertext":"better copy"}` || stats.Count != 4 {
			t.Fatalf("duplicates in one call: %+v, %+v", got, stats)
		}
		_, err = db.DeleteBackupKeys(ctx, alice, v2, room2, "dup")
		must(t, err)

		// Reads: all, one room, one session; none in another user's backup.
		all, err := db.BackupKeys(ctx, alice, v2, "", "")
		must(t, err)
		if len(all) != 3 || all[0].SessionID != "a" || all[2].RoomID != room2 {
			t.Fatalf("all keys: %+v", all)
		}
		if r1, _ := db.BackupKeys(ctx, alice, v2, room1, ""); len(r1) != 2 {
			t.Fatalf("room 1 keys: %+v", r1)
		}
		if none, err := db.BackupKeys(ctx, alice, v2, room1, "missing"); err != nil || len(none) != 0 {
			t.Fatalf("missing session: %+v %v", none, err)
		}
		if none, err := db.BackupKeys(ctx, alice, "1", "", ""); err != nil || len(none) != 0 {
			t.Fatalf("older version: %+v %v", none, err)
		}
		_, err = db.BackupKeys(ctx, alice, "9", "", "")
		wantErr(t, err, storage.ErrNotFound)
		_, err = db.BackupKeys(ctx, bob, v2, "", "")
		wantErr(t, err, storage.ErrNotFound)

		// Deletes: one session, one room; deleting nothing keeps the etag.
		before, _ := db.KeyBackup(ctx, alice, v2)
		stats, err = db.DeleteBackupKeys(ctx, alice, v2, room1, "nothing-here")
		must(t, err)
		if stats.ETag != before.ETag || stats.Count != 3 {
			t.Fatalf("deleting nothing: %+v, before %+v", stats, before.BackupStats)
		}
		stats, err = db.DeleteBackupKeys(ctx, alice, v2, room1, "a")
		must(t, err)
		if stats.Count != 2 || stats.ETag == before.ETag {
			t.Fatalf("delete one session: %+v", stats)
		}
		stats, err = db.DeleteBackupKeys(ctx, alice, v2, room1, "")
		must(t, err)
		if stats.Count != 1 {
			t.Fatalf("delete room 1: %+v", stats)
		}
		_, err = db.DeleteBackupKeys(ctx, alice, "9", "", "")
		wantErr(t, err, storage.ErrNotFound)

		// Deleting the version takes its keys; the older version is
		// current again and takes writes.
		must(t, db.DeleteKeyBackup(ctx, alice, v2))
		_, err = db.BackupKeys(ctx, alice, v2, "", "")
		wantErr(t, err, storage.ErrNotFound)
		_, err = db.DeleteBackupKeys(ctx, alice, v2, "", "")
		wantErr(t, err, storage.ErrNotFound)
		_, err = db.PutBackupKeys(ctx, alice, v2, []storage.BackupKey{key(room1, "x", false, 0, 0, "x")})
		wantWrongVersion(t, err, "1")
		stats, err = db.PutBackupKeys(ctx, alice, "1", []storage.BackupKey{key(room1, "x", false, 0, 0, "x")})
		must(t, err)
		deepEqual(t, "version 1 stats", stats, storage.BackupStats{Count: 1, ETag: "1"})
		stats, err = db.DeleteBackupKeys(ctx, alice, "1", "", "")
		must(t, err)
		if stats.Count != 0 {
			t.Fatalf("delete all: %+v", stats)
		}

		// A batch larger than one INSERT.
		var many []storage.BackupKey
		for i := range 300 {
			many = append(many, key(room2, fmt.Sprintf("m%03d", i), false, 0, 0, "m"))
		}
		stats, err = db.PutBackupKeys(ctx, alice, "1", many)
		must(t, err)
		if stats.Count != 300 {
			t.Fatalf("300 keys in one call: %+v", stats)
		}
		if got, _ := db.BackupKeys(ctx, alice, "1", room2, "m299"); len(got) != 1 {
			t.Fatalf("the last of 300 keys: %+v", got)
		}

		// Deactivation takes every backup along.
		must(t, db.CreateUser(ctx, storage.User{UserID: bob, CreatedTS: 1}))
		vb, err := db.CreateKeyBackup(ctx, bob, megolmBackup, []byte(`{}`))
		must(t, err)
		_, err = db.PutBackupKeys(ctx, bob, vb, []storage.BackupKey{key(room1, "b", false, 0, 0, "b")})
		must(t, err)
		must(t, db.DeactivateUser(ctx, bob))
		_, err = db.KeyBackup(ctx, bob, "")
		wantErr(t, err, storage.ErrNotFound)
		_, err = db.BackupKeys(ctx, bob, vb, "", "")
		wantErr(t, err, storage.ErrNotFound)
	})
}

// BenchmarkPutBackupKeys stores batches of 200 keys, the batch size
// matrix-js-sdk's Rust crypto uploads: on SQLite the transaction holds the
// one writer connection, which room events wait for.
func BenchmarkPutBackupKeys(b *testing.B) {
	for _, engine := range testrig.Engines(b) {
		b.Run(engine, func(b *testing.B) {
			ctx := context.Background()
			db := testrig.OpenStore(b, engine)
			v, err := db.CreateKeyBackup(ctx, "@alice:test", megolmBackup, []byte(`{}`))
			if err != nil {
				b.Fatal(err)
			}
			data := []byte(`{"ephemeral":"` + strings.Repeat("e", 43) + `","ciphertext":"` + strings.Repeat("c", 600) + `","mac":"` + strings.Repeat("m", 11) + `"}`)
			b.ResetTimer()
			for i := range b.N {
				keys := make([]storage.BackupKey, 200)
				for j := range keys {
					keys[j] = storage.BackupKey{RoomID: fmt.Sprintf("!room%d:test", j%10), SessionID: fmt.Sprintf("s%d-%d", i, j), SessionData: data}
				}
				if _, err := db.PutBackupKeys(ctx, "@alice:test", v, keys); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
