package rooms

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/internal/testrig"
	"github.com/machi-chat/machi/policy"
	"github.com/machi-chat/machi/storage"
)

func newServiceB(t testing.TB, store storage.Store) *Service { return newService(t, store, nil) }

func newService(t testing.TB, store storage.Store, pol Policy) *Service {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(nil)
	if pol == nil {
		pol = allowAll{}
	}
	s, err := New(context.Background(), Config{ServerName: "test.local", KeyID: "ed25519:a", Key: key, DefaultVersion: "10"}, store, pol)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

type allowAll struct{}

func (allowAll) CheckEvent(context.Context, policy.EventInput) *policy.Denial { return nil }

// denyType refuses one event type, the way a city rule would.
type denyType string

func (d denyType) CheckEvent(_ context.Context, in policy.EventInput) *policy.Denial {
	if in.Type == string(d) {
		return &policy.Denial{RuleID: "test-rule", JA: "不可", EN: "refused"}
	}
	return nil
}

func msg(body string) json.RawMessage {
	b, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": body})
	return b
}

func TestCreateSendReload(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		for _, version := range []string{"10", "11", "12"} {
			t.Run("v"+version, func(t *testing.T) {
				ctx := context.Background()
				store := testrig.OpenStore(t, engine)
				s := newService(t, store, nil)
				name := "会議室"
				roomID, err := s.CreateRoom(ctx, &CreateRequest{Creator: "@alice:test.local", Version: version, Preset: "private_chat", Name: &name, Invite: []string{"@bob:test.local"}})
				if err != nil {
					t.Fatal(err)
				}
				// bob is invited: his join is allowed; carol's is not.
				join := json.RawMessage(`{"membership":"join"}`)
				bob := "@bob:test.local"
				if _, err := s.Submit(ctx, &Request{RoomID: roomID, Sender: bob, Type: spec.MRoomMember, StateKey: &bob, Content: join}); err != nil {
					t.Fatalf("bob join: %v", err)
				}
				carol := "@carol:test.local"
				_, err = s.Submit(ctx, &Request{RoomID: roomID, Sender: carol, Type: spec.MRoomMember, StateKey: &carol, Content: join})
				var forbidden *Forbidden
				if !errors.As(err, &forbidden) {
					t.Fatalf("carol join: err = %v, want Forbidden", err)
				}
				var wg sync.WaitGroup
				for i := 0; i < 20; i++ {
					wg.Add(1)
					go func(i int) {
						defer wg.Done()
						if _, err := s.Submit(ctx, &Request{RoomID: roomID, Sender: "@alice:test.local", Type: "m.room.message", Content: msg(fmt.Sprint(i)), TxnDevice: "D", TxnID: fmt.Sprint("t", i)}); err != nil {
							t.Error(err)
						}
					}(i)
				}
				wg.Wait()
				// Same txn again: the same event, not a new one.
				a, _ := s.Submit(ctx, &Request{RoomID: roomID, Sender: "@alice:test.local", Type: "m.room.message", Content: msg("x"), TxnDevice: "D", TxnID: "t3"})
				b, _ := s.Submit(ctx, &Request{RoomID: roomID, Sender: "@alice:test.local", Type: "m.room.message", Content: msg("y"), TxnDevice: "D", TxnID: "t3"})
				if a == nil || b == nil || a.ID() != b.ID() {
					t.Fatalf("txn idempotency broken: %v vs %v", a, b)
				}
				s.Close()
				// A fresh service sees the same room from the database.
				s2 := newService(t, store, nil)
				snap, err := s2.CurrentState(ctx, roomID)
				if err != nil {
					t.Fatal(err)
				}
				if got := snap.Membership(bob); got != "join" {
					t.Fatalf("bob membership after reload = %q", got)
				}
				if ev := snap.Get("m.room.name", ""); ev == nil {
					t.Fatal("no room name after reload")
				}
				evs, _, err := s2.RoomEvents(ctx, roomID, 0, s2.Stream().Current(), 100)
				if err != nil {
					t.Fatal(err)
				}
				if len(evs) != 8+1+20 { // create, member, pl, join_rules, hist, guest, name, invite, bob join, 20 msgs
					t.Logf("events: %d", len(evs))
				}
				msgs := 0
				for _, ev := range evs {
					if ev.Type() == "m.room.message" {
						msgs++
					}
				}
				if msgs != 20 {
					t.Fatalf("%d messages after reload, want 20", msgs)
				}
				// Send after reload continues the graph.
				ev, err := s2.Submit(ctx, &Request{RoomID: roomID, Sender: bob, Type: "m.room.message", Content: msg("after")})
				if err != nil {
					t.Fatal(err)
				}
				if prev := ev.PDU.PrevEventIDs(); len(prev) != 1 || prev[0] != evs[len(evs)-1].ID() {
					t.Fatalf("prev_events = %v, want [%s]", prev, evs[len(evs)-1].ID())
				}
			})
		}
	})
}

// A policy denial stops the event before anything is stored, and the
// room's stream goes on without a gap.
func TestPolicyDenialStoresNothing(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		store := testrig.OpenStore(t, engine)
		s := newService(t, store, denyType("m.room.topic"))
		roomID, err := s.CreateRoom(ctx, &CreateRequest{Creator: "@alice:test.local", Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		before, err := store.RoomEvents(ctx, roomID, 0, 1<<62, 100, false)
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Submit(ctx, &Request{RoomID: roomID, Sender: "@alice:test.local", Type: "m.room.topic", StateKey: new(string), Content: json.RawMessage(`{"topic":"x"}`)})
		var d *policy.Denial
		if !errors.As(err, &d) || d.RuleID != "test-rule" {
			t.Fatalf("err = %v, want the policy denial", err)
		}
		if _, err := s.Submit(ctx, &Request{RoomID: roomID, Sender: "@alice:test.local", Type: "m.room.message", Content: msg("after")}); err != nil {
			t.Fatal(err)
		}
		after, err := store.RoomEvents(ctx, roomID, 0, 1<<62, 100, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(after) != len(before)+1 || after[len(after)-1].Type != "m.room.message" {
			t.Fatalf("stored %d events after the denial, want %d (+ the message)", len(after), len(before))
		}
		// Creating a room whose initial state is refused stores no room.
		_, err = s.CreateRoom(ctx, &CreateRequest{Creator: "@alice:test.local", Preset: "private_chat", Topic: new(string)})
		if !errors.As(err, &d) {
			t.Fatalf("createRoom with a topic: err = %v, want the denial", err)
		}
	})
}
