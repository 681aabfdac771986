package e2e

import (
	"bytes"
	"encoding/json"
	"image"
	"image/png"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"golang.org/x/crypto/ed25519"
	"maunium.net/go/mautrix"

	"github.com/machi-chat/machi/internal/server"
	"github.com/machi-chat/machi/internal/testrig"
)

// TestFederatedToDevice: to-device messages (how encrypted chats share
// their keys) cross cities through the persisted outbox; a city that is
// down gets every message, in order, when it is back, even though the
// sending city restarted meanwhile.
func TestFederatedToDevice(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		const a, b = "city-a.test", "city-b.test"
		cities := startFederation(t, engine, []string{a, b}, map[string][]string{a: {b}, b: {a}}, nil)
		alice := register(t, cities[a].srv, "alice")
		bob := register(t, cities[b].srv, "bob")
		send := func(txn, text string) {
			t.Helper()
			body := map[string]any{"messages": map[string]any{string(bob.UserID): map[string]any{string(bob.DeviceID): map[string]string{"text": text}}}}
			if code, me := do(t, http.DefaultClient, "PUT", baseURL(cities[a].srv)+"/_matrix/client/v3/sendToDevice/m.machi.test/"+txn, alice.AccessToken, body, nil); code != 200 {
				t.Fatalf("sendToDevice %s: %d %+v", txn, code, me)
			}
		}
		received := func(since string, want int) ([]string, string) {
			t.Helper()
			var got []string
			deadline := time.Now().Add(30 * time.Second)
			for len(got) < want && time.Now().Before(deadline) {
				resp, err := bob.SyncRequest(ctxT(t), 2000, since, "", false, "")
				if err != nil {
					t.Fatalf("sync: %v", err)
				}
				since = resp.NextBatch
				for _, ev := range resp.ToDevice.Events {
					if ev.Sender != alice.UserID || ev.Type.Type != "m.machi.test" {
						t.Fatalf("to-device event: %+v", ev)
					}
					text, _ := ev.Content.Raw["text"].(string)
					got = append(got, text)
				}
			}
			return got, since
		}

		send("t1", "こんにちは")
		got, since := received("", 1)
		if len(got) != 1 || got[0] != "こんにちは" {
			t.Fatalf("first message: %v", got)
		}
		send("t1", "こんにちは") // a retried request is not sent twice

		// city-b goes down; alice sends three more, and city-a restarts.
		cities[b].stop()
		for i, text := range []string{"一", "二", "三"} {
			send(string(rune('2'+i)), text)
		}
		cities[a].stop()
		cities[a].start(t)
		cities[b].start(t)
		// city-b contacts city-a (a profile lookup), which tells city-a it
		// is back: the queue goes at once, not after the backoff.
		var prof map[string]string
		do(t, http.DefaultClient, "GET", baseURL(cities[b].srv)+"/_matrix/client/v3/profile/"+string(alice.UserID), bob.AccessToken, nil, &prof)
		got, _ = received(since, 3)
		if strings.Join(got, ",") != "一,二,三" {
			t.Fatalf("after the outage: %v, want 一,二,三 in order and once", got)
		}
	})
}

// TestFederationBadInput: another server's garbage, unsigned, forged,
// tampered, unauthorised and oversized input is refused with clear errors
// (never a 500) and never changes the room.
func TestFederationBadInput(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		const a, b = "city-a.test", "city-b.test"
		cities := startFederation(t, engine, []string{a, b}, map[string][]string{a: {b}, b: {a}}, nil)
		alice := register(t, cities[a].srv, "alice")
		bob := register(t, cities[b].srv, "bob")
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "正式名称"})
		if err != nil {
			t.Fatal(err)
		}
		if code, me := do(t, http.DefaultClient, "POST", baseURL(cities[b].srv)+"/_matrix/client/v3/join/"+string(room.RoomID), bob.AccessToken, map[string]any{}, nil); code != 200 {
			t.Fatalf("join: %d %+v", code, me)
		}
		keyID, key, err := server.LoadKey(cities[b].cfg.Path(cities[b].cfg.SigningKeyPath))
		if err != nil {
			t.Fatal(err)
		}
		_, forged, _ := ed25519.GenerateKey(nil)
		version, _ := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion("10"))
		snap, err := cities[a].srv.Rooms.CurrentState(ctxT(t), string(room.RoomID))
		if err != nil {
			t.Fatal(err)
		}
		latest, _ := cities[a].srv.Rooms.Latest(ctxT(t), string(room.RoomID))
		authFor := func(sender string) []string {
			ids := []string{snap.Get("m.room.create", "").ID(), snap.Get("m.room.power_levels", "").ID()}
			if m := snap.Get("m.room.member", sender); m != nil {
				ids = append(ids, m.ID())
			}
			return ids
		}
		build := func(sender, typ string, stateKey *string, content any, signKey ed25519.PrivateKey) gomatrixserverlib.PDU {
			c, _ := json.Marshal(content)
			proto := gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: string(room.RoomID), Type: typ, StateKey: stateKey,
				PrevEvents: latest, AuthEvents: authFor(sender), Depth: 100, Content: c}
			pdu, err := version.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), b, keyID, signKey)
			if err != nil {
				t.Fatal(err)
			}
			return pdu
		}
		sendTxn := func(txnID string, body []byte, sign bool) (int, map[string]any) {
			t.Helper()
			var req *http.Request
			if sign {
				req = signedRequest(t, cities[a], b, keyID, key, "PUT", "/_matrix/federation/v1/send/"+txnID, json.RawMessage(body))
			} else {
				req, _ = http.NewRequest("PUT", "https://"+cities[a].addr+"/_matrix/federation/v1/send/"+txnID, strings.NewReader(string(body)))
				req.Header.Set("Authorization", `X-Matrix origin="city-b.test",destination="city-a.test",key="`+string(keyID)+`",sig="AAAA"`)
			}
			resp, err := insecureFed(a).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var out map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&out)
			return resp.StatusCode, out
		}
		txn := func(pdus ...json.RawMessage) []byte {
			b, _ := json.Marshal(map[string]any{"origin": b, "origin_server_ts": time.Now().UnixMilli(), "pdus": pdus})
			return b
		}

		// Malformed transactions.
		for _, tc := range []struct {
			name    string
			body    []byte
			sign    bool
			status  int
			errcode string
		}{
			{"garbage", []byte("{not json"), false, 400, "M_NOT_JSON"},
			{"forged request signature", txn(), false, 401, "M_UNAUTHORIZED"},
			{"origin not the signer", []byte(`{"origin":"city-z.test","pdus":[]}`), true, 400, "M_BAD_JSON"},
			{"no pdus", []byte(`{"origin":"city-b.test"}`), true, 400, "M_MISSING_PARAM"},
			{"51 PDUs", txn(slices.Repeat([]json.RawMessage{json.RawMessage(`{}`)}, 51)...), true, 400, "M_TOO_LARGE"},
			{"pdus not a list", []byte(`{"origin":"city-b.test","pdus":{}}`), true, 400, "M_BAD_JSON"},
		} {
			if code, out := sendTxn("bad-"+strings.ReplaceAll(tc.name, " ", "-"), tc.body, tc.sign); code != tc.status || out["errcode"] != tc.errcode {
				t.Errorf("%s: %d %v, want %d %s", tc.name, code, out, tc.status, tc.errcode)
			}
		}

		// Events that must not get in: each answered with an error for it.
		name := "m.room.name"
		empty := ""
		good := build(string(bob.UserID), "m.room.message", nil, map[string]string{"msgtype": "m.text", "body": "正しい"}, key)
		unsigned := build(string(bob.UserID), "m.room.message", nil, map[string]string{"msgtype": "m.text", "body": "署名なし"}, key)
		var raw map[string]any
		_ = json.Unmarshal(unsigned.JSON(), &raw)
		delete(raw, "signatures")
		unsignedJSON, _ := json.Marshal(raw)
		forgedEv := build(string(bob.UserID), "m.room.message", nil, map[string]string{"msgtype": "m.text", "body": "偽造"}, forged)
		tampered := build(string(bob.UserID), "m.room.message", nil, map[string]string{"msgtype": "m.text", "body": "改ざん前"}, key)
		tamperedJSON := []byte(strings.Replace(string(tampered.JSON()), "改ざん前", "改ざん後", 1))
		stranger := build("@mallory:city-b.test", "m.room.message", nil, map[string]string{"msgtype": "m.text", "body": "部外者"}, key)
		rename := build(string(bob.UserID), name, &empty, map[string]string{"name": "乗っ取り"}, key)
		code, out := sendTxn("events-1", txn(json.RawMessage(unsignedJSON), forgedEv.JSON(), json.RawMessage(tamperedJSON), stranger.JSON(), rename.JSON(), good.JSON()), true)
		if code != 200 {
			t.Fatalf("send: %d %v", code, out)
		}
		results, _ := out["pdus"].(map[string]any)
		// Events whose signatures fail could not be processed: an error
		// each. Those the auth rules reject were processed (and are kept
		// out of the room, checked below): no error, nothing to retry.
		for _, ev := range []gomatrixserverlib.PDU{unsigned, forgedEv} {
			r, _ := results[ev.EventID()].(map[string]any)
			if e, _ := r["error"].(string); e == "" {
				t.Errorf("%s accepted: %v", ev.EventID(), results[ev.EventID()])
			}
		}
		for _, ev := range []gomatrixserverlib.PDU{stranger, rename} {
			if r, ok := results[ev.EventID()].(map[string]any); !ok || r["error"] != nil {
				t.Errorf("rejected %s: %v, want an empty result", ev.EventID(), results[ev.EventID()])
			}
		}
		if r, _ := results[good.EventID()].(map[string]any); r["error"] != nil {
			t.Errorf("the sound event was refused: %v", r)
		}
		// Only the sound event is in the room (a tampered one is kept
		// redacted, as the spec says, so its words never show).
		waitHistory(t, alice, room.RoomID, func(bodies []string) bool { return slices.Contains(bodies, "正しい") })
		resp, err := alice.Messages(ctxT(t), room.RoomID, "", "", mautrix.DirectionBackward, nil, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range resp.Chunk {
			if b, _ := ev.Content.Raw["body"].(string); b != "" && b != "正しい" {
				t.Errorf("%q got into the room", b)
			}
		}
		var nameState struct {
			Name string `json:"name"`
		}
		if code, _ := do(t, http.DefaultClient, "GET", baseURL(cities[a].srv)+"/_matrix/client/v3/rooms/"+string(room.RoomID)+"/state/m.room.name/",
			alice.AccessToken, nil, &nameState); code != 200 || nameState.Name != "正式名称" {
			t.Fatalf("room name: %d %q", code, nameState.Name)
		}
		// What a server in the room may ask of it: state and auth chains.
		get := func(path string, out any) (int, string) {
			t.Helper()
			req := signedRequest(t, cities[a], b, keyID, key, "GET", path, nil)
			resp, err := insecureFed(a).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var raw json.RawMessage
			_ = json.NewDecoder(resp.Body).Decode(&raw)
			var me matrixErr
			_ = json.Unmarshal(raw, &me)
			if out != nil {
				_ = json.Unmarshal(raw, out)
			}
			return resp.StatusCode, me.Code
		}
		createID := snap.Get("m.room.create", "").ID()
		rid := url.PathEscape(string(room.RoomID))
		var ids struct {
			PDUs  []string `json:"pdu_ids"`
			Chain []string `json:"auth_chain_ids"`
		}
		if code, ec := get("/_matrix/federation/v1/state_ids/"+rid+"?event_id="+url.QueryEscape(good.EventID()), &ids); code != 200 ||
			!slices.Contains(ids.PDUs, createID) || !slices.Contains(ids.Chain, createID) {
			t.Fatalf("state_ids: %d %s %+v", code, ec, ids)
		}
		var full struct {
			PDUs []json.RawMessage `json:"pdus"`
		}
		if code, ec := get("/_matrix/federation/v1/state/"+rid+"?event_id="+url.QueryEscape(good.EventID()), &full); code != 200 || len(full.PDUs) != len(ids.PDUs) {
			t.Fatalf("state: %d %s %d events, want %d", code, ec, len(full.PDUs), len(ids.PDUs))
		}
		var chain struct {
			Chain []json.RawMessage `json:"auth_chain"`
		}
		if code, ec := get("/_matrix/federation/v1/event_auth/"+rid+"/"+url.PathEscape(good.EventID()), &chain); code != 200 || len(chain.Chain) < 3 {
			t.Fatalf("event_auth: %d %s %d events", code, ec, len(chain.Chain))
		}
		for path, want := range map[string]string{
			"/_matrix/federation/v1/state_ids/" + rid:                                                 "M_MISSING_PARAM",
			"/_matrix/federation/v1/state_ids/" + rid + "?event_id=%24nothing":                        "M_NOT_FOUND",
			"/_matrix/federation/v1/event_auth/" + rid + "/%24nothing":                                "M_NOT_FOUND",
			"/_matrix/federation/v1/state/" + url.PathEscape("!other:city-a.test") + "?event_id=%24x": "M_FORBIDDEN",
		} {
			if code, ec := get(path, nil); code < 400 || code >= 500 || ec != want {
				t.Errorf("GET %s: %d %s, want %s", path, code, ec, want)
			}
		}

		// Soft failure: bob is banned on city-a; an event of his built on
		// the room as it was before (allowed there) is kept out of the
		// timeline, and later events still build on it.
		if _, err := alice.BanUser(ctxT(t), room.RoomID, &mautrix.ReqBanUser{UserID: bob.UserID, Reason: "テスト"}); err != nil {
			t.Fatal(err)
		}
		late := build(string(bob.UserID), "m.room.message", nil, map[string]string{"msgtype": "m.text", "body": "追放後"}, key)
		code, out = sendTxn("events-2", txn(late.JSON()), true)
		results, _ = out["pdus"].(map[string]any)
		if r, ok := results[late.EventID()].(map[string]any); code != 200 || !ok || r["error"] != nil {
			t.Fatalf("soft-failed event: %d %v", code, out)
		}
		if _, err := alice.SendText(ctxT(t), room.RoomID, "その後"); err != nil {
			t.Fatal(err)
		}
		resp, err = alice.Messages(ctxT(t), room.RoomID, "", "", mautrix.DirectionBackward, nil, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range resp.Chunk {
			if b, _ := ev.Content.Raw["body"].(string); b == "追放後" {
				t.Fatal("a soft-failed event is in the timeline")
			}
		}

		// A redaction of an event of another room is kept out of the
		// timeline and redacts nothing. (bob is banned now: unban him.)
		if _, err := alice.UnbanUser(ctxT(t), room.RoomID, &mautrix.ReqUnbanUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		other, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		elsewhere, err := alice.SendText(ctxT(t), other.RoomID, "別のルーム")
		if err != nil {
			t.Fatal(err)
		}
		latest, _ = cities[a].srv.Rooms.Latest(ctxT(t), string(room.RoomID))
		if snap, err = cities[a].srv.Rooms.CurrentState(ctxT(t), string(room.RoomID)); err != nil {
			t.Fatal(err)
		}
		// bob joins again, then redacts alice's event of the other room.
		rejoin := build(string(bob.UserID), "m.room.member", ptr(string(bob.UserID)), map[string]string{"membership": "join"}, key)
		if code, out := sendTxn("events-3", txn(rejoin.JSON()), true); code != 200 {
			t.Fatalf("rejoin: %d %v", code, out)
		}
		latest = []string{rejoin.EventID()}
		if snap, err = cities[a].srv.Rooms.CurrentState(ctxT(t), string(room.RoomID)); err != nil {
			t.Fatal(err)
		}
		redProto := gomatrixserverlib.ProtoEvent{SenderID: string(bob.UserID), RoomID: string(room.RoomID), Type: "m.room.redaction",
			Redacts: string(elsewhere.EventID), PrevEvents: latest, AuthEvents: authFor(string(bob.UserID)), Depth: 100, Content: []byte(`{}`)}
		cross, err := version.NewEventBuilderFromProtoEvent(&redProto).Build(time.Now(), b, keyID, key)
		if err != nil {
			t.Fatal(err)
		}
		code, out = sendTxn("events-4", txn(cross.JSON()), true)
		results, _ = out["pdus"].(map[string]any)
		if r, ok := results[cross.EventID()].(map[string]any); code != 200 || !ok || r["error"] != nil {
			t.Fatalf("cross-room redaction: %d %v", code, out)
		}
		if _, err := alice.SendText(ctxT(t), room.RoomID, "歩哨"); err != nil {
			t.Fatal(err)
		}
		if resp, err = alice.Messages(ctxT(t), room.RoomID, "", "", mautrix.DirectionBackward, nil, 100); err != nil {
			t.Fatal(err)
		}
		for _, ev := range resp.Chunk {
			if string(ev.ID) == cross.EventID() {
				t.Error("the cross-room redaction is in the timeline")
			}
		}
		var target struct {
			Content map[string]any `json:"content"`
		}
		if code, _ := do(t, http.DefaultClient, "GET", baseURL(cities[a].srv)+"/_matrix/client/v3/rooms/"+string(other.RoomID)+"/event/"+url.PathEscape(string(elsewhere.EventID)),
			alice.AccessToken, nil, &target); code != 200 || target.Content["body"] != "別のルーム" {
			t.Errorf("the other room's event after a cross-room redaction: %d %v", code, target.Content)
		}

		// The same transaction again is not processed twice.
		if code, out := sendTxn("events-1", txn(good.JSON()), true); code != 200 {
			t.Fatalf("retried transaction: %d %v", code, out)
		}
	})
}

// TestFederatedDeviceLists: a new device of a user in another city shows
// in /sync's device_lists of the people sharing a room with them, so their
// clients fetch its keys before encrypting.
func TestFederatedDeviceLists(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		const a, b = "city-a.test", "city-b.test"
		cities := startFederation(t, engine, []string{a, b}, map[string][]string{a: {b}, b: {a}}, nil)
		alice := register(t, cities[a].srv, "alice")
		bob := register(t, cities[b].srv, "bob")
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		// alice's presence, set before bob's server is in the room, reaches
		// bob when he joins.
		if code, me := do(t, http.DefaultClient, "PUT", baseURL(cities[a].srv)+"/_matrix/client/v3/presence/"+url.PathEscape(string(alice.UserID))+"/status",
			alice.AccessToken, map[string]string{"presence": "online", "status_msg": "庁舎にいます"}, nil); code != 200 {
			t.Fatalf("presence: %d %+v", code, me)
		}
		if code, me := do(t, http.DefaultClient, "PUT", baseURL(cities[b].srv)+"/_matrix/client/v3/presence/"+url.PathEscape(string(bob.UserID))+"/status",
			bob.AccessToken, map[string]string{"presence": "online", "status_msg": "在宅勤務"}, nil); code != 200 {
			t.Fatalf("presence: %d %+v", code, me)
		}
		if code, me := do(t, http.DefaultClient, "POST", baseURL(cities[b].srv)+"/_matrix/client/v3/join/"+string(room.RoomID), bob.AccessToken, map[string]any{}, nil); code != 200 {
			t.Fatalf("join: %d %+v", code, me)
		}
		// alice sees bob join, and his presence, set before he joined.
		joined, bobPresence := false, false
		since := waitFor(t, alice, "", func(r *mautrix.RespSync) bool {
			joined = joined || memberIn(r, room.RoomID, bob.UserID, "join")
			for _, ev := range r.Presence.Events {
				bobPresence = bobPresence || (ev.Sender == bob.UserID && ev.Content.Raw["status_msg"] == "在宅勤務")
			}
			return joined && bobPresence
		})
		waitFor(t, bob, "", func(r *mautrix.RespSync) bool {
			for _, ev := range r.Presence.Events {
				if ev.Sender == alice.UserID && ev.Content.Raw["status_msg"] == "庁舎にいます" {
					return true
				}
			}
			return false
		})
		// And the deprecated room initialSync shows it among the members'.
		var initial struct {
			Presence []struct {
				Content map[string]any `json:"content"`
			} `json:"presence"`
		}
		if code, me := do(t, http.DefaultClient, "GET", baseURL(cities[b].srv)+"/_matrix/client/v3/rooms/"+string(room.RoomID)+"/initialSync", bob.AccessToken, nil, &initial); code != 200 {
			t.Fatalf("room initialSync: %d %+v", code, me)
		}
		found := false
		for _, p := range initial.Presence {
			found = found || (p.Content["user_id"] == string(alice.UserID) && p.Content["status_msg"] == "庁舎にいます")
		}
		if !found {
			t.Errorf("room initialSync presence lacks alice's: %+v", initial.Presence)
		}

		// bob signs in on a second device, which publishes its keys.
		var login struct {
			DeviceID    string `json:"device_id"`
			AccessToken string `json:"access_token"`
		}
		if code, me := do(t, http.DefaultClient, "POST", baseURL(cities[b].srv)+"/_matrix/client/v3/login", "", map[string]any{
			"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": string(bob.UserID)}, "password": "secret-bob"}, &login); code != 200 {
			t.Fatalf("login: %d %+v", code, me)
		}
		sig := map[string]any{string(bob.UserID): map[string]string{"ed25519:" + login.DeviceID: "sig"}}
		keys := map[string]any{"device_keys": map[string]any{"user_id": bob.UserID, "device_id": login.DeviceID,
			"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
			"keys":       map[string]string{"curve25519:" + login.DeviceID: "c2", "ed25519:" + login.DeviceID: "e2"}, "signatures": sig}}
		if code, me := do(t, http.DefaultClient, "POST", baseURL(cities[b].srv)+"/_matrix/client/v3/keys/upload", login.AccessToken, keys, nil); code != 200 {
			t.Fatalf("keys/upload: %d %+v", code, me)
		}
		waitFor(t, alice, since, func(r *mautrix.RespSync) bool { return slices.Contains(r.DeviceLists.Changed, bob.UserID) })
		// bob's presence reaches alice too.
		if code, me := do(t, http.DefaultClient, "PUT", baseURL(cities[b].srv)+"/_matrix/client/v3/presence/"+url.PathEscape(string(bob.UserID))+"/status",
			bob.AccessToken, map[string]string{"presence": "unavailable", "status_msg": "会議中"}, nil); code != 200 {
			t.Fatalf("presence: %d %+v", code, me)
		}
		since = waitFor(t, alice, since, func(r *mautrix.RespSync) bool {
			for _, ev := range r.Presence.Events {
				if ev.Sender == bob.UserID && ev.Content.Raw["status_msg"] == "会議中" && ev.Content.Raw["presence"] == "unavailable" {
					return true
				}
			}
			return false
		})
		// And alice's client, querying, finds the new device through city-a.
		var q struct {
			DeviceKeys map[string]map[string]json.RawMessage `json:"device_keys"`
		}
		if code, me := do(t, http.DefaultClient, "POST", baseURL(cities[a].srv)+"/_matrix/client/v3/keys/query", alice.AccessToken,
			map[string]any{"device_keys": map[string]any{string(bob.UserID): []string{}}}, &q); code != 200 || q.DeviceKeys[string(bob.UserID)][login.DeviceID] == nil {
			t.Fatalf("keys/query: %d %+v %+v", code, me, q)
		}
	})
}

// TestFederatedMedia: a picture uploaded on city-b shows on city-a: the
// first request fetches it over federation and keeps a copy; thumbnails
// are made from the copy.
func TestFederatedMedia(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		const a, b = "city-a.test", "city-b.test"
		cities := startFederation(t, engine, []string{a, b}, map[string][]string{a: {b}, b: {a}}, nil)
		alice := register(t, cities[a].srv, "alice")
		bob := register(t, cities[b].srv, "bob")
		img := image.NewRGBA(image.Rect(0, 0, 64, 48))
		for i := range img.Pix {
			img.Pix[i] = byte(i)
		}
		var buf bytes.Buffer
		if err := png.Encode(&buf, img); err != nil {
			t.Fatal(err)
		}
		up, err := bob.UploadBytesWithName(ctxT(t), buf.Bytes(), "image/png", "現場写真.png")
		if err != nil {
			t.Fatal(err)
		}
		for _, path := range []string{"/_matrix/client/v1/media/download/", "/_matrix/media/v3/download/"} {
			req, _ := http.NewRequest("GET", baseURL(cities[a].srv)+path+b+"/"+up.ContentURI.FileID, nil)
			req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !bytes.Equal(got, buf.Bytes()) || resp.Header.Get("Content-Type") != "image/png" {
				t.Fatalf("%s: %d %s, %d bytes", path, resp.StatusCode, resp.Header.Get("Content-Type"), len(got))
			}
		}
		local, err := cities[a].srv.Store.GetRemoteMedia(ctxT(t), b, up.ContentURI.FileID)
		if err != nil || local == "" {
			t.Fatalf("no local copy: %q %v", local, err)
		}
		thumb, err := alice.DownloadThumbnail(ctxT(t), up.ContentURI, 32, 32, mautrix.DownloadThumbnailExtra{Method: "crop"})
		if err != nil {
			t.Fatalf("thumbnail of remote media: %v", err)
		}
		defer thumb.Body.Close()
		if cfg, _, err := image.DecodeConfig(thumb.Body); err != nil || cfg.Width != 32 || cfg.Height != 32 {
			t.Fatalf("thumbnail: %+v %v", cfg, err)
		}
		req, _ := http.NewRequest("GET", baseURL(cities[a].srv)+"/_matrix/client/v1/media/download/"+b+"/nothingHere", nil)
		req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
		if code, me := doRaw(t, http.DefaultClient, req); code != 404 || me.Code != "M_NOT_FOUND" {
			t.Fatalf("unknown remote media: %d %+v", code, me)
		}
	})
}
