package e2e

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/pushrules"

	"github.com/machi-chat/machi/internal/testrig"
)

type counts struct {
	N int `json:"notification_count"`
	H int `json:"highlight_count"`
}

type countsRoom struct {
	Unread  *counts           `json:"unread_notifications"`
	Threads map[string]counts `json:"unread_thread_notifications"`
}

// roomCounts is an initial /sync's counts per joined room; threads asks
// for unread_thread_notifications.
func roomCounts(t *testing.T, c *mautrix.Client, threads bool) map[id.RoomID]countsRoom {
	t.Helper()
	filter := `{"room":{"timeline":{"limit":1}}}`
	if threads {
		filter = `{"room":{"timeline":{"limit":1,"unread_thread_notifications":true}}}`
	}
	var resp struct {
		Rooms struct {
			Join map[id.RoomID]countsRoom `json:"join"`
		} `json:"rooms"`
	}
	u := c.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "sync"}, map[string]string{"filter": filter, "timeout": "0"})
	if _, err := c.MakeRequest(ctxT(t), http.MethodGet, u, nil, &resp); err != nil {
		t.Fatalf("sync: %v", err)
	}
	return resp.Rooms.Join
}

func wantCounts(t *testing.T, what string, got countsRoom, n, h int) {
	t.Helper()
	if got.Unread == nil || got.Unread.N != n || got.Unread.H != h {
		t.Fatalf("%s: unread %+v, want %d notifications, %d highlights", what, got.Unread, n, h)
	}
}

type notificationsPage struct {
	NextToken     string `json:"next_token"`
	Notifications []struct {
		Actions []any           `json:"actions"`
		Event   json.RawMessage `json:"event"`
		Read    bool            `json:"read"`
		RoomID  id.RoomID       `json:"room_id"`
		TS      int64           `json:"ts"`
	} `json:"notifications"`
}

// follow points a client at the restarted server (its token is stored).
func (r *restartable) follow(c *mautrix.Client) {
	u, _ := url.Parse(baseURL(r.srv))
	c.HomeserverURL = u
}

// TestNotificationCounts: push rules decide /sync's counts — mentions by
// display name, @room from a user allowed to, m.mentions; a DM notifies; a
// muted room counts nothing; public and private read receipts reset; thread
// counts follow threaded receipts; GET /notifications pages and filters;
// counts are right after a restart.
func TestNotificationCounts(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		rs := startRestartable(t, engine)
		alice, bob, carol := register(t, rs.srv, "alice"), register(t, rs.srv, "bob"), register(t, rs.srv, "carol")
		ctx := ctxT(t)
		if err := bob.SetDisplayName(ctx, "Bobby Tables"); err != nil {
			t.Fatal(err)
		}
		group, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "防災課"})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []*mautrix.Client{bob, carol} {
			if _, err := c.JoinRoomByID(ctx, group.RoomID); err != nil {
				t.Fatal(err)
			}
		}
		send := func(c *mautrix.Client, room id.RoomID, content map[string]any) id.EventID {
			t.Helper()
			if content["msgtype"] == nil {
				content["msgtype"] = "m.text"
			}
			resp, err := c.SendMessageEvent(ctx, room, event.EventMessage, content)
			if err != nil {
				t.Fatal(err)
			}
			return resp.EventID
		}
		send(alice, group.RoomID, map[string]any{"body": "おはようございます"})                                                               // notifies
		send(alice, group.RoomID, map[string]any{"body": "Bobby Tables, the report?"})                                               // display name: highlights
		send(alice, group.RoomID, map[string]any{"body": "@room fire drill at 3"})                                                   // alice may @room: highlights
		send(carol, group.RoomID, map[string]any{"body": "@room lunch?"})                                                            // carol may not: notifies
		send(alice, group.RoomID, map[string]any{"body": "ping", "m.mentions": map[string]any{"user_ids": []id.UserID{bob.UserID}}}) // highlights
		send(alice, group.RoomID, map[string]any{"body": "all hands", "m.mentions": map[string]any{"room": true}})                   // highlights
		send(alice, group.RoomID, map[string]any{"body": "bot", "msgtype": "m.notice"})                                              // suppressed
		last := send(carol, group.RoomID, map[string]any{"body": "Bobby Tables", "m.mentions": map[string]any{}})                    // m.mentions: no legacy rules
		wantCounts(t, "bob in the group", roomCounts(t, bob, false)[group.RoomID], 7, 4)
		wantCounts(t, "carol in the group", roomCounts(t, carol, false)[group.RoomID], 5, 2) // not her own; alice's @room and room mention
		wantCounts(t, "alice in the group", roomCounts(t, alice, false)[group.RoomID], 2, 0)

		// A DM notifies, with a sound.
		dm, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", Invite: []id.UserID{bob.UserID}, IsDirect: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, dm.RoomID); err != nil {
			t.Fatal(err)
		}
		dmEvent := send(alice, dm.RoomID, map[string]any{"body": "内緒の話"})
		wantCounts(t, "bob in the DM", roomCounts(t, bob, false)[dm.RoomID], 1, 0)
		// A new member event of his own (a room nickname) changes nothing.
		if _, err := bob.SendStateEvent(ctx, dm.RoomID, event.StateMember, string(bob.UserID), map[string]any{"membership": "join", "displayname": "ボブ"}); err != nil {
			t.Fatal(err)
		}
		wantCounts(t, "bob in the DM after his nickname", roomCounts(t, bob, false)[dm.RoomID], 1, 0)

		// A muted room counts nothing.
		muted, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, muted.RoomID); err != nil {
			t.Fatal(err)
		}
		if err := bob.PutPushRule(ctx, "global", pushrules.RoomRule, string(muted.RoomID), &mautrix.ReqPutPushRule{Actions: []*pushrules.PushAction{}}); err != nil {
			t.Fatal(err)
		}
		send(alice, muted.RoomID, map[string]any{"body": "雑談"})
		send(alice, muted.RoomID, map[string]any{"body": "雑談2"})
		wantCounts(t, "bob in the muted room", roomCounts(t, bob, false)[muted.RoomID], 0, 0)

		// A read receipt resets; so does a private one.
		if err := bob.MarkRead(ctx, group.RoomID, last); err != nil {
			t.Fatal(err)
		}
		wantCounts(t, "after bob's receipt", roomCounts(t, bob, false)[group.RoomID], 0, 0)
		wantCounts(t, "carol unaffected", roomCounts(t, carol, false)[group.RoomID], 5, 2)
		again := send(alice, group.RoomID, map[string]any{"body": "もう一度"})
		wantCounts(t, "a new message", roomCounts(t, bob, false)[group.RoomID], 1, 0)
		if err := bob.SendReceipt(ctx, group.RoomID, again, event.ReceiptTypeReadPrivate, nil); err != nil {
			t.Fatal(err)
		}
		wantCounts(t, "after bob's private receipt", roomCounts(t, bob, false)[group.RoomID], 0, 0)

		// Threads.
		root := send(alice, group.RoomID, map[string]any{"body": "スレッド"})
		inThread := func(body string) id.EventID {
			return send(alice, group.RoomID, map[string]any{"body": body, "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root,
				"is_falling_back": true, "m.in_reply_to": map[string]any{"event_id": root}}})
		}
		r1 := inThread("返信1")
		inThread("返信2")
		r3 := send(alice, group.RoomID, map[string]any{"body": "返信3 for Bobby Tables", "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
		wantCounts(t, "threads, unthreaded view", roomCounts(t, bob, false)[group.RoomID], 4, 1)
		tc := roomCounts(t, bob, true)[group.RoomID]
		wantCounts(t, "threads: main timeline", tc, 1, 0)
		if got := tc.Threads[string(root)]; got != (counts{N: 3, H: 1}) || len(tc.Threads) != 1 {
			t.Fatalf("thread counts: %+v", tc.Threads)
		}
		if err := bob.SendReceipt(ctx, group.RoomID, r1, event.ReceiptTypeRead, &mautrix.ReqSendReceipt{ThreadID: string(root)}); err != nil {
			t.Fatal(err)
		}
		tc = roomCounts(t, bob, true)[group.RoomID]
		if wantCounts(t, "thread receipt: main", tc, 1, 0); tc.Threads[string(root)] != (counts{N: 2, H: 1}) {
			t.Fatalf("after a thread receipt: %+v", tc.Threads)
		}
		if err := bob.SendReceipt(ctx, group.RoomID, root, event.ReceiptTypeRead, &mautrix.ReqSendReceipt{ThreadID: "main"}); err != nil {
			t.Fatal(err)
		}
		tc = roomCounts(t, bob, true)[group.RoomID]
		if wantCounts(t, "main receipt: main", tc, 0, 0); tc.Threads[string(root)] != (counts{N: 2, H: 1}) {
			t.Fatalf("a main receipt changed the thread: %+v", tc.Threads)
		}

		// GET /notifications: 8 from the group, the DM's message, 4 from
		// the thread (root included), newest first, in pages. (The DM's
		// invite was pushed to bob but is not his room's notification.)
		base := baseURL(rs.srv) + "/_matrix/client/v3/notifications"
		var all []id.EventID
		var page notificationsPage
		from := ""
		for i := 0; i < 10; i++ {
			q := "?limit=5"
			if from != "" {
				q += "&from=" + from
			}
			page = notificationsPage{}
			if code, me := do(t, http.DefaultClient, "GET", base+q, bob.AccessToken, nil, &page); code != 200 {
				t.Fatalf("notifications: %d %+v", code, me)
			}
			for _, n := range page.Notifications {
				var ev struct {
					ID     id.EventID `json:"event_id"`
					RoomID *string    `json:"room_id"`
					Sender id.UserID  `json:"sender"`
				}
				_ = json.Unmarshal(n.Event, &ev)
				if ev.RoomID != nil || n.RoomID == "" || n.TS == 0 || ev.Sender == "" || len(n.Actions) == 0 {
					t.Fatalf("notification shape: %+v %s", n, n.Event)
				}
				all = append(all, ev.ID)
				switch ev.ID {
				case dmEvent:
					if n.Read || n.RoomID != dm.RoomID || !hasSound(n.Actions) {
						t.Fatalf("DM notification: %+v", n)
					}
				case last:
					if !n.Read {
						t.Fatalf("a read notification is unread: %+v", n)
					}
				case r3:
					if n.Read {
						t.Fatalf("an unread notification is read: %+v", n)
					}
				}
			}
			if from = page.NextToken; from == "" {
				break
			}
		}
		if len(all) != 13 || all[0] != r3 {
			t.Fatalf("notifications: %d, newest %s (want 13, %s)", len(all), all[0], r3)
		}
		page = notificationsPage{}
		do(t, http.DefaultClient, "GET", base+"?only=highlight", bob.AccessToken, nil, &page)
		if len(page.Notifications) != 5 || page.NextToken != "" {
			t.Fatalf("highlights: %d, next %q", len(page.Notifications), page.NextToken)
		}
		for _, bad := range []string{"?limit=0", "?limit=many", "?from=yesterday", "?from=n-4", "?only=loud"} {
			if code, me := do(t, http.DefaultClient, "GET", base+bad, bob.AccessToken, nil, nil); code != 400 || me.Code != "M_INVALID_PARAM" {
				t.Errorf("GET /notifications%s: %d %+v", bad, code, me)
			}
		}
		if code, me := do(t, http.DefaultClient, "GET", base, "", nil, nil); code != 401 || me.Code != "M_MISSING_TOKEN" {
			t.Errorf("GET /notifications without a token: %d %+v", code, me)
		}

		// After a restart the counts are the same, and receipts still work.
		rs.stop()
		rs.start()
		for _, c := range []*mautrix.Client{alice, bob, carol} {
			rs.follow(c)
		}
		tc = roomCounts(t, bob, true)[group.RoomID]
		if wantCounts(t, "after restart: main", tc, 0, 0); tc.Threads[string(root)] != (counts{N: 2, H: 1}) {
			t.Fatalf("after restart, thread: %+v", tc.Threads)
		}
		wantCounts(t, "after restart: DM", roomCounts(t, bob, false)[dm.RoomID], 1, 0)
		wantCounts(t, "after restart: muted", roomCounts(t, bob, false)[muted.RoomID], 0, 0)
		wantCounts(t, "after restart: carol", roomCounts(t, carol, false)[group.RoomID], 10, 2)
		if err := bob.MarkRead(ctx, group.RoomID, r3); err != nil { // unthreaded: clears the threads too
			t.Fatal(err)
		}
		tc = roomCounts(t, bob, true)[group.RoomID]
		if wantCounts(t, "unthreaded receipt", tc, 0, 0); len(tc.Threads) != 0 {
			t.Fatalf("an unthreaded receipt left thread counts: %+v", tc.Threads)
		}
		send(alice, group.RoomID, map[string]any{"body": "再起動後", "m.mentions": map[string]any{"user_ids": []id.UserID{bob.UserID}}})
		wantCounts(t, "a mention after restart", roomCounts(t, bob, false)[group.RoomID], 1, 1)
	})
}

func hasSound(actions []any) bool {
	for _, a := range actions {
		if m, ok := a.(map[string]any); ok && m["set_tweak"] == "sound" {
			return true
		}
	}
	return false
}
