package rooms

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/policy"
	"github.com/machi-chat/machi/storage"
)

// Rooms shared with other servers. Each server sends its own events to
// every other server in the room; this server's events are queued for them
// in the same transaction that commits the event (storage.EventCommit's
// Outbox), so an event acknowledged to a client always reaches them. The
// federation package delivers the queue.

// remoteServers lists the other servers with members joined in snap.
func (s *Service) remoteServers(snap *Snapshot) []string {
	var out []string
	snap.Each(func(ev *Event) {
		if ev.Type() != spec.MRoomMember || ev.Membership() != spec.Join {
			return
		}
		uid, err := spec.NewUserID(*ev.StateKey(), true)
		if err != nil || uid.Domain() == s.cfg.ServerName {
			return
		}
		if d := string(uid.Domain()); !slices.Contains(out, d) {
			out = append(out, d)
		}
	})
	slices.Sort(out)
	return out
}

// outboxFor queues ev for the servers in the room before or after it (a
// server whose last member leaves still hears of the leave), except
// exclude (the server that sent it to us).
func (s *Service) outboxFor(ev *Event, before, after []string, exclude string) []storage.OutboundItem {
	if len(before) == 0 && len(after) == 0 {
		return nil
	}
	var out []storage.OutboundItem
	now := time.Now().UnixMilli()
	add := func(dest string) {
		if dest == exclude {
			return
		}
		for _, it := range out {
			if it.Destination == dest {
				return
			}
		}
		out = append(out, storage.OutboundItem{ID: s.outboxSeq.Add(1), Destination: dest, Kind: "pdu", Payload: ev.PDU.JSON(), CreatedTS: now})
	}
	for _, d := range before {
		add(d)
	}
	for _, d := range after {
		add(d)
	}
	return out
}

// NextOutboxID allocates an ID for an item of the federation outbox: one
// sequence for the events queued here and what federation queues itself.
func (s *Service) NextOutboxID() int64 { return s.outboxSeq.Add(1) }

// OnOutbox registers fn to be told, after each commit, which servers were
// queued events. Like OnCommit it runs on the writer: fn must not block.
func (s *Service) OnOutbox(fn func(destinations []string)) {
	s.outboxed = append(s.outboxed, fn)
}

// MembershipTemplate is the membership event (join, leave) another
// server's userID would send now (make_join, make_leave): built on the
// room's current state, and refused when the room would not allow it.
func (s *Service) MembershipTemplate(ctx context.Context, roomID, userID, membership string) (gomatrixserverlib.ProtoEvent, gomatrixserverlib.IRoomVersion, error) {
	r, err := s.room(ctx, roomID)
	if err != nil {
		return gomatrixserverlib.ProtoEvent{}, nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if membership == spec.Join && len(r.joined) == 0 {
		// Nobody of this server is in the room any more: it has no
		// current state to vouch for, so it cannot be joined through here.
		return gomatrixserverlib.ProtoEvent{}, nil, ErrUnknownRoom
	}
	key := userID
	proto := gomatrixserverlib.ProtoEvent{SenderID: userID, RoomID: r.id, Type: spec.MRoomMember, StateKey: &key,
		PrevEvents: slices.Clone(r.latest), Depth: min(r.depth+1, maxDepth), Content: spec.RawJSON(`{"membership":"` + membership + `"}`)}
	trial := proto
	pdu, err := s.build(r.version, r.snap, &trial)
	if err != nil {
		return gomatrixserverlib.ProtoEvent{}, nil, err
	}
	if err := gomatrixserverlib.Allowed(pdu, authProvider{r.snap}, userIDForSender); err != nil {
		return gomatrixserverlib.ProtoEvent{}, nil, &Forbidden{Reason: "the room does not allow " + userID + " to " + membership + ": " + err.Error()}
	}
	proto.AuthEvents = trial.AuthEvents
	if r.version.EventFormat() == gomatrixserverlib.EventFormatV1 {
		// Versions 1 and 2 reference events as [event ID, hashes] pairs:
		// the template carries them as the built event has them.
		var refs struct {
			Prev json.RawMessage `json:"prev_events"`
			Auth json.RawMessage `json:"auth_events"`
		}
		if err := json.Unmarshal(pdu.JSON(), &refs); err != nil {
			return gomatrixserverlib.ProtoEvent{}, nil, err
		}
		proto.PrevEvents, proto.AuthEvents = refs.Prev, refs.Auth
	}
	return proto, r.version, nil
}

// StateAndAuthChain is the room state before ev and the auth chain of
// that state and of ev (what send_join answers).
func (s *Service) StateAndAuthChain(ctx context.Context, ev *Event) (state, authChain []gomatrixserverlib.PDU, err error) {
	version, err := s.Version(ctx, ev.RoomID())
	if err != nil {
		return nil, nil, err
	}
	snap, err := s.StateAt(ctx, version, ev.StateGroup)
	if err != nil {
		return nil, nil, err
	}
	snap.Each(func(e *Event) { state = append(state, e.PDU) })
	authChain, err = s.authChain(ctx, version, append(slices.Clone(state), ev.PDU))
	return state, authChain, err
}

// ServerInRoom reports whether server has members joined to the room now.
func (s *Service) ServerInRoom(ctx context.Context, roomID, server string) bool {
	r, err := s.room(ctx, roomID)
	if err != nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Contains(r.servers, server)
}

// Latest are the room's forward extremities.
func (s *Service) Latest(ctx context.Context, roomID string) ([]string, error) {
	r, err := s.room(ctx, roomID)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.latest), nil
}

// BuildEvent builds, signs and checks (auth rules, policy) an event of this
// server's user without committing it: for an invite, which the invitee's
// server signs too before it is committed through Receive.
func (s *Service) BuildEvent(ctx context.Context, req *Request) (gomatrixserverlib.PDU, error) {
	r, err := s.room(ctx, req.RoomID)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	proto := gomatrixserverlib.ProtoEvent{SenderID: req.Sender, RoomID: r.id, Type: req.Type, StateKey: req.StateKey,
		PrevEvents: slices.Clone(r.latest), Depth: min(r.depth+1, maxDepth), Content: spec.RawJSON(req.Content)}
	pdu, err := s.build(r.version, r.snap, &proto)
	if err != nil {
		return nil, err
	}
	if err := gomatrixserverlib.Allowed(pdu, authProvider{r.snap}, userIDForSender); err != nil {
		return nil, &Forbidden{Reason: err.Error()}
	}
	if d := s.policy.CheckEvent(ctx, policy.EventInput{Sender: req.Sender, RoomID: r.id, Type: req.Type, StateKey: req.StateKey,
		Content: req.Content, Actor: req.Actor}); d != nil {
		return nil, d
	}
	return pdu, nil
}

// StrippedState is what an invitee sees of the room before joining:
// create, join rules, name, avatar, alias, encryption, topic, and the
// inviter's membership.
func (s *Service) StrippedState(ctx context.Context, roomID, inviter string) ([]json.RawMessage, error) {
	snap, err := s.CurrentState(ctx, roomID)
	if err != nil {
		return nil, err
	}
	var out []json.RawMessage
	for _, t := range []string{spec.MRoomCreate, spec.MRoomJoinRules, spec.MRoomName, spec.MRoomAvatar, spec.MRoomCanonicalAlias, spec.MRoomEncryption, spec.MRoomTopic} {
		if ev := snap.Get(t, ""); ev != nil {
			out = append(out, ev.StrippedJSON())
		}
	}
	if ev := snap.Get(spec.MRoomMember, inviter); ev != nil {
		out = append(out, ev.StrippedJSON())
	}
	return out, nil
}

// StoreRemoteInvite records a local user's invite to a room this server is
// not in, and wakes their /sync.
func (s *Service) StoreRemoteInvite(ctx context.Context, inv storage.RemoteInvite) error {
	return s.remoteMembership(ctx, inv.RoomID, inv.UserID, spec.Invite, inv.EventID, func(pos int64) error {
		inv.Pos, inv.CreatedTS = pos, time.Now().UnixMilli()
		return s.store.PutRemoteInvite(ctx, inv)
	})
}

// EndRemoteInvite records a local user's rejection of an invite to a room
// this server is not in, with its leave event (the one the inviting
// server took, or one this server signed alone), which /sync shows in the
// room's leave section.
func (s *Service) EndRemoteInvite(ctx context.Context, roomID, userID string, leave gomatrixserverlib.PDU) error {
	return s.remoteMembership(ctx, roomID, userID, spec.Leave, leave.EventID(), func(pos int64) error {
		return s.store.EndRemoteInvite(ctx, roomID, userID, spec.Leave, leave.EventID(), pos,
			&storage.RemoteLeave{EventID: leave.EventID(), RoomVersion: string(leave.Version()), Event: leave.JSON()})
	})
}

// RemoteLeave is the leave that refused a local user's invite to a room
// this server is not in, when it is their membership m, at m's position
// (storage.ErrNotFound otherwise).
func (s *Service) RemoteLeave(ctx context.Context, m storage.Membership) (*Event, error) {
	l, err := s.store.GetRemoteLeave(ctx, m.RoomID, m.UserID)
	if err != nil {
		return nil, err
	}
	if l.EventID != m.EventID {
		return nil, storage.ErrNotFound
	}
	version, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(l.RoomVersion))
	if err != nil {
		return nil, err
	}
	pdu, err := version.NewEventFromTrustedJSON(l.Event, false)
	if err != nil {
		return nil, fmt.Errorf("the kept leave of %s: %w", m.RoomID, err)
	}
	return newEvent(pdu, m.Pos, 0, nil)
}

// remoteMembership stores a membership change of a local user in a room
// this server is not in, at a new stream position.
func (s *Service) remoteMembership(ctx context.Context, roomID, userID, membership, eventID string, store func(pos int64) error) error {
	pos := s.stream.Allocate()
	err := store(pos)
	if err == nil {
		s.members.update(storage.Membership{RoomID: roomID, UserID: userID, Membership: membership, EventID: eventID, Pos: pos})
	}
	s.stream.Complete(pos)
	if err != nil {
		return fmt.Errorf("store membership: %w", err)
	}
	s.notifier.Wake(userID)
	return nil
}

// Departed reports whether the room is one this server knows but has
// left: no local member is joined, while other servers' members still were
// when the last one left. The room goes on without this server, so its
// state here is stale; a local user joins it again through another server
// (a remote join, whose state replaces the stale one: ImportJoin).
func (s *Service) Departed(ctx context.Context, roomID string) bool {
	r, err := s.room(ctx, roomID)
	if err != nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.joined) == 0 && len(r.servers) > 0
}

// Servers are the other servers with members joined to the room.
func (s *Service) Servers(ctx context.Context, roomID string) []string {
	r, err := s.room(ctx, roomID)
	if err != nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.servers
}

// StoreBackfill stores history of the room that another server sent
// (package federation checked the signatures): each event not yet in the
// timeline takes a position below every one the room has, newest first,
// so /messages pages back into it. Their room state is taken as the state
// at the room's oldest timeline event here (the history visibility that
// applied when this server joined). It returns how many were added.
func (s *Service) StoreBackfill(ctx context.Context, roomID string, pdus []gomatrixserverlib.PDU) (int, error) {
	r, err := s.room(ctx, roomID)
	if err != nil {
		return 0, err
	}
	oldest, err := s.store.RoomEvents(ctx, roomID, math.MinInt64, math.MaxInt64, 1, false)
	if err != nil || len(oldest) == 0 {
		return 0, err
	}
	ids := make([]string, 0, len(pdus))
	for _, p := range pdus {
		ids = append(ids, p.EventID())
	}
	have, err := s.store.GetEvents(ctx, ids)
	if err != nil {
		return 0, err
	}
	inTimeline := map[string]bool{}
	for _, row := range have {
		if !row.Outlier {
			inTimeline[row.EventID] = true
		}
	}
	pdus = slices.Clone(pdus)
	slices.SortFunc(pdus, func(a, b gomatrixserverlib.PDU) int { return cmp.Compare(b.Depth(), a.Depth()) })
	var rows []storage.Event
	for _, p := range pdus {
		if p.RoomID().String() != r.id || inTimeline[p.EventID()] {
			continue
		}
		inTimeline[p.EventID()] = true
		ev, err := newEvent(p, s.outlierSeq.Add(-1), oldest[0].StateGroup, nil)
		if err != nil {
			return 0, err
		}
		rows = append(rows, ev.row())
	}
	if len(rows) == 0 {
		return 0, nil
	}
	if err := s.store.PutBackfill(ctx, rows); err != nil {
		return 0, fmt.Errorf("store backfilled events: %w", err)
	}
	return len(rows), nil
}

// OldestEvent is the room's oldest timeline event here.
func (s *Service) OldestEvent(ctx context.Context, roomID string) (*Event, error) {
	evs, err := s.Paginate(ctx, roomID, math.MinInt64, math.MaxInt64, false, 1)
	if err != nil || len(evs) == 0 {
		return nil, err
	}
	return evs[0], nil
}

// AuthChain is ev's auth events, and theirs, to the create event.
func (s *Service) AuthChain(ctx context.Context, ev *Event) ([]gomatrixserverlib.PDU, error) {
	version, err := s.Version(ctx, ev.RoomID())
	if err != nil {
		return nil, err
	}
	return s.authChain(ctx, version, []gomatrixserverlib.PDU{ev.PDU})
}
