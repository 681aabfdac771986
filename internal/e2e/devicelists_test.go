package e2e

import (
	"net/http"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/machi-chat/machi/internal/testrig"
)

// TestNewDeviceChangesDeviceList: a new login is a change of the user's
// device list before the device uploads any key, and so is deleting a
// device: the user's own /sync and a roommate's list them in
// device_lists.changed, and /keys/changes too; someone sharing no room
// does not hear of it (SyTest's "Local new device changes appear in v2
// /sync", "Users receive device_list updates for their own devices").
func TestNewDeviceChangesDeviceList(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice, bob, carol := register(t, srv, "alice"), register(t, srv, "bob"), register(t, srv, "carol")
		ctx := ctxT(t)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{bob.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		since := map[*mautrix.Client]string{}
		for _, c := range []*mautrix.Client{alice, bob, carol} {
			resp, err := c.SyncRequest(ctx, 0, "", "", false, "")
			if err != nil {
				t.Fatal(err)
			}
			since[c] = resp.NextBatch
		}
		changedFor := func(c *mautrix.Client) {
			t.Helper()
			since[c] = waitFor(t, c, since[c], func(r *mautrix.RespSync) bool {
				return slices.Contains(r.DeviceLists.Changed, alice.UserID)
			})
		}

		second, err := loginAgain(t, alice, "secret-alice")
		if err != nil {
			t.Fatal(err)
		}
		from := since[bob]
		changedFor(alice)
		changedFor(bob)
		var changes struct {
			Changed []id.UserID `json:"changed"`
		}
		if code, me := do(t, http.DefaultClient, "GET", bob.BuildClientURL("v3", "keys", "changes")+"?from="+from+"&to="+since[bob], bob.AccessToken, nil, &changes); code != 200 || !slices.Contains(changes.Changed, alice.UserID) {
			t.Fatalf("/keys/changes after a new login: %d %+v %v", code, me, changes.Changed)
		}
		resp, err := carol.SyncRequest(ctx, 0, since[carol], "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(resp.DeviceLists.Changed, alice.UserID) {
			t.Fatal("carol, who shares no room with alice, heard of her new device")
		}
		since[carol] = resp.NextBatch

		// Deleting the new device: a change again.
		r := uiaCall(t, alice, "DELETE", map[string]any{"auth": passwordAuth(alice.UserID, "secret-alice", "")}, "v3", "devices", second.DeviceID)
		if r.status != 200 {
			t.Fatalf("delete device: %d %+v", r.status, r.RespUserInteractive)
		}
		changedFor(alice)
		changedFor(bob)
	})
}

// TestKeysQueryUnsigned: /keys/query gives every device key an unsigned
// object, with device_display_name when the device has a name (SyTest's
// "Can query device keys using POST").
func TestKeysQueryUnsigned(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice := register(t, srv, "alice")
		ctx := ctxT(t)
		keys := map[string]any{"device_keys": map[string]any{
			"user_id": alice.UserID, "device_id": alice.DeviceID, "algorithms": []string{"m.olm.v1.curve25519-aes-sha2"},
			"keys":       map[string]string{"ed25519:" + string(alice.DeviceID): "e"},
			"signatures": map[string]any{string(alice.UserID): map[string]string{"ed25519:" + string(alice.DeviceID): "sig"}},
		}}
		if code, me := do(t, http.DefaultClient, "POST", alice.BuildClientURL("v3", "keys", "upload"), alice.AccessToken, keys, nil); code != 200 {
			t.Fatalf("upload: %d %+v", code, me)
		}
		query := func() map[string]any {
			t.Helper()
			var q struct {
				DeviceKeys map[string]map[string]map[string]any `json:"device_keys"`
			}
			if code, me := do(t, http.DefaultClient, "POST", alice.BuildClientURL("v3", "keys", "query"), alice.AccessToken,
				map[string]any{"device_keys": map[string]any{string(alice.UserID): []string{}}}, &q); code != 200 {
				t.Fatalf("query: %d %+v", code, me)
			}
			u, ok := q.DeviceKeys[string(alice.UserID)][string(alice.DeviceID)]["unsigned"].(map[string]any)
			if !ok {
				t.Fatalf("no unsigned object: %v", q.DeviceKeys)
			}
			return u
		}
		deepEq(t, "unsigned of a device without a name", query(), map[string]any{})
		if err := alice.SetDeviceInfo(ctx, alice.DeviceID, &mautrix.ReqDeviceInfo{DisplayName: "防災課のPC"}); err != nil {
			t.Fatal(err)
		}
		deepEq(t, "unsigned of a named device", query(), map[string]any{"device_display_name": "防災課のPC"})
	})
}
