package e2e

import (
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"

	"github.com/machi-chat/machi/internal/server"
	"github.com/machi-chat/machi/internal/testrig"
	"github.com/machi-chat/machi/rooms"
)

// TestFederatedGapState: city-b's history has a gap city-a cannot close
// with /get_missing_events (an event Q it never gets). city-a sends for the
// state at Q with /state_ids, keeps Q as an outlier (no state served at it)
// and takes the events after it into the room. An event sent directly whose
// history stays out of reach is still refused.
//
// city-b's side is played by the test: a proxy at city-b's address (with
// city-b's certificate) answers /get_missing_events, /state_ids and
// /event itself and passes everything else to the real city-b.
func TestFederatedGapState(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		const a, b = "city-a.test", "city-b.test"
		proxyAddr := testrig.FreePort(t, "127.0.0.12") // city-b's address in startFederation
		cities := startFederation(t, engine, []string{a, b}, map[string][]string{a: {b}, b: {a}}, map[string]map[string]string{a: {b: proxyAddr}})
		keyID, key, err := server.LoadKey(cities[b].cfg.Path(cities[b].cfg.SigningKeyPath))
		if err != nil {
			t.Fatal(err)
		}

		var mu sync.Mutex
		served := map[string]json.RawMessage{} // event ID → what /event answers
		var gapAnswer, stateIDs json.RawMessage
		asked := map[string]int{}
		interceptPeer(t, cities[b], proxyAddr, func(w http.ResponseWriter, r *http.Request) bool {
			mu.Lock()
			defer mu.Unlock()
			p := r.URL.Path
			switch {
			case strings.HasPrefix(p, "/_matrix/federation/v1/get_missing_events/") && gapAnswer != nil:
				asked["get_missing_events"]++
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write(gapAnswer)
			case strings.HasPrefix(p, "/_matrix/federation/v1/state_ids/") && stateIDs != nil:
				asked["state_ids "+r.URL.Query().Get("event_id")]++
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write(stateIDs)
			case strings.HasPrefix(p, "/_matrix/federation/v1/event/") && served[strings.TrimPrefix(p, "/_matrix/federation/v1/event/")] != nil:
				id := strings.TrimPrefix(p, "/_matrix/federation/v1/event/")
				asked["event "+id]++
				w.Header().Set("Content-Type", "application/json")
				_ = json.NewEncoder(w).Encode(map[string]any{"origin": b, "origin_server_ts": time.Now().UnixMilli(), "pdus": []json.RawMessage{served[id]}})
			default:
				return false
			}
			return true
		})

		alice := register(t, cities[a].srv, "alice")
		bob := register(t, cities[b].srv, "bob")
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if code, me := do(t, http.DefaultClient, "POST", baseURL(cities[b].srv)+"/_matrix/client/v3/join/"+string(room.RoomID), bob.AccessToken, map[string]any{}, nil); code != 200 {
			t.Fatalf("join: %d %+v", code, me)
		}
		snap, err := cities[a].srv.Rooms.CurrentState(ctxT(t), string(room.RoomID))
		if err != nil {
			t.Fatal(err)
		}
		latest, _ := cities[a].srv.Rooms.Latest(ctxT(t), string(room.RoomID))
		version := gomatrixserverlib.MustGetRoomVersion("10")
		auth := []string{snap.Get("m.room.create", "").ID(), snap.Get("m.room.power_levels", "").ID(), snap.Get("m.room.member", string(bob.UserID)).ID()}
		build := func(prev []string, depth int64, body string) gomatrixserverlib.PDU {
			c, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": body})
			proto := gomatrixserverlib.ProtoEvent{SenderID: string(bob.UserID), RoomID: string(room.RoomID), Type: "m.room.message",
				PrevEvents: prev, AuthEvents: auth, Depth: depth, Content: c}
			pdu, err := version.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), b, keyID, key)
			if err != nil {
				t.Fatal(err)
			}
			return pdu
		}
		send := func(txnID string, pdu gomatrixserverlib.PDU) map[string]any {
			t.Helper()
			return fedSend(t, cities[a], b, keyID, key, txnID, pdu)[pdu.EventID()]
		}

		// Q is never sent nor given by /get_missing_events; R is, S is sent.
		q := build(latest, 50, "Q: 届かない")
		r := build([]string{q.EventID()}, 51, "R: 穴の向こう")
		s := build([]string{r.EventID()}, 52, "S: 最新")
		var stateList []string
		snap.Each(func(ev *rooms.Event) { stateList = append(stateList, ev.ID()) })
		mu.Lock()
		gapAnswer, _ = json.Marshal(map[string]any{"events": []json.RawMessage{r.JSON()}})
		stateIDs, _ = json.Marshal(map[string]any{"pdu_ids": stateList, "auth_chain_ids": []string{}})
		served[q.EventID()] = q.JSON()
		mu.Unlock()

		if res := send("gap-1", s); res == nil || res["error"] != nil {
			t.Fatalf("S: %v", res)
		}
		waitHistory(t, alice, room.RoomID, func(bodies []string) bool {
			return len(bodies) > 0 && bodies[len(bodies)-1] == "S: 最新"
		})
		resp, err := alice.Messages(ctxT(t), room.RoomID, "", "", mautrix.DirectionBackward, nil, 100)
		if err != nil {
			t.Fatal(err)
		}
		var bodies []string
		for _, ev := range resp.Chunk {
			if b, _ := ev.Content.Raw["body"].(string); b != "" {
				bodies = append(bodies, b)
			}
		}
		if strings.Join(bodies, "|") != "S: 最新|R: 穴の向こう" {
			t.Errorf("timeline (newest first): %q, want S and R and not Q", bodies)
		}
		mu.Lock()
		if asked["get_missing_events"] != 1 || asked["state_ids "+q.EventID()] != 1 || asked["event "+q.EventID()] != 1 {
			t.Errorf("what city-a asked city-b: %v", asked)
		}
		mu.Unlock()

		// Q is an outlier: no state is served at it.
		req := signedRequest(t, cities[a], b, keyID, key, "GET", "/_matrix/federation/v1/state_ids/"+url.PathEscape(string(room.RoomID))+"?event_id="+url.QueryEscape(q.EventID()), nil)
		if code, me := doRaw(t, insecureFed(a), req); code != 404 || me.Code != "M_NOT_FOUND" {
			t.Errorf("state_ids at the outlier Q: %d %+v", code, me)
		}

		// A rejected message (its sender is not in the room) is processed:
		// no error, in no timeline, but an event built on it gets in.
		c, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": "部外者"})
		xProto := gomatrixserverlib.ProtoEvent{SenderID: "@mallory:" + b, RoomID: string(room.RoomID), Type: "m.room.message",
			PrevEvents: []string{s.EventID()}, AuthEvents: auth[:2], Depth: 53, Content: c}
		x, err := version.NewEventBuilderFromProtoEvent(&xProto).Build(time.Now(), b, keyID, key)
		if err != nil {
			t.Fatal(err)
		}
		if res := send("rejected-1", x); res == nil || res["error"] != nil {
			t.Fatalf("rejected message: %v", res)
		}
		y := build([]string{x.EventID()}, 54, "Y: 却下の後")
		if res := send("rejected-2", y); res == nil || res["error"] != nil {
			t.Fatalf("an event after a rejected one: %v", res)
		}
		waitHistory(t, alice, room.RoomID, func(bodies []string) bool {
			return len(bodies) > 0 && bodies[len(bodies)-1] == "Y: 却下の後"
		})
		if resp, err = alice.Messages(ctxT(t), room.RoomID, "", "", mautrix.DirectionBackward, nil, 100); err != nil {
			t.Fatal(err)
		}
		for _, ev := range resp.Chunk {
			if string(ev.ID) == x.EventID() {
				t.Error("the rejected message is in the timeline")
			}
		}

		// An event sent directly whose prev_events nobody gives is refused.
		mu.Lock()
		gapAnswer, _ = json.Marshal(map[string]any{"events": []json.RawMessage{}})
		mu.Unlock()
		lost := build([]string{"$never-seen"}, 60, "迷子")
		if res := send("gap-2", lost); res == nil || !strings.Contains(fmt.Sprint(res["error"]), "missing prev_events") {
			t.Fatalf("an event after an unclosable gap: %v", res)
		}
	})
}

// interceptPeer listens at addr (an address of city's IP, which other
// cities were routed to) as city, with city's certificate: intercept
// answers what it wants to (returning true), everything else goes on to
// the real city.
func interceptPeer(t *testing.T, city *fedCity, addr string, intercept func(http.ResponseWriter, *http.Request) bool) {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(city.cfg.Federation.TLSCert, city.cfg.Federation.TLSKey)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "https", Host: city.addr})
	rp.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	proxy := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !intercept(w, r) {
			rp.ServeHTTP(w, r)
		}
	}), TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}}
	go func() { _ = proxy.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { proxy.Close() })
}

// TestFederatedJoinRefusalPassedOn: the other server's refusal of a
// make_join (here M_INCOMPATIBLE_ROOM_VERSION with its room_version) is the
// client's answer, as it came.
func TestFederatedJoinRefusalPassedOn(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		const a, b = "city-a.test", "city-b.test"
		proxyAddr := testrig.FreePort(t, "127.0.0.11") // city-a's address in startFederation
		cities := startFederation(t, engine, []string{a, b}, map[string][]string{a: {b}, b: {a}}, map[string]map[string]string{b: {a: proxyAddr}})
		interceptPeer(t, cities[a], proxyAddr, func(w http.ResponseWriter, r *http.Request) bool {
			if !strings.HasPrefix(r.URL.Path, "/_matrix/federation/v1/make_join/") {
				return false
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"errcode":"M_INCOMPATIBLE_ROOM_VERSION","error":"upgrade","room_version":"org.example.future"}`))
			return true
		})
		alice := register(t, cities[a].srv, "alice")
		bob := register(t, cities[b].srv, "bob")
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("POST", baseURL(cities[b].srv)+"/_matrix/client/v3/join/"+url.PathEscape(string(room.RoomID))+"?server_name="+a, strings.NewReader("{}"))
		req.Header.Set("Authorization", "Bearer "+bob.AccessToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		if resp.StatusCode != 400 || out["errcode"] != "M_INCOMPATIBLE_ROOM_VERSION" || out["room_version"] != "org.example.future" {
			t.Fatalf("join refused by the room's server: %d %v", resp.StatusCode, out)
		}
	})
}

// fedSend is server from's /send of pdus to city, signed with from's key:
// the result for each PDU.
func fedSend(t *testing.T, city *fedCity, from string, keyID gomatrixserverlib.KeyID, key ed25519.PrivateKey, txnID string, pdus ...gomatrixserverlib.PDU) map[string]map[string]any {
	t.Helper()
	raw := make([]json.RawMessage, len(pdus))
	for i, pdu := range pdus {
		raw[i] = pdu.JSON()
	}
	body, _ := json.Marshal(map[string]any{"origin": from, "origin_server_ts": time.Now().UnixMilli(), "pdus": raw})
	req := signedRequest(t, city, from, keyID, key, "PUT", "/_matrix/federation/v1/send/"+txnID, json.RawMessage(body))
	resp, err := insecureFed(city.name).Do(req)
	if err != nil {
		t.Error(err)
		return nil
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	var out struct {
		PDUs map[string]map[string]any `json:"pdus"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(answer, &out) != nil {
		t.Errorf("send: %d %s", resp.StatusCode, answer)
	}
	return out.PDUs
}

// TestFederatedSameEventAtOnce: one event sent in several transactions at
// once is stored once; none of them fails, and the room goes on (a second
// copy committed beside the first used to fail the batch and reset the
// room, and the local event in that batch with it).
func TestFederatedSameEventAtOnce(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		const a, b = "city-a.test", "city-b.test"
		cities := startFederation(t, engine, []string{a, b}, map[string][]string{a: {b}, b: {a}}, nil)
		keyID, key, err := server.LoadKey(cities[b].cfg.Path(cities[b].cfg.SigningKeyPath))
		if err != nil {
			t.Fatal(err)
		}
		alice := register(t, cities[a].srv, "alice")
		bob := register(t, cities[b].srv, "bob")
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if code, me := do(t, http.DefaultClient, "POST", baseURL(cities[b].srv)+"/_matrix/client/v3/join/"+string(room.RoomID), bob.AccessToken, map[string]any{}, nil); code != 200 {
			t.Fatalf("join: %d %+v", code, me)
		}
		for round := range 5 {
			snap, err := cities[a].srv.Rooms.CurrentState(ctxT(t), string(room.RoomID))
			if err != nil {
				t.Fatal(err)
			}
			latest, _ := cities[a].srv.Rooms.Latest(ctxT(t), string(room.RoomID))
			c, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": fmt.Sprintf("同時 %d", round)})
			proto := gomatrixserverlib.ProtoEvent{SenderID: string(bob.UserID), RoomID: string(room.RoomID), Type: "m.room.message",
				PrevEvents: latest, Depth: 100 + int64(round), Content: c,
				AuthEvents: []string{snap.Get("m.room.create", "").ID(), snap.Get("m.room.power_levels", "").ID(), snap.Get("m.room.member", string(bob.UserID)).ID()}}
			pdu, err := gomatrixserverlib.MustGetRoomVersion("10").NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), spec.ServerName(b), keyID, key)
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			for i := range 6 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if res := fedSend(t, cities[a], b, keyID, key, fmt.Sprintf("same-%d-%d", round, i), pdu)[pdu.EventID()]; res["error"] != nil {
						t.Errorf("copy %d: %v", i, res)
					}
				}()
			}
			// alice talks meanwhile: her events share the writer's batches.
			if _, err := alice.SendText(ctxT(t), room.RoomID, fmt.Sprintf("その間 %d", round)); err != nil {
				t.Fatalf("alice's message beside the copies: %v", err)
			}
			wg.Wait()
		}
		msgs, err := alice.Messages(ctxT(t), room.RoomID, "", "", mautrix.DirectionBackward, nil, 100)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]int{}
		for _, ev := range msgs.Chunk {
			if body, _ := ev.Content.Raw["body"].(string); body != "" {
				seen[body]++
			}
		}
		for round := range 5 {
			if n := seen[fmt.Sprintf("同時 %d", round)]; n != 1 {
				t.Errorf("同時 %d is in the timeline %d times", round, n)
			}
			if n := seen[fmt.Sprintf("その間 %d", round)]; n != 1 {
				t.Errorf("その間 %d is in the timeline %d times", round, n)
			}
		}
	})
}

// signedRequest is server from's federation request to city, signed with
// from's key, ready for insecureFed(city.name). body may be nil.
func signedRequest(t *testing.T, city *fedCity, from string, keyID gomatrixserverlib.KeyID, key ed25519.PrivateKey, method, path string, body any) *http.Request {
	t.Helper()
	fr := fclient.NewFederationRequest(method, spec.ServerName(from), spec.ServerName(city.name), path)
	if body != nil {
		if err := fr.SetContent(body); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
	if err := fr.Sign(spec.ServerName(from), keyID, key); err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	req, err := fr.HTTPRequest()
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	req.URL.Scheme, req.URL.Host = "https", city.addr
	return req
}
