package e2e

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/machi-chat/machi/internal/server"
	"github.com/machi-chat/machi/internal/testrig"
)

type openIDToken struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ServerName  string `json:"matrix_server_name"`
	ExpiresIn   int    `json:"expires_in"`
}

// TestOpenID: a user gets an OpenID token for themselves (not for someone
// else), a widget exchanges it for the user's ID on the client listener
// (and on the federation listener, below), it survives a restart, and it
// stops working after expires_in.
func TestOpenID(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		clock := &testClock{t: time.Now()}
		cfg := testConfig(t, engine)
		srv := startUnmanaged(t, &cfg, server.WithClock(clock.Now))
		alice := register(t, srv, "alice")
		bob := register(t, srv, "bob")
		base := baseURL(srv) + "/_matrix/client/v3/user/"
		var tok openIDToken
		if code, me := do(t, http.DefaultClient, "POST", base+url.PathEscape(string(alice.UserID))+"/openid/request_token", alice.AccessToken, map[string]any{}, &tok); code != 200 {
			t.Fatalf("request_token: %d %+v", code, me)
		}
		if tok.AccessToken == "" || tok.TokenType != "Bearer" || tok.ServerName != cfg.ServerName || tok.ExpiresIn <= 0 {
			t.Fatalf("token: %+v", tok)
		}
		if code, me := do(t, http.DefaultClient, "POST", base+url.PathEscape(string(alice.UserID))+"/openid/request_token", bob.AccessToken, map[string]any{}, nil); code != 403 || me.Code != "M_FORBIDDEN" {
			t.Fatalf("bob asking for alice: %d %+v", code, me)
		}
		if code, me := do(t, http.DefaultClient, "POST", base+url.PathEscape(string(alice.UserID))+"/openid/request_token", alice.AccessToken, []byte("[]"), nil); code != 400 {
			t.Fatalf("not an object: %d %+v", code, me)
		}
		if code, me := do(t, http.DefaultClient, "POST", base+url.PathEscape(string(alice.UserID))+"/openid/request_token", "", map[string]any{}, nil); code != 401 {
			t.Fatalf("no access token: %d %+v", code, me)
		}
		userinfo := func(srv *server.Server, token string) (int, string, string) {
			t.Helper()
			u := baseURL(srv) + "/_matrix/federation/v1/openid/userinfo"
			if token != "" {
				u += "?access_token=" + url.QueryEscape(token)
			}
			var out struct {
				Sub string `json:"sub"`
			}
			code, me := do(t, http.DefaultClient, "GET", u, "", nil, &out)
			return code, out.Sub, me.Code
		}
		if code, sub, _ := userinfo(srv, tok.AccessToken); code != 200 || sub != string(alice.UserID) {
			t.Fatalf("userinfo: %d %q", code, sub)
		}
		for _, bad := range []string{"an/invalid/token", alice.AccessToken, strings.ToUpper(tok.AccessToken)} {
			if code, _, errcode := userinfo(srv, bad); code != 401 || errcode != "M_UNKNOWN_TOKEN" {
				t.Fatalf("userinfo with %q: %d %s", bad, code, errcode)
			}
		}
		if code, _, errcode := userinfo(srv, ""); code != 401 || errcode != "M_MISSING_TOKEN" {
			t.Fatalf("userinfo without a token: %d %s", code, errcode)
		}
		// An OpenID token is no access token.
		if code, me := do(t, http.DefaultClient, "GET", baseURL(srv)+"/_matrix/client/v3/account/whoami", tok.AccessToken, nil, nil); code != 401 {
			t.Fatalf("whoami with an OpenID token: %d %+v", code, me)
		}

		// After a restart the token still works, until it expires.
		stopServer(srv)
		srv = startUnmanaged(t, &cfg, server.WithClock(clock.Now))
		defer stopServer(srv)
		if code, sub, _ := userinfo(srv, tok.AccessToken); code != 200 || sub != string(alice.UserID) {
			t.Fatalf("userinfo after a restart: %d %q", code, sub)
		}
		clock.Set(clock.Now().Add(time.Duration(tok.ExpiresIn)*time.Second + time.Second))
		if code, _, errcode := userinfo(srv, tok.AccessToken); code != 401 || errcode != "M_UNKNOWN_TOKEN" {
			t.Fatalf("userinfo after expiry: %d %s", code, errcode)
		}
	})
}
