package clientapi

import (
	"context"
	"encoding/json"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/rooms"
)

// visibility decides, event by event, which of a room's events a user may
// see under m.room.history_visibility (client-server API, "History
// visibility"), from the room state before each event. How far a user may
// read at all (up to their leave) is access's business; this adds the
// "invited" and "joined" settings, under which events from before the
// user's invite or join stay hidden. State is looked up once per state
// group, so a page of messages costs a map lookup per event.
type visibility struct {
	s              *Server
	ctx            context.Context
	userID, roomID string
	byGroup        map[int64]bool
	version        gomatrixserverlib.IRoomVersion // looked up on first need
	joined         *bool                          // likewise
}

func (s *Server) visibility(ctx context.Context, userID, roomID string) *visibility {
	return &visibility{s: s, ctx: ctx, userID: userID, roomID: roomID, byGroup: map[int64]bool{}}
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

// allows reports whether the user may see ev.
func (v *visibility) allows(ev *rooms.Event) bool {
	if ev.Type() == spec.MRoomMember {
		if sk := ev.StateKey(); sk != nil && *sk == v.userID {
			return true // one's own membership events, always
		}
	}
	ok, seen := v.byGroup[ev.StateGroup]
	if !seen {
		ok = v.atGroup(ev.StateGroup)
		v.byGroup[ev.StateGroup] = ok
	}
	return ok
}

func (v *visibility) atGroup(group int64) bool {
	if v.version == nil {
		version, err := v.s.rooms.Version(v.ctx, v.roomID)
		if err != nil {
			return false
		}
		v.version = version
	}
	snap, err := v.s.rooms.StateAt(v.ctx, v.version, group)
	if err != nil {
		v.s.log.Error("history visibility: state unavailable", "room", v.roomID, "group", group, "err", err)
		return false // hide rather than leak
	}
	setting := "shared" // the spec's default, also for unknown values
	if hv := snap.Get("m.room.history_visibility", ""); hv != nil {
		var c struct {
			HistoryVisibility string `json:"history_visibility"`
		}
		_ = json.Unmarshal(hv.PDU.Content(), &c)
		switch c.HistoryVisibility {
		case "invited", "joined", "world_readable":
			setting = c.HistoryVisibility
		}
	}
	membership := ""
	if m := snap.Get(spec.MRoomMember, v.userID); m != nil {
		membership = m.Membership()
	}
	switch setting {
	case "invited":
		return membership == spec.Join || membership == spec.Invite
	case "joined":
		return membership == spec.Join
	case "shared":
		// Shared history is for those who joined at some point after the
		// event: anyone joined now, or who left while joined (access
		// keeps them before their leave). Someone who only knocked or was
		// invited, then turned away, reads nothing of it.
		return membership == spec.Join || v.wasJoined()
	default: // world_readable
		return true
	}
}

// wasJoined reports whether the user is joined now or their latest
// membership change took them out of a join; looked up once, from the
// in-memory room state.
func (v *visibility) wasJoined() bool {
	if v.joined != nil {
		return *v.joined
	}
	j := false
	if snap, err := v.s.rooms.CurrentState(v.ctx, v.roomID); err == nil {
		if m := snap.Get(spec.MRoomMember, v.userID); m != nil {
			j = m.Membership() == spec.Join
			if !j && v.version != nil {
				if before, err := v.s.rooms.StateAt(v.ctx, v.version, m.StateGroup); err == nil {
					j = before.Membership(v.userID) == spec.Join
				}
			}
		}
	}
	v.joined = &j
	return j
}
