package e2e

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"golang.org/x/crypto/ed25519"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

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
	ca := testrig.NewCA(t)
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
		{"bad origin", `X-Matrix origin="bad origin",key="ed25519:x",sig="AAAA"`, 401, "M_UNAUTHORIZED"},
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
	req, _ := http.NewRequest("GET", "https://"+a.addr+"/_matrix/federation/v1/nothing-here", nil)
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

// TestFederatedCommitteeRoom: a joint committee room on city-a, joined
// from city-b; messages and state both ways, concurrent sends that fork
// the room's history and merge again, and an outage of city-b after which
// it has everything, in order.
func TestFederatedCommitteeRoom(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		const a, b = "city-a.test", "city-b.test"
		cities := startFederation(t, engine, []string{a, b}, map[string][]string{a: {b}, b: {a}}, nil)
		alice := register(t, cities[a].srv, "alice")
		bob := register(t, cities[b].srv, "bob")
		name := "合同委員会"
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat", Name: name})
		if err != nil {
			t.Fatal(err)
		}
		// city-b finds the room by city-a's alias, and joins by it.
		alias := "#goudou:" + a
		if code, me := do(t, http.DefaultClient, "PUT", baseURL(cities[a].srv)+"/_matrix/client/v3/directory/room/"+url.PathEscape(alias),
			alice.AccessToken, map[string]string{"room_id": string(room.RoomID)}, nil); code != 200 {
			t.Fatalf("alias: %d %+v", code, me)
		}
		var dir struct {
			RoomID  string   `json:"room_id"`
			Servers []string `json:"servers"`
		}
		if code, me := do(t, http.DefaultClient, "GET", baseURL(cities[b].srv)+"/_matrix/client/v3/directory/room/"+url.PathEscape(alias),
			bob.AccessToken, nil, &dir); code != 200 || dir.RoomID != string(room.RoomID) || !slices.Contains(dir.Servers, a) {
			t.Fatalf("remote alias from city-b: %d %+v %+v", code, me, dir)
		}
		if code, me := do(t, http.DefaultClient, "GET", baseURL(cities[b].srv)+"/_matrix/client/v3/directory/room/"+url.PathEscape("#nothing:"+a),
			bob.AccessToken, nil, nil); code != 404 || me.Code != "M_NOT_FOUND" {
			t.Fatalf("unknown remote alias: %d %+v", code, me)
		}
		var joined struct {
			RoomID string `json:"room_id"`
		}
		if code, me := do(t, http.DefaultClient, "POST", baseURL(cities[b].srv)+"/_matrix/client/v3/join/"+url.PathEscape(alias),
			bob.AccessToken, map[string]any{}, &joined); code != 200 || joined.RoomID != string(room.RoomID) {
			t.Fatalf("join from city-b: %d %+v %+v", code, me, joined)
		}
		// city-b has the room's state; city-a has bob's join.
		var nameState struct {
			Name string `json:"name"`
		}
		if code, me := do(t, http.DefaultClient, "GET", baseURL(cities[b].srv)+"/_matrix/client/v3/rooms/"+string(room.RoomID)+"/state/m.room.name/",
			bob.AccessToken, nil, &nameState); code != 200 || nameState.Name != name {
			t.Fatalf("room name on city-b: %d %+v %+v", code, me, nameState)
		}
		sinceA := waitFor(t, alice, "", func(r *mautrix.RespSync) bool { return memberIn(r, room.RoomID, bob.UserID, "join") })

		// Messages both ways.
		if _, err := alice.SendText(ctxT(t), room.RoomID, "第1回会議は月曜です"); err != nil {
			t.Fatal(err)
		}
		sinceB := waitFor(t, bob, "", func(r *mautrix.RespSync) bool { return roomTimelineHas(r, room.RoomID, "第1回会議は月曜です") })
		if _, err := bob.SendText(ctxT(t), room.RoomID, "了解しました"); err != nil {
			t.Fatal(err)
		}
		sinceA = waitFor(t, alice, sinceA, func(r *mautrix.RespSync) bool { return roomTimelineHas(r, room.RoomID, "了解しました") })

		// Typing and read receipts cross.
		if _, err := alice.UserTyping(ctxT(t), room.RoomID, true, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		sinceB = waitFor(t, bob, sinceB, func(r *mautrix.RespSync) bool {
			if r.Rooms.Join[room.RoomID] == nil {
				return false
			}
			for _, ev := range r.Rooms.Join[room.RoomID].Ephemeral.Events {
				if ev.Type != event.EphemeralEventTyping {
					continue
				}
				ids, _ := ev.Content.Raw["user_ids"].([]any)
				if slices.Contains(ids, any(string(alice.UserID))) {
					return true
				}
			}
			return false
		})
		reply := waitHistoryEvent(t, bob, room.RoomID, "第1回会議は月曜です")
		if err := bob.SendReceipt(ctxT(t), room.RoomID, reply, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		sinceA = waitFor(t, alice, sinceA, func(r *mautrix.RespSync) bool {
			if r.Rooms.Join[room.RoomID] == nil {
				return false
			}
			for _, ev := range r.Rooms.Join[room.RoomID].Ephemeral.Events {
				if ev.Type == event.EphemeralEventReceipt {
					if _, ok := ev.Content.Raw[string(reply)]; ok {
						return true
					}
				}
			}
			return false
		})

		// Both at once: the history forks and merges; both cities end
		// with every message.
		done := make(chan error, 2)
		for _, c := range []*mautrix.Client{alice, bob} {
			go func() {
				for i := range 5 {
					if _, err := c.SendText(ctxT(t), room.RoomID, fmt.Sprintf("%s %d", c.UserID.Localpart(), i)); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
		}
		for range 2 {
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range []*mautrix.Client{alice, bob} {
			waitHistory(t, c, room.RoomID, func(bodies []string) bool {
				return slices.Contains(bodies, alice.UserID.Localpart()+" 4") && slices.Contains(bodies, bob.UserID.Localpart()+" 4")
			})
		}
		// State from city-b reaches city-a.
		if _, err := bob.SendStateEvent(ctxT(t), room.RoomID, event.StateTopic, "", map[string]string{"topic": "議事録は共有フォルダへ"}); err == nil {
			t.Fatal("bob (no power) set the topic")
		}
		if _, err := alice.SendStateEvent(ctxT(t), room.RoomID, event.StateTopic, "", map[string]string{"topic": "議事録は共有フォルダへ"}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, bob, sinceB, func(r *mautrix.RespSync) bool {
			if r.Rooms.Join[room.RoomID] == nil {
				return false
			}
			for _, ev := range r.Rooms.Join[room.RoomID].Timeline.Events {
				if ev.Type == event.StateTopic {
					return true
				}
			}
			return false
		})

		// Redactions cross too: bob's of his own message, alice's (she has
		// the power) of another of his.
		own, err := bob.SendText(ctxT(t), room.RoomID, "誤送信")
		if err != nil {
			t.Fatal(err)
		}
		other, err := bob.SendText(ctxT(t), room.RoomID, "不適切な投稿")
		if err != nil {
			t.Fatal(err)
		}
		waitHistory(t, alice, room.RoomID, func(bodies []string) bool { return slices.Contains(bodies, "不適切な投稿") })
		if _, err := bob.RedactEvent(ctxT(t), room.RoomID, own.EventID); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.RedactEvent(ctxT(t), room.RoomID, other.EventID); err != nil {
			t.Fatal(err)
		}
		waitHistory(t, alice, room.RoomID, func(bodies []string) bool { return !slices.Contains(bodies, "誤送信") })
		waitHistory(t, bob, room.RoomID, func(bodies []string) bool { return !slices.Contains(bodies, "不適切な投稿") })

		// city-b is down while city-a talks; back, it gets it all in order.
		cities[b].stop()
		for i := range 3 {
			if _, err := alice.SendText(ctxT(t), room.RoomID, fmt.Sprintf("停止中 %d", i)); err != nil {
				t.Fatal(err)
			}
		}
		cities[b].start(t)
		if _, err := bob.SendText(ctxT(t), room.RoomID, "戻りました"); err != nil { // contacts city-a
			t.Fatal(err)
		}

		waitHistory(t, bob, room.RoomID, func(bodies []string) bool {
			i0, i2 := slices.Index(bodies, "停止中 0"), slices.Index(bodies, "停止中 2")
			return i0 >= 0 && i2 > i0 && slices.Index(bodies, "停止中 1") > i0
		})
		waitHistory(t, alice, room.RoomID, func(bodies []string) bool { return slices.Contains(bodies, "戻りました") })
	})
}

// waitHistoryEvent finds the ID of the message with body in the history.
func waitHistoryEvent(t *testing.T, c *mautrix.Client, roomID id.RoomID, body string) id.EventID {
	t.Helper()
	resp, err := c.Messages(ctxT(t), roomID, "", "", mautrix.DirectionBackward, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range resp.Chunk {
		if b, _ := ev.Content.Raw["body"].(string); b == body {
			return ev.ID
		}
	}
	t.Fatalf("%s has no message %q", c.UserID, body)
	return ""
}

func memberIn(r *mautrix.RespSync, roomID id.RoomID, user id.UserID, membership string) bool {
	if r.Rooms.Join[roomID] == nil {
		return false
	}
	for _, ev := range r.Rooms.Join[roomID].Timeline.Events {
		if ev.Type == event.StateMember && ev.GetStateKey() == string(user) {
			if m, _ := ev.Content.Raw["membership"].(string); m == membership {
				return true
			}
		}
	}
	return false
}

// waitHistory pages the room's history (newest 100) until ok likes the
// message bodies, oldest first; bounded.
func waitHistory(t *testing.T, c *mautrix.Client, roomID id.RoomID, ok func([]string) bool) {
	t.Helper()
	var bodies []string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		resp, err := c.Messages(ctxT(t), roomID, "", "", mautrix.DirectionBackward, nil, 100)
		if err != nil {
			t.Fatalf("messages: %v", err)
		}
		bodies = bodies[:0]
		for i := len(resp.Chunk) - 1; i >= 0; i-- {
			if b, _ := resp.Chunk[i].Content.Raw["body"].(string); b != "" {
				bodies = append(bodies, b)
			}
		}
		if ok(bodies) {
			return
		}
	}
	t.Fatalf("%s's history never got there: %q", c.UserID, bodies)
}

// TestFederatedInvites: a private committee room invites staff of another
// city; one joins, one refuses; a city off the allow-list can't be invited.
func TestFederatedInvites(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		const a, b = "city-a.test", "city-b.test"
		cities := startFederation(t, engine, []string{a, b}, map[string][]string{a: {b}, b: {a}}, nil)
		alice := register(t, cities[a].srv, "alice")
		bob, carol := register(t, cities[b].srv, "bob"), register(t, cities[b].srv, "carol")
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "防災連絡会議"})
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range []id.UserID{bob.UserID, carol.UserID} {
			if _, err := alice.InviteUser(ctxT(t), room.RoomID, &mautrix.ReqInviteUser{UserID: u}); err != nil {
				t.Fatalf("invite %s: %v", u, err)
			}
		}
		code, me := do(t, http.DefaultClient, "POST", baseURL(cities[a].srv)+"/_matrix/client/v3/rooms/"+string(room.RoomID)+"/invite",
			alice.AccessToken, map[string]string{"user_id": "@dave:city-z.test"}, nil)
		if code != 403 || me.Rule != "federation-not-allowed" {
			t.Fatalf("invite to a server off the allow-list: %d %+v", code, me)
		}

		// bob sees the invite, with the room's name, and joins.
		waitFor(t, bob, "", func(r *mautrix.RespSync) bool {
			inv, ok := r.Rooms.Invite[room.RoomID]
			if !ok {
				return false
			}
			for _, ev := range inv.State.Events {
				if ev.Type == event.StateRoomName && ev.Content.Raw["name"] == "防災連絡会議" {
					return true
				}
			}
			return false
		})
		if _, err := bob.JoinRoomByID(ctxT(t), room.RoomID); err != nil {
			t.Fatalf("bob joins: %v", err)
		}
		if _, err := alice.SendText(ctxT(t), room.RoomID, "ようこそ"); err != nil {
			t.Fatal(err)
		}
		waitHistory(t, bob, room.RoomID, func(bodies []string) bool { return slices.Contains(bodies, "ようこそ") })

		// carol refuses; city-a hears of it.
		if _, err := carol.LeaveRoom(ctxT(t), room.RoomID); err != nil {
			t.Fatalf("carol refuses: %v", err)
		}
		waitFor(t, alice, "", func(r *mautrix.RespSync) bool { return memberIn(r, room.RoomID, carol.UserID, "leave") })
		if resp, err := carol.SyncRequest(ctxT(t), 0, "", "", false, ""); err != nil || len(resp.Rooms.Invite) != 0 {
			t.Fatalf("carol's invites after refusing: %v %+v", err, resp.Rooms.Invite)
		}

		// alice removes bob; city-b shows him out.
		before, err := bob.SyncRequest(ctxT(t), 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.KickUser(ctxT(t), room.RoomID, &mautrix.ReqKickUser{UserID: bob.UserID, Reason: "任期満了"}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, bob, before.NextBatch, func(r *mautrix.RespSync) bool { _, left := r.Rooms.Leave[room.RoomID]; return left })
	})
}

// TestFederatedStateConflicts: three servers (two cities and the
// prefecture) in one room; concurrent conflicting changes of the topic and
// of power levels end the same on every server.
func TestFederatedStateConflicts(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		const a, b, p = "city-a.test", "city-b.test", "pref.test"
		all := []string{a, b, p}
		cities := startFederation(t, engine, all, map[string][]string{a: {b, p}, b: {a, p}, p: {a, b}}, nil)
		alice := register(t, cities[a].srv, "alice")
		bob := register(t, cities[b].srv, "bob")
		pat := register(t, cities[p].srv, "pat")
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "県市町村連絡会"})
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range []struct {
			c   *mautrix.Client
			srv string
		}{{bob, b}, {pat, p}} {
			if code, me := do(t, http.DefaultClient, "POST", baseURL(cities[j.srv].srv)+"/_matrix/client/v3/join/"+string(room.RoomID)+"?server_name="+a,
				j.c.AccessToken, map[string]any{}, nil); code != 200 {
				t.Fatalf("%s joins: %d %+v", j.c.UserID, code, me)
			}
		}
		// Everyone may change the topic; bob and pat may change power.
		pl := map[string]any{"users": map[string]int{string(alice.UserID): 100, string(bob.UserID): 100, string(pat.UserID): 100},
			"events": map[string]int{"m.room.topic": 0}, "state_default": 50}
		if _, err := alice.SendStateEvent(ctxT(t), room.RoomID, event.StatePowerLevels, "", pl); err != nil {
			t.Fatal(err)
		}
		// pat (joined through city-a) hears city-b's messages directly,
		// once city-b has heard of pat's join (city-a passes it on).
		waitState(t, bob, room.RoomID, event.StateMember, func(map[string]any) bool { return true }, string(pat.UserID))
		if _, err := bob.SendText(ctxT(t), room.RoomID, "市から県へ"); err != nil {
			t.Fatal(err)
		}
		waitHistory(t, pat, room.RoomID, func(bodies []string) bool { return slices.Contains(bodies, "市から県へ") })
		for _, c := range []*mautrix.Client{bob, pat} {
			waitState(t, c, room.RoomID, event.StatePowerLevels, func(content map[string]any) bool {
				users, _ := content["users"].(map[string]any)
				return users[string(pat.UserID)] != nil
			})
		}

		clients := map[string]*mautrix.Client{a: alice, b: bob, p: pat}
		for round := range 3 {
			done := make(chan error, 3)
			for _, srv := range all {
				c := clients[srv]
				go func() {
					_, err := c.SendStateEvent(ctxT(t), room.RoomID, event.StateTopic, "", map[string]string{"topic": fmt.Sprintf("%s案 %d", srv, round)})
					if err == nil && srv != a { // and a power change racing the topics
						levels := map[string]any{"users": map[string]int{string(alice.UserID): 100, string(bob.UserID): 100, string(pat.UserID): 100,
							"@round" + fmt.Sprint(round) + ":" + srv: 10}, "events": map[string]int{"m.room.topic": 0}, "state_default": 50}
						_, err = c.SendStateEvent(ctxT(t), room.RoomID, event.StatePowerLevels, "", levels)
					}
					done <- err
				}()
			}
			for range all {
				if err := <-done; err != nil {
					t.Fatal(err)
				}
			}
		}
		// Every server settles on the same topic and power levels.
		for _, typ := range []event.Type{event.StateTopic, event.StatePowerLevels} {
			var first string
			deadline := time.Now().Add(30 * time.Second)
			for {
				var got []string
				for _, srv := range all {
					var content json.RawMessage
					do(t, http.DefaultClient, "GET", baseURL(cities[srv].srv)+"/_matrix/client/v3/rooms/"+string(room.RoomID)+"/state/"+typ.Type+"/",
						clients[srv].AccessToken, nil, &content)
					got = append(got, string(content))
				}
				first = got[0]
				if got[0] == got[1] && got[1] == got[2] {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s differs between servers: %q", typ.Type, got)
				}
				time.Sleep(200 * time.Millisecond)
			}
			t.Logf("%s on every server: %s", typ.Type, first)
		}
	})
}

// waitState reads the room's state event of typ (and state key, "" by
// default) until ok likes it; bounded.
func waitState(t *testing.T, c *mautrix.Client, roomID id.RoomID, typ event.Type, ok func(map[string]any) bool, stateKey ...string) {
	t.Helper()
	key := ""
	if len(stateKey) > 0 {
		key = stateKey[0]
	}
	var content map[string]any
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		content = nil
		if err := c.StateEvent(ctxT(t), roomID, typ, key, &content); err == nil && ok(content) {
			return
		}
	}
	t.Fatalf("%s: %s never got there: %v", c.UserID, typ.Type, content)
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
				fr := fclient.NewFederationRequest("PUT", b, a, "/_matrix/federation/v1/send/"+txnID)
				if err := fr.SetContent(json.RawMessage(body)); err != nil {
					t.Fatal(err)
				}
				if err := fr.Sign(b, keyID, key); err != nil {
					t.Fatal(err)
				}
				req, _ = fr.HTTPRequest()
				req.URL.Scheme, req.URL.Host = "https", cities[a].addr
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
		for _, ev := range []gomatrixserverlib.PDU{unsigned, forgedEv, stranger, rename} {
			r, _ := results[ev.EventID()].(map[string]any)
			if e, _ := r["error"].(string); e == "" {
				t.Errorf("%s accepted: %v", ev.EventID(), results[ev.EventID()])
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
			fr := fclient.NewFederationRequest("GET", b, a, path)
			if err := fr.Sign(b, keyID, key); err != nil {
				t.Fatal(err)
			}
			req, _ := fr.HTTPRequest()
			req.URL.Scheme, req.URL.Host = "https", cities[a].addr
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

		// The same transaction again is not processed twice.
		if code, out := sendTxn("events-1", txn(good.JSON()), true); code != 200 {
			t.Fatalf("retried transaction: %d %v", code, out)
		}
	})
}

// TestFederatedBackfill: a member of another city who joins late pages
// back through the committee's history from before the join, in order.
func TestFederatedBackfill(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		const a, b = "city-a.test", "city-b.test"
		cities := startFederation(t, engine, []string{a, b}, map[string][]string{a: {b}, b: {a}}, nil)
		alice := register(t, cities[a].srv, "alice")
		bob := register(t, cities[b].srv, "bob")
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "議事録"})
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for i := range 30 {
			body := fmt.Sprintf("第%d回 議事録", i)
			if _, err := alice.SendText(ctxT(t), room.RoomID, body); err != nil {
				t.Fatal(err)
			}
			want = append(want, body)
		}
		if code, me := do(t, http.DefaultClient, "POST", baseURL(cities[b].srv)+"/_matrix/client/v3/join/"+string(room.RoomID), bob.AccessToken, map[string]any{}, nil); code != 200 {
			t.Fatalf("join: %d %+v", code, me)
		}
		// Page back from now, ten at a time, to the room's creation.
		var got []string
		var types []string
		from := ""
		for page := 0; page < 20; page++ {
			resp, err := bob.Messages(ctxT(t), room.RoomID, from, "", mautrix.DirectionBackward, nil, 10)
			if err != nil {
				t.Fatalf("messages: %v", err)
			}
			for _, ev := range resp.Chunk {
				types = append(types, ev.Type.Type)
				if b, _ := ev.Content.Raw["body"].(string); b != "" {
					got = append(got, b)
				}
			}
			if resp.End == "" {
				break
			}
			from = resp.End
		}
		slices.Reverse(got)
		if !slices.Equal(got, want) {
			t.Fatalf("bob's history: %q\nwant %q", got, want)
		}
		if types[len(types)-1] != "m.room.create" {
			t.Fatalf("history does not reach the room's creation: %v", types)
		}
		// Paging forward from the start gives the same order.
		resp, err := bob.Messages(ctxT(t), room.RoomID, "", "", mautrix.DirectionForward, nil, 100)
		if err != nil {
			t.Fatal(err)
		}
		var fwd []string
		for _, ev := range resp.Chunk {
			if b, _ := ev.Content.Raw["body"].(string); b != "" {
				fwd = append(fwd, b)
			}
		}
		if !slices.Equal(fwd, want) {
			t.Fatalf("forward from the start: %q", fwd)
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
		if code, me := do(t, http.DefaultClient, "POST", baseURL(cities[b].srv)+"/_matrix/client/v3/join/"+string(room.RoomID), bob.AccessToken, map[string]any{}, nil); code != 200 {
			t.Fatalf("join: %d %+v", code, me)
		}
		since := waitFor(t, alice, "", func(r *mautrix.RespSync) bool { return memberIn(r, room.RoomID, bob.UserID, "join") })

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
