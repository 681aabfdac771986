package rooms

import (
	"context"
	"slices"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

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

// JoinTemplate is the join event other servers' userID would send now
// (make_join): built on the room's current state, and refused when the
// room would not let the user in.
func (s *Service) JoinTemplate(ctx context.Context, roomID, userID string) (gomatrixserverlib.ProtoEvent, gomatrixserverlib.IRoomVersion, error) {
	r, err := s.room(ctx, roomID)
	if err != nil {
		return gomatrixserverlib.ProtoEvent{}, nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	key := userID
	proto := gomatrixserverlib.ProtoEvent{SenderID: userID, RoomID: r.id, Type: spec.MRoomMember, StateKey: &key,
		PrevEvents: slices.Clone(r.latest), Depth: min(r.depth+1, maxDepth), Content: spec.RawJSON(`{"membership":"join"}`)}
	trial := proto
	pdu, err := s.build(r.version, r.snap, &trial)
	if err != nil {
		return gomatrixserverlib.ProtoEvent{}, nil, err
	}
	if err := gomatrixserverlib.Allowed(pdu, authProvider{r.snap}, userIDForSender); err != nil {
		return gomatrixserverlib.ProtoEvent{}, nil, &Forbidden{Reason: "the room does not let " + userID + " join: " + err.Error()}
	}
	proto.AuthEvents = trial.AuthEvents
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
