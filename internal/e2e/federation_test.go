package e2e

import (
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"golang.org/x/crypto/ed25519"
	"maunium.net/go/mautrix"

	"github.com/machi-chat/machi/internal/config"
	"github.com/machi-chat/machi/internal/server"
	"github.com/machi-chat/machi/internal/testrig"
)

// A prefecture's cities on one machine: each machi has its own loopback
// address, a certificate from the test CA (the "private CA" of a closed
// network, given as federation.ca_bundle), and static peers instead of DNS.

type fedCity struct {
	name    string
	addr    string // federation listener
	cfg     config.Config
	srv     *server.Server // nil while stopped
	running bool
}

// stop shuts the city's machi down, as an outage would.
func (c *fedCity) stop() {
	stopServer(c.srv)
	c.running = false
}

// start (re)starts the city's machi on its data.
func (c *fedCity) start(t *testing.T) {
	t.Helper()
	c.srv = startUnmanaged(t, &c.cfg)
	c.running = true
	c.cfg.Listen.Client = c.srv.ClientAddr // a restart keeps the address clients know
}

// startFederation starts one machi per name, each allowing the servers in
// allow[name], reaching the others at their addresses unless route
// overrides one.
func startFederation(t *testing.T, engine string, names []string, allow map[string][]string, route map[string]map[string]string) map[string]*fedCity {
	t.Helper()
	return startFederationCA(t, engine, testrig.NewCA(t), names, allow, route)
}

// startFederationCA is startFederation with the CA given (for test servers
// of the test's own that the cities must trust).
func startFederationCA(t *testing.T, engine string, ca *testrig.CA, names []string, allow map[string][]string, route map[string]map[string]string) map[string]*fedCity {
	t.Helper()
	cities := map[string]*fedCity{}
	for i, name := range names {
		ip := net.IPv4(127, 0, 0, byte(11+i))
		cities[name] = &fedCity{name: name, addr: testrig.FreePort(t, ip.String())}
	}
	for i, name := range names {
		c := cities[name]
		cert, key := ca.Issue(t, name, net.IPv4(127, 0, 0, byte(11+i)))
		peers := map[string]string{}
		for _, other := range names {
			peers[other] = cities[other].addr
		}
		for server, addr := range route[name] {
			peers[server] = addr
		}
		c.cfg = testConfig(t, engine, func(cfg *config.Config) {
			cfg.ServerName = name
			cfg.Federation = config.Federation{Listen: c.addr, TLSCert: cert, TLSKey: key, CABundle: ca.PEMPath, Peers: peers}
			cfg.Policy.Federation.AllowedServers = allow[name]
		})
		c.start(t)
		t.Cleanup(func() {
			if c.running {
				c.stop()
			}
		})
	}
	return cities
}

// recorder is a TLS listener that counts connections: a server that must
// never be contacted.
func recorder(t *testing.T) (addr string, conns *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.19:0")
	if err != nil {
		t.Fatal(err)
	}
	conns = &atomic.Int32{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String(), conns
}

func TestFederationKeysProfilesAndAllowList(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		const a, b, c = "city-a.test", "city-b.test", "city-c.test"
		strangerAddr, strangerConns := recorder(t)
		cities := startFederation(t, engine, []string{a, b, c},
			map[string][]string{a: {b}, b: {a}, c: {a}},
			map[string]map[string]string{a: {c: strangerAddr}}) // city-a must never reach city-c
		alice := register(t, cities[a].srv, "alice")
		if err := alice.SetDisplayName(ctxT(t), "佐藤 花子"); err != nil {
			t.Fatal(err)
		}
		bob := register(t, cities[b].srv, "bob")
		carol := register(t, cities[c].srv, "carol")

		// A profile across cities, through the client API of city-b.
		var prof struct {
			DisplayName string `json:"displayname"`
		}
		path := "/_matrix/client/v3/profile/" + string(alice.UserID)
		if code, me := do(t, http.DefaultClient, "GET", baseURL(cities[b].srv)+path, bob.AccessToken, nil, &prof); code != 200 || prof.DisplayName != "佐藤 花子" {
			t.Fatalf("remote profile: %d %+v %+v", code, me, prof)
		}
		if code, _ := do(t, http.DefaultClient, "GET", baseURL(cities[b].srv)+path+"/displayname", bob.AccessToken, nil, &prof); code != 200 || prof.DisplayName != "佐藤 花子" {
			t.Fatalf("remote displayname: %d %+v", code, prof)
		}
		if code, me := do(t, http.DefaultClient, "GET", baseURL(cities[b].srv)+path+"/avatar_url", bob.AccessToken, nil, nil); code != 404 || me.Code != "M_NOT_FOUND" {
			t.Fatalf("remote avatar (none): %d %+v", code, me)
		}
		if code, me := do(t, http.DefaultClient, "GET", baseURL(cities[b].srv)+"/_matrix/client/v3/profile/@nobody:"+a, bob.AccessToken, nil, nil); code != 404 || me.Code != "M_NOT_FOUND" {
			t.Fatalf("unknown remote user: %d %+v", code, me)
		}

		// city-a is not allowed to talk to city-c: the client is told by
		// rule, and city-c is never contacted.
		code, me := do(t, http.DefaultClient, "GET", baseURL(cities[a].srv)+"/_matrix/client/v3/profile/"+string(carol.UserID), alice.AccessToken, nil, nil)
		if code != 403 || me.Rule != "federation-not-allowed" || me.JA == "" || me.EN == "" {
			t.Fatalf("profile on a server off the allow-list: %d %+v", code, me)
		}
		// city-c allows city-a, but city-a refuses it, before fetching its keys.
		code, me = do(t, http.DefaultClient, "GET", baseURL(cities[c].srv)+path, carol.AccessToken, nil, nil)
		if code != 403 || me.Code != "M_FORBIDDEN" || !strings.Contains(me.Msg, "not allowed") {
			t.Fatalf("city-c asking city-a: %d %+v", code, me)
		}
		// Nor can city-c's users join city-a's rooms, or send to them.
		open, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		code, me = do(t, http.DefaultClient, "POST", baseURL(cities[c].srv)+"/_matrix/client/v3/join/"+string(open.RoomID)+"?server_name="+a,
			carol.AccessToken, map[string]any{}, nil)
		if code != 403 || me.Code != "M_FORBIDDEN" {
			t.Fatalf("city-c joining city-a's room: %d %+v", code, me)
		}
		if n := strangerConns.Load(); n != 0 {
			t.Fatalf("city-a opened %d connections to city-c", n)
		}

		checkKeysAcross(t, cities, alice, bob)
		checkKeyServer(t, cities[a], cities[b])
		checkBadFederationRequests(t, cities[a])
	})
}

// checkKeysAcross: bob on city-b finds alice's encryption keys on city-a
// and claims a one-time key, as an encrypted chat between cities needs.
func checkKeysAcross(t *testing.T, cities map[string]*fedCity, alice, bob *mautrix.Client) {
	t.Helper()
	const a, b, c = "city-a.test", "city-b.test", "city-c.test"
	aBase, bBase := baseURL(cities[a].srv)+"/_matrix/client/v3", baseURL(cities[b].srv)+"/_matrix/client/v3"
	dev := string(alice.DeviceID)
	sig := map[string]any{string(alice.UserID): map[string]string{"ed25519:" + dev: "sig"}}
	upload := map[string]any{
		"device_keys": map[string]any{"user_id": alice.UserID, "device_id": dev,
			"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
			"keys":       map[string]string{"curve25519:" + dev: "curve-a", "ed25519:" + dev: "ed-a"}, "signatures": sig},
		"one_time_keys": map[string]any{"signed_curve25519:AAAAAQ": map[string]any{"key": "otk-a", "signatures": sig}},
	}
	if code, me := do(t, http.DefaultClient, "POST", aBase+"/keys/upload", alice.AccessToken, upload, nil); code != 200 {
		t.Fatalf("keys/upload: %d %+v", code, me)
	}
	master := map[string]any{"user_id": alice.UserID, "usage": []string{"master"}, "keys": map[string]string{"ed25519:master-a": "master-a"}}
	signing := map[string]any{"master_key": master}
	if code, _ := do(t, http.DefaultClient, "POST", aBase+"/keys/device_signing/upload", alice.AccessToken, signing, nil); code == 401 {
		var uia struct {
			Session string `json:"session"`
		}
		do(t, http.DefaultClient, "POST", aBase+"/keys/device_signing/upload", alice.AccessToken, signing, &uia)
		signing["auth"] = map[string]any{"type": "m.login.password", "session": uia.Session, "password": "secret-alice",
			"identifier": map[string]string{"type": "m.id.user", "user": string(alice.UserID)}}
		if code, me := do(t, http.DefaultClient, "POST", aBase+"/keys/device_signing/upload", alice.AccessToken, signing, nil); code != 200 {
			t.Fatalf("device_signing/upload: %d %+v", code, me)
		}
	}

	var q struct {
		DeviceKeys map[string]map[string]struct {
			Keys     map[string]string `json:"keys"`
			Unsigned struct {
				Name string `json:"device_display_name"`
			} `json:"unsigned"`
		} `json:"device_keys"`
		MasterKeys map[string]struct {
			Keys map[string]string `json:"keys"`
		} `json:"master_keys"`
		Failures map[string]struct {
			Code string `json:"errcode"`
		} `json:"failures"`
	}
	body := map[string]any{"device_keys": map[string]any{string(alice.UserID): []string{}, "@carol:" + c: []string{}}}
	if code, me := do(t, http.DefaultClient, "POST", bBase+"/keys/query", bob.AccessToken, body, &q); code != 200 {
		t.Fatalf("keys/query across: %d %+v", code, me)
	}
	if q.DeviceKeys[string(alice.UserID)][dev].Keys["curve25519:"+dev] != "curve-a" || q.MasterKeys[string(alice.UserID)].Keys["ed25519:master-a"] != "master-a" {
		t.Fatalf("alice's keys from city-b: %+v", q)
	}
	if q.Failures[c].Code != "M_FORBIDDEN" { // city-b does not federate with city-c
		t.Fatalf("failures: %+v", q.Failures)
	}

	var claim struct {
		OneTimeKeys map[string]map[string]map[string]struct {
			Key string `json:"key"`
		} `json:"one_time_keys"`
	}
	body = map[string]any{"one_time_keys": map[string]any{string(alice.UserID): map[string]string{dev: "signed_curve25519"}}}
	if code, me := do(t, http.DefaultClient, "POST", bBase+"/keys/claim", bob.AccessToken, body, &claim); code != 200 {
		t.Fatalf("keys/claim across: %d %+v", code, me)
	}
	if claim.OneTimeKeys[string(alice.UserID)][dev]["signed_curve25519:AAAAAQ"].Key != "otk-a" {
		t.Fatalf("claimed: %+v", claim)
	}

	// city-b's federation asks city-a for alice's devices directly; and a
	// question about someone else's users is refused.
	list, err := cities[b].srv.Federation.UserDevices(ctxT(t), string(alice.UserID))
	if err != nil || len(list.Devices) != 1 || list.Devices[0].DeviceID != dev || list.Master == nil {
		t.Fatalf("user devices: %+v %v", list, err)
	}
	if _, err := cities[b].srv.Federation.QueryKeys(ctxT(t), a, map[string][]string{string(bob.UserID): nil}); err == nil || !strings.Contains(err.Error(), "M_INVALID_PARAM") {
		t.Fatalf("asking city-a about city-b's user: %v", err)
	}
}

// checkKeyServer: city-a's keys verify by themselves, and city-b vouches
// for them as a notary.
func checkKeyServer(t *testing.T, a, b *fedCity) {
	t.Helper()
	client := insecureFed(a.name)
	var keys gomatrixserverlib.ServerKeys
	getJSON(t, client, "https://"+a.addr+"/_matrix/key/v2/server", &keys)
	checks, _ := gomatrixserverlib.CheckKeys(spec.ServerName(a.name), time.Now(), keys)
	if !checks.AllChecksOK || keys.ServerName != spec.ServerName(a.name) || len(keys.VerifyKeys) != 1 {
		t.Fatalf("key response of %s: %+v %+v", a.name, checks, keys)
	}
	var version struct {
		Server struct{ Name string } `json:"server"`
	}
	getJSON(t, client, "https://"+a.addr+"/_matrix/federation/v1/version", &version)
	if version.Server.Name != "machi" {
		t.Fatalf("version: %+v", version)
	}

	var bKeys gomatrixserverlib.ServerKeys
	getJSON(t, insecureFed(b.name), "https://"+b.addr+"/_matrix/key/v2/server", &bKeys)
	var notary struct {
		ServerKeys []json.RawMessage `json:"server_keys"`
	}
	getJSON(t, insecureFed(b.name), "https://"+b.addr+"/_matrix/key/v2/query/"+a.name, &notary)
	if len(notary.ServerKeys) != 1 {
		t.Fatalf("notary answer: %s", notary.ServerKeys)
	}
	for server, sk := range map[string]gomatrixserverlib.ServerKeys{a.name: keys, b.name: bKeys} {
		for keyID, k := range sk.VerifyKeys {
			if err := gomatrixserverlib.VerifyJSON(server, keyID, ed25519.PublicKey(k.Key), notary.ServerKeys[0]); err != nil {
				t.Fatalf("notary answer not signed by %s: %v", server, err)
			}
		}
	}
	// The POST form, with a server nobody can reach left out.
	var posted struct {
		ServerKeys []json.RawMessage `json:"server_keys"`
	}
	postJSON(t, insecureFed(b.name), "https://"+b.addr+"/_matrix/key/v2/query",
		`{"server_keys":{"`+a.name+`":{},"nowhere.test":{}}}`, 200, &posted)
	if len(posted.ServerKeys) != 1 {
		t.Fatalf("notary POST answer: %s", posted.ServerKeys)
	}
}

// checkBadFederationRequests: unsigned, wrongly signed, misaddressed and
// garbage requests get clear Matrix errors.
func checkBadFederationRequests(t *testing.T, a *fedCity) {
	t.Helper()
	client := insecureFed(a.name)
	profile := "https://" + a.addr + "/_matrix/federation/v1/query/profile?user_id=@x:" + a.name
	for _, tc := range []struct {
		name, auth string
		status     int
		errcode    string
	}{
		{"unsigned", "", 401, "M_UNAUTHORIZED"},
		{"bad signature", `X-Matrix origin="city-b.test",destination="city-a.test",key="ed25519:a_nope",sig="AAAA"`, 401, "M_UNAUTHORIZED"},
		{"for another server", `X-Matrix origin="city-b.test",destination="city-z.test",key="ed25519:a_nope",sig="AAAA"`, 401, "M_UNAUTHORIZED"},
		{"bad origin", `X-Matrix origin="bad origin",key="ed25519:x",sig="AAAA"`, 400, "M_INVALID_PARAM"},
		{"non-numeric port", `X-Matrix origin="city-b.test:http",destination="city-a.test",key="ed25519:x",sig="AAAA"`, 400, "M_INVALID_PARAM"},
		{"not allowed", `X-Matrix origin="city-z.test",destination="city-a.test",key="ed25519:x",sig="AAAA"`, 403, "M_FORBIDDEN"},
	} {
		req, _ := http.NewRequest("GET", profile, nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		if code, me := doRaw(t, client, req); code != tc.status || me.Code != tc.errcode {
			t.Errorf("%s: %d %+v, want %d %s", tc.name, code, me, tc.status, tc.errcode)
		}
	}
	postJSON(t, client, "https://"+a.addr+"/_matrix/key/v2/query", `{"server_keys":`, 400, nil)
	postJSON(t, client, "https://"+a.addr+"/_matrix/key/v2/query", `[]`, 400, nil)
	postJSON(t, client, "https://"+a.addr+"/_matrix/key/v2/query", `{}`, 400, nil)
	// OpenID userinfo is on the federation listener too (unsigned: the
	// token is the credential).
	req, _ := http.NewRequest("GET", "https://"+a.addr+"/_matrix/federation/v1/openid/userinfo?access_token=nope", nil)
	if code, me := doRaw(t, client, req); code != 401 || me.Code != "M_UNKNOWN_TOKEN" {
		t.Errorf("openid userinfo on the federation listener: %d %+v", code, me)
	}
	req, _ = http.NewRequest("GET", "https://"+a.addr+"/_matrix/federation/v1/nothing-here", nil)
	if code, me := doRaw(t, client, req); code != 404 || me.Code != "M_UNRECOGNIZED" {
		t.Errorf("unknown endpoint: %d %+v", code, me)
	}
}

// insecureFed reaches a federation listener by address, checking only that
// its certificate names the server (the CA is checked by the servers' own
// traffic above).
func insecureFed(serverName string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, VerifyConnection: func(cs tls.ConnectionState) error {
			return cs.PeerCertificates[0].VerifyHostname(serverName)
		}}}}
}

func getJSON(t *testing.T, c *http.Client, url string, out any) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

func postJSON(t *testing.T, c *http.Client, url, body string, status int, out any) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var raw json.RawMessage
	_ = json.NewDecoder(resp.Body).Decode(&raw)
	if resp.StatusCode != status {
		t.Fatalf("POST %s %s: %d %s, want %d", url, body, resp.StatusCode, raw, status)
	}
	if status >= 400 {
		var me matrixErr
		if json.Unmarshal(raw, &me) != nil || !strings.HasPrefix(me.Code, "M_") {
			t.Fatalf("POST %s %s: error without errcode: %s", url, body, raw)
		}
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("POST %s: %v", url, err)
		}
	}
}

func doRaw(t *testing.T, c *http.Client, req *http.Request) (int, matrixErr) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var me matrixErr
	_ = json.NewDecoder(resp.Body).Decode(&me)
	return resp.StatusCode, me
}
