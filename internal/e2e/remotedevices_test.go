package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/machi-chat/machi/internal/server"
	"github.com/machi-chat/machi/internal/testrig"
)

// TestFederatedDeviceListCache: city-a keeps a copy of the device list of
// bob (city-b) while alice shares a room with him: an invite already
// counts; m.device_list_update EDUs keep the copy current, one that shows
// a missed update (prev_id) makes city-a fetch the list again; the copy
// answers /keys/query while city-b is down, and goes when alice leaves.
func TestFederatedDeviceListCache(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		const a, b = "city-a.test", "city-b.test"
		cities := startFederation(t, engine, []string{a, b}, map[string][]string{a: {b}, b: {a}}, nil)
		alice := register(t, cities[a].srv, "alice")
		bob := register(t, cities[b].srv, "bob")
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		since := waitFor(t, alice, "", func(r *mautrix.RespSync) bool { return true })

		// An invited user counts in device lists at once.
		if _, err := alice.InviteUser(ctxT(t), room.RoomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		since = waitFor(t, alice, since, func(r *mautrix.RespSync) bool { return slices.Contains(r.DeviceLists.Changed, bob.UserID) })
		if code, me := do(t, http.DefaultClient, "POST", baseURL(cities[b].srv)+"/_matrix/client/v3/join/"+string(room.RoomID), bob.AccessToken, map[string]any{}, nil); code != 200 {
			t.Fatalf("join: %d %+v", code, me)
		}
		since = waitFor(t, alice, since, func(r *mautrix.RespSync) bool { return memberIn(r, room.RoomID, bob.UserID, "join") })

		// bob publishes his device's keys; alice's query fills city-a's copy.
		dev := string(bob.DeviceID)
		keys := map[string]any{"device_keys": map[string]any{"user_id": bob.UserID, "device_id": dev,
			"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
			"keys":       map[string]string{"curve25519:" + dev: "c1", "ed25519:" + dev: "e1"},
			"signatures": map[string]any{string(bob.UserID): map[string]string{"ed25519:" + dev: "sig"}}}}
		if code, me := do(t, http.DefaultClient, "POST", baseURL(cities[b].srv)+"/_matrix/client/v3/keys/upload", bob.AccessToken, keys, nil); code != 200 {
			t.Fatalf("keys/upload: %d %+v", code, me)
		}
		since = waitFor(t, alice, since, func(r *mautrix.RespSync) bool { return slices.Contains(r.DeviceLists.Changed, bob.UserID) })
		type queryResult struct {
			DeviceKeys map[string]map[string]struct {
				Keys     map[string]string `json:"keys"`
				Unsigned struct {
					Name string `json:"device_display_name"`
				} `json:"unsigned"`
			} `json:"device_keys"`
			Failures map[string]any `json:"failures"`
		}
		query := func() queryResult {
			t.Helper()
			var q queryResult
			if code, me := do(t, http.DefaultClient, "POST", baseURL(cities[a].srv)+"/_matrix/client/v3/keys/query", alice.AccessToken,
				map[string]any{"device_keys": map[string]any{string(bob.UserID): []string{}}}, &q); code != 200 {
				t.Fatalf("keys/query: %d %+v", code, me)
			}
			return q
		}
		if q := query(); q.DeviceKeys[string(bob.UserID)][dev].Keys["ed25519:"+dev] != "e1" || len(q.Failures) != 0 {
			t.Fatalf("bob's keys through city-a: %+v", q)
		}
		cached := func() (streamID int64, name string) {
			t.Helper()
			lists, err := cities[a].srv.Store.RemoteDeviceLists(ctxT(t), []string{string(bob.UserID)})
			if err != nil {
				t.Fatal(err)
			}
			l, ok := lists[string(bob.UserID)]
			if !ok {
				return -1, ""
			}
			for _, d := range l.Devices {
				if d.DeviceID == dev {
					return l.StreamID, d.DisplayName
				}
			}
			return l.StreamID, ""
		}
		if s, _ := cached(); s < 0 {
			t.Fatal("city-a keeps no copy of bob's device list")
		}

		// A rename reaches city-a's copy through an m.device_list_update.
		if code, me := do(t, http.DefaultClient, "PUT", baseURL(cities[b].srv)+"/_matrix/client/v3/devices/"+url.PathEscape(dev), bob.AccessToken,
			map[string]string{"display_name": "庁舎の端末"}, nil); code != 200 {
			t.Fatalf("rename: %d %+v", code, me)
		}
		deadline := time.Now().Add(10 * time.Second)
		for _, name := cached(); name != "庁舎の端末"; _, name = cached() {
			if time.Now().After(deadline) {
				t.Fatalf("the rename never reached city-a's copy (%q)", name)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if q := query(); q.DeviceKeys[string(bob.UserID)][dev].Unsigned.Name != "庁舎の端末" {
			t.Fatalf("renamed device: %+v", q)
		}

		// EDUs from city-b, signed with its key: one following the copy's
		// stream ID is applied as it is; one whose prev_id city-a never saw
		// makes it fetch the list from city-b again (which knows nothing
		// of that name).
		keyID, key, err := server.LoadKey(cities[b].cfg.Path(cities[b].cfg.SigningKeyPath))
		if err != nil {
			t.Fatal(err)
		}
		sendEDU := func(txnID string, content map[string]any) {
			t.Helper()
			body, _ := json.Marshal(map[string]any{"origin": b, "origin_server_ts": time.Now().UnixMilli(), "pdus": []any{},
				"edus": []any{map[string]any{"edu_type": "m.device_list_update", "content": content}}})
			req := signedRequest(t, cities[a], b, keyID, key, "PUT", "/_matrix/federation/v1/send/"+txnID, json.RawMessage(body))
			resp, err := insecureFed(a).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("send %s: %d", txnID, resp.StatusCode)
			}
		}
		stream, _ := cached()
		sendEDU("dl-1", map[string]any{"user_id": bob.UserID, "device_id": dev, "device_display_name": "続きの名前",
			"stream_id": stream + 1_000_000, "prev_id": []int64{stream}, "keys": keys["device_keys"]})
		if s, name := cached(); name != "続きの名前" || s != stream+1_000_000 {
			t.Fatalf("an update with no gap: stream %d, name %q", s, name)
		}
		since = waitFor(t, alice, since, func(r *mautrix.RespSync) bool { return slices.Contains(r.DeviceLists.Changed, bob.UserID) })
		sendEDU("dl-2", map[string]any{"user_id": bob.UserID, "device_id": dev, "device_display_name": "飛んだ名前",
			"stream_id": stream + 3_000_000, "prev_id": []int64{stream + 2_000_000}, "keys": keys["device_keys"]})
		deadline = time.Now().Add(10 * time.Second)
		for _, name := cached(); name != "庁舎の端末"; _, name = cached() {
			if name == "飛んだ名前" {
				t.Fatal("an update after a gap was applied as it is")
			}
			if time.Now().After(deadline) {
				t.Fatalf("no resync after a gap (%q)", name)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if s, _ := cached(); s >= stream+1_000_000 {
			t.Fatalf("the resync kept stream %d, not city-b's own", s)
		}

		// With city-b down, alice still gets bob's keys, and no failure.
		cities[b].stop()
		if q := query(); q.DeviceKeys[string(bob.UserID)][dev].Keys["ed25519:"+dev] != "e1" || len(q.Failures) != 0 {
			t.Fatalf("bob's keys with city-b down: %+v", q)
		}

		// alice leaves: nobody here shares a room with bob, the copy goes.
		if _, err := alice.LeaveRoom(ctxT(t), room.RoomID); err != nil {
			t.Fatal(err)
		}
		deadline = time.Now().Add(10 * time.Second)
		for s, _ := cached(); s >= 0; s, _ = cached() {
			if time.Now().After(deadline) {
				t.Fatal(fmt.Sprintf("bob's device list still cached after alice left (stream %d)", s))
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}
