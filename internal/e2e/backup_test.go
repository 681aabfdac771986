package e2e

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/backup"
	"maunium.net/go/mautrix/id"

	"github.com/machi-chat/machi/internal/testrig"
)

// wantHTTPErr checks that err is a Matrix error with status and errcode.
func wantHTTPErr(t *testing.T, what string, err error, status int, errcode string) *mautrix.RespError {
	t.Helper()
	var he mautrix.HTTPError
	if !errors.As(err, &he) || he.Response == nil || he.Response.StatusCode != status || he.RespError == nil || he.RespError.ErrCode != errcode {
		t.Fatalf("%s: %v, want %d %s", what, err, status, errcode)
	}
	return he.RespError
}

// TestKeyBackup drives every room key backup endpoint with mautrix-go: the
// session data is really encrypted to the backup key and decrypted after
// the round trip; the error paths change nothing.
func TestKeyBackup(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		base := baseURL(srv) + "/_matrix/client/v3"
		alice, bob := register(t, srv, "alice"), register(t, srv, "bob")
		ctx := ctxT(t)
		key, err := backup.NewMegolmBackupKey()
		if err != nil {
			t.Fatal(err)
		}
		authData := backup.MegolmAuthData{PublicKey: id.Ed25519(base64.RawStdEncoding.EncodeToString(key.PublicKey().Bytes()))}

		_, err = alice.GetKeyBackupLatestVersion(ctx)
		wantHTTPErr(t, "no backup yet", err, 404, "M_NOT_FOUND")

		// Bad versions are refused.
		for _, tc := range []struct {
			body    string
			errcode string
		}{
			{`{"auth_data":{"public_key":"k"}}`, "M_MISSING_PARAM"},
			{`{"algorithm":"m.unknown","auth_data":{"public_key":"k"}}`, "M_INVALID_PARAM"},
			{`{"algorithm":"m.megolm_backup.v1.curve25519-aes-sha2"}`, "M_MISSING_PARAM"},
			{`{"algorithm":"m.megolm_backup.v1.curve25519-aes-sha2","auth_data":"k"}`, "M_BAD_JSON"},
			{`{"algorithm":"m.megolm_backup.v1.curve25519-aes-sha2","auth_data":{"public_key":7}}`, "M_BAD_JSON"},
			{`{"algorithm":"m.megolm_backup.v1.curve25519-aes-sha2","auth_data":{}}`, "M_MISSING_PARAM"},
			{`{"algorithm":`, "M_NOT_JSON"},
		} {
			if code, me := do(t, http.DefaultClient, "POST", base+"/room_keys/version", alice.AccessToken, []byte(tc.body), nil); code != 400 || me.Code != tc.errcode {
				t.Errorf("create %s: %d %+v, want 400 %s", tc.body, code, me, tc.errcode)
			}
		}
		_, err = alice.GetKeyBackupLatestVersion(ctx)
		wantHTTPErr(t, "after refused creations", err, 404, "M_NOT_FOUND")

		created, err := alice.CreateKeyBackupVersion(ctx, &mautrix.ReqRoomKeysVersionCreate[backup.MegolmAuthData]{Algorithm: id.KeyBackupAlgorithmMegolmBackupV1, AuthData: authData})
		if err != nil {
			t.Fatal(err)
		}
		v1 := created.Version
		info, err := alice.GetKeyBackupLatestVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.Version != v1 || info.Count != 0 || info.ETag == "" || info.AuthData.PublicKey != authData.PublicKey || info.Algorithm != id.KeyBackupAlgorithmMegolmBackupV1 {
			t.Fatalf("version info: %+v", info)
		}

		// Keys encrypted to the backup key, through all three PUT routes.
		const room, room2 = id.RoomID("!office:localhost"), id.RoomID("!v12roomwithoutserver")
		const sess, sess2, sess3 = id.SessionID("sess/one+A"), id.SessionID("sessTwo"), id.SessionID("sessThree")
		encrypt := func(sessionKey string) json.RawMessage {
			esd, err := backup.EncryptSessionData(key, backup.MegolmSessionData{Algorithm: id.AlgorithmMegolmV1, SessionKey: sessionKey,
				SenderKey: "senderkey", ForwardingKeyChain: []string{}})
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(esd)
			return b
		}
		data := func(first, forwarded int, verified bool, sessionKey string) mautrix.ReqKeyBackupData {
			return mautrix.ReqKeyBackupData{FirstMessageIndex: first, ForwardedCount: forwarded, IsVerified: verified, SessionData: encrypt(sessionKey)}
		}
		up, err := alice.PutKeysInBackup(ctx, v1, &mautrix.ReqKeyBackup{Rooms: map[id.RoomID]mautrix.ReqRoomKeyBackup{
			room: {Sessions: map[id.SessionID]mautrix.ReqKeyBackupData{sess: data(3, 1, false, "key-one")}},
		}})
		if err != nil || up.Count != 1 || up.ETag == info.ETag {
			t.Fatalf("put keys: %+v %v (etag before %s)", up, err, info.ETag)
		}
		up, err = alice.PutKeysInBackupForRoom(ctx, v1, room, &mautrix.ReqRoomKeyBackup{Sessions: map[id.SessionID]mautrix.ReqKeyBackupData{sess2: data(0, 0, true, "key-two")}})
		if err != nil || up.Count != 2 {
			t.Fatalf("put room keys: %+v %v", up, err)
		}
		d3 := data(0, 0, false, "key-three")
		up, err = alice.PutKeysInBackupForRoomAndSession(ctx, v1, room2, sess3, &d3)
		if err != nil || up.Count != 3 {
			t.Fatalf("put session key: %+v %v", up, err)
		}

		// A worse copy keeps the stored key and the etag; a better one
		// replaces it.
		worse := data(5, 0, false, "worse")
		same, err := alice.PutKeysInBackupForRoomAndSession(ctx, v1, room, sess, &worse)
		if err != nil || same.ETag != up.ETag || same.Count != 3 {
			t.Fatalf("worse key: %+v %v, etag before %s", same, err, up.ETag)
		}
		better := data(3, 0, false, "key-one-better")
		changed, err := alice.PutKeysInBackupForRoomAndSession(ctx, v1, room, sess, &better)
		if err != nil || changed.ETag == up.ETag || changed.Count != 3 {
			t.Fatalf("better key: %+v %v", changed, err)
		}
		if info, _ := alice.GetKeyBackupVersion(ctx, v1); info == nil || info.ETag != changed.ETag || info.Count != 3 {
			t.Fatalf("version info after puts: %+v, want etag %s count 3", info, changed.ETag)
		}

		// Reads, decrypted with the backup key.
		all, err := alice.GetKeyBackup(ctx, v1)
		if err != nil {
			t.Fatal(err)
		}
		if len(all.Rooms) != 2 || len(all.Rooms[room].Sessions) != 2 || len(all.Rooms[room2].Sessions) != 1 {
			t.Fatalf("all keys: %+v", all)
		}
		got := all.Rooms[room].Sessions[sess]
		plain, err := got.SessionData.Decrypt(key)
		if err != nil || plain.SessionKey != "key-one-better" || got.FirstMessageIndex != 3 || got.ForwardedCount != 0 || got.IsVerified {
			t.Fatalf("decrypted key: %+v %+v %v", got, plain, err)
		}
		roomKeys, err := alice.GetKeyBackupForRoom(ctx, v1, room)
		if err != nil || len(roomKeys.Sessions) != 2 || !roomKeys.Sessions[sess2].IsVerified {
			t.Fatalf("room keys: %+v %v", roomKeys, err)
		}
		one, err := alice.GetKeyBackupForRoomAndSession(ctx, v1, room2, sess3)
		if err != nil {
			t.Fatal(err)
		}
		if p, err := one.SessionData.Decrypt(key); err != nil || p.SessionKey != "key-three" {
			t.Fatalf("session key: %+v %v", p, err)
		}
		_, err = alice.GetKeyBackupForRoomAndSession(ctx, v1, room2, "nope")
		wantHTTPErr(t, "missing session", err, 404, "M_NOT_FOUND")
		empty, err := alice.GetKeyBackupForRoom(ctx, v1, "!emptyroom:localhost")
		if err != nil || empty.Sessions == nil || len(empty.Sessions) != 0 {
			t.Fatalf("room without keys: %+v %v", empty, err)
		}

		// Bad key uploads are refused whole, and change nothing.
		for _, tc := range []struct {
			path, body string
			errcode    string
		}{
			{"/room_keys/keys?version=" + string(v1), `{}`, "M_MISSING_PARAM"},
			{"/room_keys/keys?version=" + string(v1), `{"rooms":{"!r:x":{}}}`, "M_MISSING_PARAM"},
			{"/room_keys/keys?version=" + string(v1), `{"rooms":{"!r:x":{"sessions":{"ok":{"first_message_index":0,"forwarded_count":0,"is_verified":false,"session_data":{}},"bad":{"first_message_index":0}}}}}`, "M_MISSING_PARAM"},
			{"/room_keys/keys?version=" + string(v1), `{"rooms":{"notaroom":{"sessions":{"s":{"first_message_index":0,"forwarded_count":0,"is_verified":false,"session_data":{}}}}}}`, "M_INVALID_PARAM"},
			{"/room_keys/keys/!r:x?version=" + string(v1), `{}`, "M_MISSING_PARAM"},
			{"/room_keys/keys/!r:x/s?version=" + string(v1), `{"first_message_index":-1,"forwarded_count":0,"is_verified":false,"session_data":{}}`, "M_INVALID_PARAM"},
			{"/room_keys/keys/!r:x/s?version=" + string(v1), `{"first_message_index":1.5,"forwarded_count":0,"is_verified":false,"session_data":{}}`, "M_BAD_JSON"},
			{"/room_keys/keys/!r:x/s?version=" + string(v1), `{"first_message_index":0,"forwarded_count":0,"is_verified":"yes","session_data":{}}`, "M_BAD_JSON"},
			{"/room_keys/keys/!r:x/s?version=" + string(v1), `{"first_message_index":0,"forwarded_count":0,"is_verified":false,"session_data":"x"}`, "M_BAD_JSON"},
			{"/room_keys/keys/!r:x/s", `{"first_message_index":0,"forwarded_count":0,"is_verified":false,"session_data":{}}`, "M_MISSING_PARAM"},
		} {
			if code, me := do(t, http.DefaultClient, "PUT", base+tc.path, alice.AccessToken, []byte(tc.body), nil); code != 400 || me.Code != tc.errcode {
				t.Errorf("PUT %s %s: %d %+v, want 400 %s", tc.path, tc.body, code, me, tc.errcode)
			}
		}
		for _, method := range []string{"GET", "DELETE"} {
			if code, me := do(t, http.DefaultClient, method, base+"/room_keys/keys", alice.AccessToken, nil, nil); code != 400 || me.Code != "M_MISSING_PARAM" {
				t.Errorf("%s without version: %d %+v", method, code, me)
			}
		}
		if info, _ := alice.GetKeyBackupVersion(ctx, v1); info == nil || info.ETag != changed.ETag || info.Count != 3 {
			t.Fatalf("refused uploads changed the backup: %+v", info)
		}

		// Version updates: only auth_data, with the same algorithm.
		newAuth := map[string]any{"public_key": string(authData.PublicKey), "signatures": map[string]any{string(alice.UserID): map[string]string{"ed25519:" + string(alice.DeviceID): "sig"}}}
		for _, tc := range []struct {
			version string
			body    map[string]any
			status  int
			errcode string
		}{
			{string(v1), map[string]any{"algorithm": "m.other", "auth_data": newAuth}, 400, "M_INVALID_PARAM"},
			{string(v1), map[string]any{"algorithm": id.KeyBackupAlgorithmMegolmBackupV1, "auth_data": newAuth, "version": "99"}, 400, "M_INVALID_PARAM"},
			{string(v1), map[string]any{"auth_data": newAuth}, 400, "M_MISSING_PARAM"},
			{string(v1), map[string]any{"algorithm": id.KeyBackupAlgorithmMegolmBackupV1}, 400, "M_MISSING_PARAM"},
			{"99", map[string]any{"algorithm": id.KeyBackupAlgorithmMegolmBackupV1, "auth_data": newAuth}, 404, "M_NOT_FOUND"},
		} {
			if code, me := do(t, http.DefaultClient, "PUT", base+"/room_keys/version/"+tc.version, alice.AccessToken, tc.body, nil); code != tc.status || me.Code != tc.errcode {
				t.Errorf("update %s %v: %d %+v, want %d %s", tc.version, tc.body, code, me, tc.status, tc.errcode)
			}
		}
		if code, me := do(t, http.DefaultClient, "PUT", base+"/room_keys/version/"+string(v1), alice.AccessToken,
			map[string]any{"algorithm": id.KeyBackupAlgorithmMegolmBackupV1, "auth_data": newAuth, "version": v1}, nil); code != 200 {
			t.Fatalf("update: %d %+v", code, me)
		}
		if info, _ := alice.GetKeyBackupVersion(ctx, v1); info == nil || len(info.AuthData.Signatures) != 1 || info.Count != 3 {
			t.Fatalf("after update: %+v", info)
		}

		// A new version is current: writes to the old one are refused with
		// the current version; reads of the old one still work.
		created, err = alice.CreateKeyBackupVersion(ctx, &mautrix.ReqRoomKeysVersionCreate[backup.MegolmAuthData]{Algorithm: id.KeyBackupAlgorithmMegolmBackupV1, AuthData: authData})
		if err != nil {
			t.Fatal(err)
		}
		v2 := created.Version
		if v2 == v1 {
			t.Fatalf("second version %s = first", v2)
		}
		_, err = alice.PutKeysInBackupForRoomAndSession(ctx, v1, room, "late", &d3)
		me := wantHTTPErr(t, "put to the old version", err, 403, "M_WRONG_ROOM_KEYS_VERSION")
		if me.ExtraData["current_version"] != string(v2) {
			t.Fatalf("current_version %v, want %s", me.ExtraData["current_version"], v2)
		}
		_, err = alice.PutKeysInBackup(ctx, "12345", &mautrix.ReqKeyBackup{Rooms: map[id.RoomID]mautrix.ReqRoomKeyBackup{}})
		wantHTTPErr(t, "put to an unknown version", err, 403, "M_WRONG_ROOM_KEYS_VERSION")
		if old, err := alice.GetKeyBackup(ctx, v1); err != nil || len(old.Rooms) != 2 {
			t.Fatalf("old version's keys: %+v %v", old, err)
		}
		if cur, err := alice.GetKeyBackupLatestVersion(ctx); err != nil || cur.Version != v2 || cur.Count != 0 {
			t.Fatalf("current version: %+v %v", cur, err)
		}

		// Another user sees none of it.
		_, err = bob.GetKeyBackupVersion(ctx, v1)
		wantHTTPErr(t, "bob reads alice's version", err, 404, "M_NOT_FOUND")
		_, err = bob.GetKeyBackup(ctx, v1)
		wantHTTPErr(t, "bob reads alice's keys", err, 404, "M_NOT_FOUND")
		_, err = bob.PutKeysInBackup(ctx, v1, &mautrix.ReqKeyBackup{Rooms: map[id.RoomID]mautrix.ReqRoomKeyBackup{}})
		wantHTTPErr(t, "bob writes with no backup", err, 404, "M_NOT_FOUND")
		if code, me := do(t, http.DefaultClient, "GET", base+"/room_keys/version", "", nil, nil); code != 401 || me.Code != "M_MISSING_TOKEN" {
			t.Fatalf("no token: %d %+v", code, me)
		}

		// Deletes: one session, one room, everything; in the old version too.
		del, err := alice.DeleteKeysInBackupForRoomAndSession(ctx, v1, room, sess)
		if err != nil || del.Count != 2 {
			t.Fatalf("delete session: %+v %v", del, err)
		}
		del, err = alice.DeleteKeysFromBackupForRoom(ctx, v1, room)
		if err != nil || del.Count != 1 {
			t.Fatalf("delete room: %+v %v", del, err)
		}
		del, err = alice.DeleteKeyBackup(ctx, v1)
		if err != nil || del.Count != 0 {
			t.Fatalf("delete all: %+v %v", del, err)
		}
		_, err = alice.DeleteKeyBackup(ctx, "99")
		wantHTTPErr(t, "delete keys of an unknown version", err, 404, "M_NOT_FOUND")

		// Deleting a version: idempotent; it stays deleted, the one before
		// is current again, and its number is not handed out again.
		if err := alice.DeleteKeyBackupVersion(ctx, v2); err != nil {
			t.Fatal(err)
		}
		if err := alice.DeleteKeyBackupVersion(ctx, v2); err != nil {
			t.Fatalf("delete a deleted version: %v", err)
		}
		err = alice.DeleteKeyBackupVersion(ctx, "99")
		wantHTTPErr(t, "delete an unknown version", err, 404, "M_NOT_FOUND")
		_, err = alice.GetKeyBackupVersion(ctx, v2)
		wantHTTPErr(t, "read a deleted version", err, 404, "M_NOT_FOUND")
		_, err = alice.GetKeyBackup(ctx, v2)
		wantHTTPErr(t, "read a deleted version's keys", err, 404, "M_NOT_FOUND")
		if cur, err := alice.GetKeyBackupLatestVersion(ctx); err != nil || cur.Version != v1 {
			t.Fatalf("current after deleting %s: %+v %v", v2, cur, err)
		}
		_, err = alice.PutKeysInBackupForRoomAndSession(ctx, v2, room, sess, &d3)
		me = wantHTTPErr(t, "put to a deleted version", err, 403, "M_WRONG_ROOM_KEYS_VERSION")
		if me.ExtraData["current_version"] != string(v1) {
			t.Fatalf("current_version %v, want %s", me.ExtraData["current_version"], v1)
		}
		created, err = alice.CreateKeyBackupVersion(ctx, &mautrix.ReqRoomKeysVersionCreate[backup.MegolmAuthData]{Algorithm: id.KeyBackupAlgorithmMegolmBackupV1, AuthData: authData})
		if err != nil || created.Version == v2 || created.Version == v1 {
			t.Fatalf("third version: %+v %v", created, err)
		}
	})
}
