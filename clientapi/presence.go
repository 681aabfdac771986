package clientapi

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/machi-chat/machi/storage"
)

// Presence timing.
const (
	// presenceOfflineAfter: a user with no /sync running and none ended
	// this long ago has closed their client.
	presenceOfflineAfter = time.Minute
	// presenceIdleAfter: a user who did nothing for this long is no
	// longer currently_active.
	presenceIdleAfter = 5 * time.Minute
	// presenceSweepEvery is how often the two above are checked.
	presenceSweepEvery = 10 * time.Second
)

// Presence values.
const (
	presOnline      = "online"
	presUnavailable = "unavailable"
	presOffline     = "offline"
)

// Presence holds every user's presence in memory. Every change bumps a
// counter that /sync tokens carry, like typing's; it starts at the boot
// time in milliseconds, so tokens from before a restart stay behind it.
// What a user sets by hand is also stored (storage.Presence) by the caller.
//
// A /sync marks its user online unless they chose otherwise by hand; a
// request that changes something (any method but GET) is activity, which
// makes an online user currently_active but brings nobody online: a user
// whose clients sync with set_presence=offline (or do not sync) stays
// offline while they send. A sweep
// turns users offline once no /sync has run for presenceOfflineAfter, and
// clears currently_active after presenceIdleAfter without activity.
type Presence struct {
	now     func() time.Time
	counter atomic.Uint64 // written under mu; read without it by /sync

	mu    sync.Mutex
	users map[string]*presenceEntry
	// log holds the recent changes in counter order, so that a /sync
	// finds what changed since its token without walking every user.
	log []presenceChange
}

// presenceLogMax is how many recent changes the log keeps (at least).
const presenceLogMax = 4096

type presenceChange struct {
	at     uint64
	userID string
}

type presenceEntry struct {
	id         string
	presence   string
	statusMsg  string
	lastActive int64 // unix ms; 0 when never seen
	active     bool  // currently_active as last announced
	changedAt  uint64
	// byHand is set when the user chose unavailable or offline with PUT:
	// a /sync does not bring them online again.
	byHand   bool
	syncing  int   // /sync requests in flight
	lastSync int64 // unix ms the last /sync ended (or started)
	// remote entries are another server's users, as their server tells:
	// the sweep leaves them alone.
	remote bool
}

// presenceView is one user's presence as /sync and GET show it.
type presenceView struct {
	UserID     string
	Presence   string
	StatusMsg  string
	LastActive int64
	Active     bool
	ChangedAt  uint64
}

// NewPresence returns an empty tracker reading the time from now.
func NewPresence(now func() time.Time) *Presence {
	p := &Presence{now: now, users: map[string]*presenceEntry{}}
	p.counter.Store(uint64(now().UnixMilli()))
	return p
}

// Current is the presence counter, for sync tokens.
func (p *Presence) Current() uint64 { return p.counter.Load() }

// Load restores what users set by hand before a restart: their status
// message, last activity, and a hand-chosen offline. Everyone starts
// offline: nobody is connected yet.
func (p *Presence) Load(list []storage.PresenceState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range list {
		p.users[s.UserID] = &presenceEntry{id: s.UserID, presence: presOffline, statusMsg: s.StatusMsg, lastActive: s.LastActiveTS, byHand: s.Presence == presOffline}
	}
}

func (p *Presence) entry(userID string) *presenceEntry {
	e, ok := p.users[userID]
	if !ok {
		e = &presenceEntry{id: userID, presence: presOffline}
		p.users[userID] = e
	}
	return e
}

// changed records a change of e; call with mu held.
func (p *Presence) changed(e *presenceEntry) {
	e.changedAt = p.counter.Add(1)
	p.log = append(p.log, presenceChange{at: e.changedAt, userID: e.id})
	if len(p.log) >= 2*presenceLogMax {
		p.log = append([]presenceChange(nil), p.log[len(p.log)-presenceLogMax:]...)
	}
}

// SyncStarted notes a /sync of userID with its set_presence parameter and
// reports whether the user's presence changed.
func (p *Presence) SyncStarted(userID, setPresence string) bool {
	now := p.now().UnixMilli()
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.entry(userID)
	e.syncing++
	e.lastSync = now
	switch setPresence {
	case "", presOnline:
		if e.presence == presOnline || (e.byHand && setPresence == "") {
			return false
		}
		e.presence, e.byHand, e.lastActive, e.active = presOnline, false, now, true
	case presUnavailable:
		if e.presence == presUnavailable {
			return false
		}
		e.presence, e.active = presUnavailable, false
	default: // offline: the client is not marked online
		return false
	}
	p.changed(e)
	return true
}

// SyncEnded notes the end of a /sync.
func (p *Presence) SyncEnded(userID string) {
	now := p.now().UnixMilli()
	p.mu.Lock()
	defer p.mu.Unlock()
	if e, ok := p.users[userID]; ok {
		e.syncing--
		e.lastSync = now
	}
}

// Active notes that userID did something and reports whether that changed
// their presence (currently active again).
func (p *Presence) Active(userID string) bool {
	now := p.now().UnixMilli()
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.entry(userID)
	e.lastActive = now
	switch {
	case e.presence == presOnline && !e.active:
		e.active = true
	default:
		return false
	}
	p.changed(e)
	return true
}

// Set is a presence the user chose (PUT /presence); a nil statusMsg keeps
// the current one. It returns what to store and whether anything changed.
func (p *Presence) Set(userID, presence string, statusMsg *string) (storage.PresenceState, bool) {
	now := p.now().UnixMilli()
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.entry(userID)
	before := *e
	e.presence, e.byHand, e.lastActive = presence, presence != presOnline, now
	e.active = presence == presOnline
	if statusMsg != nil {
		e.statusMsg = *statusMsg
	}
	// byHand counts: offline by hand must be stored to outlast a restart.
	changed := before.presence != e.presence || before.statusMsg != e.statusMsg || before.active != e.active || before.byHand != e.byHand
	if changed {
		p.changed(e)
	}
	return storage.PresenceState{UserID: userID, Presence: e.presence, StatusMsg: e.statusMsg, LastActiveTS: now}, changed
}

// SetRemote is another server's user's presence as their server sent it
// (m.presence); it reports whether anything changed.
func (p *Presence) SetRemote(userID, presence, statusMsg string, lastActiveAgo int64, active bool) bool {
	switch presence {
	case presOnline, presUnavailable, presOffline:
	default:
		return false
	}
	now := p.now().UnixMilli()
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.entry(userID)
	before := *e
	e.remote, e.presence, e.statusMsg, e.active = true, presence, statusMsg, active
	e.lastActive = now - max(lastActiveAgo, 0)
	changed := before.presence != e.presence || before.statusMsg != e.statusMsg || before.active != e.active
	if changed {
		p.changed(e)
	}
	return changed
}

// Forget drops a user (a deactivated account).
func (p *Presence) Forget(userID string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.users, userID)
}

// Sweep turns users offline whose clients stopped syncing and clears
// currently_active of idle ones; it returns the users it changed.
func (p *Presence) Sweep() []string {
	now := p.now().UnixMilli()
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for id, e := range p.users {
		switch {
		case e.remote:
			continue
		case e.presence != presOffline && e.syncing == 0 && now-e.lastSync >= presenceOfflineAfter.Milliseconds() &&
			now-e.lastActive >= presenceOfflineAfter.Milliseconds():
			e.presence, e.active, e.byHand = presOffline, false, false
		case e.active && now-e.lastActive >= presenceIdleAfter.Milliseconds():
			e.active = false
		default:
			continue
		}
		p.changed(e)
		out = append(out, id)
	}
	return out
}

// Get returns one user's presence (offline when nothing is known).
func (p *Presence) Get(userID string) presenceView {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e, ok := p.users[userID]; ok {
		return e.view(userID)
	}
	return presenceView{UserID: userID, Presence: presOffline}
}

// ChangedIn lists the users whose presence changed with a counter in
// (from, to].
func (p *Presence) ChangedIn(from, to uint64) []presenceView {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []presenceView
	// Counters are consecutive: the log has every change after from when
	// its first entry is at most from+1.
	if len(p.log) > 0 && p.log[0].at <= from+1 {
		i := sort.Search(len(p.log), func(i int) bool { return p.log[i].at > from })
		seen := map[string]bool{}
		for _, c := range p.log[i:] {
			if c.at > to {
				break
			}
			// A user forgotten since, or changed again after to (the next
			// sync has them), is left out, as in the walk below.
			if e, ok := p.users[c.userID]; ok && !seen[c.userID] && e.changedAt <= to {
				seen[c.userID] = true
				out = append(out, e.view(c.userID))
			}
		}
		return out
	}
	for id, e := range p.users {
		if e.changedAt > from && e.changedAt <= to {
			out = append(out, e.view(id))
		}
	}
	return out
}

// Known returns the presence of every user it knows anything about, as of
// counter to (an initial /sync).
func (p *Presence) Known(to uint64) []presenceView {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []presenceView
	for id, e := range p.users {
		if e.changedAt <= to && (e.changedAt > 0 || e.statusMsg != "" || e.lastActive > 0) {
			out = append(out, e.view(id))
		}
	}
	return out
}

func (e *presenceEntry) view(userID string) presenceView {
	return presenceView{UserID: userID, Presence: e.presence, StatusMsg: e.statusMsg, LastActive: e.lastActive, Active: e.active, ChangedAt: e.changedAt}
}
