package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/machi-chat/machi/internal/server"
	"github.com/machi-chat/machi/internal/testrig"
)

// TestFederatedServerACL: once a room's m.room.server_acl bans city-b,
// city-a refuses city-b's events in that room (each with an error in the
// /send answer) and its requests for the room's state, history and auth
// chains (403), which it answered before.
func TestFederatedServerACL(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		const a, b = "city-a.test", "city-b.test"
		cities := startFederation(t, engine, []string{a, b}, map[string][]string{a: {b}, b: {a}}, nil)
		alice := register(t, cities[a].srv, "alice")
		bob := register(t, cities[b].srv, "bob")
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "広域連携"})
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
		request := func(method, path string, body any) (int, map[string]any) {
			t.Helper()
			req := signedRequest(t, cities[a], b, keyID, key, method, path, body)
			resp, err := insecureFed(a).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var out map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&out)
			return resp.StatusCode, out
		}
		version, _ := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion("10"))
		sendAsBob := func(txnID, body string) map[string]any {
			t.Helper()
			snap, err := cities[a].srv.Rooms.CurrentState(ctxT(t), string(room.RoomID))
			if err != nil {
				t.Fatal(err)
			}
			latest, _ := cities[a].srv.Rooms.Latest(ctxT(t), string(room.RoomID))
			c, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": body})
			proto := gomatrixserverlib.ProtoEvent{SenderID: string(bob.UserID), RoomID: string(room.RoomID), Type: "m.room.message",
				PrevEvents: latest, Depth: 100, Content: c,
				AuthEvents: []string{snap.Get("m.room.create", "").ID(), snap.Get("m.room.power_levels", "").ID(), snap.Get("m.room.member", string(bob.UserID)).ID()}}
			pdu, err := version.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), b, keyID, key)
			if err != nil {
				t.Fatal(err)
			}
			code, out := request("PUT", "/_matrix/federation/v1/send/"+txnID,
				map[string]any{"origin": b, "origin_server_ts": time.Now().UnixMilli(), "pdus": []json.RawMessage{pdu.JSON()}})
			if code != 200 {
				t.Fatalf("send: %d %v", code, out)
			}
			results, _ := out["pdus"].(map[string]any)
			r, _ := results[pdu.EventID()].(map[string]any)
			return r
		}
		paths := []string{"/_matrix/federation/v1/state_ids/" + string(room.RoomID), "/_matrix/federation/v1/state/" + string(room.RoomID),
			"/_matrix/federation/v1/backfill/" + string(room.RoomID) + "?limit=5&v=" + string(room.RoomID),
			"/_matrix/federation/v1/make_leave/" + string(room.RoomID) + "/" + string(bob.UserID)}

		// Before the ban: all answered.
		if r := sendAsBob("acl-1", "禁止前"); len(r) != 0 {
			t.Fatalf("message before the ban: %v", r)
		}
		for _, p := range paths[:2] {
			if code, out := request("GET", p, nil); code == 403 {
				t.Fatalf("GET %s before the ban: %d %v", p, code, out)
			}
		}

		if _, err := alice.SendStateEvent(ctxT(t), room.RoomID, event.Type{Type: "m.room.server_acl", Class: event.StateEventType}, "",
			map[string]any{"allow": []string{"*"}, "deny": []string{b}, "allow_ip_literals": false}); err != nil {
			t.Fatal(err)
		}
		if r := sendAsBob("acl-2", "禁止後"); r == nil || !strings.Contains(r["error"].(string), "server ACL") {
			t.Fatalf("message after the ban: %v", r)
		}
		for _, p := range paths {
			if code, out := request("GET", p, nil); code != 403 || out["errcode"] != "M_FORBIDDEN" {
				t.Fatalf("GET %s after the ban: %d %v", p, code, out)
			}
		}
		if code, out := request("POST", "/_matrix/federation/v1/get_missing_events/"+string(room.RoomID),
			map[string]any{"earliest_events": []string{}, "latest_events": []string{}, "limit": 10}); code != 403 {
			t.Fatalf("get_missing_events after the ban: %d %v", code, out)
		}
		resp, err := alice.Messages(ctxT(t), room.RoomID, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range resp.Chunk {
			if ev.Content.Raw["body"] == "禁止後" {
				t.Fatal("a banned server's event got into the room")
			}
		}
	})
}
