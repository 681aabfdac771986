package e2e

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/machi-chat/machi/internal/config"
	"github.com/machi-chat/machi/internal/testrig"
	"github.com/machi-chat/machi/policy"
)

func TestThirdPartyLookups(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice := register(t, srv, "alice")
		if _, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{RoomAliasName: "soumu"}); err != nil {
			t.Fatal(err)
		}
		base := baseURL(srv) + "/_matrix/client/v3/thirdparty"
		var protocols map[string]any
		if code, me := do(t, http.DefaultClient, "GET", base+"/protocols", alice.AccessToken, nil, &protocols); code != 200 || len(protocols) != 0 {
			t.Fatalf("protocols: %d %+v %v", code, me, protocols)
		}
		for _, u := range []string{
			"/location?alias=%23soumu:localhost",
			"/user?userid=" + string(alice.UserID),
		} {
			var list []any
			if code, me := do(t, http.DefaultClient, "GET", base+u, alice.AccessToken, nil, &list); code != 200 || list == nil || len(list) != 0 {
				t.Errorf("GET %s: %d %+v %v, want an empty list", u, code, me, list)
			}
		}
		for _, tc := range []struct {
			url, token string
			status     int
			code       string
		}{
			{"/protocol/irc", alice.AccessToken, 404, "M_NOT_FOUND"},
			{"/location/irc?searchFields=x", alice.AccessToken, 404, "M_NOT_FOUND"},
			{"/user/irc", alice.AccessToken, 404, "M_NOT_FOUND"},
			{"/location?alias=%23nope:localhost", alice.AccessToken, 404, "M_NOT_FOUND"},
			{"/location", alice.AccessToken, 400, "M_MISSING_PARAM"},
			{"/user?userid=@nobody:localhost", alice.AccessToken, 404, "M_NOT_FOUND"},
			{"/user?userid=@someone:other.example.jp", alice.AccessToken, 404, "M_NOT_FOUND"},
			{"/user?userid=nobody", alice.AccessToken, 400, "M_INVALID_PARAM"},
			{"/user", alice.AccessToken, 400, "M_MISSING_PARAM"},
			{"/protocols", "", 401, "M_MISSING_TOKEN"},
		} {
			if code, me := do(t, http.DefaultClient, "GET", base+tc.url, tc.token, nil, nil); code != tc.status || me.Code != tc.code {
				t.Errorf("GET %s: %d %s, want %d %s", tc.url, code, me.Code, tc.status, tc.code)
			}
		}
	})
}

func TestTURNServer(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := ctxT(t)
		// None configured: {} (the spec lets a server have none).
		srv := startServer(t, engine)
		alice := register(t, srv, "alice")
		var none map[string]any
		if code, me := do(t, http.DefaultClient, "GET", baseURL(srv)+"/_matrix/client/v3/voip/turnServer", alice.AccessToken, nil, &none); code != 200 || len(none) != 0 {
			t.Fatalf("no TURN: %d %+v %v", code, me, none)
		}
		if code, me := do(t, http.DefaultClient, "GET", baseURL(srv)+"/_matrix/client/v3/voip/turnServer", "", nil, nil); code != 401 || me.Code != "M_MISSING_TOKEN" {
			t.Fatalf("no token: %d %+v", code, me)
		}

		// A coturn shared secret: per-user credentials coturn can check.
		uris := []string{"turn:turn.city.example.jp:3478?transport=udp", "turns:turn.city.example.jp:5349?transport=tcp"}
		srv = startServer(t, engine, func(c *config.Config) {
			c.TURN = config.TURN{URIs: uris, SharedSecret: "coturn-secret", TTL: policy.Duration(time.Hour)}
		})
		bob := register(t, srv, "bob")
		before := time.Now()
		turn, err := bob.TurnServer(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if turn.TTL != 3600 || strings.Join(turn.URIs, " ") != strings.Join(uris, " ") {
			t.Fatalf("turn = %+v", turn)
		}
		expiry, user, ok := strings.Cut(turn.Username, ":")
		exp, err := strconv.ParseInt(expiry, 10, 64)
		if !ok || err != nil || user != string(bob.UserID) || exp < before.Add(time.Hour).Unix()-1 || exp > time.Now().Add(time.Hour).Unix()+1 {
			t.Fatalf("username %q, want <now+ttl>:%s", turn.Username, bob.UserID)
		}
		mac := hmac.New(sha1.New, []byte("coturn-secret"))
		mac.Write([]byte(turn.Username))
		if want := base64.StdEncoding.EncodeToString(mac.Sum(nil)); turn.Password != want {
			t.Fatalf("password %q, want base64(HMAC-SHA1(secret, username)) = %q", turn.Password, want)
		}

		// Static credentials.
		srv = startServer(t, engine, func(c *config.Config) {
			c.TURN = config.TURN{URIs: uris[:1], Username: "city", Password: "pw", TTL: policy.Duration(24 * time.Hour)}
		})
		carol := register(t, srv, "carol")
		turn, err = carol.TurnServer(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if turn.Username != "city" || turn.Password != "pw" || turn.TTL != 86400 || len(turn.URIs) != 1 {
			t.Fatalf("static turn = %+v", turn)
		}
	})
}

func TestDiscoveryAndLoginFlows(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := ctxT(t)
		srv := startServer(t, engine)
		var wk mautrix.ClientWellKnown
		if code, me := do(t, http.DefaultClient, "GET", baseURL(srv)+"/.well-known/matrix/client", "", nil, &wk); code != 200 {
			t.Fatalf("well-known: %d %+v", code, me)
		}
		if wk.Homeserver.BaseURL != baseURL(srv) {
			t.Fatalf("base_url %q, want %q (the host the client reached, not the listener's port 0)", wk.Homeserver.BaseURL, baseURL(srv))
		}
		// The advertised URL works with a client that has only it.
		c, _ := mautrix.NewClient(wk.Homeserver.BaseURL, "", "")
		flows, err := c.GetLoginFlows(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range []mautrix.AuthType{mautrix.AuthTypePassword, mautrix.AuthTypeSSO, mautrix.AuthTypeToken} {
			if !flows.HasFlow(f) {
				t.Errorf("login flows %+v lack %s", flows.Flows, f)
			}
		}

		srv = startServer(t, engine, func(c *config.Config) { c.Listen.PublicBaseURL = "https://matrix.city.example.jp/" })
		if code, _ := do(t, http.DefaultClient, "GET", baseURL(srv)+"/.well-known/matrix/client", "", nil, &wk); code != 200 || wk.Homeserver.BaseURL != "https://matrix.city.example.jp" {
			t.Fatalf("configured base_url: %d %q", code, wk.Homeserver.BaseURL)
		}
	})
}
