package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/policy"
	"github.com/machi-chat/machi/storage"
)

// Events from other servers enter the same write path as local ones:
//
//	room lock → state before the event (from its prev_events; resolved
//	where branches meet) → Matrix auth rules against that state and
//	against the current state → policy → stream position → in-memory room
//	(forward extremities, current state resolved over the branches) →
//	group-commit writer → unlock → wait for commit → notify
//
// The caller (package federation) has checked the event's signatures and
// hashes and fetched missing prev_events first.

// ErrMissingPrev is an event whose prev_events this server does not have.
type ErrMissingPrev struct{ IDs []string }

func (e *ErrMissingPrev) Error() string { return fmt.Sprintf("missing prev_events %v", e.IDs) }

// ReceiveRequest is an event another server sent.
type ReceiveRequest struct {
	PDU    gomatrixserverlib.PDU
	Origin spec.ServerName
	// Forward sends the event on to the room's other servers (for a join
	// that came through send_join: the joining server knows nobody yet).
	Forward bool
	// Actor is who sent it, for policy; zero means another server.
	Actor policy.Actor
	// MissingPrevs are prev_events of PDU this server does not have, each
	// with the room's state before it, as another server gave them
	// (package federation checked their signatures): for an event whose
	// history has a gap that /get_missing_events did not close. They are
	// stored as outliers, and PDU is placed on the state they give.
	MissingPrevs []MissingPrev
}

// MissingPrev is a prev_event this server lacks and the state before it.
type MissingPrev struct {
	Event       gomatrixserverlib.PDU
	StateBefore []gomatrixserverlib.PDU
}

// queuedCopy is prepareRemote's answer for an event already queued for
// the writer: Receive waits for that commit.
type queuedCopy struct{ p *pending }

func (queuedCopy) Error() string { return "event already queued" }

// Receive puts another server's event into its room. It returns the event
// once durable; an event already stored is returned as it is.
func (s *Service) Receive(ctx context.Context, req *ReceiveRequest) (*Event, error) {
	for attempt := 0; ; attempt++ {
		r, err := s.room(ctx, req.PDU.RoomID().String())
		if err != nil {
			return nil, err
		}
		r.mu.Lock()
		p, known, err := s.prepareRemote(ctx, r, req)
		if err == nil && p != nil {
			if s.eval != nil {
				p.evaluated = make(chan struct{})
			}
			r.queue(p)
			s.writer.enqueue(p)
		}
		r.mu.Unlock()
		var dup queuedCopy
		if errors.As(err, &dup) {
			// The same event, already on its way to the database.
			select {
			case <-dup.p.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if dup.p.err == nil {
				for _, ev := range dup.p.evs {
					if ev.ID() == req.PDU.EventID() {
						return ev, nil
					}
				}
			}
			if attempt == 0 {
				continue
			}
			return nil, fmt.Errorf("commit event: %w", dup.p.err)
		}
		if err != nil || known != nil {
			return known, err
		}
		if p.evaluated != nil {
			s.evaluate(p) // while the writer commits
		}
		<-p.done
		if errors.Is(p.err, errRoomReset) && attempt == 0 {
			continue
		}
		if p.err != nil {
			return nil, fmt.Errorf("commit event: %w", p.err)
		}
		return p.evs[0], nil
	}
}

func (s *Service) prepareRemote(ctx context.Context, r *room, req *ReceiveRequest) (*pending, *Event, error) {
	if r.broken.Load() {
		return nil, nil, errRoomReset
	}
	pdu := req.PDU
	if q := r.queuedEvent(pdu.EventID()); q != nil {
		return nil, nil, queuedCopy{q}
	}
	if rows, err := s.store.GetEvents(ctx, []string{pdu.EventID()}); err != nil {
		return nil, nil, err
	} else if len(rows) > 0 {
		evs, err := s.fromRows(ctx, r.version, rows)
		if err != nil {
			return nil, nil, err
		}
		return nil, evs[0], nil
	}
	before, beforeGroup, err := s.stateBefore(ctx, r, pdu, req.MissingPrevs)
	if err != nil {
		return nil, nil, err
	}
	if err := gomatrixserverlib.Allowed(pdu, authProvider{before}, userIDForSender); err != nil {
		if pdu.StateKey() == nil {
			// A rejected message is kept as an outlier too, for the events
			// other servers build on it: the state after it is the state
			// before it, as for any rejected event. (A rejected state event
			// is not kept: the state after it would wrongly include it.)
			if err := s.storeSoftFailed(ctx, r, pdu, beforeGroup); err != nil {
				return nil, nil, err
			}
		}
		return nil, nil, &Forbidden{Reason: "not allowed by the state before it: " + err.Error()}
	}
	if before != r.snap {
		// Soft failure: allowed where it was sent from, but not by the
		// room as it is now (say, its sender was banned meanwhile). It is
		// kept, as an outlier, for the events that build on it, but it
		// joins no timeline and no forward extremity.
		if err := gomatrixserverlib.Allowed(pdu, authProvider{r.snap}, userIDForSender); err != nil {
			if err := s.storeSoftFailed(ctx, r, pdu, beforeGroup); err != nil {
				return nil, nil, err
			}
			return nil, nil, &Forbidden{Reason: "soft-failed: not allowed by the room's current state: " + err.Error()}
		}
	}
	if id := redactsID(pdu); id != "" {
		// A redaction of an event of another room is nonsense (or an
		// attack on that room): kept, like a soft failure, for the events
		// that build on it, but shown in no timeline.
		if rows, err := s.store.GetEvents(ctx, []string{id}); err == nil && len(rows) == 1 && rows[0].RoomID != r.id {
			if err := s.storeSoftFailed(ctx, r, pdu, beforeGroup); err != nil {
				return nil, nil, err
			}
			return nil, nil, &Forbidden{Reason: "soft-failed: redacts " + id + ", an event of another room"}
		}
	}
	if d := s.policy.CheckEvent(ctx, policy.EventInput{
		Sender: string(pdu.SenderID()), RoomID: r.id, Type: pdu.Type(), StateKey: pdu.StateKey(), Content: json.RawMessage(pdu.Content()),
		Actor: actorOr(req.Actor),
	}); d != nil {
		return nil, nil, d
	}
	// What a server says in unsigned is not signed: keep only what this
	// server knows, as for its own events.
	var unsigned []byte
	if sk := pdu.StateKey(); sk != nil {
		if replaced := before.Get(pdu.Type(), *sk); replaced != nil {
			unsigned, _ = json.Marshal(unsignedExtra{PrevContent: replaced.PDU.Content(), PrevSender: replaced.Sender(), ReplacesState: replaced.ID()})
		}
	}
	pdu, err = pdu.SetUnsigned(json.RawMessage(orEmpty(unsigned)))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadEvent, err)
	}
	ev, err := newEvent(pdu, s.stream.Allocate(), beforeGroup.id, nil)
	if err != nil {
		return nil, nil, err
	}
	serversBefore := r.servers
	c, err := s.applyRemote(ctx, r, ev, before, beforeGroup)
	if err != nil {
		s.stream.Complete(ev.Pos)
		return nil, nil, err
	}
	if pdu.Type() == spec.MRoomRedaction {
		if target := s.remoteRedactionTarget(ctx, r, ev); target != nil {
			redacted, err := s.redact(r, target, ev)
			if err != nil {
				return nil, nil, err
			}
			c.Redacts, c.RedactedJSON = target.ID(), redacted.PDU.JSON()
		}
	}
	if req.Forward {
		c.Outbox = s.outboxFor(ev, serversBefore, r.servers, string(req.Origin))
	}
	r.inflight.Add(1)
	return &pending{commits: []storage.EventCommit{c}, evs: []*Event{ev}, room: r, joined: r.joined, snap: r.snap}, nil, nil
}

// remoteRedactionTarget is the event another server's redaction strips, if
// it may: the redaction is kept either way (the auth rules allowed it),
// but applied only where its sender has the power to redact, or is of the
// target's server.
func (s *Service) remoteRedactionTarget(ctx context.Context, r *room, red *Event) *Event {
	id := redactsID(red.PDU)
	if id == "" {
		return nil
	}
	target, err := s.redactionTarget(ctx, r, &Request{Redacts: id, Sender: red.Sender()})
	var forbidden *Forbidden
	if errors.As(err, &forbidden) {
		rows, _ := s.store.GetEvents(ctx, []string{id})
		if len(rows) == 1 && rows[0].RoomID == r.id && rows[0].RedactedBy == "" && sameServer(rows[0].Sender, red.Sender()) {
			target, err = s.fromRow(r.version, rows[0], nil)
		}
	}
	if err != nil {
		return nil
	}
	return target
}

// redactsID is the event a redaction names ("" for any other event): in
// the event's redacts key, or in its content from room version 11.
func redactsID(pdu gomatrixserverlib.PDU) string {
	if pdu.Type() != spec.MRoomRedaction {
		return ""
	}
	if id := pdu.Redacts(); id != "" {
		return id
	}
	var c struct {
		Redacts string `json:"redacts"`
	}
	_ = json.Unmarshal(pdu.Content(), &c)
	return c.Redacts
}

func sameServer(a, b string) bool {
	ua, err1 := spec.NewUserID(a, true)
	ub, err2 := spec.NewUserID(b, true)
	return err1 == nil && err2 == nil && ua.Domain() == ub.Domain()
}

// storeSoftFailed keeps a soft-failed event as an outlier (below stream
// position 0) with the state before it, committed directly: it changes
// nothing of the room in memory.
func (s *Service) storeSoftFailed(ctx context.Context, r *room, pdu gomatrixserverlib.PDU, before groupRef) error {
	ev, err := newEvent(pdu, s.outlierSeq.Add(-1), before.id, nil)
	if err != nil {
		return err
	}
	row := ev.row()
	row.Outlier = true
	c := storage.EventCommit{Event: row, Latest: r.latest, Depth: r.depth, StateGroup: r.group}
	if before.g != nil {
		c.ExtraGroups = []*storage.StateGroup{before.g}
	}
	if err := s.store.CommitEvents(ctx, []storage.EventCommit{c}); err != nil {
		return fmt.Errorf("store soft-failed event: %w", err)
	}
	return nil
}

func actorOr(a policy.Actor) policy.Actor {
	if a.Origin == "" {
		return policy.Actor{Origin: policy.OriginFederation}
	}
	return a
}

func orEmpty(b []byte) []byte {
	if len(b) == 0 {
		return []byte("{}")
	}
	return b
}

// groupRef is a state group: an existing one (id) or one to store (g).
type groupRef struct {
	id int64
	g  *storage.StateGroup
}

// stateBefore is the room state before pdu: after its prev_events,
// resolved where they disagree.
func (s *Service) stateBefore(ctx context.Context, r *room, pdu gomatrixserverlib.PDU, given []MissingPrev) (*Snapshot, groupRef, error) {
	prevs := pdu.PrevEventIDs()
	if len(prevs) == 0 {
		return nil, groupRef{}, fmt.Errorf("%w: an event without prev_events", ErrBadEvent)
	}
	if slices.Equal(sortedCopy(prevs), sortedCopy(r.latest)) {
		return r.snap, groupRef{id: r.group}, nil // on top of the room as it is: the common case
	}
	rows, err := s.store.GetEvents(ctx, prevs)
	if err != nil {
		return nil, groupRef{}, err
	}
	var snaps []*Snapshot
	if len(rows) < len(prevs) {
		have := map[string]bool{}
		for _, row := range rows {
			have[row.EventID] = true
		}
		byID := map[string]MissingPrev{}
		for _, m := range given {
			byID[m.Event.EventID()] = m
		}
		missing := &ErrMissingPrev{}
		var supplied []MissingPrev
		for _, id := range prevs {
			if m, ok := byID[id]; ok && !have[id] {
				supplied = append(supplied, m)
			} else if !have[id] {
				missing.IDs = append(missing.IDs, id)
			}
		}
		if len(missing.IDs) > 0 {
			return nil, groupRef{}, missing
		}
		after, err := s.storeMissingPrevs(ctx, r, supplied)
		if err != nil {
			return nil, groupRef{}, err
		}
		snaps = append(snaps, after...)
	}
	evs, err := s.fromRows(ctx, r.version, rows)
	if err != nil {
		return nil, groupRef{}, err
	}
	for _, prev := range evs {
		snap, err := s.stateAfter(ctx, r.version, prev)
		if err != nil {
			return nil, groupRef{}, err
		}
		snaps = append(snaps, snap)
	}
	if len(evs) == 1 && len(snaps) == 1 && !evs[0].IsState() {
		return snaps[0], groupRef{id: evs[0].StateGroup}, nil // a message leaves the state as it was
	}
	resolved, err := s.resolve(ctx, r.version, snaps...)
	if err != nil {
		return nil, groupRef{}, err
	}
	return resolved, s.wholeGroup(r, resolved), nil
}

// storeMissingPrevs stores prev_events another server gave, with the
// state before each, as outliers (committed directly, like a soft-failed
// event: nothing of the room in memory changes), and returns the state
// after each. The missing events themselves are not checked: they are
// only where the event placed on them starts from (which is checked, on
// that state and on the room's current one); the state given was checked
// by package federation (signatures, each event by its auth events).
func (s *Service) storeMissingPrevs(ctx context.Context, r *room, given []MissingPrev) ([]*Snapshot, error) {
	var ids []string
	for _, m := range given {
		ids = append(ids, m.Event.EventID())
		for _, p := range m.StateBefore {
			ids = append(ids, p.EventID())
		}
	}
	rows, err := s.store.GetEvents(ctx, ids)
	if err != nil {
		return nil, err
	}
	stored := map[string]bool{}
	for _, row := range rows {
		stored[row.EventID] = true
	}
	var commits []storage.EventCommit
	keep := func(pdu gomatrixserverlib.PDU, group groupRef) error {
		if stored[pdu.EventID()] {
			return nil
		}
		stored[pdu.EventID()] = true
		ev, err := newEvent(pdu, s.outlierSeq.Add(-1), group.id, nil)
		if err != nil {
			return err
		}
		row := ev.row()
		row.Outlier = true
		c := storage.EventCommit{Event: row, Latest: r.latest, Depth: r.depth, StateGroup: r.group}
		if group.g != nil {
			c.ExtraGroups = []*storage.StateGroup{group.g}
		}
		commits = append(commits, c)
		return nil
	}
	var out []*Snapshot
	for _, m := range given {
		if m.Event.RoomID().String() != r.id {
			return nil, fmt.Errorf("%w: prev_event %s is of another room", ErrBadEvent, m.Event.EventID())
		}
		before := emptySnapshot()
		for _, p := range m.StateBefore {
			if p.RoomID().String() != r.id || p.StateKey() == nil {
				continue // not state of this room: ignored
			}
			ev, err := newEvent(p, 0, 0, nil)
			if err != nil {
				return nil, err
			}
			before.events[StateKey{p.Type(), *p.StateKey()}] = ev
			if err := keep(p, groupRef{}); err != nil {
				return nil, err
			}
		}
		if before.Get(spec.MRoomCreate, "") == nil {
			return nil, fmt.Errorf("%w: the state given before %s has no create event", ErrBadEvent, m.Event.EventID())
		}
		group := s.wholeGroup(r, before)
		if err := keep(m.Event, group); err != nil {
			return nil, err
		}
		ev, err := newEvent(m.Event, 0, group.id, nil)
		if err != nil {
			return nil, err
		}
		after := before
		if ev.IsState() {
			after = before.with(ev)
		}
		out = append(out, after)
	}
	if len(commits) > 0 {
		if err := s.store.CommitEvents(ctx, commits); err != nil {
			return nil, fmt.Errorf("store the events before a gap: %w", err)
		}
	}
	return out, nil
}

// wholeGroup is a new state group holding snap whole.
func (s *Service) wholeGroup(r *room, snap *Snapshot) groupRef {
	g := &storage.StateGroup{ID: s.groupSeq.Add(1), RoomID: r.id, Entries: snap.entries()}
	s.snaps.put(g.ID, snap)
	return groupRef{id: g.ID, g: g}
}

func sortedCopy(ids []string) []string {
	out := slices.Clone(ids)
	slices.Sort(out)
	return out
}

// applyRemote makes ev part of the room in memory: it becomes a forward
// extremity in place of its prev_events, and the current state is the
// resolution of the branches' states.
func (s *Service) applyRemote(ctx context.Context, r *room, ev *Event, before *Snapshot, beforeGroup groupRef) (storage.EventCommit, error) {
	c := storage.EventCommit{Event: ev.row(), Relation: relationRow(ev)}
	if beforeGroup.g != nil {
		c.ExtraGroups = append(c.ExtraGroups, beforeGroup.g)
	}
	after, afterGroup := before, beforeGroup.id
	if ev.IsState() {
		after = before.with(ev)
		g := &storage.StateGroup{ID: s.groupSeq.Add(1), RoomID: r.id, Prev: beforeGroup.id,
			Entries: []storage.StateEntry{{Type: ev.Type(), StateKey: *ev.StateKey(), EventID: ev.ID()}}}
		if beforeGroup.id == r.group {
			g.Depth = r.chain + 1
		}
		if beforeGroup.g != nil || g.Depth == 0 || g.Depth > maxChain {
			g.Prev, g.Depth, g.Entries = 0, 0, after.entries()
		}
		c.NewGroup, afterGroup = g, g.ID
		s.snaps.put(g.ID, after)
	}
	latest := []string{ev.ID()}
	for _, id := range r.latest {
		if !slices.Contains(ev.PDU.PrevEventIDs(), id) {
			latest = append(latest, id)
		}
	}
	current, currentGroup, chain := after, afterGroup, 0
	if c.NewGroup != nil {
		chain = c.NewGroup.Depth
	}
	if len(latest) > 1 {
		// Other branches stay open: the room's state is the resolution of
		// the states after every forward extremity, all at once (state
		// resolution is not associative: resolving pairwise, in the order
		// events happened to arrive, would differ between servers).
		snaps := []*Snapshot{after}
		for _, id := range latest[1:] {
			snap := r.extState[id]
			if snap == nil {
				var err error
				if snap, err = s.stateAfterEvent(ctx, r.version, id); err != nil {
					return c, err
				}
			}
			snaps = append(snaps, snap)
		}
		resolved, err := s.resolve(ctx, r.version, snaps...)
		if err != nil {
			return c, err
		}
		if sameState(resolved, r.snap) {
			current, currentGroup, chain = r.snap, r.group, r.chain
		} else {
			ref := s.wholeGroup(r, resolved)
			c.ExtraGroups = append(c.ExtraGroups, ref.g)
			current, currentGroup, chain = resolved, ref.id, 0
		}
	}
	if current != r.snap {
		for k, e := range current.events {
			if old := r.snap.events[k]; old == nil || old.ID() != e.ID() {
				c.CurrentState = append(c.CurrentState, storage.StateEntry{Type: k.Type, StateKey: k.Key, EventID: e.ID()})
			}
		}
	}
	if ev.IsState() {
		// The store makes a state event current; where it lost the
		// resolution, the winner is written after it.
		if won := current.Get(ev.Type(), *ev.StateKey()); won != nil && won.ID() != ev.ID() {
			c.CurrentState = append(c.CurrentState, storage.StateEntry{Type: ev.Type(), StateKey: *ev.StateKey(), EventID: won.ID()})
		}
	}
	if ev.Type() == spec.MRoomMember {
		m := current.Get(spec.MRoomMember, *ev.StateKey())
		if m != nil {
			c.Membership = &storage.Membership{RoomID: r.id, UserID: *ev.StateKey(), Membership: m.Membership(), EventID: m.ID(), Pos: ev.Pos}
		}
	}
	ext := map[string]*Snapshot{ev.ID(): after}
	for _, id := range latest[1:] {
		if snap := r.extState[id]; snap != nil {
			ext[id] = snap
		}
	}
	r.extState = ext
	c.Latest, c.Depth, c.StateGroup = latest, max(r.depth, ev.PDU.Depth()), currentGroup
	r.latest, r.depth, r.group, r.chain, r.snap = c.Latest, c.Depth, currentGroup, chain, current
	r.joined, r.servers = s.localJoined(current), s.remoteServers(current)
	r.addRecent(ev)
	return c, nil
}

// stateAfterEvent is the room state right after the stored event id.
func (s *Service) stateAfterEvent(ctx context.Context, version gomatrixserverlib.IRoomVersion, id string) (*Snapshot, error) {
	evs, err := s.loadEvents(ctx, version, []string{id})
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		return nil, fmt.Errorf("forward extremity %s is not stored", id)
	}
	return s.stateAfter(ctx, version, evs[0])
}

// sameState reports whether a and b hold the same events.
func sameState(a, b *Snapshot) bool {
	if len(a.events) != len(b.events) {
		return false
	}
	for k, e := range a.events {
		if o := b.events[k]; o == nil || o.ID() != e.ID() {
			return false
		}
	}
	return true
}

// resolve is the room version's state resolution over the snapshots.
func (s *Service) resolve(ctx context.Context, version gomatrixserverlib.IRoomVersion, snaps ...*Snapshot) (*Snapshot, error) {
	conflict := false
	for _, snap := range snaps[1:] {
		if !sameState(snap, snaps[0]) {
			conflict = true
			break
		}
	}
	if !conflict {
		return snaps[0], nil
	}
	byID := map[string]*Event{}
	var stateEvents []gomatrixserverlib.PDU
	sets := make([][]gomatrixserverlib.PDU, 0, len(snaps))
	for _, snap := range snaps {
		set := make([]gomatrixserverlib.PDU, 0, len(snap.events))
		for _, ev := range snap.events {
			set = append(set, ev.PDU)
			if _, ok := byID[ev.ID()]; !ok {
				byID[ev.ID()] = ev
				stateEvents = append(stateEvents, ev.PDU)
			}
		}
		sets = append(sets, set)
	}
	authChain, err := s.authChain(ctx, version, stateEvents)
	if err != nil {
		return nil, err
	}
	// By state sets, so that a piece of state some branches lack counts
	// as conflicted, as the spec's resolution (v2, and v2.1 for room v12)
	// defines it.
	resolved, err := gomatrixserverlib.ResolveConflictsNew(version.Version(), sets, authChain, userIDForSender,
		func(string) bool { return false })
	if err != nil {
		return nil, fmt.Errorf("resolve state: %w", err)
	}
	out := &Snapshot{events: make(map[StateKey]*Event, len(resolved))}
	for _, pdu := range resolved {
		ev := byID[pdu.EventID()]
		if ev == nil {
			continue // an auth event that is not room state
		}
		out.events[StateKey{ev.Type(), *ev.StateKey()}] = ev
	}
	return out, nil
}

// authChain loads the auth events of events, and theirs, to the create event.
func (s *Service) authChain(ctx context.Context, version gomatrixserverlib.IRoomVersion, events []gomatrixserverlib.PDU) ([]gomatrixserverlib.PDU, error) {
	seen := map[string]bool{}
	var out []gomatrixserverlib.PDU
	next := events
	for len(next) > 0 {
		var ids []string
		for _, ev := range next {
			for _, id := range ev.AuthEventIDs() {
				if !seen[id] {
					seen[id] = true
					ids = append(ids, id)
				}
			}
		}
		if len(ids) == 0 {
			break
		}
		evs, err := s.loadEvents(ctx, version, ids)
		if err != nil {
			return nil, err
		}
		next = next[:0:0]
		for _, ev := range evs {
			out = append(out, ev.PDU)
			next = append(next, ev.PDU)
		}
	}
	return out, nil
}
