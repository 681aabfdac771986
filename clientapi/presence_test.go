package clientapi

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/machi-chat/machi/storage"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time             { return c.t }
func (c *fakeClock) add(d time.Duration)        { c.t = c.t.Add(d) }
func (v presenceView) is(p string, a bool) bool { return v.Presence == p && v.Active == a }

func TestPresenceTracker(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 4, 1, 9, 0, 0, 0, time.UTC)}
	p := NewPresence(clock.now)
	const alice, bob = "@alice:test", "@bob:test"
	start := p.Current()
	if start != uint64(clock.t.UnixMilli()) {
		t.Fatalf("counter starts at %d, want the boot time in ms", start)
	}

	// A sync brings alice online, once.
	if !p.SyncStarted(alice, "") {
		t.Fatal("first sync did not bring alice online")
	}
	if p.SyncStarted(alice, "") {
		t.Fatal("second sync changed presence again")
	}
	if v := p.Get(alice); !v.is(presOnline, true) || v.LastActive != clock.t.UnixMilli() {
		t.Fatalf("alice = %+v", v)
	}
	if got := p.ChangedIn(start, p.Current()); len(got) != 1 || got[0].UserID != alice {
		t.Fatalf("ChangedIn = %+v", got)
	}
	if got := p.ChangedIn(p.Current(), p.Current()); len(got) != 0 {
		t.Fatalf("nothing changed since now, got %+v", got)
	}

	// Idle: currently_active clears, presence stays online while syncing.
	clock.add(presenceIdleAfter)
	if got := p.Sweep(); !slices.Equal(got, []string{alice}) || !p.Get(alice).is(presOnline, false) {
		t.Fatalf("idle sweep = %v, alice %+v", got, p.Get(alice))
	}
	if got := p.Sweep(); len(got) != 0 {
		t.Fatalf("second sweep changed %v", got)
	}
	// Activity makes her currently active again.
	if !p.Active(alice) || !p.Get(alice).is(presOnline, true) {
		t.Fatalf("activity: %+v", p.Get(alice))
	}
	if p.Active(alice) {
		t.Fatal("activity while active changed presence")
	}

	// Her syncs end; a minute later she is offline.
	p.SyncEnded(alice)
	p.SyncEnded(alice)
	clock.add(presenceOfflineAfter - time.Second)
	if got := p.Sweep(); len(got) != 0 {
		t.Fatalf("offline too early: %v", got)
	}
	clock.add(time.Second)
	if got := p.Sweep(); !slices.Equal(got, []string{alice}) || !p.Get(alice).is(presOffline, false) {
		t.Fatalf("offline sweep = %v, alice %+v", got, p.Get(alice))
	}

	// By hand: unavailable with a status sticks through syncs without
	// set_presence, not through set_presence=online.
	before := p.Current()
	st, changed := p.Set(alice, presUnavailable, strp("会議中"))
	if !changed || st != (storage.PresenceState{UserID: alice, Presence: presUnavailable, StatusMsg: "会議中", LastActiveTS: clock.t.UnixMilli()}) {
		t.Fatalf("Set = %+v, %v", st, changed)
	}
	if _, changed := p.Set(alice, presUnavailable, nil); changed {
		t.Fatal("setting the same presence again changed it")
	}
	if p.SyncStarted(alice, "") || p.Get(alice).Presence != presUnavailable {
		t.Fatalf("sync overrode unavailable set by hand: %+v", p.Get(alice))
	}
	if p.Active(alice) || p.Get(alice).Presence != presUnavailable {
		t.Fatal("activity overrode unavailable set by hand")
	}
	if !p.SyncStarted(alice, presOnline) || !p.Get(alice).is(presOnline, true) || p.Get(alice).StatusMsg != "会議中" {
		t.Fatalf("set_presence=online: %+v", p.Get(alice))
	}
	if !p.SyncStarted(alice, presUnavailable) || p.Get(alice).Presence != presUnavailable {
		t.Fatal("set_presence=unavailable did not mark alice idle")
	}
	if p.SyncStarted(alice, presOffline) || p.Get(alice).Presence != presUnavailable {
		t.Fatal("set_presence=offline changed presence")
	}
	if p.Current() <= before {
		t.Fatal("counter did not move")
	}

	// bob: set_presence=offline never brings him online, nor does his
	// activity; a sync without it does.
	if p.SyncStarted(bob, presOffline) || p.Get(bob).Presence != presOffline {
		t.Fatal("set_presence=offline brought bob online")
	}
	if p.Active(bob) || p.Get(bob).Presence != presOffline {
		t.Fatal("bob's activity brought him online")
	}
	if !p.SyncStarted(bob, "") || p.Get(bob).Presence != presOnline {
		t.Fatal("bob's sync did not bring him online")
	}
	p.SyncEnded(bob)
	// Offline by hand stays through syncs and activity; choosing it when
	// already offline is a change (it must be stored).
	p.SyncEnded(bob)
	clock.add(presenceOfflineAfter)
	if got := p.Sweep(); !slices.Contains(got, bob) {
		t.Fatalf("bob not offline after his sync ended: %v", got)
	}
	if _, changed := p.Set(bob, presOffline, strp("")); !changed {
		t.Fatal("offline by hand over offline reported no change")
	}
	if p.SyncStarted(bob, "") || p.Active(bob) || p.Get(bob).Presence != presOffline {
		t.Fatalf("offline by hand undone: %+v", p.Get(bob))
	}

	// After a restart: status kept, everyone offline, offline by hand kept.
	clock.add(time.Hour)
	q := NewPresence(clock.now)
	if q.Current() <= p.Current() {
		t.Fatalf("restarted counter %d not past %d", q.Current(), p.Current())
	}
	q.Load([]storage.PresenceState{{UserID: alice, Presence: presUnavailable, StatusMsg: "会議中", LastActiveTS: 5}, {UserID: bob, Presence: presOffline, LastActiveTS: 6}})
	if v := q.Get(alice); v.Presence != presOffline || v.StatusMsg != "会議中" || v.LastActive != 5 {
		t.Fatalf("alice after restart: %+v", v)
	}
	if !q.SyncStarted(alice, "") || q.SyncStarted(bob, "") {
		t.Fatal("after restart: alice should come online, bob (offline by hand) not")
	}
	if got := q.Known(q.Current()); len(got) != 2 {
		t.Fatalf("Known = %+v", got)
	}
	q.Forget(alice)
	if v := q.Get(alice); v.StatusMsg != "" || v.Presence != presOffline {
		t.Fatalf("forgotten alice: %+v", v)
	}
}

func TestSyncTokenWithPresence(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want syncToken
		ok   bool
	}{
		{"s12_3_1764567890123", syncToken{pos: 12, typing: 3, presence: 1764567890123}, true},
		{"s12_3", syncToken{pos: 12, typing: 3}, true}, // before presence
		{"s12", syncToken{pos: 12}, true},
		{"s12_3_x", syncToken{}, false},
		{"s12_3_-1", syncToken{}, false},
	} {
		got, err := parseSyncToken(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("parseSyncToken(%q) = %+v, %v; want %+v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
		if tc.ok && len(tc.in) > 6 {
			if back, _ := parseSyncToken(got.String()); back != got {
				t.Errorf("%+v does not survive String: %q", got, got.String())
			}
		}
	}
	if got := (syncToken{pos: 5, typing: 0, presence: 7}).String(); got != "s5_0_7" {
		t.Fatalf("String = %q", got)
	}
}

// ChangedIn answers the same from the log of recent changes as from a walk
// of every user, and falls back to the walk once the log is trimmed.
func TestPresenceChangedInLog(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 4, 1, 9, 0, 0, 0, time.UTC)}
	p := NewPresence(clock.now)
	start := p.Current()
	walk := func(from, to uint64) []string {
		var out []string
		for id, e := range p.users {
			if e.changedAt > from && e.changedAt <= to {
				out = append(out, id)
			}
		}
		slices.Sort(out)
		return out
	}
	ids := func(vs []presenceView) []string {
		var out []string
		for _, v := range vs {
			out = append(out, v.UserID)
		}
		slices.Sort(out)
		return out
	}
	n := 0
	for round := 0; round < 3*presenceLogMax; round++ {
		u := fmt.Sprintf("@u%d:test", round%300)
		n++
		p.Set(u, presOnline, strp(fmt.Sprint(n)))
		if round%997 == 0 {
			cur := p.Current()
			for _, from := range []uint64{start, cur - 1, cur - 500, cur - presenceLogMax + 1, cur - 3*presenceLogMax} {
				if from < start {
					from = start
				}
				for _, to := range []uint64{cur, cur - 1, (from + cur) / 2} {
					if to < from {
						continue
					}
					if got, want := ids(p.ChangedIn(from, to)), walk(from, to); !slices.Equal(got, want) {
						t.Fatalf("round %d: ChangedIn(%d, %d) = %d users, want %d", round, from-start, to-start, len(got), len(want))
					}
				}
			}
		}
	}
	if len(p.log) >= 2*presenceLogMax {
		t.Fatalf("log not trimmed: %d entries", len(p.log))
	}
	last := fmt.Sprintf("@u%d:test", (3*presenceLogMax-1)%300)
	if got := ids(p.ChangedIn(p.Current()-1, p.Current())); !slices.Equal(got, []string{last}) {
		t.Fatalf("last change = %v, want %s", got, last)
	}
	p.Forget(last)
	if got := ids(p.ChangedIn(p.Current()-10, p.Current())); slices.Contains(got, last) {
		t.Fatal("a forgotten user is still reported")
	}
}
