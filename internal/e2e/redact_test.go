package e2e

import (
	"net/http"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/machi-chat/machi/internal/testrig"
)

// TestRedactEventOfAnotherRoom: a redaction sent to one room naming an
// event of another is refused with 400 M_INVALID_PARAM and leaves the event
// as it was (SyTest's "PUT /redact disallows redaction of event in
// different room"); an event ID the server does not know is still accepted,
// as the spec allows.
func TestRedactEventOfAnotherRoom(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice, bob := register(t, srv, "alice"), register(t, srv, "bob")
		ctx := ctxT(t)
		roomA, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
		if err != nil {
			t.Fatal(err)
		}
		roomB, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
		if err != nil {
			t.Fatal(err)
		}
		sent, err := alice.SendText(ctx, roomA.RoomID, "課長会議は15時から")
		if err != nil {
			t.Fatal(err)
		}
		code, me := do(t, http.DefaultClient, "PUT", bob.BuildClientURL("v3", "rooms", roomB.RoomID, "redact", sent.EventID, "t1"), bob.AccessToken, map[string]any{}, nil)
		if code != 400 || me.Code != "M_INVALID_PARAM" {
			t.Fatalf("redacting another room's event: %d %s, want 400 M_INVALID_PARAM", code, me.Code)
		}
		ev, err := alice.GetEvent(ctx, roomA.RoomID, sent.EventID)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Content.Raw["body"] != "課長会議は15時から" {
			t.Fatalf("event changed: %v", ev.Content.Raw)
		}
		code, me = do(t, http.DefaultClient, "PUT", bob.BuildClientURL("v3", "rooms", roomB.RoomID, "redact", "$unknown-event:localhost", "t2"), bob.AccessToken, map[string]any{}, nil)
		if code != 200 {
			t.Fatalf("redacting an unknown event: %d %s, want 200", code, me.Code)
		}
	})
}

// TestSendWithoutTxnID: the POST forms of send and redact, without a
// transaction ID, make a new event each call.
func TestSendWithoutTxnID(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice := register(t, srv, "alice")
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		base := baseURL(srv) + "/_matrix/client/v3/rooms/" + url.PathEscape(string(room.RoomID))
		var ids []string
		for range 2 {
			var out struct {
				EventID string `json:"event_id"`
			}
			if code, me := do(t, http.DefaultClient, "POST", base+"/send/m.room.message", alice.AccessToken, map[string]string{"msgtype": "m.text", "body": "同じ文面"}, &out); code != 200 || out.EventID == "" {
				t.Fatalf("POST send: %d %+v", code, me)
			}
			ids = append(ids, out.EventID)
		}
		if ids[0] == ids[1] {
			t.Fatalf("two POSTs made one event %s", ids[0])
		}
		for _, id := range ids {
			var out struct {
				EventID string `json:"event_id"`
			}
			if code, me := do(t, http.DefaultClient, "POST", base+"/redact/"+url.PathEscape(id), alice.AccessToken, map[string]string{"reason": "誤送信"}, &out); code != 200 || out.EventID == "" || out.EventID == id {
				t.Fatalf("POST redact %s: %d %+v %s", id, code, me, out.EventID)
			}
		}
		if code, _ := do(t, http.DefaultClient, "POST", base+"/send/m.room.message", alice.AccessToken, []byte("nope"), nil); code != 400 {
			t.Errorf("POST send of bad JSON: %d, want 400", code)
		}
	})
}
