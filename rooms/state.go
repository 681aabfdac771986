package rooms

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/storage"
)

// StateKey names one piece of room state.
type StateKey struct{ Type, Key string }

// Snapshot is a room's state at one point: immutable once made, shared by
// readers without locks. A state event makes a new Snapshot (copy on write).
type Snapshot struct {
	events map[StateKey]*Event

	joinedOnce sync.Once
	joined     int
}

func emptySnapshot() *Snapshot { return &Snapshot{events: map[StateKey]*Event{}} }

// Get returns the state event for (typ, key), or nil.
func (s *Snapshot) Get(typ, key string) *Event { return s.events[StateKey{typ, key}] }

// Len is the number of state entries.
func (s *Snapshot) Len() int { return len(s.events) }

// Each calls fn for every state event, in no particular order.
func (s *Snapshot) Each(fn func(*Event)) {
	for _, ev := range s.events {
		fn(ev)
	}
}

// Joined counts the joined members (all servers'), the first time only.
func (s *Snapshot) Joined() int {
	s.joinedOnce.Do(func() {
		for k, ev := range s.events {
			if k.Type == spec.MRoomMember && ev.Membership() == spec.Join {
				s.joined++
			}
		}
	})
	return s.joined
}

// Membership returns the user's membership in this state, or "leave".
// Predecessor is the room an upgrade replaced with this one, as the
// create event names it ("" if none).
func (s *Snapshot) Predecessor() string {
	create := s.Get(spec.MRoomCreate, "")
	if create == nil {
		return ""
	}
	var c struct {
		Predecessor struct {
			RoomID string `json:"room_id"`
		} `json:"predecessor"`
	}
	_ = json.Unmarshal(create.PDU.Content(), &c)
	return c.Predecessor.RoomID
}

func (s *Snapshot) Membership(userID string) string {
	if ev := s.Get("m.room.member", userID); ev != nil {
		return ev.Membership()
	}
	return "leave"
}

// with returns a copy of s with ev added.
func (s *Snapshot) with(ev *Event) *Snapshot {
	n := &Snapshot{events: make(map[StateKey]*Event, len(s.events)+1)}
	for k, v := range s.events {
		n.events[k] = v
	}
	n.events[StateKey{ev.Type(), *ev.StateKey()}] = ev
	return n
}

// entries lists the snapshot as storage entries.
func (s *Snapshot) entries() []storage.StateEntry {
	out := make([]storage.StateEntry, 0, len(s.events))
	for k, ev := range s.events {
		out = append(out, storage.StateEntry{Type: k.Type, StateKey: k.Key, EventID: ev.ID()})
	}
	return out
}

// authProvider exposes a snapshot to gomatrixserverlib's auth rules.
type authProvider struct{ s *Snapshot }

func (a authProvider) pdu(typ, key string) (gomatrixserverlib.PDU, error) {
	if ev := a.s.Get(typ, key); ev != nil {
		return ev.PDU, nil
	}
	return nil, nil
}
func (a authProvider) Create() (gomatrixserverlib.PDU, error) { return a.pdu(spec.MRoomCreate, "") }
func (a authProvider) JoinRules() (gomatrixserverlib.PDU, error) {
	return a.pdu(spec.MRoomJoinRules, "")
}
func (a authProvider) PowerLevels() (gomatrixserverlib.PDU, error) {
	return a.pdu(spec.MRoomPowerLevels, "")
}
func (a authProvider) Member(k spec.SenderID) (gomatrixserverlib.PDU, error) {
	return a.pdu(spec.MRoomMember, string(k))
}
func (a authProvider) ThirdPartyInvite(k string) (gomatrixserverlib.PDU, error) {
	return a.pdu(spec.MRoomThirdPartyInvite, k)
}
func (a authProvider) Valid() bool { return true }

// maxChain bounds a state group's delta chain: the next group is stored
// whole, so reading any state costs at most maxChain+1 small queries.
const maxChain = 32

// snapCache keeps recently used snapshots by state group, bounded.
type snapCache struct {
	mu    sync.Mutex
	max   int
	m     map[int64]*Snapshot
	order []int64
}

func newSnapCache(max int) *snapCache { return &snapCache{max: max, m: map[int64]*Snapshot{}} }

func (c *snapCache) get(g int64) *Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[g]
}

func (c *snapCache) put(g int64, s *Snapshot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[g]; ok {
		return
	}
	c.m[g] = s
	c.order = append(c.order, g)
	for len(c.order) > c.max {
		delete(c.m, c.order[0])
		c.order = c.order[1:]
	}
}

// StateAt returns the room state of state group g (0 is the empty state).
func (s *Service) StateAt(ctx context.Context, version gomatrixserverlib.IRoomVersion, g int64) (*Snapshot, error) {
	if g == 0 {
		return emptySnapshot(), nil
	}
	if snap := s.snaps.get(g); snap != nil {
		return snap, nil
	}
	// Walk the delta chain down to a whole group, then apply upwards.
	var chain []storage.StateGroup
	for id := g; id != 0; {
		grp, err := s.store.GetStateGroup(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("load state group %d: %w", id, err)
		}
		chain = append(chain, grp)
		id = grp.Prev
		if len(chain) > maxChain+2 {
			return nil, fmt.Errorf("state group %d: delta chain too long", g)
		}
	}
	ids := map[StateKey]string{}
	for i := len(chain) - 1; i >= 0; i-- {
		for _, e := range chain[i].Entries {
			ids[StateKey{e.Type, e.StateKey}] = e.EventID
		}
	}
	list := make([]string, 0, len(ids))
	for _, id := range ids {
		list = append(list, id)
	}
	evs, err := s.loadEvents(ctx, version, list)
	if err != nil {
		return nil, err
	}
	snap := &Snapshot{events: make(map[StateKey]*Event, len(evs))}
	for _, ev := range evs {
		if ev.IsState() {
			snap.events[StateKey{ev.Type(), *ev.StateKey()}] = ev
		}
	}
	if len(snap.events) != len(ids) {
		return nil, fmt.Errorf("state group %d: %d of %d state events missing", g, len(ids)-len(snap.events), len(ids))
	}
	s.snaps.put(g, snap)
	return snap, nil
}

// loadEvents reads events by ID and prepares them for clients, with the
// redactions that redacted any of them.
func (s *Service) loadEvents(ctx context.Context, version gomatrixserverlib.IRoomVersion, ids []string) ([]*Event, error) {
	rows, err := s.store.GetEvents(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("load events: %w", err)
	}
	return s.fromRows(ctx, version, rows)
}

// fromRows turns storage rows into Events.
func (s *Service) fromRows(ctx context.Context, version gomatrixserverlib.IRoomVersion, rows []storage.Event) ([]*Event, error) {
	var redactionIDs []string
	for _, r := range rows {
		if r.RedactedBy != "" {
			redactionIDs = append(redactionIDs, r.RedactedBy)
		}
	}
	redactions := map[string]*Event{}
	if len(redactionIDs) > 0 {
		rr, err := s.store.GetEvents(ctx, redactionIDs)
		if err != nil {
			return nil, fmt.Errorf("load redactions: %w", err)
		}
		for _, r := range rr {
			ev, err := s.fromRow(version, r, nil)
			if err != nil {
				return nil, err
			}
			redactions[ev.ID()] = ev
		}
	}
	out := make([]*Event, 0, len(rows))
	for _, r := range rows {
		ev, err := s.fromRow(version, r, redactions[r.RedactedBy])
		if err != nil {
			return nil, err
		}
		out = append(out, ev)
	}
	return out, nil
}

func (s *Service) fromRow(version gomatrixserverlib.IRoomVersion, r storage.Event, redaction *Event) (*Event, error) {
	pdu, err := version.NewEventFromTrustedJSONWithEventID(r.EventID, r.JSON, r.RedactedBy != "")
	if err != nil {
		return nil, fmt.Errorf("parse stored event %s: %w", r.EventID, err)
	}
	ev, err := newEvent(pdu, r.Pos, r.StateGroup, redaction)
	if err != nil {
		return nil, err
	}
	ev.TxnDevice, ev.TxnID, ev.Outlier = r.TxnDevice, r.TxnID, r.Outlier
	return ev, nil
}

// StateAfter is the room state right after ev.
func (s *Service) StateAfter(ctx context.Context, ev *Event) (*Snapshot, error) {
	version, err := s.Version(ctx, ev.RoomID())
	if err != nil {
		return nil, err
	}
	return s.stateAfter(ctx, version, ev)
}

// stateAfter is StateAfter for a room whose version the caller has.
func (s *Service) stateAfter(ctx context.Context, version gomatrixserverlib.IRoomVersion, ev *Event) (*Snapshot, error) {
	snap, err := s.StateAt(ctx, version, ev.StateGroup)
	if err != nil {
		return nil, err
	}
	if ev.IsState() {
		snap = snap.with(ev)
	}
	return snap, nil
}
