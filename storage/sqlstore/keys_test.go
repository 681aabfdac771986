package sqlstore_test

import (
	"context"
	"sync"
	"testing"

	"github.com/machi-chat/machi/internal/testrig"
	"github.com/machi-chat/machi/storage"
)

func TestKeys(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		db := testrig.OpenStore(t, engine)
		const alice, bob = "@alice:test", "@bob:test"
		must(t, db.PutDevice(ctx, storage.Device{UserID: alice, DeviceID: "A1", TokenHash: "a1", CreatedTS: 1}))
		must(t, db.PutDevice(ctx, storage.Device{UserID: alice, DeviceID: "A2", TokenHash: "a2", CreatedTS: 1}))

		// Device keys, replaced on re-upload, selected by device.
		must(t, db.PutDeviceKeys(ctx, alice, "A1", []byte(`{"v":1}`)))
		must(t, db.PutDeviceKeys(ctx, alice, "A1", []byte(`{"v":2}`)))
		must(t, db.PutDeviceKeys(ctx, alice, "A2", []byte(`{"v":3}`)))
		must(t, db.PutDeviceKeys(ctx, bob, "B1", []byte(`{"v":4}`)))
		keys, err := db.DeviceKeys(ctx, map[string][]string{alice: nil, "@nobody:test": nil})
		must(t, err)
		if len(keys) != 1 || string(keys[alice]["A1"]) != `{"v":2}` || len(keys[alice]) != 2 {
			t.Fatalf("device keys: %v", keys)
		}
		keys, _ = db.DeviceKeys(ctx, map[string][]string{alice: {"A2"}, bob: nil})
		if len(keys[alice]) != 1 || keys[alice]["A2"] == nil || keys[bob]["B1"] == nil {
			t.Fatalf("device keys by device: %v", keys)
		}

		// One-time keys: counted, claimed once each, then the fallback.
		must(t, db.PutOneTimeKeys(ctx, alice, "A1", []storage.OneTimeKey{
			{KeyID: "signed_curve25519:AAAA", Algorithm: "signed_curve25519", JSON: []byte(`{"key":"k1"}`)},
			{KeyID: "signed_curve25519:AAAB", Algorithm: "signed_curve25519", JSON: []byte(`{"key":"k2"}`)},
		}))
		must(t, db.PutOneTimeKeys(ctx, alice, "A1", []storage.OneTimeKey{ // a re-upload keeps the first
			{KeyID: "signed_curve25519:AAAA", Algorithm: "signed_curve25519", JSON: []byte(`{"key":"changed"}`)},
		}))
		counts, err := db.OneTimeKeyCounts(ctx, alice, "A1")
		must(t, err)
		deepEqual(t, "counts", counts, map[string]int{"signed_curve25519": 2})
		_, err = db.ClaimKey(ctx, alice, "A1", "signed_curve25519")
		must(t, err)
		must(t, db.PutFallbackKeys(ctx, alice, "A1", []storage.OneTimeKey{{KeyID: "signed_curve25519:FFFF", Algorithm: "signed_curve25519", JSON: []byte(`{"key":"fb"}`)}}))
		types, err := db.UnusedFallbackKeyTypes(ctx, alice, "A1")
		must(t, err)
		deepEqual(t, "unused fallback", types, []string{"signed_curve25519"})
		// Two claims race for the last one-time key: one gets it, one the fallback.
		var wg sync.WaitGroup
		got := make([]storage.OneTimeKey, 2)
		for i := range got {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				k, err := db.ClaimKey(ctx, alice, "A1", "signed_curve25519")
				if err != nil {
					t.Error(err)
				}
				got[i] = k
			}(i)
		}
		wg.Wait()
		if got[0].KeyID == got[1].KeyID || (got[0].KeyID != "signed_curve25519:FFFF" && got[1].KeyID != "signed_curve25519:FFFF") {
			t.Fatalf("racing claims: %+v", got)
		}
		types, _ = db.UnusedFallbackKeyTypes(ctx, alice, "A1")
		if len(types) != 0 {
			t.Fatalf("fallback still unused after a claim: %v", types)
		}
		k, err := db.ClaimKey(ctx, alice, "A1", "signed_curve25519") // the fallback again
		must(t, err)
		if string(k.JSON) != `{"key":"fb"}` {
			t.Fatalf("fallback claim: %+v", k)
		}
		_, err = db.ClaimKey(ctx, alice, "A2", "signed_curve25519")
		wantErr(t, err, storage.ErrNotFound)

		// Cross-signing keys.
		must(t, db.PutCrossSigningKey(ctx, alice, "master", []byte(`{"m":1}`)))
		must(t, db.PutCrossSigningKey(ctx, alice, "master", []byte(`{"m":2}`)))
		must(t, db.PutCrossSigningKey(ctx, alice, "self_signing", []byte(`{"s":1}`)))
		cs, err := db.CrossSigningKeys(ctx, []string{alice, bob})
		must(t, err)
		if len(cs) != 1 || string(cs[alice]["master"]) != `{"m":2}` || cs[alice]["self_signing"] == nil {
			t.Fatalf("cross-signing keys: %v", cs)
		}

		// Deleting a device deletes its keys; deactivation deletes all.
		_, err = db.DeleteDevices(ctx, alice, []string{"A1"}, "")
		must(t, err)
		keys, _ = db.DeviceKeys(ctx, map[string][]string{alice: nil})
		if _, ok := keys[alice]["A1"]; ok || keys[alice]["A2"] == nil {
			t.Fatalf("keys after deleting A1: %v", keys)
		}
		counts, _ = db.OneTimeKeyCounts(ctx, alice, "A1")
		types, _ = db.UnusedFallbackKeyTypes(ctx, alice, "A1")
		if len(counts) != 0 || len(types) != 0 {
			t.Fatalf("one-time/fallback keys survive their device: %v %v", counts, types)
		}
		must(t, db.CreateUser(ctx, storage.User{UserID: alice, CreatedTS: 1}))
		must(t, db.DeactivateUser(ctx, alice))
		keys, _ = db.DeviceKeys(ctx, map[string][]string{alice: nil})
		cs, _ = db.CrossSigningKeys(ctx, []string{alice})
		if len(keys) != 0 || len(cs) != 0 {
			t.Fatalf("keys survive deactivation: %v %v", keys, cs)
		}

		// Device list changes by position.
		must(t, db.AddDeviceListChange(ctx, alice, 10))
		must(t, db.AddDeviceListChange(ctx, bob, 12))
		must(t, db.AddDeviceListChange(ctx, alice, 14))
		ch, err := db.DeviceListChanges(ctx, 10, 14)
		must(t, err)
		deepEqual(t, "changes in (10,14]", ch, []string{alice, bob})
		ch, _ = db.DeviceListChanges(ctx, 14, 20)
		if len(ch) != 0 {
			t.Fatalf("changes after 14: %v", ch)
		}
		if pos, _ := db.MaxStreamPos(ctx); pos < 14 {
			t.Fatalf("MaxStreamPos %d ignores device list changes", pos)
		}

		// News for one viewer: the latest row per user decides changed or left.
		carol := "@carol:test.local"
		must(t, db.AddViewerDeviceListChanges(ctx, 20, []storage.ViewerDeviceListChange{{Viewer: alice, UserID: bob, Left: true}, {Viewer: bob, UserID: alice, Left: true}}))
		must(t, db.AddViewerDeviceListChanges(ctx, 22, []storage.ViewerDeviceListChange{{Viewer: alice, UserID: carol}}))
		must(t, db.AddViewerDeviceListChanges(ctx, 24, []storage.ViewerDeviceListChange{{Viewer: alice, UserID: carol, Left: true}}))
		changed, left, err := db.ViewerDeviceListChanges(ctx, alice, 14, 22)
		must(t, err)
		deepEqual(t, "alice's changed in (14,22]", changed, []string{carol})
		deepEqual(t, "alice's left in (14,22]", left, []string{bob})
		changed, left, _ = db.ViewerDeviceListChanges(ctx, alice, 20, 30)
		deepEqual(t, "alice's changed in (20,30]", changed, []string{})
		deepEqual(t, "alice's left in (20,30]", left, []string{carol})
		if pos, _ := db.MaxStreamPos(ctx); pos < 24 {
			t.Fatalf("MaxStreamPos %d ignores viewer device list changes", pos)
		}
	})
}
