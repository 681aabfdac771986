package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"math"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/rooms"
)

// visibility decides, event by event, which of a room's events a user may
// see under m.room.history_visibility (client-server API, "History
// visibility"), from the room state before each event. How far a user may
// read at all (up to their leave, or on for a world_readable room) is
// access's business; this adds the "invited" and "joined" settings, under
// which events from before the user's invite or join stay hidden, and
// keeps a user who left from events after their leave unless those were
// world_readable. State is looked up once per state group, so a page of
// messages costs a map lookup per event.
type visibility struct {
	s              *Server
	ctx            context.Context
	userID, roomID string
	byGroup        map[int64]groupVisibility
	version        gomatrixserverlib.IRoomVersion // looked up on first need
	joined         *bool                          // likewise
	leftAt         int64                          // with joined: the position of the leave, MaxInt64 if joined now
	ignored        ignoreSet                      // senders hidden (ignoring)
	current        *rooms.Snapshot                // likewise, for allowsOrCurrent
}

// groupVisibility is what decides at one state group: the setting and the
// user's membership there ("" if none); ok is false when the state could
// not be read.
type groupVisibility struct {
	setting, membership string
	ok                  bool
}

// ignoring makes v leave out the events of users the reader ignores
// (their state events excepted).
func (v *visibility) ignoring(set ignoreSet) *visibility {
	v.ignored = set
	return v
}

func (s *Server) visibility(ctx context.Context, userID, roomID string) *visibility {
	return &visibility{s: s, ctx: ctx, userID: userID, roomID: roomID, byGroup: map[int64]groupVisibility{}}
}

// only keeps the events of evs the user may see.
func (v *visibility) only(evs []*rooms.Event) []*rooms.Event {
	out := make([]*rooms.Event, 0, len(evs))
	for _, ev := range evs {
		if v.allows(ev) {
			out = append(out, ev)
		}
	}
	return out
}

// allowsOrCurrent is allows for a /sync timeline of a joined room, where
// state events of the current state pass whatever history visibility
// says: a member may read the current state anyway, and a client seeing
// the change in its timeline keeps a consistent room (a join made while
// the user was away from a "joined" room).
func (v *visibility) allowsOrCurrent(ev *rooms.Event) bool {
	if v.allows(ev) {
		return true
	}
	if !ev.IsState() {
		return false
	}
	if v.current == nil {
		snap, err := v.s.rooms.CurrentState(v.ctx, v.roomID)
		if err != nil {
			return false
		}
		v.current = snap
	}
	c := v.current.Get(ev.Type(), *ev.StateKey())
	return c != nil && c.ID() == ev.ID()
}

// allows reports whether the user may see ev.
func (v *visibility) allows(ev *rooms.Event) bool {
	if v.ignored.hides(ev) {
		return false
	}
	if ev.Type() == spec.MRoomMember {
		if sk := ev.StateKey(); sk != nil && *sk == v.userID {
			return true // one's own membership events, always
		}
	}
	g, seen := v.byGroup[ev.StateGroup]
	if !seen {
		g = v.atGroup(ev.StateGroup)
		v.byGroup[ev.StateGroup] = g
	}
	if !g.ok {
		return false
	}
	if v.decide(g.setting, g.membership, ev) {
		return true
	}
	// A history_visibility change is visible if the setting before or
	// after it lets the user see it.
	if ev.Type() == historyVisibilityType {
		if sk := ev.StateKey(); sk != nil && *sk == "" {
			return v.decide(parseHistoryVisibility(ev.PDU.Content()), g.membership, ev)
		}
	}
	return false
}

func (v *visibility) decide(setting, membership string, ev *rooms.Event) bool {
	switch setting {
	case "invited":
		return membership == spec.Join || membership == spec.Invite
	case "joined":
		return membership == spec.Join
	case "shared":
		// Shared history is for those who joined at some point after the
		// event: anyone joined now, or who left while joined, for events
		// up to their leave. Someone who only knocked or was invited, then
		// turned away, reads nothing of it.
		return membership == spec.Join || (v.wasJoined() && ev.Pos <= v.leftAt)
	default: // world_readable
		return true
	}
}

const historyVisibilityType = "m.room.history_visibility"

// parseHistoryVisibility reads an m.room.history_visibility content:
// "shared" (the spec's default) for anything unknown.
func parseHistoryVisibility(content []byte) string {
	var c struct {
		HistoryVisibility string `json:"history_visibility"`
	}
	_ = json.Unmarshal(content, &c)
	switch c.HistoryVisibility {
	case "invited", "joined", "world_readable":
		return c.HistoryVisibility
	}
	return "shared"
}

// historyVisibility is the setting in snap.
func historyVisibility(snap *rooms.Snapshot) string {
	if hv := snap.Get(historyVisibilityType, ""); hv != nil {
		return parseHistoryVisibility(hv.PDU.Content())
	}
	return "shared"
}

func (v *visibility) atGroup(group int64) groupVisibility {
	if v.version == nil {
		version, err := v.s.rooms.Version(v.ctx, v.roomID)
		if err != nil {
			return groupVisibility{}
		}
		v.version = version
	}
	snap, err := v.s.rooms.StateAt(v.ctx, v.version, group)
	if err != nil {
		v.s.log.Error("history visibility: state unavailable", "room", v.roomID, "group", group, "err", err)
		return groupVisibility{} // hide rather than leak
	}
	g := groupVisibility{setting: historyVisibility(snap), ok: true}
	if m := snap.Get(spec.MRoomMember, v.userID); m != nil {
		g.membership = m.Membership()
	}
	return g
}

// wasJoined reports whether the user is joined now or their latest
// membership change took them out of a join (and sets leftAt); looked up
// once, from the in-memory room state.
func (v *visibility) wasJoined() bool {
	if v.joined != nil {
		return *v.joined
	}
	j := false
	if snap, err := v.s.rooms.CurrentState(v.ctx, v.roomID); err == nil {
		if m := snap.Get(spec.MRoomMember, v.userID); m != nil {
			j = m.Membership() == spec.Join
			v.leftAt = math.MaxInt64
			if !j && v.version != nil {
				if before, err := v.s.rooms.StateAt(v.ctx, v.version, m.StateGroup); err == nil {
					j = before.Membership(v.userID) == spec.Join
					v.leftAt = m.Pos
				}
			}
		}
	}
	v.joined = &j
	return j
}

// access returns the stream position up to which userID may read the room:
// everything while joined, up to their leave otherwise. Never-members, and
// members banned from the room, get M_FORBIDDEN: a ban takes the room's
// history with it (as a kick does not).
func (s *Server) access(ctx context.Context, userID, roomID string) (int64, error) {
	ms, err := s.rooms.UserRooms(ctx, userID)
	if err != nil {
		return 0, err
	}
	m, ok := ms[roomID]
	if !ok || m.Membership == spec.Invite || m.Membership == spec.Knock {
		if _, err := s.rooms.Version(ctx, roomID); err != nil {
			if errors.Is(err, rooms.ErrUnknownRoom) {
				return 0, errForbidden("you are not in room %s", roomID)
			}
			return 0, err
		}
		return 0, errForbidden("you are not in room %s", roomID)
	}
	if m.Membership == spec.Join {
		return s.rooms.Stream().Current(), nil
	}
	if m.Membership == spec.Ban {
		return 0, errForbidden("you are banned from room %s", roomID)
	}
	return m.Pos, nil
}

// readAccess is access for reading a room's events and state: it also
// lets anyone read a room whose history is world_readable now, up to now
// (which of its events they see is still visibility's business).
func (s *Server) readAccess(ctx context.Context, userID, roomID string) (int64, error) {
	upTo, err := s.access(ctx, userID, roomID)
	if cur := s.rooms.Stream().Current(); (err != nil || upTo < cur) && s.worldReadable(ctx, roomID) {
		return cur, nil
	}
	return upTo, err
}

// worldReadable reports whether the room's current history visibility is
// world_readable (false for a room this server does not know).
func (s *Server) worldReadable(ctx context.Context, roomID string) bool {
	snap, err := s.rooms.CurrentState(ctx, roomID)
	return err == nil && historyVisibility(snap) == "world_readable"
}

// stateAt is the room state a user may see: current while joined or while
// the room is world_readable, at their leave otherwise.
func (s *Server) stateAt(ctx context.Context, userID, roomID string) (*rooms.Snapshot, error) {
	ms, err := s.rooms.UserRooms(ctx, userID)
	if err != nil {
		return nil, err
	}
	if ms[roomID].Membership == spec.Join {
		return s.rooms.CurrentState(ctx, roomID)
	}
	if snap, err := s.rooms.CurrentState(ctx, roomID); err == nil && historyVisibility(snap) == "world_readable" {
		return snap, nil
	}
	if _, err := s.access(ctx, userID, roomID); err != nil {
		return nil, err
	}
	ev, err := s.rooms.Event(ctx, ms[roomID].EventID)
	if err != nil {
		return nil, err
	}
	return s.rooms.StateAfter(ctx, ev)
}
