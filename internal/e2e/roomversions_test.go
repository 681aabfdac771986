package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/machi-chat/machi/internal/server"
	"github.com/machi-chat/machi/internal/testrig"
)

// TestFederatedOldRoomVersions: a neighbour's years-old room may be of any
// room version. Rooms of versions 1, 2 (random event IDs, [id, hashes]
// references, state resolution v1), 3 (hash IDs in standard base64) and 6
// are created on city-a, joined from city-b, used both ways (messages, a
// redaction), then upgraded to version 10, which city-b follows.
func TestFederatedOldRoomVersions(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		const a, b = "city-a.test", "city-b.test"
		cities := startFederation(t, engine, []string{a, b}, map[string][]string{a: {b}, b: {a}}, nil)
		alice := register(t, cities[a].srv, "alice")
		bob := register(t, cities[b].srv, "bob")
		idForm := map[string]*regexp.Regexp{
			"1": regexp.MustCompile(`^\$[A-Za-z0-9]+:city-a\.test$`),
			"2": regexp.MustCompile(`^\$[A-Za-z0-9]+:city-a\.test$`),
			"3": regexp.MustCompile(`^\$[A-Za-z0-9+/]{43}$`),
			"6": regexp.MustCompile(`^\$[A-Za-z0-9_-]{43}$`),
		}
		for _, v := range []string{"1", "2", "3", "6"} {
			room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "旧版 " + v, RoomVersion: id.RoomVersion(v)})
			if err != nil {
				t.Fatalf("v%s: create: %v", v, err)
			}
			var create struct {
				RoomVersion string `json:"room_version"`
			}
			if code, me := do(t, http.DefaultClient, "GET", baseURL(cities[a].srv)+"/_matrix/client/v3/rooms/"+string(room.RoomID)+"/state/m.room.create/",
				alice.AccessToken, nil, &create); code != 200 || create.RoomVersion != v {
				t.Fatalf("v%s: create event: %d %+v %+v", v, code, me, create)
			}
			if code, me := do(t, http.DefaultClient, "POST", baseURL(cities[b].srv)+"/_matrix/client/v3/join/"+url.PathEscape(string(room.RoomID))+"?server_name="+a,
				bob.AccessToken, map[string]any{}, nil); code != 200 {
				t.Fatalf("v%s: join from city-b: %d %+v", v, code, me)
			}
			waitFor(t, alice, "", func(r *mautrix.RespSync) bool { return memberIn(r, room.RoomID, bob.UserID, "join") })

			sent, err := alice.SendText(ctxT(t), room.RoomID, "旧版のルーム "+v)
			if err != nil {
				t.Fatalf("v%s: send: %v", v, err)
			}
			if !idForm[v].MatchString(string(sent.EventID)) {
				t.Errorf("v%s: event ID %s is not of the version's form", v, sent.EventID)
			}
			waitFor(t, bob, "", func(r *mautrix.RespSync) bool { return roomTimelineHas(r, room.RoomID, "旧版のルーム "+v) })
			reply, err := bob.SendText(ctxT(t), room.RoomID, "誤送信 "+v)
			if err != nil {
				t.Fatalf("v%s: send from city-b: %v", v, err)
			}
			waitFor(t, alice, "", func(r *mautrix.RespSync) bool { return roomTimelineHas(r, room.RoomID, "誤送信 "+v) })

			// alice (power 100) redacts bob's message; city-b redacts it too.
			if _, err := alice.RedactEvent(ctxT(t), room.RoomID, reply.EventID); err != nil {
				t.Fatalf("v%s: redact: %v", v, err)
			}
			rvEventually(t, "v"+v+" redaction on city-b", func() bool {
				var ev struct {
					Content  map[string]any `json:"content"`
					Unsigned struct {
						RedactedBecause struct {
							EventID string `json:"event_id"`
						} `json:"redacted_because"`
						RedactedBy string `json:"redacted_by"`
					} `json:"unsigned"`
				}
				code, _ := do(t, http.DefaultClient, "GET", baseURL(cities[b].srv)+"/_matrix/client/v3/rooms/"+string(room.RoomID)+"/event/"+url.PathEscape(string(reply.EventID)),
					bob.AccessToken, nil, &ev)
				return code == 200 && len(ev.Content) == 0 && ev.Unsigned.RedactedBecause.EventID != "" && ev.Unsigned.RedactedBy == ev.Unsigned.RedactedBecause.EventID
			})

			// city-b has its own alias for the room: it follows the upgrade.
			alias := "#kyuban-" + v + ":" + b
			if code, me := do(t, http.DefaultClient, "PUT", baseURL(cities[b].srv)+"/_matrix/client/v3/directory/room/"+url.PathEscape(alias),
				bob.AccessToken, map[string]string{"room_id": string(room.RoomID)}, nil); code != 200 {
				t.Fatalf("v%s: alias on city-b: %d %+v", v, code, me)
			}

			// Upgrade to 10: the new room's predecessor names the tombstone.
			var up struct {
				Replacement string `json:"replacement_room"`
			}
			if code, me := do(t, http.DefaultClient, "POST", baseURL(cities[a].srv)+"/_matrix/client/v3/rooms/"+string(room.RoomID)+"/upgrade",
				alice.AccessToken, map[string]string{"new_version": "10"}, &up); code != 200 || up.Replacement == "" {
				t.Fatalf("v%s: upgrade: %d %+v", v, code, me)
			}
			var tombstone struct {
				Replacement string `json:"replacement_room"`
			}
			rvEventually(t, "v"+v+" tombstone on city-b", func() bool {
				code, _ := do(t, http.DefaultClient, "GET", baseURL(cities[b].srv)+"/_matrix/client/v3/rooms/"+string(room.RoomID)+"/state/m.room.tombstone/",
					bob.AccessToken, nil, &tombstone)
				return code == 200 && tombstone.Replacement == up.Replacement
			})
			snap, err := cities[a].srv.Rooms.CurrentState(ctxT(t), string(room.RoomID))
			if err != nil {
				t.Fatal(err)
			}
			var newCreate struct {
				RoomVersion string `json:"room_version"`
				Predecessor struct {
					RoomID  string `json:"room_id"`
					EventID string `json:"event_id"`
				} `json:"predecessor"`
			}
			if code, me := do(t, http.DefaultClient, "GET", baseURL(cities[a].srv)+"/_matrix/client/v3/rooms/"+up.Replacement+"/state/m.room.create/",
				alice.AccessToken, nil, &newCreate); code != 200 || newCreate.RoomVersion != "10" || newCreate.Predecessor.RoomID != string(room.RoomID) ||
				newCreate.Predecessor.EventID != snap.Get("m.room.tombstone", "").ID() {
				t.Fatalf("v%s: new room's create: %d %+v %+v", v, code, me, newCreate)
			}
			if code, me := do(t, http.DefaultClient, "POST", baseURL(cities[b].srv)+"/_matrix/client/v3/join/"+url.PathEscape(up.Replacement)+"?server_name="+a,
				bob.AccessToken, map[string]any{}, nil); code != 200 {
				t.Fatalf("v%s: join the new room from city-b: %d %+v", v, code, me)
			}
			var dir struct {
				RoomID string `json:"room_id"`
			}
			if code, me := do(t, http.DefaultClient, "GET", baseURL(cities[b].srv)+"/_matrix/client/v3/directory/room/"+url.PathEscape(alias),
				bob.AccessToken, nil, &dir); code != 200 || dir.RoomID != up.Replacement {
				t.Errorf("v%s: city-b's alias after joining the new room: %d %+v %+v, want %s", v, code, me, dir, up.Replacement)
			}
			if _, err := bob.SendText(ctxT(t), id.RoomID(up.Replacement), "移行先 "+v); err != nil {
				t.Fatal(err)
			}
			waitFor(t, alice, "", func(r *mautrix.RespSync) bool { return roomTimelineHas(r, id.RoomID(up.Replacement), "移行先 "+v) })
		}
	})
}

// TestFederationJoinVersions: make_join and the v1 forms of send_join and
// send_leave, as an old server uses them, on a version 1 room.
func TestFederationJoinVersions(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		const a, b = "city-a.test", "city-b.test"
		cities := startFederation(t, engine, []string{a, b}, map[string][]string{a: {b}, b: {a}}, nil)
		alice := register(t, cities[a].srv, "alice")
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "1"})
		if err != nil {
			t.Fatal(err)
		}
		keyID, key, err := server.LoadKey(cities[b].cfg.Path(cities[b].cfg.SigningKeyPath))
		if err != nil {
			t.Fatal(err)
		}
		fed := func(method, path string, body any, out any) (int, map[string]any) {
			t.Helper()
			req := signedRequest(t, cities[a], b, keyID, key, method, path, body)
			resp, err := insecureFed(a).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			var errBody map[string]any
			if resp.StatusCode != 200 {
				_ = json.Unmarshal(raw, &errBody)
			} else if err := json.Unmarshal(raw, out); err != nil {
				t.Fatalf("%s %s: %v in %s", method, path, err, raw)
			}
			return resp.StatusCode, errBody
		}
		carol := "@carol:" + b
		makeJoin := "/_matrix/federation/v1/make_join/" + url.PathEscape(string(room.RoomID)) + "/" + url.PathEscape(carol)

		// A server naming only newer versions cannot join a v1 room.
		if code, out := fed("GET", makeJoin+"?ver=10&ver=11", nil, nil); code != 400 || out["errcode"] != "M_INCOMPATIBLE_ROOM_VERSION" || out["room_version"] != "1" {
			t.Fatalf("make_join with ver=10,11: %d %v", code, out)
		}
		// No ver at all means version 1 only: accepted, and the template
		// references events as [id, hashes] pairs.
		var tmpl struct {
			RoomVersion string          `json:"room_version"`
			Event       json.RawMessage `json:"event"`
		}
		if code, out := fed("GET", makeJoin, nil, &tmpl); code != 200 || tmpl.RoomVersion != "1" {
			t.Fatalf("make_join without ver: %d %v %+v", code, out, tmpl)
		}
		var refs struct {
			Prev [][]json.RawMessage `json:"prev_events"`
			Auth [][]json.RawMessage `json:"auth_events"`
		}
		if err := json.Unmarshal(tmpl.Event, &refs); err != nil || len(refs.Prev) != 1 || len(refs.Prev[0]) != 2 || len(refs.Auth) < 2 {
			t.Fatalf("template's references are not v1 pairs (%v): %s", err, tmpl.Event)
		}

		// The join built on it, sent to /v1/send_join: [200, {state, auth_chain}].
		var proto gomatrixserverlib.ProtoEvent
		if err := json.Unmarshal(tmpl.Event, &proto); err != nil {
			t.Fatal(err)
		}
		version := gomatrixserverlib.MustGetRoomVersion("1")
		proto.Version = version
		join, err := version.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), b, keyID, key)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(join.EventID(), ":"+b) {
			t.Fatalf("v1 join event ID %s", join.EventID())
		}
		var v1 []json.RawMessage
		if code, out := fed("PUT", "/_matrix/federation/v1/send_join/"+url.PathEscape(string(room.RoomID))+"/"+url.PathEscape(join.EventID()),
			json.RawMessage(join.JSON()), &v1); code != 200 {
			t.Fatalf("v1 send_join: %d %v", code, out)
		}
		var res struct {
			State     []json.RawMessage `json:"state"`
			AuthChain []json.RawMessage `json:"auth_chain"`
		}
		if len(v1) != 2 || string(v1[0]) != "200" || json.Unmarshal(v1[1], &res) != nil || len(res.State) == 0 || len(res.AuthChain) == 0 {
			t.Fatalf("v1 send_join answer: %s", v1)
		}
		rvEventually(t, "carol joined on city-a", func() bool {
			snap, err := cities[a].srv.Rooms.CurrentState(ctxT(t), string(room.RoomID))
			return err == nil && snap.Get("m.room.member", carol) != nil && snap.Get("m.room.member", carol).Membership() == spec.Join
		})

		// And leaves through make_leave and /v1/send_leave: [200, {}].
		makeLeave := "/_matrix/federation/v1/make_leave/" + url.PathEscape(string(room.RoomID)) + "/" + url.PathEscape(carol)
		if code, out := fed("GET", makeLeave, nil, &tmpl); code != 200 {
			t.Fatalf("make_leave: %d %v", code, out)
		}
		proto = gomatrixserverlib.ProtoEvent{}
		if err := json.Unmarshal(tmpl.Event, &proto); err != nil {
			t.Fatal(err)
		}
		proto.Version = version
		leave, err := version.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), b, keyID, key)
		if err != nil {
			t.Fatal(err)
		}
		if code, out := fed("PUT", "/_matrix/federation/v1/send_leave/"+url.PathEscape(string(room.RoomID))+"/"+url.PathEscape(leave.EventID()),
			json.RawMessage(leave.JSON()), &v1); code != 200 || len(v1) != 2 || string(v1[0]) != "200" {
			t.Fatalf("v1 send_leave: %d %v %s", code, out, v1)
		}

		// Once nobody of city-a is left in the room, it cannot be joined
		// through city-a.
		if _, err := alice.LeaveRoom(ctxT(t), room.RoomID); err != nil {
			t.Fatal(err)
		}
		if code, out := fed("GET", makeJoin, nil, nil); code != 404 || out["errcode"] != "M_NOT_FOUND" {
			t.Fatalf("make_join of an abandoned room: %d %v", code, out)
		}
	})
}

// rvEventually polls ok for up to 20 s.
func rvEventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestFederatedInviteRefusedWhileAway: an invite from a city that is down
// (or refuses the leave) is still refused: here alone, and it leaves the
// invitee's /sync.
func TestFederatedInviteRefusedWhileAway(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		const a, b = "city-a.test", "city-b.test"
		cities := startFederation(t, engine, []string{a, b}, map[string][]string{a: {b}, b: {a}}, nil)
		alice := register(t, cities[a].srv, "alice")
		carol := register(t, cities[b].srv, "carol")
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{carol.UserID}, RoomVersion: "1"})
		if err != nil {
			t.Fatal(err)
		}
		since := waitFor(t, carol, "", func(r *mautrix.RespSync) bool { _, ok := r.Rooms.Invite[room.RoomID]; return ok })
		cities[a].stop()
		if _, err := carol.LeaveRoom(ctxT(t), room.RoomID); err != nil {
			t.Fatalf("refusing the invite of a city that is down: %v", err)
		}
		waitFor(t, carol, since, func(r *mautrix.RespSync) bool {
			_, invited := r.Rooms.Invite[room.RoomID]
			_, left := r.Rooms.Leave[room.RoomID]
			return left && !invited
		})
		if resp, err := carol.SyncRequest(ctxT(t), 0, "", "", false, ""); err != nil || len(resp.Rooms.Invite) != 0 {
			t.Fatalf("carol's invites after refusing: %v %+v", err, resp.Rooms.Invite)
		}
	})
}
