package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/storage"
)

// ImportJoin stores a room this server joined through another server
// (package federation ran make_join and send_join, and checked the answer):
// the room's state at the join and its auth chain become outliers —
// stored, below stream position 0, in no timeline — and the join event
// opens the room's timeline here. All of it commits in one transaction.
//
// A room this server knows but has left (no member of it joined any more,
// see Departed) is joined the same way: its state here is stale, so the
// state send_join gave replaces it (in memory, the forward extremities,
// the current state in storage), and the timeline goes on from the
// history already here. Events of that state already stored are not
// stored again.
func (s *Service) ImportJoin(ctx context.Context, version gomatrixserverlib.IRoomVersion, join gomatrixserverlib.PDU, state, authChain []gomatrixserverlib.PDU) (*Event, error) {
	roomID := join.RoomID().String()
	old, err := s.room(ctx, roomID)
	if err == nil {
		old.mu.Lock()
		if len(old.joined) > 0 || old.broken.Load() {
			// Another local member is in it (joined meanwhile): the join
			// is an event of a room this server is in.
			old.mu.Unlock()
			return s.Receive(ctx, &ReceiveRequest{PDU: join, Origin: s.cfg.ServerName})
		}
		if old.version.Version() != version.Version() {
			old.mu.Unlock()
			return nil, fmt.Errorf("%w: the room is version %s here, not %s", ErrBadEvent, old.version.Version(), version.Version())
		}
		// Held until the new head replaces old: nothing more is built on
		// the stale state.
		defer func() {
			if old != nil {
				old.mu.Unlock()
			}
		}()
	} else if !errors.Is(err, ErrUnknownRoom) {
		return nil, err
	}
	stored := map[string]bool{}
	if old != nil {
		ids := make([]string, 0, len(state)+len(authChain))
		for _, list := range [][]gomatrixserverlib.PDU{authChain, state} {
			for _, pdu := range list {
				ids = append(ids, pdu.EventID())
			}
		}
		rows, err := s.store.GetEvents(ctx, ids)
		if err != nil {
			return nil, err
		}
		for _, row := range rows {
			stored[row.EventID] = true
		}
	}
	r := &room{id: roomID, version: version, snap: emptySnapshot()}
	var commits []storage.EventCommit
	known := map[string]int{} // event ID → its commit
	snap := &Snapshot{events: map[StateKey]*Event{}}
	var creator string
	for _, list := range [][]gomatrixserverlib.PDU{authChain, state} {
		for _, pdu := range list {
			if _, ok := known[pdu.EventID()]; ok || stored[pdu.EventID()] {
				continue
			}
			known[pdu.EventID()] = len(commits)
			ev, err := newEvent(pdu, s.outlierSeq.Add(-1), 0, nil)
			if err != nil {
				return nil, err
			}
			row := ev.row()
			row.Outlier = true
			commits = append(commits, storage.EventCommit{Event: row})
			if pdu.Type() == spec.MRoomCreate && pdu.StateKey() != nil && *pdu.StateKey() == "" {
				creator = string(pdu.SenderID())
			}
		}
	}
	for _, pdu := range state {
		if pdu.StateKey() == nil {
			continue
		}
		ev, err := newEvent(pdu, 0, 0, nil)
		if err != nil {
			return nil, err
		}
		snap.events[StateKey{pdu.Type(), *pdu.StateKey()}] = ev
	}
	if snap.Get(spec.MRoomCreate, "") == nil {
		return nil, fmt.Errorf("%w: the room's state has no create event", ErrBadEvent)
	}
	if err := gomatrixserverlib.Allowed(join, authProvider{snap}, userIDForSender); err != nil {
		return nil, &Forbidden{Reason: "the join is not allowed by the room's state: " + err.Error()}
	}
	if old == nil {
		if len(commits) == 0 {
			return nil, fmt.Errorf("%w: an empty room state", ErrBadEvent)
		}
		commits[0].NewRoom = &storage.Room{RoomID: roomID, Version: string(version.Version()), Creator: creator, CreatedTS: time.Now().UnixMilli(), Latest: []string{}}
	}

	before := s.wholeGroup(r, snap)
	ev, err := newEvent(join, s.stream.Allocate(), before.id, nil)
	if err != nil {
		return nil, err
	}
	after := snap.with(ev)
	g := &storage.StateGroup{ID: s.groupSeq.Add(1), RoomID: roomID, Prev: before.id, Depth: 1,
		Entries: []storage.StateEntry{{Type: ev.Type(), StateKey: *ev.StateKey(), EventID: ev.ID()}}}
	s.snaps.put(g.ID, after)
	c := storage.EventCommit{Event: ev.row(), ExtraGroups: []*storage.StateGroup{before.g}, NewGroup: g,
		Latest: []string{ev.ID()}, Depth: join.Depth(), StateGroup: g.ID, CurrentState: after.entries(), Relation: relationRow(ev)}
	c.Membership = &storage.Membership{RoomID: roomID, UserID: *ev.StateKey(), Membership: spec.Join, EventID: ev.ID(), Pos: ev.Pos}
	if old != nil {
		c.Rejoined = true
		r.rejoinedPos = ev.Pos
	}
	// Everyone else's membership, as the room's state has it.
	for k, m := range snap.events {
		if i, ok := known[m.ID()]; ok && k.Type == spec.MRoomMember && k.Key != *ev.StateKey() {
			commits[i].Membership = &storage.Membership{RoomID: roomID, UserID: k.Key,
				Membership: m.Membership(), EventID: m.ID(), Pos: ev.Pos}
		}
	}
	commits = append(commits, c)

	r.latest, r.depth, r.group, r.chain, r.snap = c.Latest, c.Depth, g.ID, 1, after
	r.extState = map[string]*Snapshot{ev.ID(): after}
	r.joined, r.servers = s.localJoined(after), s.remoteServers(after)
	if old != nil {
		// The history here goes on: what was queued on the stale head
		// commits first (bounded), and the events in memory stay.
		for i := 0; old.inflight.Load() > 0 && i < 500; i++ {
			time.Sleep(10 * time.Millisecond)
		}
		old.rmu.RLock()
		r.recent, r.recentFloor = slices.Clone(old.recent), old.recentFloor
		old.rmu.RUnlock()
	}
	r.addRecent(ev)
	r.used.Store(s.stream.Current())
	r.inflight.Add(1)
	s.mu.Lock()
	s.evictLocked()
	s.rooms[roomID] = r
	s.mu.Unlock()
	if old != nil {
		// Whoever still holds old builds again on r (errRoomReset).
		old.broken.Store(true)
		old.mu.Unlock()
		old = nil
	}

	p := &pending{commits: commits, evs: []*Event{ev}, room: r, joined: r.joined, snap: r.snap}
	s.writer.enqueue(p)
	<-p.done
	if p.err != nil {
		return nil, fmt.Errorf("store the joined room: %w", p.err)
	}
	s.followUpgrade(ctx, roomID, snap)
	return ev, nil
}

// followUpgrade moves this server's aliases and directory listing of a
// room to the room that replaced it, when a local user first joins the
// replacement (upgraded on another server): only where the old room's own
// tombstone names the new room, so a room cannot claim another's aliases
// by naming it as its predecessor.
func (s *Service) followUpgrade(ctx context.Context, roomID string, snap *Snapshot) {
	pred := snap.Predecessor()
	if pred == "" {
		return
	}
	old, err := s.CurrentState(ctx, pred)
	if err != nil {
		return // not a room this server knows
	}
	tomb := old.Get("m.room.tombstone", "")
	if tomb == nil {
		return
	}
	var t struct {
		Replacement string `json:"replacement_room"`
	}
	if json.Unmarshal(tomb.PDU.Content(), &t) != nil || t.Replacement != roomID {
		return
	}
	if err := s.store.ReplaceRoom(ctx, pred, roomID); err != nil {
		s.cfg.Log.Warn("room upgrade: aliases not moved to the replacement room", "old", pred, "new", roomID, "err", err)
	}
}
