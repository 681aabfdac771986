package e2e

import (
	"encoding/json"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/machi-chat/machi/internal/testrig"
)

// gateway is a fake push gateway on loopback that records notifications.
type gateway struct {
	url    string
	mu     sync.Mutex
	got    []gatewayNote
	reject map[string]bool
}

type gatewayNote struct {
	EventID string `json:"event_id"`
	RoomID  string `json:"room_id"`
	Type    string `json:"type"`
	Sender  string `json:"sender"`
	Content struct {
		Body string `json:"body"`
	} `json:"content"`
	Counts struct {
		Unread int `json:"unread"`
	} `json:"counts"`
	Devices []struct {
		AppID   string         `json:"app_id"`
		PushKey string         `json:"pushkey"`
		Tweaks  map[string]any `json:"tweaks"`
	} `json:"devices"`
}

func startGateway(t *testing.T) *gateway {
	t.Helper()
	g := &gateway{reject: map[string]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Notification gatewayNote `json:"notification"`
		}
		if r.URL.Path != "/_matrix/push/v1/notify" || json.NewDecoder(r.Body).Decode(&body) != nil {
			http.Error(w, "bad request", 400)
			return
		}
		g.mu.Lock()
		g.got = append(g.got, body.Notification)
		rejected := []string{}
		for _, d := range body.Notification.Devices {
			if g.reject[d.PushKey] {
				rejected = append(rejected, d.PushKey)
			}
		}
		g.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"rejected": rejected})
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	g.url = "http://" + ln.Addr().String() + "/_matrix/push/v1/notify"
	return g
}

// keysFor waits up to 10 s for notifications of eventID and returns the
// push keys they went to (after a short settle, so that late ones count).
func (g *gateway) keysFor(t *testing.T, eventID id.EventID, want int) map[string]gatewayNote {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := map[string]gatewayNote{}
		g.mu.Lock()
		for _, n := range g.got {
			if n.EventID == string(eventID) {
				for _, d := range n.Devices {
					out[d.PushKey] = n
				}
			}
		}
		g.mu.Unlock()
		if len(out) >= want && want > 0 || time.Now().After(deadline) {
			return out
		}
		if want == 0 && time.Now().After(deadline.Add(-9500*time.Millisecond)) {
			return out // nothing expected: give it half a second
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestPushNotifications(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		c := startCity(t, engine)
		g := startGateway(t)
		alice := register(t, c.srv, "alice")
		bob := register(t, c.srv, "bob") // the office PC
		phone := c.phoneLogin(bob.UserID, "secret-bob")
		setPusher := func(client *http.Client, mc *mautrix.Client, key string) {
			t.Helper()
			body := map[string]any{"app_id": "jp.lg.city.chat", "pushkey": key, "kind": "http", "app_display_name": "市役所チャット",
				"device_display_name": key, "lang": "ja", "data": map[string]any{"url": g.url}, "append": true}
			if code, me := do(t, client, "POST", c.base()+"/_matrix/client/v3/pushers/set", mc.AccessToken, body, nil); code != 200 {
				t.Fatalf("set pusher %s: %d %+v", key, code, me)
			}
		}
		setPusher(c.phone, phone, "phone-key")
		setPusher(http.DefaultClient, bob, "pc-key")
		var list struct {
			Pushers []struct {
				PushKey string `json:"pushkey"`
			} `json:"pushers"`
		}
		if code, _ := do(t, http.DefaultClient, "GET", c.base()+"/_matrix/client/v3/pushers", bob.AccessToken, nil, &list); code != 200 || len(list.Pushers) != 2 {
			t.Fatalf("pushers: %d %+v", code, list)
		}

		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}, IsDirect: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctxT(t), room.RoomID); err != nil {
			t.Fatal(err)
		}

		// Working hours: both of bob's devices are notified.
		sent, err := alice.SendText(ctxT(t), room.RoomID, "会議の時間です")
		if err != nil {
			t.Fatal(err)
		}
		got := g.keysFor(t, sent.EventID, 2)
		n, ok := got["phone-key"]
		if !ok || got["pc-key"].EventID == "" {
			t.Fatalf("notified keys: %v", got)
		}
		if n.Content.Body != "会議の時間です" || n.Sender != string(alice.UserID) || n.Counts.Unread != 1 || n.Type != "m.room.message" {
			t.Fatalf("notification: %+v", n)
		}

		// 19:00: the phone's pushes are held back, the PC's are not.
		c.clock.Set(time.Date(2026, 11, 25, 19, 0, 0, 0, jst))
		sent, err = alice.SendText(ctxT(t), room.RoomID, "明日でいいです")
		if err != nil {
			t.Fatal(err)
		}
		got = g.keysFor(t, sent.EventID, 1)
		time.Sleep(300 * time.Millisecond)
		got = g.keysFor(t, sent.EventID, 1)
		if _, ok := got["phone-key"]; ok || got["pc-key"].EventID == "" {
			t.Fatalf("after hours, notified keys: %v", got)
		}
		if n := got["pc-key"].Counts.Unread; n != 2 {
			t.Fatalf("unread count pushed: %d, want 2", n)
		}

		// Bob mutes the room: nothing is pushed.
		code, me := do(t, http.DefaultClient, "PUT", c.base()+"/_matrix/client/v3/pushrules/global/room/"+string(room.RoomID), bob.AccessToken, map[string]any{"actions": []any{}}, nil)
		if code != 200 {
			t.Fatalf("mute: %d %+v", code, me)
		}
		sent, err = alice.SendText(ctxT(t), room.RoomID, "ミュート中")
		if err != nil {
			t.Fatal(err)
		}
		if got := g.keysFor(t, sent.EventID, 0); len(got) != 0 {
			t.Fatalf("muted room pushed to %v", got)
		}
		do(t, http.DefaultClient, "DELETE", c.base()+"/_matrix/client/v3/pushrules/global/room/"+string(room.RoomID), bob.AccessToken, nil, nil)

		// The gateway rejects the PC's key: machi drops that pusher.
		g.mu.Lock()
		g.reject["pc-key"] = true
		g.mu.Unlock()
		sent, err = alice.SendText(ctxT(t), room.RoomID, "最後")
		if err != nil {
			t.Fatal(err)
		}
		g.keysFor(t, sent.EventID, 1)
		deadline := time.Now().Add(5 * time.Second)
		for {
			do(t, http.DefaultClient, "GET", c.base()+"/_matrix/client/v3/pushers", bob.AccessToken, nil, &list)
			if len(list.Pushers) == 1 && list.Pushers[0].PushKey == "phone-key" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("rejected pusher kept: %+v", list)
			}
			time.Sleep(50 * time.Millisecond)
		}

		// Bad pushers are refused.
		for _, tc := range []struct {
			body    map[string]any
			errcode string
		}{
			{map[string]any{"app_id": "a", "pushkey": "k", "kind": "http", "app_display_name": "a", "device_display_name": "d", "lang": "ja", "data": map[string]any{"url": "http://127.0.0.1/elsewhere"}}, "M_INVALID_PARAM"},
			{map[string]any{"app_id": "a", "pushkey": "k", "kind": "email", "app_display_name": "a", "device_display_name": "d", "lang": "ja", "data": map[string]any{}}, "M_INVALID_PARAM"},
			{map[string]any{"app_id": "a", "pushkey": "k", "kind": "http"}, "M_MISSING_PARAM"},
			{map[string]any{"pushkey": "k"}, "M_MISSING_PARAM"},
			{map[string]any{"app_id": "a", "pushkey": "k", "kind": "http", "app_display_name": "a", "device_display_name": "d", "lang": "ja", "data": "x"}, "M_BAD_JSON"},
		} {
			if code, me := do(t, http.DefaultClient, "POST", c.base()+"/_matrix/client/v3/pushers/set", bob.AccessToken, tc.body, nil); code != 400 || me.Code != tc.errcode {
				t.Errorf("pushers/set %v: %d %+v, want 400 %s", tc.body, code, me, tc.errcode)
			}
		}
		// Deleting with kind null.
		del := map[string]any{"app_id": "jp.lg.city.chat", "pushkey": "phone-key", "kind": nil}
		if code, _ := do(t, c.phone, "POST", c.base()+"/_matrix/client/v3/pushers/set", phone.AccessToken, del, nil); code != 200 {
			t.Fatalf("delete pusher: %d", code)
		}
		do(t, http.DefaultClient, "GET", c.base()+"/_matrix/client/v3/pushers", bob.AccessToken, nil, &list)
		if len(list.Pushers) != 0 {
			t.Fatalf("pushers after delete: %+v", list)
		}
	})
}
