package e2e

import (
	"net/http"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/machi-chat/machi/internal/testrig"
)

// TestE2EEKeys drives the key endpoints directly: what matrix-js-sdk's
// Rust crypto does in js/e2ee.test.mjs, plus the error paths.
func TestE2EEKeys(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		base := baseURL(srv) + "/_matrix/client/v3"
		alice, bob, carol := register(t, srv, "alice"), register(t, srv, "bob"), register(t, srv, "carol")
		post := func(c *mautrix.Client, path string, body, out any) (int, matrixErr) {
			return do(t, http.DefaultClient, "POST", base+path, c.AccessToken, body, out)
		}
		deviceKeys := map[string]any{
			"user_id": alice.UserID, "device_id": alice.DeviceID,
			"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
			"keys":       map[string]string{"curve25519:" + string(alice.DeviceID): "c", "ed25519:" + string(alice.DeviceID): "e"},
			"signatures": map[string]any{string(alice.UserID): map[string]string{"ed25519:" + string(alice.DeviceID): "sig"}},
		}
		sig := map[string]any{string(alice.UserID): map[string]string{"ed25519:" + string(alice.DeviceID): "otksig"}}
		// Bad uploads are refused.
		for _, tc := range []struct {
			body    any
			errcode string
		}{
			{map[string]any{"device_keys": map[string]any{"user_id": bob.UserID, "device_id": alice.DeviceID, "algorithms": []string{"x"}, "keys": map[string]string{"a:b": "c"}}}, "M_INVALID_PARAM"},
			{map[string]any{"device_keys": map[string]any{"user_id": alice.UserID, "device_id": alice.DeviceID}}, "M_BAD_JSON"},
			{map[string]any{"device_keys": "nope"}, "M_BAD_JSON"},
			{map[string]any{"one_time_keys": map[string]any{"no-algorithm": "k"}}, "M_INVALID_PARAM"},
			{map[string]any{"one_time_keys": []string{"x"}}, "M_BAD_JSON"},
			{map[string]any{"one_time_keys": map[string]any{"signed_curve25519:AAAAAQ": map[string]any{"key": "unsigned"}}}, "M_BAD_JSON"},
			{map[string]any{"one_time_keys": map[string]any{"curve25519:AAAAAQ": 7}}, "M_BAD_JSON"},
			{map[string]any{"device_keys": map[string]any{"user_id": alice.UserID, "device_id": alice.DeviceID,
				"algorithms": []string{"m.megolm.v1.aes-sha2"}, "keys": map[string]string{"ed25519:X": "e"}}}, "M_BAD_JSON"},
		} {
			if code, me := post(alice, "/keys/upload", tc.body, nil); code != 400 || me.Code != tc.errcode {
				t.Errorf("upload %v: %d %+v, want 400 %s", tc.body, code, me, tc.errcode)
			}
		}
		// Signatures may be empty: the clients check them.
		if code, me := post(bob, "/keys/upload", map[string]any{"device_keys": map[string]any{"user_id": bob.UserID, "device_id": bob.DeviceID,
			"algorithms": []string{"m.megolm.v1.aes-sha2"}, "keys": map[string]string{"ed25519:" + string(bob.DeviceID): "e"}, "signatures": map[string]any{}}}, nil); code != 200 {
			t.Errorf("upload with empty signatures: %d %+v", code, me)
		}
		var up struct {
			Counts map[string]int `json:"one_time_key_counts"`
		}
		code, me := post(alice, "/keys/upload", map[string]any{"device_keys": deviceKeys,
			"one_time_keys": map[string]any{"signed_curve25519:AAAAAQ": map[string]any{"key": "k1", "signatures": sig}, "signed_curve25519:AAAAAg": map[string]any{"key": "k2", "signatures": sig}},
			"fallback_keys": map[string]any{"signed_curve25519:AAAAAw": map[string]any{"key": "fb", "fallback": true, "signatures": sig}},
		}, &up)
		if code != 200 || up.Counts["signed_curve25519"] != 2 {
			t.Fatalf("upload: %d %+v %v", code, me, up.Counts)
		}

		// Bob shares a room with alice; carol does not.
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.InviteUser(ctxT(t), room.RoomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctxT(t), room.RoomID); err != nil {
			t.Fatal(err)
		}
		bobSync, _ := bob.SyncRequest(ctxT(t), 0, "", "", false, "")
		carolSync, _ := carol.SyncRequest(ctxT(t), 0, "", "", false, "")

		// Query: alice's device with its display name; claims take one-time
		// keys, then the fallback key.
		var q struct {
			DeviceKeys map[string]map[string]map[string]any `json:"device_keys"`
		}
		if code, me := post(bob, "/keys/query", map[string]any{"device_keys": map[string]any{string(alice.UserID): []string{}}}, &q); code != 200 {
			t.Fatalf("query: %d %+v", code, me)
		}
		if q.DeviceKeys[string(alice.UserID)][string(alice.DeviceID)]["keys"] == nil {
			t.Fatalf("query: %+v", q.DeviceKeys)
		}
		if code, me := post(bob, "/keys/query", map[string]any{}, nil); code != 400 || me.Code != "M_MISSING_PARAM" {
			t.Fatalf("query without device_keys: %d %+v", code, me)
		}
		claim := func() string {
			var c struct {
				Keys map[string]map[string]map[string]any `json:"one_time_keys"`
			}
			if code, me := post(bob, "/keys/claim", map[string]any{"one_time_keys": map[string]any{string(alice.UserID): map[string]string{string(alice.DeviceID): "signed_curve25519"}}}, &c); code != 200 {
				t.Fatalf("claim: %d %+v", code, me)
			}
			for id := range c.Keys[string(alice.UserID)][string(alice.DeviceID)] {
				return id
			}
			return ""
		}
		first, second, third := claim(), claim(), claim()
		if first == second || third != "signed_curve25519:AAAAAw" {
			t.Fatalf("claims: %s %s %s", first, second, third)
		}
		aliceSync, err := alice.SyncRequest(ctxT(t), 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		if aliceSync.DeviceOTKCount.SignedCurve25519 != 0 || len(aliceSync.FallbackKeys) != 0 {
			t.Fatalf("alice's counts after the claims: %+v %v", aliceSync.DeviceOTKCount, aliceSync.FallbackKeys)
		}

		// Cross-signing: the first upload needs no password, a replacement does.
		master := map[string]any{"user_id": alice.UserID, "usage": []string{"master"}, "keys": map[string]string{"ed25519:masterpub": "masterpub"}}
		if code, me := post(alice, "/keys/device_signing/upload", map[string]any{"master_key": master}, nil); code != 200 {
			t.Fatalf("first cross-signing upload: %d %+v", code, me)
		}
		if code, me := post(alice, "/keys/device_signing/upload", map[string]any{"master_key": master}, nil); code != 200 {
			t.Fatalf("the same cross-signing key again: %d %+v, want 200 (no new keys, no UIA)", code, me)
		}
		other := map[string]any{"user_id": alice.UserID, "usage": []string{"master"}, "keys": map[string]string{"ed25519:otherpub": "otherpub"}}
		if code, _ := post(alice, "/keys/device_signing/upload", map[string]any{"master_key": other}, nil); code != 401 {
			t.Fatalf("replacing cross-signing keys without auth: %d, want 401 (UIA)", code)
		}
		// A signature of alice's device by her master key is merged in.
		signed := map[string]any{}
		for k, v := range deviceKeys {
			signed[k] = v
		}
		signed["signatures"] = map[string]any{string(alice.UserID): map[string]string{"ed25519:masterpub": "msig"}}
		var fails struct {
			Failures map[string]any `json:"failures"`
		}
		if code, me := post(alice, "/keys/signatures/upload", map[string]any{string(alice.UserID): map[string]any{string(alice.DeviceID): signed}}, &fails); code != 200 || len(fails.Failures) != 0 {
			t.Fatalf("signatures upload: %d %+v %v", code, me, fails)
		}
		post(bob, "/keys/query", map[string]any{"device_keys": map[string]any{string(alice.UserID): []string{}}}, &q)
		sigs, _ := q.DeviceKeys[string(alice.UserID)][string(alice.DeviceID)]["signatures"].(map[string]any)
		mine, _ := sigs[string(alice.UserID)].(map[string]any)
		if mine["ed25519:masterpub"] != "msig" || mine["ed25519:"+string(alice.DeviceID)] != "sig" {
			t.Fatalf("merged signatures: %v", sigs)
		}

		// Bob, who shares a room, hears of alice's key changes; carol does not.
		waitFor(t, bob, bobSync.NextBatch, func(r *mautrix.RespSync) bool {
			for _, u := range r.DeviceLists.Changed {
				if u == alice.UserID {
					return true
				}
			}
			return false
		})
		var changes struct {
			Changed []string `json:"changed"`
		}
		if code, _ := do(t, http.DefaultClient, "GET", base+"/keys/changes?from="+carolSync.NextBatch, carol.AccessToken, nil, &changes); code != 200 || len(changes.Changed) != 0 {
			t.Fatalf("carol's key changes: %d %v", code, changes.Changed)
		}
		if code, _ := do(t, http.DefaultClient, "GET", base+"/keys/changes?from="+bobSync.NextBatch, bob.AccessToken, nil, &changes); code != 200 || len(changes.Changed) != 1 {
			t.Fatalf("bob's key changes: %d %v", code, changes.Changed)
		}
		if code, me := do(t, http.DefaultClient, "GET", base+"/keys/changes?from=garbage", bob.AccessToken, nil, nil); code != 400 || me.Code != "M_INVALID_PARAM" {
			t.Fatalf("bad from: %d %+v", code, me)
		}
	})
}
