package clientapi

import (
	"context"
	"encoding/json"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/rooms"
)

// defaultTimelineLimit is a timeline's length when the filter sets none.
const defaultTimelineLimit = 20

// timelineLimit is the filter's timeline limit: 0 asks for no events.
func timelineLimit(f *RoomEventFilter) int {
	if f.Limit == nil {
		return defaultTimelineLimit
	}
	return *f.Limit
}

// roomState is a room's state section (sync.yaml): the state at the start
// of the timeline shown (at end, the position the section reaches, when it
// shows nothing). With initial (an initial or full-state sync, or a room
// the user joined since the token) that is all of it; in an incremental
// sync, what differs from the state at since, which only a gap (events
// before the first one shown that the client did not get) can hold.
//
// With lazy_load_members, member events are only those of the timeline's
// senders (and, when initial, the user's own) that the client does not
// hold yet (include_redundant_members: held or not), plus, after a gap,
// every member event that changed in it: the spec wants joins, leaves and
// profile changes of the gap never lost.
func (s *Server) roomState(ctx context.Context, req *syncRequest, roomID string, shown []*rooms.Event, initial, gap bool, since, end int64) ([]json.RawMessage, error) {
	out := []json.RawMessage{}
	sf := &req.filter.Room.State
	lazy := sf.LazyLoadMembers
	if !initial && !gap && (!lazy || len(shown) == 0) {
		return out, nil // nothing changed before the timeline
	}
	version, err := s.rooms.Version(ctx, roomID)
	if err != nil {
		return nil, err
	}
	var start *rooms.Snapshot
	if len(shown) > 0 {
		start, err = s.rooms.StateAt(ctx, version, shown[0].StateGroup)
	} else {
		start, err = s.stateAtPos(ctx, roomID, end)
	}
	if err != nil {
		return nil, err
	}
	var senders map[string]bool
	if lazy {
		senders = map[string]bool{}
		for _, ev := range shown {
			senders[ev.Sender()] = true
		}
		if initial {
			senders[req.dev.UserID] = true
		}
	}
	now, key := nowTime(), req.dev.key()
	add := func(ev *rooms.Event) {
		if !sf.allowsEvent(ev) {
			return
		}
		out = append(out, ev.ClientJSON(now, key))
		if lazy && ev.Type() == spec.MRoomMember {
			req.lazySent.add(roomID, *ev.StateKey(), ev.ID())
		}
	}
	// wanted is the lazy-loading rule for a member event not in the delta.
	wanted := func(ev *rooms.Event) bool {
		uid := *ev.StateKey()
		if !senders[uid] {
			return false
		}
		return initial && uid == req.dev.UserID || sf.IncludeRedundantMembers || !req.lazyHeld.has(roomID, uid, ev.ID())
	}
	if !initial && !gap {
		// Lazy loading without a gap: only the senders' member events.
		for uid := range senders {
			if ev := start.Get(spec.MRoomMember, uid); ev != nil && wanted(ev) {
				add(ev)
			}
		}
		s.noteTimelineMembers(req, roomID, shown)
		return out, nil
	}
	var before *rooms.Snapshot // the state the client has, after a gap
	if !initial {
		if before, err = s.stateAtPos(ctx, roomID, since); err != nil {
			return nil, err
		}
	}
	start.Each(func(ev *rooms.Event) {
		inDelta := initial
		if before != nil {
			b := before.Get(ev.Type(), *ev.StateKey())
			inDelta = b == nil || b.ID() != ev.ID()
		}
		switch {
		case lazy && ev.Type() == spec.MRoomMember:
			if (inDelta && !initial) || wanted(ev) {
				add(ev)
			}
		case inDelta:
			add(ev)
		}
	})
	s.noteTimelineMembers(req, roomID, shown)
	return out, nil
}

// noteTimelineMembers notes the member events a lazy-loading client gets
// in its timeline: it holds them as state from then on.
func (s *Server) noteTimelineMembers(req *syncRequest, roomID string, shown []*rooms.Event) {
	if !req.filter.Room.State.LazyLoadMembers {
		return
	}
	for _, ev := range shown {
		if ev.Type() == spec.MRoomMember {
			req.lazySent.add(roomID, *ev.StateKey(), ev.ID())
		}
	}
}

// stateAtPos is the room's state at stream position pos: after its last
// event at or before pos (empty when it has none).
func (s *Server) stateAtPos(ctx context.Context, roomID string, pos int64) (*rooms.Snapshot, error) {
	evs, _, err := s.rooms.RoomEvents(ctx, roomID, 0, pos, 1)
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		version, err := s.rooms.Version(ctx, roomID)
		if err != nil {
			return nil, err
		}
		return s.rooms.StateAt(ctx, version, 0)
	}
	return s.rooms.StateAfter(ctx, evs[0])
}

// membershipAt is the user's membership in the room at stream position
// pos ("leave" when none).
func (s *Server) membershipAt(ctx context.Context, roomID, userID string, pos int64) (string, error) {
	snap, err := s.stateAtPos(ctx, roomID, pos)
	if err != nil {
		return "", err
	}
	return snap.Membership(userID), nil
}
