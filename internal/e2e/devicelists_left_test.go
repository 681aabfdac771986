package e2e

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/machi-chat/machi/internal/testrig"
)

type keysChanges struct {
	Changed []id.UserID `json:"changed"`
	Left    []id.UserID `json:"left"`
}

func getKeysChanges(t *testing.T, c *mautrix.Client, from, to string) keysChanges {
	t.Helper()
	var out keysChanges
	if code, me := do(t, http.DefaultClient, "GET", c.BuildClientURL("v3", "keys", "changes")+"?from="+from+"&to="+to, c.AccessToken, nil, &out); code != 200 {
		t.Fatalf("/keys/changes: %d %+v", code, me)
	}
	return out
}

func syncSince(t *testing.T, c *mautrix.Client, since string) *mautrix.RespSync {
	t.Helper()
	resp, err := c.SyncRequest(ctxT(t), 0, since, "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestDeviceListsLeft: when two users stop sharing rooms, each is listed
// in the other's /sync device_lists.left and /keys/changes' left, whoever
// left; leaving an encrypted room lists them even while they share an
// unencrypted one; sharing an encrypted room again takes them out (SyTest's
// "Get left notifs in sync and /keys/changes when other user leaves",
// "… for other users … when user leaves").
func TestDeviceListsLeft(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice, bob, carol := register(t, srv, "alice"), register(t, srv, "bob"), register(t, srv, "carol")
		ctx := ctxT(t)
		plain, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		enc, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{{
			Type: event.StateEncryption, StateKey: new(string),
			Content: event.Content{Raw: map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}}}})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []*mautrix.Client{bob, carol} {
			if _, err := c.JoinRoomByID(ctx, plain.RoomID); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := bob.JoinRoomByID(ctx, enc.RoomID); err != nil {
			t.Fatal(err)
		}
		aliceFrom, carolFrom := syncSince(t, alice, "").NextBatch, syncSince(t, carol, "").NextBatch

		// carol leaves the only room she shares with alice: alice sees her
		// leave, and carol sees alice (and bob) go.
		if _, err := carol.LeaveRoom(ctx, plain.RoomID); err != nil {
			t.Fatal(err)
		}
		aliceTo := waitFor(t, alice, aliceFrom, func(r *mautrix.RespSync) bool { return slices.Contains(r.DeviceLists.Left, carol.UserID) })
		if ch := getKeysChanges(t, alice, aliceFrom, aliceTo); !slices.Contains(ch.Left, carol.UserID) || slices.Contains(ch.Left, bob.UserID) {
			t.Fatalf("alice's /keys/changes after carol left: %+v", ch)
		}
		carolTo := waitFor(t, carol, carolFrom, func(r *mautrix.RespSync) bool {
			return slices.Contains(r.DeviceLists.Left, alice.UserID) && slices.Contains(r.DeviceLists.Left, bob.UserID)
		})
		if ch := getKeysChanges(t, carol, carolFrom, carolTo); !slices.Contains(ch.Left, alice.UserID) {
			t.Fatalf("carol's /keys/changes after she left: %+v", ch)
		}

		// bob leaves the encrypted room: still in the plain one with alice,
		// but they share no encrypted room, so he is in her left.
		if _, err := bob.LeaveRoom(ctx, enc.RoomID); err != nil {
			t.Fatal(err)
		}
		aliceTo = waitFor(t, alice, aliceTo, func(r *mautrix.RespSync) bool { return slices.Contains(r.DeviceLists.Left, bob.UserID) })
		// Back in it: from before the leave to now, bob is not left.
		if _, err := bob.JoinRoomByID(ctx, enc.RoomID); err != nil {
			t.Fatal(err)
		}
		aliceTo = waitFor(t, alice, aliceTo, func(r *mautrix.RespSync) bool { return memberIn(r, enc.RoomID, bob.UserID, "join") })
		if ch := getKeysChanges(t, alice, aliceFrom, aliceTo); slices.Contains(ch.Left, bob.UserID) || !slices.Contains(ch.Left, carol.UserID) {
			t.Fatalf("alice's /keys/changes after bob came back: %+v", ch)
		}
	})
}

// TestCrossSigningNewsForOneUser: cross-signing uploads are served under
// /unstable too; a self-signing key needs a master key (400
// M_MISSING_PARAM); a new user-signing key is news for its owner only; a
// signature on another user's master key is news for the signer only, and
// only the signer sees it in /keys/query (SyTest's 08-cross-signing.pl).
func TestCrossSigningNewsForOneUser(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice, bob := register(t, srv, "alice"), register(t, srv, "bob")
		ctx := ctxT(t)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		key := func(u id.UserID, usage, pub string) map[string]any {
			return map[string]any{"user_id": u, "usage": []string{usage}, "keys": map[string]string{"ed25519:" + pub: pub}}
		}
		upload := func(c *mautrix.Client, body map[string]any) (int, matrixErr) {
			return do(t, http.DefaultClient, "POST", c.HomeserverURL.String()+"/_matrix/client/unstable/keys/device_signing/upload", c.AccessToken, body, nil)
		}
		if code, me := upload(alice, map[string]any{"self_signing_key": key(alice.UserID, "self_signing", "alicessk")}); code != 400 || me.Code != "M_MISSING_PARAM" {
			t.Fatalf("self-signing key without a master key: %d %+v", code, me)
		}
		if code, me := upload(alice, map[string]any{"master_key": key(alice.UserID, "master", "alicemaster")}); code != 200 {
			t.Fatalf("master key under /unstable: %d %+v", code, me)
		}
		if code, me := upload(bob, map[string]any{"master_key": key(bob.UserID, "master", "bobmaster")}); code != 200 {
			t.Fatalf("bob's master key: %d %+v", code, me)
		}
		aliceSince, bobSince := syncSince(t, alice, "").NextBatch, syncSince(t, bob, "").NextBatch

		// alice's user-signing key: her news, not bob's.
		if code, me := upload(alice, map[string]any{"user_signing_key": key(alice.UserID, "user_signing", "aliceusk"),
			"auth": passwordAuth(alice.UserID, "secret-alice", "")}); code != 200 {
			t.Fatalf("user-signing key: %d %+v", code, me)
		}
		aliceSince = waitFor(t, alice, aliceSince, func(r *mautrix.RespSync) bool { return slices.Contains(r.DeviceLists.Changed, alice.UserID) })
		// alice signs bob's master key.
		signed := key(bob.UserID, "master", "bobmaster")
		signed["signatures"] = map[string]any{string(alice.UserID): map[string]string{"ed25519:aliceusk": "sig"}}
		var res struct {
			Failures map[string]any `json:"failures"`
		}
		if code, me := do(t, http.DefaultClient, "POST", alice.HomeserverURL.String()+"/_matrix/client/unstable/keys/signatures/upload", alice.AccessToken,
			map[string]any{string(bob.UserID): map[string]any{"bobmaster": signed}}, &res); code != 200 || len(res.Failures) != 0 {
			t.Fatalf("signatures/upload: %d %+v %+v", code, me, res)
		}
		waitFor(t, alice, aliceSince, func(r *mautrix.RespSync) bool { return slices.Contains(r.DeviceLists.Changed, bob.UserID) })
		if r := syncSince(t, bob, bobSince); slices.Contains(r.DeviceLists.Changed, alice.UserID) || slices.Contains(r.DeviceLists.Changed, bob.UserID) {
			t.Fatalf("bob heard of alice's user-signing key or signature: %+v", r.DeviceLists)
		}
		sigsOn := func(c *mautrix.Client) map[string]json.RawMessage {
			var q struct {
				MasterKeys map[string]struct {
					Signatures map[string]json.RawMessage `json:"signatures"`
				} `json:"master_keys"`
			}
			if code, me := do(t, http.DefaultClient, "POST", c.BuildClientURL("v3", "keys", "query"), c.AccessToken,
				map[string]any{"device_keys": map[string]any{string(bob.UserID): []string{}}}, &q); code != 200 {
				t.Fatalf("keys/query: %d %+v", code, me)
			}
			return q.MasterKeys[string(bob.UserID)].Signatures
		}
		if s := sigsOn(alice); s[string(alice.UserID)] == nil {
			t.Fatalf("alice does not see her signature on bob's master key: %v", s)
		}
		if s := sigsOn(bob); s[string(alice.UserID)] != nil {
			t.Fatalf("bob sees alice's signature on his master key: %v", s)
		}
	})
}

// TestFederatedJoinAndLeaveDeviceLists: a user of another city who joins
// a room here is in device_lists.changed at once (this server heard
// nothing of their devices while it shared no room with them), and in
// left when they leave the only room shared (SyTest's "If remote user
// leaves room we no longer receive device updates").
func TestFederatedJoinAndLeaveDeviceLists(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		const a, b = "city-a.test", "city-b.test"
		cities := startFederation(t, engine, []string{a, b}, map[string][]string{a: {b}, b: {a}}, nil)
		alice := register(t, cities[a].srv, "alice")
		bob := register(t, cities[b].srv, "bob")
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		since := syncSince(t, alice, "").NextBatch
		if code, me := do(t, http.DefaultClient, "POST", baseURL(cities[b].srv)+"/_matrix/client/v3/join/"+string(room.RoomID), bob.AccessToken, map[string]any{}, nil); code != 200 {
			t.Fatalf("join: %d %+v", code, me)
		}
		since = waitFor(t, alice, since, func(r *mautrix.RespSync) bool { return slices.Contains(r.DeviceLists.Changed, bob.UserID) })
		if code, me := do(t, http.DefaultClient, "POST", baseURL(cities[b].srv)+"/_matrix/client/v3/rooms/"+string(room.RoomID)+"/leave", bob.AccessToken, map[string]any{}, nil); code != 200 {
			t.Fatalf("leave: %d %+v", code, me)
		}
		waitFor(t, alice, since, func(r *mautrix.RespSync) bool { return slices.Contains(r.DeviceLists.Left, bob.UserID) })
	})
}
