package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/png"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/machi-chat/machi/internal/config"
	"github.com/machi-chat/machi/internal/server"
	"github.com/machi-chat/machi/internal/testrig"
)

// The city's rules, end to end: real mautrix-go clients over HTTP, an
// office network (127.0.0.1) and phones (clients whose connections come
// from 127.0.0.2), and a clock the test moves.

var jst = time.FixedZone("JST", 9*3600)

// wednesdayMorning is an ordinary working day, 10:00 JST.
var wednesdayMorning = time.Date(2026, 11, 25, 10, 0, 0, 0, jst)

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// city is a machi whose office network is 127.0.0.1, with an admin.
type city struct {
	t          *testing.T
	srv        *server.Server
	clock      *testClock
	adminToken string
	phone      *http.Client // connects from 127.0.0.2: a mobile device
}

func startCity(t *testing.T, engine string, edit ...func(*config.Config)) *city {
	t.Helper()
	clock := &testClock{t: wednesdayMorning}
	edits := append([]func(*config.Config){func(c *config.Config) {
		c.Policy.TrustedNetworks = []string{"127.0.0.1/32"}
	}}, edit...)
	srv := startServerOpts(t, engine, []server.Option{server.WithClock(clock.Now)}, edits...)
	c := &city{t: t, srv: srv, clock: clock, phone: phoneClient()}
	admin := register(t, srv, "admin")
	c.socket("PUT", "/users/"+string(admin.UserID)+"/admin", map[string]any{"admin": true}, nil, 200)
	c.adminToken = admin.AccessToken
	return c
}

// phoneClient is an HTTP client whose connections come from 127.0.0.2.
func phoneClient() *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 60 * time.Second, Transport: wrapSpec(&http.Transport{DialContext: d.DialContext})}
}

// matrixErr is a Matrix error body with machi's policy fields.
type matrixErr struct {
	Code     string `json:"errcode"`
	Msg      string `json:"error"`
	Rule     string `json:"org.machi.rule"`
	JA       string `json:"org.machi.message_ja"`
	EN       string `json:"org.machi.message_en"`
	NextOpen int64  `json:"org.machi.next_open_ts"`
	Soft     bool   `json:"soft_logout"`
}

// do sends a JSON request with client and decodes the answer into out (a
// matrixErr when the status is not 200 and out is nil).
func do(t *testing.T, client *http.Client, method, url, token string, body, out any) (int, matrixErr) {
	t.Helper()
	var rd io.Reader = http.NoBody
	if b, ok := body.([]byte); ok {
		rd = bytes.NewReader(b)
	} else if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var me matrixErr
	if resp.StatusCode != 200 {
		_ = json.Unmarshal(raw, &me)
	}
	if out != nil && resp.StatusCode == 200 {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %v\n%s", method, url, err, raw)
		}
	}
	return resp.StatusCode, me
}

func (c *city) base() string { return baseURL(c.srv) }

// admin calls the admin API over HTTP as the admin user.
func (c *city) admin(method, path string, body, out any, want int) matrixErr {
	c.t.Helper()
	code, me := do(c.t, http.DefaultClient, method, c.base()+"/_machi/admin/v1"+path, c.adminToken, body, out)
	if code != want {
		c.t.Fatalf("admin %s %s: %d %+v, want %d", method, path, code, me, want)
	}
	return me
}

// socket calls the admin API over the local admin socket, as the CLI does.
func (c *city) socket(method, path string, body, out any, want int) {
	c.t.Helper()
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", c.srv.AdminSocket)
	}}}
	if code, me := do(c.t, client, method, "http://machi/_machi/admin/v1"+path, "", body, out); code != want {
		c.t.Fatalf("socket %s %s: %d %+v, want %d", method, path, code, me, want)
	}
}

// issueCode has the admin issue an enrollment code for user.
func (c *city) issueCode(user id.UserID, ttl string) string {
	var out struct {
		Code string `json:"code"`
	}
	c.admin("POST", "/users/"+string(user)+"/enrollment_codes", map[string]any{"ttl": ttl}, &out, 200)
	if len(out.Code) != 14 {
		c.t.Fatalf("code %q is not XXXX-XXXX-XXXX", out.Code)
	}
	return out.Code
}

// login logs user in over client; code "" sends none.
func (c *city) login(client *http.Client, user id.UserID, password, code string) (*mautrix.Client, int, matrixErr) {
	c.t.Helper()
	body := map[string]any{"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": string(user)}, "password": password}
	if code != "" {
		body["org.machi.enrollment_code"] = code
	}
	return c.loginBody(client, body)
}

func (c *city) loginBody(client *http.Client, body map[string]any) (*mautrix.Client, int, matrixErr) {
	c.t.Helper()
	var resp struct {
		UserID   id.UserID   `json:"user_id"`
		Token    string      `json:"access_token"`
		DeviceID id.DeviceID `json:"device_id"`
	}
	code, me := do(c.t, client, "POST", c.base()+"/_matrix/client/v3/login", "", body, &resp)
	if code != 200 {
		return nil, code, me
	}
	mc, err := mautrix.NewClient(c.base(), resp.UserID, resp.Token)
	if err != nil {
		c.t.Fatal(err)
	}
	mc.DeviceID = resp.DeviceID
	mc.Client = client
	return mc, code, me
}

// phoneLogin enrolls a new phone for user with a fresh code.
func (c *city) phoneLogin(user id.UserID, password string) *mautrix.Client {
	c.t.Helper()
	mc, code, me := c.login(c.phone, user, password, c.issueCode(user, ""))
	if code != 200 {
		c.t.Fatalf("phone login with a code: %d %+v", code, me)
	}
	return mc
}

func wantDenial(t *testing.T, what string, code int, me matrixErr, status int, rule string) {
	t.Helper()
	if code != status || me.Rule != rule || me.JA == "" || me.EN == "" {
		t.Fatalf("%s: %d %+v, want %d with rule %s and both messages", what, code, me, status, rule)
	}
}

func TestEnrollmentCodes(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		c := startCity(t, engine)
		sato := register(t, c.srv, "sato") // from the office: no code needed
		pw := "secret-sato"

		// A phone without a code is refused, and told to ask the admin.
		_, code, me := c.login(c.phone, sato.UserID, pw, "")
		wantDenial(t, "phone login without a code", code, me, 403, "device-code-required")
		if me.Code != "M_FORBIDDEN" || !strings.Contains(me.JA, "管理者") || !strings.Contains(me.EN, "administrator") {
			t.Fatalf("denial does not send the user to the admin: %+v", me)
		}
		// Registering from a phone is refused the same way.
		code, me = do(t, c.phone, "POST", c.base()+"/_matrix/client/v3/register", "", map[string]any{
			"username": "phoneuser", "password": "pw-phone-1", "auth": map[string]string{"type": "m.login.dummy"}}, nil)
		wantDenial(t, "registration from a phone", code, me, 403, "device-code-required")

		// A wrong code, then the right one typed loosely (lower case, no hyphens).
		issued := c.issueCode(sato.UserID, "")
		_, code, me = c.login(c.phone, sato.UserID, pw, "ABCD-EFGH-JKMN")
		wantDenial(t, "wrong code", code, me, 403, "device-code-invalid")
		phone, code, me := c.login(c.phone, sato.UserID, pw, strings.ToLower(strings.ReplaceAll(issued, "-", "")))
		if code != 200 {
			t.Fatalf("phone login with the code: %d %+v", code, me)
		}
		if _, err := phone.Whoami(ctxT(t)); err != nil {
			t.Fatalf("the enrolled phone cannot use its token: %v", err)
		}
		// The code worked once.
		_, code, me = c.login(c.phone, sato.UserID, pw, issued)
		wantDenial(t, "reused code", code, me, 403, "device-code-invalid")
		if !strings.Contains(me.EN, "already been used") || !strings.Contains(me.JA, "使用済み") {
			t.Fatalf("reused code: %+v", me)
		}
		// An expired code.
		short := c.issueCode(sato.UserID, "1h")
		c.clock.Set(wednesdayMorning.Add(2 * time.Hour))
		_, code, me = c.login(c.phone, sato.UserID, pw, short)
		wantDenial(t, "expired code", code, me, 403, "device-code-invalid")
		if !strings.Contains(me.EN, "expired") || !strings.Contains(me.JA, "有効期限") {
			t.Fatalf("expired code: %+v", me)
		}
		// The code alone, as a stock client's m.login.token.
		alone := c.issueCode(sato.UserID, "")
		tokClient, code, me := c.loginBody(c.phone, map[string]any{"type": "m.login.token", "token": alone})
		if code != 200 || tokClient.UserID != sato.UserID {
			t.Fatalf("m.login.token with a code: %d %+v", code, me)
		}
		_, code, me = c.loginBody(c.phone, map[string]any{"type": "m.login.token", "token": alone})
		wantDenial(t, "m.login.token with a used code", code, me, 403, "device-code-invalid")

		// The admin sees the phone as mobile, with where it was last seen.
		var devs struct {
			Devices []struct {
				DeviceID   string `json:"device_id"`
				Class      string `json:"class"`
				LastSeenIP string `json:"last_seen_ip"`
				LastSeenTS int64  `json:"last_seen_ts"`
			} `json:"devices"`
		}
		c.admin("GET", "/users/"+string(sato.UserID)+"/devices", nil, &devs, 200)
		classes := map[string]string{}
		for _, d := range devs.Devices {
			classes[d.DeviceID] = d.Class
			if d.DeviceID == string(phone.DeviceID) && (d.LastSeenIP != "127.0.0.2" || d.LastSeenTS == 0) {
				t.Errorf("phone last seen %q at %d", d.LastSeenIP, d.LastSeenTS)
			}
		}
		if classes[string(phone.DeviceID)] != "mobile" || classes[string(sato.DeviceID)] != "office" {
			t.Fatalf("device classes: %v", classes)
		}

		// Guessing is limited: after five wrong codes even a right one waits.
		good := c.issueCode(sato.UserID, "")
		var last matrixErr
		for i := 0; i < 6; i++ {
			if _, code, last = c.login(c.phone, sato.UserID, pw, "ZZZZ-ZZZZ-ZZZZ"); code == 429 {
				break
			}
		}
		if last.Code != "M_LIMIT_EXCEEDED" || last.Rule != "device-code-rate-limited" {
			t.Fatalf("wrong codes are not limited: %+v", last)
		}
		_, code, me = c.login(c.phone, sato.UserID, pw, good)
		wantDenial(t, "a right code while limited", code, me, 429, "device-code-rate-limited")

		// Only admins reach the admin API.
		if code, _ := do(t, http.DefaultClient, "GET", c.base()+"/_machi/admin/v1/users", sato.AccessToken, nil, nil); code != 403 {
			t.Fatalf("non-admin on the admin API: %d", code)
		}
		// The audit log has the issue and the denials, with the device.
		var audit struct {
			Entries []struct {
				Actor, Action, Rule, Target string
				DeviceID                    string `json:"device_id"`
			} `json:"entries"`
		}
		c.admin("GET", "/audit?rule=device-code-required", nil, &audit, 200)
		if len(audit.Entries) < 2 || audit.Entries[0].Actor != string(sato.UserID) || audit.Entries[0].Action != "policy.denied" {
			t.Fatalf("device-code-required denials in the audit log: %+v", audit.Entries)
		}
		var issues struct {
			Entries []struct{ Actor, Target string } `json:"entries"`
		}
		c.admin("GET", "/audit?action=enrollment.issue", nil, &issues, 200)
		if len(issues.Entries) != 4 || issues.Entries[0].Target != string(sato.UserID) {
			t.Fatalf("enrollment.issue entries: %+v", issues.Entries)
		}
	})
}

func sendText(t *testing.T, c *mautrix.Client, room id.RoomID, body string) error {
	t.Helper()
	_, err := c.SendMessageEvent(ctxT(t), room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": body})
	return err
}

// httpErr extracts machi's fields from a mautrix error.
func httpErr(t *testing.T, err error) matrixErr {
	t.Helper()
	var he mautrix.HTTPError
	if err == nil {
		t.Fatal("allowed, want a denial")
	}
	if !asHTTPError(err, &he) || he.RespError == nil {
		t.Fatalf("not a Matrix error: %v", err)
	}
	re := he.RespError
	me := matrixErr{Code: re.ErrCode, Msg: re.Err}
	str := func(k string) string { s, _ := re.ExtraData[k].(string); return s }
	me.Rule, me.JA, me.EN = str("org.machi.rule"), str("org.machi.message_ja"), str("org.machi.message_en")
	if n, ok := re.ExtraData["org.machi.next_open_ts"].(float64); ok {
		me.NextOpen = int64(n)
	}
	return me
}

func TestWorkingHours(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		c := startCity(t, engine)
		tanaka := register(t, c.srv, "tanaka")
		phone := c.phoneLogin(tanaka.UserID, "secret-tanaka")
		office := register(t, c.srv, "office")

		// Wednesday 10:00: the phone works.
		resp, err := phone.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{office.UserID}})
		if err != nil {
			t.Fatalf("create a room from the phone in working hours: %v", err)
		}
		room := resp.RoomID
		if _, err := office.JoinRoomByID(ctxT(t), room); err != nil {
			t.Fatal(err)
		}
		if err := sendText(t, phone, room, "おはようございます"); err != nil {
			t.Fatalf("send in working hours: %v", err)
		}

		// 19:00: the phone may read, not write; the office PC is not blocked.
		c.clock.Set(time.Date(2026, 11, 25, 19, 0, 0, 0, jst))
		me := httpErr(t, sendText(t, phone, room, "残業中"))
		if me.Rule != "working-hours" || me.Code != "M_FORBIDDEN" {
			t.Fatalf("send at 19:00: %+v", me)
		}
		if want := time.Date(2026, 11, 26, 8, 30, 0, 0, jst).UnixMilli(); me.NextOpen != want || !strings.Contains(me.JA, "次の執務開始") {
			t.Fatalf("next opening: %+v, want %d", me, want)
		}
		if _, err := phone.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "private_chat"}); httpErr(t, err).Rule != "working-hours" {
			t.Fatal("createRoom allowed at 19:00")
		}
		if _, err := phone.InviteUser(ctxT(t), room, &mautrix.ReqInviteUser{UserID: "@someone:localhost"}); httpErr(t, err).Rule != "working-hours" {
			t.Fatal("invite allowed at 19:00")
		}
		if _, err := phone.UploadBytes(ctxT(t), tinyPNG(t), "image/png"); httpErr(t, err).Rule != "working-hours" {
			t.Fatal("upload allowed at 19:00")
		}
		if _, err := phone.Messages(ctxT(t), room, "", "", mautrix.DirectionBackward, nil, 10); err != nil {
			t.Fatalf("reading at 19:00: %v", err)
		}
		if _, err := phone.SyncRequest(ctxT(t), 0, "", "", false, ""); err != nil {
			t.Fatalf("sync at 19:00: %v", err)
		}
		if err := sendText(t, office, room, "庁内から"); err != nil {
			t.Fatalf("office PC at 19:00: %v", err)
		}

		// An emergency for this room lifts the block there, until it ends.
		var em struct {
			ID string `json:"id"`
		}
		c.admin("POST", "/emergencies", map[string]any{"reason": "大雨警報", "rooms": []string{string(room)}, "duration": "3h"}, &em, 200)
		if err := sendText(t, phone, room, "避難所の状況"); err != nil {
			t.Fatalf("send during the emergency: %v", err)
		}
		c.admin("DELETE", "/emergencies/"+em.ID, nil, nil, 200)
		if httpErr(t, sendText(t, phone, room, "x")).Rule != "working-hours" {
			t.Fatal("allowed after the emergency ended")
		}
		// A server-wide one that runs out by the clock.
		c.admin("POST", "/emergencies", map[string]any{"reason": "地震", "duration": "1h"}, nil, 200)
		if err := sendText(t, phone, room, "安否確認"); err != nil {
			t.Fatalf("server-wide emergency: %v", err)
		}
		c.clock.Set(time.Date(2026, 11, 25, 20, 30, 0, 0, jst))
		if httpErr(t, sendText(t, phone, room, "x")).Rule != "working-hours" {
			t.Fatal("allowed after the emergency's end time")
		}
		// Crisis-management staff are exempt.
		c.admin("PUT", "/users/"+string(tanaka.UserID)+"/exemption", map[string]any{"reason": "危機管理課"}, nil, 200)
		if err := sendText(t, phone, room, "当番です"); err != nil {
			t.Fatalf("exempt user: %v", err)
		}
		c.admin("DELETE", "/users/"+string(tanaka.UserID)+"/exemption", nil, nil, 200)

		// A public holiday (勤労感謝の日, a Monday) is closed all day.
		c.clock.Set(time.Date(2026, 11, 23, 10, 0, 0, 0, jst))
		if httpErr(t, sendText(t, phone, room, "x")).Rule != "working-hours" {
			t.Fatal("allowed on a public holiday")
		}
		// The next working morning is open again.
		c.clock.Set(time.Date(2026, 11, 26, 8, 30, 0, 0, jst))
		if err := sendText(t, phone, room, "おはようございます"); err != nil {
			t.Fatalf("Thursday 08:30: %v", err)
		}

		// Each denial is in the audit log with the device.
		var audit struct {
			Entries []struct {
				DeviceID string `json:"device_id"`
				Target   string `json:"target"`
			} `json:"entries"`
		}
		c.admin("GET", "/audit?rule=working-hours", nil, &audit, 200)
		if len(audit.Entries) != 7 || audit.Entries[0].DeviceID != string(phone.DeviceID) || audit.Entries[0].Target != string(room) {
			t.Fatalf("working-hours denials: %+v", audit.Entries)
		}
	})
}

func TestLostPhone(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		c := startCity(t, engine)
		kato := register(t, c.srv, "kato")
		pw := "secret-kato"
		phone := c.phoneLogin(kato.UserID, pw)

		// The phone published its encryption keys; the office PC syncs.
		upload := map[string]any{"device_keys": map[string]any{
			"user_id": phone.UserID, "device_id": phone.DeviceID,
			"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
			"keys":       map[string]string{"curve25519:" + string(phone.DeviceID): "phonecurve", "ed25519:" + string(phone.DeviceID): "phoneed"},
			"signatures": map[string]any{string(phone.UserID): map[string]string{"ed25519:" + string(phone.DeviceID): "phonesig"}},
		}, "one_time_keys": map[string]any{"signed_curve25519:AAAAAQ": map[string]any{"key": "otk1",
			"signatures": map[string]any{string(phone.UserID): map[string]string{"ed25519:" + string(phone.DeviceID): "otksig"}}}}}
		if code, me := do(t, c.phone, "POST", c.base()+"/_matrix/client/v3/keys/upload", phone.AccessToken, upload, nil); code != 200 {
			t.Fatalf("phone keys/upload: %d %+v", code, me)
		}
		queryKeys := func() map[string]any {
			var out struct {
				DeviceKeys map[string]map[string]any `json:"device_keys"`
			}
			if code, me := do(t, http.DefaultClient, "POST", c.base()+"/_matrix/client/v3/keys/query", kato.AccessToken,
				map[string]any{"device_keys": map[string]any{string(kato.UserID): []string{}}}, &out); code != 200 {
				t.Fatalf("keys/query: %d %+v", code, me)
			}
			return out.DeviceKeys[string(kato.UserID)]
		}
		if keys := queryKeys(); keys[string(phone.DeviceID)] == nil {
			t.Fatalf("the phone's keys are not published: %v", keys)
		}
		officeSync, err := kato.SyncRequest(ctxT(t), 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}

		// The phone is lost: the admin revokes it; its next request fails.
		c.admin("DELETE", fmt.Sprintf("/users/%s/devices/%s", kato.UserID, phone.DeviceID), nil, nil, 200)
		code, me := do(t, c.phone, "GET", c.base()+"/_matrix/client/v3/account/whoami", phone.AccessToken, nil, nil)
		if code != 401 || me.Code != "M_UNKNOWN_TOKEN" {
			t.Fatalf("revoked phone: %d %+v", code, me)
		}
		if _, err := kato.Whoami(ctxT(t)); err != nil {
			t.Fatalf("the office PC was logged out too: %v", err)
		}
		// Its encryption keys are gone, and the user's other device is told.
		if keys := queryKeys(); keys[string(phone.DeviceID)] != nil {
			t.Fatalf("the revoked phone's keys are still published: %v", keys)
		}
		waitFor(t, kato, officeSync.NextBatch, func(r *mautrix.RespSync) bool {
			for _, u := range r.DeviceLists.Changed {
				if u == kato.UserID {
					return true
				}
			}
			return false
		})
		c.admin("DELETE", fmt.Sprintf("/users/%s/devices/%s", kato.UserID, phone.DeviceID), nil, nil, 404)

		// Suspension: every token fails at once, login is refused; reversible.
		c.admin("POST", "/users/"+string(kato.UserID)+"/suspend", map[string]any{"reason": "端末紛失"}, nil, 200)
		code, me = do(t, http.DefaultClient, "GET", c.base()+"/_matrix/client/v3/account/whoami", kato.AccessToken, nil, nil)
		if code != 401 || me.Code != "M_USER_LOCKED" || !me.Soft {
			t.Fatalf("suspended token: %d %+v", code, me)
		}
		if _, code, me := c.login(http.DefaultClient, kato.UserID, pw, ""); code != 401 || me.Code != "M_USER_LOCKED" {
			t.Fatalf("suspended login: %d %+v", code, me)
		}
		c.admin("POST", "/users/"+string(kato.UserID)+"/unsuspend", nil, nil, 200)
		if _, err := kato.Whoami(ctxT(t)); err != nil {
			t.Fatalf("token after lifting the suspension: %v", err)
		}
		// Deactivation is for good.
		c.admin("POST", "/users/"+string(kato.UserID)+"/deactivate", map[string]any{"reason": "退職"}, nil, 200)
		if _, code, _ := c.login(http.DefaultClient, kato.UserID, pw, ""); code != 403 {
			t.Fatalf("deactivated login: %d", code)
		}
		c.admin("POST", "/users/"+string(kato.UserID)+"/suspend", nil, nil, 400)

		// Every admin action is in the audit log, as CSV too.
		req, _ := http.NewRequest("GET", c.base()+"/_machi/admin/v1/audit?format=csv", nil)
		req.Header.Set("Authorization", "Bearer "+c.adminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		csvText := string(raw)
		if resp.Header.Get("Content-Type") != "text/csv; charset=utf-8" || !strings.HasPrefix(csvText, "\uFEFFid,time,actor,device_id,action,rule,target,detail\n") {
			t.Fatalf("CSV export: %s\n%s", resp.Header.Get("Content-Type"), csvText)
		}
		for _, action := range []string{"device.revoke", "user.suspend", "user.unsuspend", "user.deactivate", "enrollment.issue", "user.admin"} {
			if !strings.Contains(csvText, ","+action+",") {
				t.Errorf("CSV lacks %s:\n%s", action, csvText)
			}
		}
		if !strings.Contains(csvText, "端末紛失") {
			t.Errorf("CSV lost the Japanese reason:\n%s", csvText)
		}
	})
}

func TestBroadcastNotices(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		c := startCity(t, engine)
		a1, a2, b1 := register(t, c.srv, "bosai"), register(t, c.srv, "bosai"), register(t, c.srv, "somu")
		for _, u := range []*mautrix.Client{a1, a2} {
			c.admin("PUT", "/users/"+string(u.UserID)+"/groups", map[string]any{"groups": []string{"防災課"}}, nil, 200)
		}
		since := map[id.UserID]string{}
		for _, u := range []*mautrix.Client{a1, a2, b1} {
			resp, err := u.SyncRequest(ctxT(t), 0, "", "", false, "")
			if err != nil {
				t.Fatal(err)
			}
			since[u.UserID] = resp.NextBatch
		}

		var sent struct {
			ID         string   `json:"broadcast_id"`
			Recipients int      `json:"recipients"`
			Delivered  int      `json:"delivered"`
			Failed     []string `json:"failed"`
		}
		c.admin("POST", "/broadcasts", map[string]any{"body": "本日15時に避難訓練を行います。", "group": "防災課"}, &sent, 200)
		if sent.Recipients != 2 || sent.Delivered != 2 || len(sent.Failed) != 0 {
			t.Fatalf("broadcast: %+v", sent)
		}

		// a1 is invited to their own notice room by the notices user, joins, reads.
		var noticeRoom id.RoomID
		waitFor(t, a1, since[a1.UserID], func(r *mautrix.RespSync) bool {
			for roomID, inv := range r.Rooms.Invite {
				for _, ev := range inv.State.Events {
					if ev.Type == event.StateMember && ev.Sender.Localpart() == "notices" {
						noticeRoom = roomID
					}
				}
			}
			return noticeRoom != ""
		})
		if _, err := a1.JoinRoomByID(ctxT(t), noticeRoom); err != nil {
			t.Fatal(err)
		}
		msgs, err := a1.Messages(ctxT(t), noticeRoom, "", "", mautrix.DirectionBackward, nil, 20)
		if err != nil {
			t.Fatal(err)
		}
		var notice *event.Event
		for _, ev := range msgs.Chunk {
			if ev.Type == event.EventMessage {
				notice = ev
			}
		}
		if notice == nil || notice.Content.Raw["body"] != "本日15時に避難訓練を行います。" || notice.Content.Raw["msgtype"] != "m.server_notice" {
			t.Fatalf("notice in the room: %+v", notice)
		}
		// Only the notices user may write in it.
		if err := sendText(t, a1, noticeRoom, "了解"); err == nil {
			t.Fatal("a recipient could write in the notice room")
		}
		if err := a1.MarkRead(ctxT(t), noticeRoom, notice.ID); err != nil {
			t.Fatal(err)
		}
		// The room is tagged as server notices for a1.
		var tags struct {
			Tags map[string]any `json:"tags"`
		}
		if err := a1.GetRoomAccountData(ctxT(t), noticeRoom, "m.tag", &tags); err != nil || tags.Tags["m.server_notice"] == nil {
			t.Fatalf("m.tag: %+v %v", tags, err)
		}

		// The admin sees how many received and read it.
		var status struct {
			Recipients, Delivered, Joined, Read int
		}
		c.admin("GET", "/broadcasts/"+sent.ID, nil, &status, 200)
		if status.Recipients != 2 || status.Delivered != 2 || status.Joined != 1 || status.Read != 1 {
			t.Fatalf("broadcast status: %+v", status)
		}
		// b1 is not in the group: nothing arrived, and nobody was joined to
		// anything automatically.
		resp, err := b1.SyncRequest(ctxT(t), 0, since[b1.UserID], "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Rooms.Invite) != 0 || len(resp.Rooms.Join) != 0 {
			t.Fatalf("b1 got %d invites, %d rooms", len(resp.Rooms.Invite), len(resp.Rooms.Join))
		}

		// A notice to everyone reaches b1 too, and reuses a1's room.
		c.admin("POST", "/broadcasts", map[string]any{"body": "全職員へ: システム停止のお知らせ"}, &sent, 200)
		if sent.Recipients != 4 { // admin, a1, a2, b1: everyone active but the notices user
			t.Fatalf("recipients of a notice to everyone: %d, want 4", sent.Recipients)
		}
		waitFor(t, a1, "", func(r *mautrix.RespSync) bool {
			return roomTimelineHas(r, noticeRoom, "全職員へ: システム停止のお知らせ")
		})
		waitFor(t, b1, since[b1.UserID], func(r *mautrix.RespSync) bool { return len(r.Rooms.Invite) == 1 })
	})
}

func asHTTPError(err error, he *mautrix.HTTPError) bool {
	if errors.As(err, he) {
		return true
	}
	var p *mautrix.HTTPError
	if errors.As(err, &p) {
		*he = *p
		return true
	}
	return false
}

func tinyPNG(t *testing.T) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 8, 8))
	for i := range img.Pix {
		img.Pix[i] = byte(i * 7)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// gpsMarker is in the EXIF blob the phone "camera" writes.
const gpsMarker = "GPS-35.6812N-139.7671E"

// pngWithGPS is a PNG whose eXIf chunk holds a TIFF header, a GPS IFD
// pointer and a location string, as a phone camera leaves them.
func pngWithGPS(t *testing.T) []byte {
	t.Helper()
	plain := tinyPNG(t)
	exif := []byte("MM\x00\x2a\x00\x00\x00\x08\x00\x01\x88\x25\x00\x04\x00\x00\x00\x01\x00\x00\x00\x1a\x00\x00\x00\x00")
	exif = append(exif, gpsMarker...)
	chunk := make([]byte, 8, 12+len(exif))
	binary.BigEndian.PutUint32(chunk, uint32(len(exif)))
	copy(chunk[4:], "eXIf")
	chunk = append(chunk, exif...)
	chunk = binary.BigEndian.AppendUint32(chunk, crc32.ChecksumIEEE(chunk[4:]))
	const ihdrEnd = 8 + 25 // signature + IHDR chunk
	out := append([]byte{}, plain[:ihdrEnd]...)
	out = append(out, chunk...)
	return append(out, plain[ihdrEnd:]...)
}

func TestUploadsByDeviceClass(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		c := startCity(t, engine)
		ito := register(t, c.srv, "ito") // the office PC
		phone := c.phoneLogin(ito.UserID, "secret-ito")
		pdf := []byte("%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")

		// A photo from the phone is stored without its location.
		withGPS := pngWithGPS(t)
		if _, err := png.Decode(bytes.NewReader(withGPS)); err != nil || !bytes.Contains(withGPS, []byte(gpsMarker)) {
			t.Fatalf("fixture: %v", err)
		}
		up, err := phone.UploadBytes(ctxT(t), withGPS, "image/png")
		if err != nil {
			t.Fatalf("phone photo: %v", err)
		}
		stored, err := phone.DownloadBytes(ctxT(t), up.ContentURI)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(stored, []byte("eXIf")) || bytes.Contains(stored, []byte(gpsMarker)) {
			t.Fatal("the stored photo still has its EXIF location")
		}
		img, err := png.Decode(bytes.NewReader(stored))
		if err != nil {
			t.Fatalf("the stored photo is not a PNG any more: %v", err)
		}
		orig, _ := png.Decode(bytes.NewReader(tinyPNG(t)))
		for y := 0; y < 8; y++ {
			for x := 0; x < 8; x++ {
				if color.RGBAModel.Convert(img.At(x, y)) != color.RGBAModel.Convert(orig.At(x, y)) {
					t.Fatalf("pixel (%d,%d) changed", x, y)
				}
			}
		}

		// Anything but an image is refused from the phone, whatever it claims to be.
		for name, body := range map[string][]byte{
			"PDF":           pdf,
			"SVG":           []byte(`<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>`),
			"truncated PNG": withGPS[:60],
			"text":          []byte("議事録です"),
		} {
			_, err := phone.UploadBytes(ctxT(t), body, "image/png")
			if me := httpErr(t, err); me.Rule != "upload-image-only" || me.Code != "M_FORBIDDEN" {
				t.Fatalf("%s from the phone: %+v", name, me)
			}
		}
		// The office PC may send meeting papers, stored as what they are.
		up, err = ito.UploadBytes(ctxT(t), pdf, "image/png")
		if err != nil {
			t.Fatalf("PDF from the office: %v", err)
		}
		resp := get(t, c.base()+"/_matrix/client/v1/media/download/"+up.ContentURI.Homeserver+"/"+up.ContentURI.FileID, ito.AccessToken, nil)
		resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); ct != "application/pdf" {
			t.Fatalf("office PDF served as %q", ct)
		}
		// Types outside the office list are refused there too.
		_, err = ito.UploadBytes(ctxT(t), []byte("MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00"+strings.Repeat("\x00", 64)), "application/pdf")
		if me := httpErr(t, err); me.Rule != "upload-type" {
			t.Fatalf("an executable from the office: %+v", me)
		}
		// The phone's upload limit is its class's.
		var cfgResp struct {
			Size int64 `json:"m.upload.size"`
		}
		if code, _ := do(t, c.phone, "GET", c.base()+"/_matrix/client/v1/media/config", phone.AccessToken, nil, &cfgResp); code != 200 || cfgResp.Size != 20<<20 {
			t.Fatalf("phone upload limit: %d %d", code, cfgResp.Size)
		}
	})
}

// TestAdminAPIBadInput: every mistake an admin (or a script) can make gets
// a clear Matrix error, and changes nothing.
func TestAdminAPIBadInput(t *testing.T) {
	c := startCity(t, "sqlite")
	u := register(t, c.srv, "yoshida")
	user := "/users/" + string(u.UserID)
	for _, tc := range []struct {
		method, path string
		body         any
		status       int
		errcode      string
	}{
		{"GET", "/users/@nobody:localhost", nil, 404, "M_NOT_FOUND"},
		{"GET", "/users/@someone:elsewhere.example", nil, 403, "M_FORBIDDEN"},
		{"GET", "/users/Bad%20Name", nil, 400, "M_INVALID_USERNAME"},
		{"POST", "/users", map[string]any{"username": "x1", "password": "short"}, 400, "M_WEAK_PASSWORD"},
		{"POST", "/users", map[string]any{"username": u.UserID.Localpart(), "password": "long-enough-1"}, 400, "M_USER_IN_USE"},
		{"POST", "/users", []byte("not json"), 400, "M_NOT_JSON"},
		{"POST", "/users", []byte(`["an array"]`), 400, "M_BAD_JSON"},
		{"POST", "/users", map[string]any{"username": 7}, 400, "M_BAD_JSON"},
		{"PUT", user + "/admin", map[string]any{}, 400, "M_MISSING_PARAM"},
		{"PUT", user + "/groups", map[string]any{}, 400, "M_MISSING_PARAM"},
		{"POST", user + "/enrollment_codes", map[string]any{"ttl": "forever"}, 400, "M_INVALID_PARAM"},
		{"POST", user + "/enrollment_codes", map[string]any{"ttl": "9000h"}, 400, "M_INVALID_PARAM"},
		{"DELETE", user + "/enrollment_codes/nope", nil, 404, "M_NOT_FOUND"},
		{"DELETE", user + "/devices/NOPE", nil, 404, "M_NOT_FOUND"},
		{"PUT", user + "/exemption", map[string]any{"reason": " "}, 400, "M_MISSING_PARAM"},
		{"DELETE", user + "/exemption", nil, 404, "M_NOT_FOUND"},
		{"POST", "/emergencies", map[string]any{"reason": "x"}, 400, "M_MISSING_PARAM"},
		{"POST", "/emergencies", map[string]any{"duration": "1h"}, 400, "M_MISSING_PARAM"},
		{"POST", "/emergencies", map[string]any{"reason": "x", "duration": "-1h"}, 400, "M_INVALID_PARAM"},
		{"POST", "/emergencies", map[string]any{"reason": "x", "duration": "1h", "ends_ts": 1}, 400, "M_INVALID_PARAM"},
		{"POST", "/emergencies", map[string]any{"reason": "x", "ends_ts": 1000}, 400, "M_INVALID_PARAM"},
		{"POST", "/emergencies", map[string]any{"reason": "x", "duration": "1h", "rooms": []string{"#alias:x"}}, 400, "M_INVALID_PARAM"},
		{"DELETE", "/emergencies/em_nope", nil, 404, "M_NOT_FOUND"},
		{"PUT", "/policy", map[string]any{"trusted_networks": []string{"10.0.0.0/99"}}, 400, "M_INVALID_PARAM"},
		{"PUT", "/policy", map[string]any{"working_hours": map[string]any{"time_zone": "Mars/Base"}}, 400, "M_INVALID_PARAM"},
		{"PUT", "/policy", map[string]any{"no_such_rule": true}, 400, "M_BAD_JSON"},
		{"PUT", "/policy", map[string]any{"enrollment": map[string]any{"code_ttl": "soon"}}, 400, "M_BAD_JSON"},
		{"POST", "/broadcasts", map[string]any{"body": ""}, 400, "M_MISSING_PARAM"},
		{"POST", "/broadcasts", map[string]any{"body": "x", "group": "存在しない課"}, 400, "M_INVALID_PARAM"},
		{"GET", "/broadcasts/bc_nope", nil, 404, "M_NOT_FOUND"},
		{"GET", "/audit?limit=0", nil, 400, "M_INVALID_PARAM"},
		{"GET", "/audit?since=yesterday", nil, 400, "M_INVALID_PARAM"},
		{"GET", "/audit?format=xml", nil, 400, "M_INVALID_PARAM"},
		{"GET", "/no/such/endpoint", nil, 404, "M_UNRECOGNIZED"},
	} {
		code, me := do(t, http.DefaultClient, tc.method, c.base()+"/_machi/admin/v1"+tc.path, c.adminToken, tc.body, nil)
		if code != tc.status || me.Code != tc.errcode || me.Msg == "" {
			t.Errorf("%s %s: %d %+v, want %d %s", tc.method, tc.path, code, me, tc.status, tc.errcode)
		}
	}
	// Nothing above changed the policy or left an emergency behind.
	var pol struct {
		Source string `json:"source"`
	}
	c.admin("GET", "/policy", nil, &pol, 200)
	if pol.Source != "config file" {
		t.Fatalf("policy source after refused changes: %q", pol.Source)
	}
	var ems struct {
		Emergencies []any `json:"emergencies"`
	}
	c.admin("GET", "/emergencies", nil, &ems, 200)
	if len(ems.Emergencies) != 0 {
		t.Fatalf("emergencies after refused declarations: %v", ems.Emergencies)
	}
	// Without a token: M_MISSING_TOKEN.
	if code, me := do(t, http.DefaultClient, "GET", c.base()+"/_machi/admin/v1/users", "", nil, nil); code != 401 || me.Code != "M_MISSING_TOKEN" {
		t.Fatalf("no token: %d %+v", code, me)
	}
}
