package e2e

import (
	"errors"
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

// restartable is a machi that a test stops and starts again on the same
// data.
type restartable struct {
	t    *testing.T
	cfg  config.Config
	srv  *server.Server
	once *sync.Once
}

func startRestartable(t *testing.T, engine string) *restartable {
	t.Helper()
	r := &restartable{t: t, cfg: testConfig(t, engine)}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *restartable) start() {
	r.t.Helper()
	r.srv, r.once = startUnmanaged(r.t, &r.cfg), &sync.Once{}
}

func (r *restartable) stop() { r.once.Do(func() { stopServer(r.srv) }) }

// presenceOf finds sender's m.presence content in a sync response.
func presenceOf(resp *mautrix.RespSync, sender id.UserID) map[string]any {
	var found map[string]any
	for _, ev := range resp.Presence.Events {
		if ev.Sender == sender && ev.Type == event.EphemeralEventPresence {
			found = ev.Content.Raw
		}
	}
	return found
}

func TestPresence(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		m := startRestartable(t, engine)
		ctx := ctxT(t)
		alice, bob, carol := register(t, m.srv, "alice"), register(t, m.srv, "bob"), register(t, m.srv, "carol")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{bob.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		initial, err := bob.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		if p := presenceOf(initial, bob.UserID); p["presence"] != "online" {
			t.Fatalf("bob's own presence in his first sync: %v", p)
		}
		// Activity brings nobody online (alice has not synced yet), but she
		// is known: her last activity shows.
		if p := presenceOf(initial, alice.UserID); p["presence"] != "offline" || p["last_active_ago"] == nil {
			t.Fatalf("alice (active: she created a room, never synced) in bob's initial sync: %v", p)
		}
		if parts := strings.Split(initial.NextBatch, "_"); len(parts) != 3 {
			t.Fatalf("sync token %q has no presence part", initial.NextBatch)
		}

		// bob waits; alice's new status wakes his long-poll at once.
		type result struct {
			resp *mautrix.RespSync
			err  error
			took time.Duration
		}
		done := make(chan result, 1)
		go func() {
			// Other news may wake it first (the device lists of his join,
			// recorded a moment after it): it syncs on until the presence.
			start, since := time.Now(), initial.NextBatch
			for range 5 {
				resp, err := bob.SyncRequest(ctx, 20000, since, "", false, "")
				if err != nil || presenceOf(resp, alice.UserID)["presence"] == "online" {
					done <- result{resp, err, time.Since(start)}
					return
				}
				since = resp.NextBatch
			}
			done <- result{nil, errors.New("five wake-ups without alice's presence"), time.Since(start)}
		}()
		time.Sleep(200 * time.Millisecond)
		if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "会議中"}); err != nil {
			t.Fatal(err)
		}
		var res result
		select {
		case res = <-done:
		case <-time.After(15 * time.Second):
			t.Fatal("bob's long-poll was not woken by alice's presence")
		}
		if res.err != nil || res.took > 10*time.Second {
			t.Fatalf("bob's sync: %v after %s", res.err, res.took)
		}
		p := presenceOf(res.resp, alice.UserID)
		if p["presence"] != "online" || p["status_msg"] != "会議中" || p["currently_active"] != true {
			t.Fatalf("alice's presence as bob sees it: %v", p)
		}
		if _, ok := p["last_active_ago"].(float64); !ok {
			t.Fatalf("no last_active_ago: %v", p)
		}
		if len(res.resp.Rooms.Join) != 0 {
			t.Fatalf("a presence change brought room news: %v", res.resp.Rooms.Join)
		}

		// carol shares no room with alice: her sync carries no alice.
		cs, err := carol.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		if p := presenceOf(cs, alice.UserID); p != nil {
			t.Fatalf("carol sees alice's presence in /sync: %v", p)
		}
		// Once she joins a room with alice, her next sync tells her.
		if _, err := alice.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: carol.UserID}); err != nil {
			t.Fatal(err)
		}
		if _, err := carol.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		waitFor(t, carol, cs.NextBatch, func(r *mautrix.RespSync) bool {
			_, joined := r.Rooms.Join[room.RoomID]
			if joined && presenceOf(r, alice.UserID)["status_msg"] != "会議中" {
				t.Fatalf("carol joined alice's room without learning her presence: %v", r.Presence.Events)
			}
			return joined
		})
		// ... and staff may look each other up anyway.
		got, err := carol.GetPresence(ctx, alice.UserID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Presence != event.PresenceOnline || got.StatusMsg != "会議中" || !got.CurrentlyActive {
			t.Fatalf("GET alice's presence: %+v", got)
		}

		// set_presence=unavailable marks bob idle; alice hears it.
		since := waitFor(t, alice, "", func(*mautrix.RespSync) bool { return true })
		if _, err := bob.SyncRequest(ctx, 0, res.resp.NextBatch, "", false, event.PresenceUnavailable); err != nil {
			t.Fatal(err)
		}
		waitFor(t, alice, since, func(r *mautrix.RespSync) bool {
			return presenceOf(r, bob.UserID)["presence"] == "unavailable"
		})
		if got, err := alice.GetPresence(ctx, bob.UserID); err != nil || got.Presence != event.PresenceUnavailable || got.CurrentlyActive {
			t.Fatalf("bob after set_presence=unavailable: %+v, %v", got, err)
		}

		// A token from before presence (s<pos>_<typing>) still works.
		old := strings.Join(strings.Split(res.resp.NextBatch, "_")[:2], "_")
		if _, err := bob.SyncRequest(ctx, 0, old, "", false, ""); err != nil {
			t.Fatalf("sync with an old token %q: %v", old, err)
		}

		base := baseURL(m.srv) + "/_matrix/client/v3"
		mine := base + "/presence/" + string(alice.UserID) + "/status"
		for _, tc := range []struct {
			name, method, url, token, body string
			status                         int
			code                           string
		}{
			{"someone else's", "PUT", base + "/presence/" + string(bob.UserID) + "/status", alice.AccessToken, `{"presence":"offline"}`, 403, "M_FORBIDDEN"},
			{"missing presence", "PUT", mine, alice.AccessToken, `{"status_msg":"x"}`, 400, "M_MISSING_PARAM"},
			{"bad presence", "PUT", mine, alice.AccessToken, `{"presence":"busy"}`, 400, "M_INVALID_PARAM"},
			{"status not a string", "PUT", mine, alice.AccessToken, `{"presence":"online","status_msg":1}`, 400, "M_BAD_JSON"},
			{"status too long", "PUT", mine, alice.AccessToken, `{"presence":"online","status_msg":"` + strings.Repeat("長", 400) + `"}`, 400, "M_INVALID_PARAM"},
			{"not json", "PUT", mine, alice.AccessToken, `{"presence"`, 400, "M_NOT_JSON"},
			{"no token", "PUT", mine, "", `{"presence":"online"}`, 401, "M_MISSING_TOKEN"},
			{"unknown user", "GET", base + "/presence/@nobody:localhost/status", alice.AccessToken, "", 404, "M_NOT_FOUND"},
			{"remote user", "GET", base + "/presence/@someone:other.example.jp/status", alice.AccessToken, "", 404, "M_NOT_FOUND"},
			{"bad user id", "GET", base + "/presence/nobody/status", alice.AccessToken, "", 400, "M_INVALID_PARAM"},
			{"bad set_presence", "GET", base + "/sync?set_presence=busy", alice.AccessToken, "", 400, "M_INVALID_PARAM"},
		} {
			code, me := do(t, http.DefaultClient, tc.method, tc.url, tc.token, []byte(tc.body), nil)
			if code != tc.status || me.Code != tc.code {
				t.Errorf("%s: %d %s, want %d %s", tc.name, code, me.Code, tc.status, tc.code)
			}
		}
		if got, err := bob.GetPresence(ctx, alice.UserID); err != nil || got.StatusMsg != "会議中" {
			t.Fatalf("a refused change changed alice's presence: %+v, %v", got, err)
		}

		// After a restart nobody is connected, but the status is kept.
		m.stop()
		m.start()
		bob2, _ := mautrix.NewClient(baseURL(m.srv), bob.UserID, bob.AccessToken)
		got, err = bob2.GetPresence(ctx, alice.UserID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Presence != event.PresenceOffline || got.StatusMsg != "会議中" || got.CurrentlyActive {
			t.Fatalf("alice after a restart: %+v", got)
		}
	})
}

func TestPresenceDisabled(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine, func(c *config.Config) { c.Presence.Enabled = false })
		ctx := ctxT(t)
		alice, bob := register(t, srv, "alice"), register(t, srv, "bob")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{bob.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		// Setting is accepted (clients do it unasked) and changes nothing.
		if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "会議中"}); err != nil {
			t.Fatal(err)
		}
		_, err = bob.GetPresence(ctx, alice.UserID)
		var he mautrix.HTTPError
		if !asHTTPError(err, &he) || he.Response.StatusCode != 404 || he.RespError.ErrCode != "M_NOT_FOUND" {
			t.Fatalf("GET presence with presence off: %v", err)
		}
		resp, err := bob.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Presence.Events) != 0 {
			t.Fatalf("presence off, yet /sync carries %d presence events", len(resp.Presence.Events))
		}
		code, me := do(t, http.DefaultClient, "PUT", baseURL(srv)+"/_matrix/client/v3/presence/"+string(alice.UserID)+"/status", alice.AccessToken, []byte(`{"presence":"busy"}`), nil)
		if code != 400 || me.Code != "M_INVALID_PARAM" {
			t.Fatalf("bad presence with presence off: %d %+v", code, me)
		}
	})
}
