package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/machi-chat/machi/internal/testrig"
)

// TestRegistrationSession: POST /register remembers, per session, what its
// first request gave, and the account the session made: a client that
// sends only auth the second time registers what it asked for, and the
// same request again (its answer lost) logs into that account anew.
func TestRegistrationSession(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		url := baseURL(srv) + "/_matrix/client/v3/register"
		type answer struct {
			Session     string `json:"session"`
			UserID      string `json:"user_id"`
			AccessToken string `json:"access_token"`
			DeviceID    string `json:"device_id"`
		}
		begin := func(body map[string]any) string {
			t.Helper()
			b, _ := json.Marshal(body)
			resp, err := http.Post(url, "application/json", bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var a answer
			if err := json.NewDecoder(resp.Body).Decode(&a); err != nil || resp.StatusCode != 401 || a.Session == "" {
				t.Fatalf("first request: %d %+v %v", resp.StatusCode, a, err)
			}
			return a.Session
		}
		dummy := func(session string) map[string]any {
			return map[string]any{"auth": map[string]string{"type": "m.login.dummy", "session": session}}
		}

		session := begin(map[string]any{"username": "suzuki", "password": "パスワード１２３"})
		var first, again answer
		if code, me := do(t, http.DefaultClient, "POST", url, "", dummy(session), &first); code != 200 || first.UserID != "@suzuki:localhost" || first.AccessToken == "" {
			t.Fatalf("auth only: %d %+v %+v", code, me, first)
		}
		if code, me := do(t, http.DefaultClient, "POST", url, "", dummy(session), &again); code != 200 || again.UserID != first.UserID || again.AccessToken == "" || again.AccessToken == first.AccessToken {
			t.Fatalf("same session again: %d %+v %+v (first %+v)", code, me, again, first)
		}
		// The remembered (non-ASCII) password is the account's.
		var login answer
		if code, me := do(t, http.DefaultClient, "POST", baseURL(srv)+"/_matrix/client/v3/login", "", map[string]any{
			"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": "suzuki"}, "password": "パスワード１２３"}, &login); code != 200 {
			t.Fatalf("login with the remembered password: %d %+v", code, me)
		}
		// inhibit_login is remembered too.
		session = begin(map[string]any{"username": "tanaka", "password": "pw", "inhibit_login": true})
		var inhibited answer
		if code, me := do(t, http.DefaultClient, "POST", url, "", dummy(session), &inhibited); code != 200 || inhibited.UserID != "@tanaka:localhost" || inhibited.AccessToken != "" {
			t.Fatalf("inhibit_login from the session: %d %+v %+v", code, me, inhibited)
		}
		// Another session cannot take a name already taken.
		session = begin(map[string]any{"username": "suzuki", "password": "other"})
		if code, me := do(t, http.DefaultClient, "POST", url, "", dummy(session), nil); code != 400 || me.Code != "M_USER_IN_USE" {
			t.Fatalf("a taken name in a new session: %d %+v", code, me)
		}
	})
}
