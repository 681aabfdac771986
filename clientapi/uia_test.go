package clientapi

import (
	"fmt"
	"testing"
	"time"
)

func TestUIASessions(t *testing.T) {
	var u uiaSessions
	now := time.Date(2026, 4, 1, 9, 0, 0, 0, time.UTC)

	id := u.start("@a:x", "account/password", now)
	s, ok := u.get(id, now.Add(uiaTTL-time.Second))
	if !ok || s.userID != "@a:x" || s.purpose != "account/password" || s.done {
		t.Fatalf("live session: %+v %v", s, ok)
	}
	if _, ok := u.get(id, now.Add(uiaTTL)); ok {
		t.Fatal("session outlived its TTL")
	}
	if _, ok := u.get("nope", now); ok {
		t.Fatal("unknown session found")
	}
	if !u.finish(id) || u.finish(id) {
		t.Fatal("a session must finish exactly once")
	}
	if s, ok := u.get(id, now); !ok || !s.done {
		t.Fatalf("a finished session is remembered until it expires: %+v %v", s, ok)
	}

	// One user's sessions are bounded: the oldest of theirs goes first,
	// other users' stay.
	other := u.start("@b:x", "account/deactivate", now)
	var ids []string
	for i := range uiaMaxPerUser + 3 {
		ids = append(ids, u.start("@a:x", fmt.Sprint("op", i), now.Add(time.Duration(i+1)*time.Millisecond)))
	}
	if got := u.perUser["@a:x"]; got != uiaMaxPerUser {
		t.Fatalf("alice has %d sessions, want %d", got, uiaMaxPerUser)
	}
	if _, ok := u.get(ids[0], now); ok {
		t.Fatal("alice's oldest session survived the bound")
	}
	if _, ok := u.get(ids[len(ids)-1], now); !ok {
		t.Fatal("alice's newest session was evicted")
	}
	if _, ok := u.get(other, now); !ok {
		t.Fatal("bob's session was evicted by alice's")
	}

	// The whole table is bounded, and expired sessions make room first.
	later := now.Add(uiaTTL)
	for i := range uiaMaxSessions + 10 {
		u.start(fmt.Sprintf("@u%d:x", i), "op", later.Add(time.Duration(i)*time.Microsecond))
	}
	if len(u.m) != uiaMaxSessions {
		t.Fatalf("%d sessions, want the bound %d", len(u.m), uiaMaxSessions)
	}
	if _, ok := u.m[other]; ok {
		t.Fatal("an expired session was kept while the table was full")
	}
	total := 0
	for _, n := range u.perUser {
		total += n
	}
	if total != len(u.m) {
		t.Fatalf("per-user counts sum to %d, table holds %d", total, len(u.m))
	}
}
