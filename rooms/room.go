package rooms

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/storage"
)

// recentMax is how many recent events a room keeps in memory for /sync.
const recentMax = 64

// room is a room's in-memory head.
type room struct {
	id      string
	version gomatrixserverlib.IRoomVersion
	broken  atomic.Bool
	used    atomic.Int64 // stream position of last use, for eviction
	// inflight counts events queued but not yet committed; such a room
	// is never evicted, or a reload would miss them.
	inflight atomic.Int32
	// queued are the events of this room handed to the writer and not yet
	// committed, by ID: an event another server sends twice at once (by
	// /send and by /get_missing_events, say) waits for the first copy
	// instead of being committed twice. Own lock: the writer removes them.
	qmu    sync.Mutex
	queued map[string]*pending

	mu     sync.Mutex // held while building an event
	latest []string
	depth  int64
	group  int64
	chain  int
	snap   *Snapshot
	joined []string // local joined users, replaced (never mutated) on change
	// servers are the other servers with members joined, which are sent
	// this server's events; replaced (never mutated) on change.
	servers []string
	// extState is the state after each forward extremity built or
	// received since the room was loaded (some may not be committed yet).
	extState map[string]*Snapshot
	// rejoinedPos is the position of this server's latest join through
	// another server after it had left the room (0: none): the state
	// before it is the one that server gave, not what the events before
	// it here lead to.
	rejoinedPos int64

	rmu    sync.RWMutex
	recent []*Event // newest last, ascending Pos, at most recentMax
	// recent holds every event of the room with Pos > recentFloor; an
	// event at recentFloor exists unless it is 0.
	recentFloor int64
}

func (r *room) addRecent(ev *Event) {
	r.rmu.Lock()
	defer r.rmu.Unlock()
	if len(r.recent) == recentMax {
		r.recentFloor = r.recent[0].Pos
		copy(r.recent, r.recent[1:])
		r.recent = r.recent[:recentMax-1]
	}
	r.recent = append(r.recent, ev)
}

func (r *room) removeRecent(pos int64) {
	r.rmu.Lock()
	defer r.rmu.Unlock()
	for i, ev := range r.recent {
		if ev.Pos == pos {
			r.recent = append(r.recent[:i:i], r.recent[i+1:]...)
			return
		}
	}
}

// replaceRecent swaps in the redacted copy of an event.
func (r *room) replaceRecent(ev *Event) {
	r.rmu.Lock()
	defer r.rmu.Unlock()
	for i, old := range r.recent {
		if old.ID() == ev.ID() {
			r.recent[i] = ev
			return
		}
	}
}

// recentBetween returns the room's events with from < Pos <= to, oldest
// first, at most limit of the newest; ok is false when memory does not
// hold all of them.
func (r *room) recentBetween(from, to int64, limit int) (evs []*Event, limited, ok bool) {
	r.rmu.RLock()
	defer r.rmu.RUnlock()
	end := sort.Search(len(r.recent), func(i int) bool { return r.recent[i].Pos > to })
	start := sort.Search(len(r.recent), func(i int) bool { return r.recent[i].Pos > from })
	if start > end {
		start = end
	}
	if end-start >= limit {
		// An event exists at recentFloor (when not 0), so from below it
		// means more events than memory holds.
		limited := end-start > limit || from < r.recentFloor
		return append([]*Event(nil), r.recent[end-limit:end]...), limited, true
	}
	if from < r.recentFloor {
		return nil, false, false
	}
	return append([]*Event(nil), r.recent[start:end]...), false, true
}

// room returns the room, loading it from the database if needed.
func (s *Service) room(ctx context.Context, roomID string) (*room, error) {
	s.mu.Lock()
	r, ok := s.rooms[roomID]
	s.mu.Unlock()
	if ok && !r.broken.Load() {
		r.used.Store(s.stream.Current())
		return r, nil
	}
	r, err := s.loadRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.rooms[roomID]; ok && !cur.broken.Load() {
		return cur, nil // another caller loaded it first
	}
	s.evictLocked()
	s.rooms[roomID] = r
	return r, nil
}

// Version returns a room's version.
func (s *Service) Version(ctx context.Context, roomID string) (gomatrixserverlib.IRoomVersion, error) {
	r, err := s.room(ctx, roomID)
	if err != nil {
		return nil, err
	}
	return r.version, nil
}

// TimelineFloor is the position a timeline of the room must not reach
// below: just before this server's latest join of it through another
// server after it had left (0: none). The state there was replaced by the
// one that server gave, so no state at the start of a timeline reaching
// further back says what the client must know after it.
func (s *Service) TimelineFloor(ctx context.Context, roomID string) int64 {
	r, err := s.room(ctx, roomID)
	if err != nil || r.rejoinedPos == 0 {
		return 0
	}
	return r.rejoinedPos - 1
}

// CurrentState returns the room's current state. It may include state
// events still being committed.
func (s *Service) CurrentState(ctx context.Context, roomID string) (*Snapshot, error) {
	r, err := s.room(ctx, roomID)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.snap, nil
}

func (s *Service) loadRoom(ctx context.Context, roomID string) (*room, error) {
	row, err := s.store.GetRoom(ctx, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, ErrUnknownRoom
	} else if err != nil {
		return nil, fmt.Errorf("load room: %w", err)
	}
	version, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(row.Version))
	if err != nil {
		return nil, fmt.Errorf("room %s: %w", roomID, err)
	}
	snap, err := s.StateAt(ctx, version, row.StateGroup)
	if err != nil {
		return nil, err
	}
	grp, err := s.store.GetStateGroup(ctx, row.StateGroup)
	if err != nil {
		return nil, fmt.Errorf("load room state group: %w", err)
	}
	r := &room{
		id: roomID, version: version, latest: row.Latest, depth: row.Depth,
		group: row.StateGroup, chain: grp.Depth, snap: snap, rejoinedPos: row.RejoinedPos,
	}
	r.joined = s.localJoined(snap)
	r.servers = s.remoteServers(snap)
	// Fill the recent events, so /sync is served from memory.
	cur := s.stream.Current()
	// One more than kept: its position becomes recentFloor, an event
	// known to exist below the ones in memory.
	rows, err := s.store.RoomEvents(ctx, roomID, 0, cur, recentMax+1, true)
	if err != nil {
		return nil, fmt.Errorf("load recent events: %w", err)
	}
	if len(rows) > recentMax {
		r.recentFloor = rows[recentMax].Pos
		rows = rows[:recentMax]
	}
	for i, j := 0, len(rows)-1; i < j; i, j = i+1, j-1 {
		rows[i], rows[j] = rows[j], rows[i]
	}
	evs, err := s.fromRows(ctx, version, rows)
	if err != nil {
		return nil, err
	}
	r.recent = evs
	r.used.Store(cur)
	return r, nil
}

// evict drops a room from memory (after a failed commit).
func (s *Service) evict(r *room) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rooms[r.id] == r {
		delete(s.rooms, r.id)
	}
}

// evictLocked keeps the room cache under MaxRooms by dropping the least
// recently used quarter.
func (s *Service) evictLocked() {
	if len(s.rooms) < s.cfg.MaxRooms {
		return
	}
	all := make([]*room, 0, len(s.rooms))
	for _, r := range s.rooms {
		all = append(all, r)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].used.Load() < all[j].used.Load() })
	for _, r := range all[:len(all)/4+1] {
		if r.inflight.Load() == 0 {
			delete(s.rooms, r.id)
		}
	}
}

// RoomEvents returns the room's events with from < Pos <= to: the newest
// limit of them, oldest first, and whether older ones were left out.
func (s *Service) RoomEvents(ctx context.Context, roomID string, from, to int64, limit int) ([]*Event, bool, error) {
	r, err := s.room(ctx, roomID)
	if err != nil {
		return nil, false, err
	}
	if evs, limited, ok := r.recentBetween(from, to, limit); ok {
		return evs, limited, nil
	}
	rows, err := s.store.RoomEvents(ctx, roomID, from, to, limit+1, true)
	if err != nil {
		return nil, false, err
	}
	limited := len(rows) > limit
	if limited {
		rows = rows[:limit]
	}
	for i, j := 0, len(rows)-1; i < j; i, j = i+1, j-1 {
		rows[i], rows[j] = rows[j], rows[i]
	}
	evs, err := s.fromRows(ctx, r.version, rows)
	return evs, limited, err
}

// Recent returns the events of the room held in memory (up to the last
// 64) with Pos <= to, oldest first, never reading the database.
func (s *Service) Recent(ctx context.Context, roomID string, to int64) ([]*Event, error) {
	r, err := s.room(ctx, roomID)
	if err != nil {
		return nil, err
	}
	r.rmu.RLock()
	defer r.rmu.RUnlock()
	end := sort.Search(len(r.recent), func(i int) bool { return r.recent[i].Pos > to })
	return append([]*Event(nil), r.recent[:end]...), nil
}

// Paginate returns up to limit events of the room for /messages:
// backwards, those with to < Pos <= from, newest first; forwards, those
// with from < Pos <= to, oldest first.
func (s *Service) Paginate(ctx context.Context, roomID string, from, to int64, backwards bool, limit int) ([]*Event, error) {
	r, err := s.room(ctx, roomID)
	if err != nil {
		return nil, err
	}
	var rows []storage.Event
	if backwards {
		rows, err = s.store.RoomEvents(ctx, roomID, to, from, limit, true)
	} else {
		rows, err = s.store.RoomEvents(ctx, roomID, from, to, limit, false)
	}
	if err != nil {
		return nil, err
	}
	return s.fromRows(ctx, r.version, rows)
}

// EventsAtTS returns up to limit events of the room by origin_server_ts:
// forwards, those at or after ts, earliest first; backwards, those at or
// before ts, latest first.
func (s *Service) EventsAtTS(ctx context.Context, roomID string, ts int64, forward bool, limit int) ([]*Event, error) {
	r, err := s.room(ctx, roomID)
	if err != nil {
		return nil, err
	}
	rows, err := s.store.EventsAtTS(ctx, roomID, ts, forward, limit)
	if err != nil {
		return nil, err
	}
	return s.fromRows(ctx, r.version, rows)
}

// redactionTarget finds the event a redaction redacts and checks the
// server-side rule the auth rules leave to the sender's server: a user may
// redact their own events, or others' with the redact power level.
func (s *Service) redactionTarget(ctx context.Context, r *room, req *Request) (*Event, error) {
	if req.Redacts == "" {
		return nil, fmt.Errorf("%w: redaction without redacts", ErrBadEvent)
	}
	rows, err := s.store.GetEvents(ctx, []string{req.Redacts})
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		// A redaction of an unknown event is allowed by the spec; there
		// is just nothing to strip.
		return nil, nil
	}
	if rows[0].RoomID != r.id {
		// The redaction could never apply: the event it names is in
		// another room (redactions apply within their room only).
		return nil, ErrRedactOtherRoom
	}
	target, err := s.fromRow(r.version, rows[0], nil)
	if err != nil {
		return nil, err
	}
	if target.Sender() != req.Sender {
		var pl gomatrixserverlib.PowerLevelContent
		if ev := r.snap.Get(spec.MRoomPowerLevels, ""); ev != nil {
			p, err := ev.PDU.PowerLevels()
			if err != nil {
				return nil, err
			}
			pl = *p
		} else {
			pl.Defaults()
		}
		if pl.UserLevel(spec.SenderID(req.Sender)) < pl.Redact {
			return nil, &Forbidden{Reason: "you may only redact your own events unless you have the redact power level"}
		}
	}
	if target.RedactedBy != "" {
		return nil, nil
	}
	return target, nil
}

// redact applies redaction red to target in memory and returns the
// redacted copy.
func (s *Service) redact(r *room, target, red *Event) (*Event, error) {
	js, err := r.version.RedactEventJSON(target.PDU.JSON())
	if err != nil {
		return nil, fmt.Errorf("redact %s: %w", target.ID(), err)
	}
	pdu, err := r.version.NewEventFromTrustedJSONWithEventID(target.ID(), js, true)
	if err != nil {
		return nil, fmt.Errorf("redact %s: %w", target.ID(), err)
	}
	ev, err := newEvent(pdu, target.Pos, target.StateGroup, red)
	if err != nil {
		return nil, err
	}
	ev.TxnDevice, ev.TxnID = target.TxnDevice, target.TxnID
	r.replaceRecent(ev)
	return ev, nil
}

// memberIndex maps local users to their room memberships, for /sync.
type memberIndex struct {
	store storage.Rooms
	mu    sync.Mutex
	users map[string]map[string]storage.Membership
}

func newMemberIndex(store storage.Rooms) *memberIndex {
	return &memberIndex{store: store, users: map[string]map[string]storage.Membership{}}
}

// get returns a copy of the user's memberships.
func (m *memberIndex) get(ctx context.Context, userID string) (map[string]storage.Membership, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	rooms, ok := m.users[userID]
	if !ok {
		// Loaded under the lock so no update can slip in between.
		list, err := m.store.UserMemberships(ctx, userID)
		if err != nil {
			return nil, fmt.Errorf("load memberships: %w", err)
		}
		rooms = make(map[string]storage.Membership, len(list))
		for _, ms := range list {
			rooms[ms.RoomID] = ms
		}
		m.users[userID] = rooms
	}
	out := make(map[string]storage.Membership, len(rooms))
	for k, v := range rooms {
		out[k] = v
	}
	return out, nil
}

func (m *memberIndex) update(ms storage.Membership) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if rooms, ok := m.users[ms.UserID]; ok {
		rooms[ms.RoomID] = ms
	}
}

// forget marks a membership forgotten in the index.
func (m *memberIndex) forget(userID, roomID string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if rooms, ok := m.users[userID]; ok {
		if ms, ok := rooms[roomID]; ok {
			ms.Forgotten = true
			rooms[roomID] = ms
		}
	}
}

// Forget hides a room the user has left from their /sync.
func (s *Service) Forget(ctx context.Context, userID, roomID string) error {
	rooms, err := s.members.get(ctx, userID)
	if err != nil {
		return err
	}
	ms, ok := rooms[roomID]
	if !ok {
		return ErrUnknownRoom
	}
	if ms.Membership == spec.Join || ms.Membership == spec.Invite {
		return &Forbidden{Reason: "you must leave the room before forgetting it"}
	}
	if err := s.store.ForgetRoom(ctx, userID, roomID); err != nil {
		return err
	}
	s.members.forget(userID, roomID)
	return nil
}

// queue records p's events as handed to the writer.
func (r *room) queue(p *pending) {
	r.qmu.Lock()
	if r.queued == nil {
		r.queued = map[string]*pending{}
	}
	for _, ev := range p.evs {
		r.queued[ev.ID()] = p
	}
	r.qmu.Unlock()
}

// committed forgets p's events (committed or failed).
func (r *room) committed(p *pending) {
	r.qmu.Lock()
	for _, ev := range p.evs {
		if r.queued[ev.ID()] == p {
			delete(r.queued, ev.ID())
		}
	}
	r.qmu.Unlock()
}

// queuedEvent is the pending commit holding event id, if any.
func (r *room) queuedEvent(id string) *pending {
	r.qmu.Lock()
	defer r.qmu.Unlock()
	return r.queued[id]
}
