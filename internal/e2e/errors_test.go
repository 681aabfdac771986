package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/machi-chat/machi/internal/testrig"
)

// TestBadInput sends what clients get wrong and checks each gets the right
// Matrix error, never a 500.
func TestBadInput(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice := register(t, srv, "alice")
		revoked := register(t, srv, "revoked")
		revokedToken := revoked.AccessToken
		if _, err := revoked.Logout(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{})
		if err != nil {
			t.Fatal(err)
		}
		outsider := register(t, srv, "outsider")
		sent, err := alice.SendText(ctxT(t), room.RoomID, "not for outsiders")
		if err != nil {
			t.Fatal(err)
		}
		tok := alice.AccessToken
		base := baseURL(srv) + "/_matrix/client/v3"
		roomPath := base + "/rooms/" + string(room.RoomID)
		big := `{"body":"` + strings.Repeat("x", 2<<20) + `"}`
		// Under the 1 MiB body limit, over the 65536 bytes of an event.
		bigEvent := `{"body":"` + strings.Repeat("x", 70000) + `"}`

		for _, tc := range []struct {
			name, method, url, token, body string
			status                         int
			code                           string
		}{
			{"not json", "PUT", roomPath + "/send/m.room.message/t1", tok, `{"body":`, 400, "M_NOT_JSON"},
			{"invalid utf-8 register", "POST", base + "/register", "", "{\"username\": \"a\x81\"}", 400, "M_NOT_JSON"},
			{"invalid utf-8 send", "PUT", roomPath + "/send/m.room.message/t6", tok, "{\"body\": \"\xff\xfe\"}", 400, "M_NOT_JSON"},
			{"json array", "PUT", roomPath + "/send/m.room.message/t2", tok, `[1,2]`, 400, "M_BAD_JSON"},
			{"wrong type", "POST", base + "/createRoom", tok, `{"name": 5}`, 400, "M_BAD_JSON"},
			{"wrong type invite", "POST", base + "/createRoom", tok, `{"invite": "bob"}`, 400, "M_BAD_JSON"},
			{"bad preset", "POST", base + "/createRoom", tok, `{"preset": "everyone"}`, 400, "M_BAD_JSON"},
			{"bad room version", "POST", base + "/createRoom", tok, `{"room_version": "13"}`, 400, "M_UNSUPPORTED_ROOM_VERSION"},
			{"login wrong password", "POST", base + "/login", "", `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"nope"}`, 403, "M_FORBIDDEN"},
			{"login missing fields", "POST", base + "/login", "", `{"type":"m.login.password"}`, 400, "M_MISSING_PARAM"},
			{"missing token", "GET", base + "/account/whoami", "", "", 401, "M_MISSING_TOKEN"},
			{"unknown token", "GET", base + "/account/whoami", "nope", "", 401, "M_UNKNOWN_TOKEN"},
			{"revoked token", "GET", base + "/account/whoami", revokedToken, "", 401, "M_UNKNOWN_TOKEN"},
			{"unknown room send", "PUT", base + "/rooms/!nope:localhost/send/m.room.message/t3", tok, `{"body":"x"}`, 404, "M_NOT_FOUND"},
			{"unknown room state", "GET", base + "/rooms/!nope:localhost/state", tok, "", 403, "M_FORBIDDEN"},
			{"unknown room messages", "GET", base + "/rooms/!nope:localhost/messages?dir=b", tok, "", 403, "M_FORBIDDEN"},
			{"unknown state key", "GET", roomPath + "/state/m.room.topic/", tok, "", 404, "M_NOT_FOUND"},
			{"unknown event", "GET", roomPath + "/event/$nope", tok, "", 404, "M_NOT_FOUND"},
			{"event of a room never joined", "GET", roomPath + "/event/" + url.PathEscape(string(sent.EventID)), outsider.AccessToken, "", 404, "M_NOT_FOUND"},
			{"unknown user profile", "GET", base + "/profile/@nobody:localhost", "", "", 404, "M_NOT_FOUND"},
			{"invite bad user id", "POST", roomPath + "/invite", tok, `{"user_id":"bob"}`, 400, "M_INVALID_PARAM"},
			{"invite missing user id", "POST", roomPath + "/invite", tok, `{}`, 400, "M_MISSING_PARAM"},
			{"oversized body", "PUT", roomPath + "/send/m.room.message/t4", tok, big, 413, "M_TOO_LARGE"},
			{"oversized event", "PUT", roomPath + "/send/m.room.message/t7", tok, bigEvent, 413, "M_TOO_LARGE"},
			{"oversized state event", "PUT", roomPath + "/state/m.room.topic/", tok, `{"topic":"` + strings.Repeat("x", 70000) + `"}`, 413, "M_TOO_LARGE"},
			{"bad since token", "GET", base + "/sync?since=garbage", tok, "", 400, "M_INVALID_PARAM"},
			{"bad dir", "GET", roomPath + "/messages?dir=x", tok, "", 400, "M_INVALID_PARAM"},
			{"unknown endpoint", "GET", base + "/nope", tok, "", 404, "M_UNRECOGNIZED"},
			{"bad filter", "GET", base + "/sync?filter=%7Bnot", tok, "", 400, "M_BAD_JSON"},
			{"float in content", "PUT", roomPath + "/send/m.room.message/t5", tok, `{"n": 1.5}`, 400, "M_BAD_JSON"},
			{"registration taken", "POST", base + "/register", "", `{"username":"` + strings.TrimPrefix(strings.Split(string(alice.UserID), ":")[0], "@") + `","password":"x","auth":{"type":"m.login.dummy"}}`, 400, "M_USER_IN_USE"},
			{"registration name with newline", "POST", base + "/register", "", `{"username":"` + strings.TrimPrefix(strings.Split(string(alice.UserID), ":")[0], "@") + `\n","password":"x","auth":{"type":"m.login.dummy"}}`, 400, "M_INVALID_USERNAME"},
			{"availability of name with space", "GET", base + "/register/available?username=bob%20", "", "", 400, "M_INVALID_USERNAME"},
			{"registration bad name", "POST", base + "/register", "", `{"username":"Bad Name!","password":"x","auth":{"type":"m.login.dummy"}}`, 400, "M_INVALID_USERNAME"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				req, err := http.NewRequest(tc.method, tc.url, strings.NewReader(tc.body))
				if err != nil {
					t.Fatal(err)
				}
				if tc.token != "" {
					req.Header.Set("Authorization", "Bearer "+tc.token)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				var e struct {
					Code string `json:"errcode"`
					Msg  string `json:"error"`
				}
				if err := json.Unmarshal(body, &e); err != nil {
					t.Fatalf("body is not a Matrix error: %s", body)
				}
				if resp.StatusCode != tc.status || e.Code != tc.code {
					t.Fatalf("got %d %s (%s), want %d %s", resp.StatusCode, e.Code, e.Msg, tc.status, tc.code)
				}
				if e.Msg == "" {
					t.Fatal("error has no message")
				}
			})
		}
	})
}
