package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"slices"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/rooms"
)

// dropCanonicalAlias takes a deleted alias out of the room's
// m.room.canonical_alias (its alias, its alt_aliases), as the spec lets a
// server do on DELETE /directory/room/{roomAlias}. The new state event is
// sent by the deleting user through the one write path; when the auth rules
// or the city's policy refuse it (the user lacks the power level), the alias
// stays deleted and the request still succeeds, as the spec recommends.
func (s *Server) dropCanonicalAlias(ctx context.Context, dev *Device, roomID, alias string) {
	snap, err := s.rooms.CurrentState(ctx, roomID)
	if err != nil {
		return
	}
	ev := snap.Get(spec.MRoomCanonicalAlias, "")
	if ev == nil {
		return
	}
	content, changed, err := withoutAlias(ev.PDU.Content(), alias)
	if err != nil || !changed {
		return
	}
	key := ""
	_, err = s.rooms.Submit(ctx, &rooms.Request{
		RoomID: roomID, Sender: dev.UserID, Type: spec.MRoomCanonicalAlias, StateKey: &key, Content: content, Actor: dev.actor(),
	})
	var forbidden *rooms.Forbidden
	switch {
	case err == nil:
	case errors.As(err, &forbidden):
		s.log.Info("alias deleted, but its sender may not update m.room.canonical_alias", "room", roomID, "alias", alias, "user", dev.UserID)
	default:
		s.log.Warn("update m.room.canonical_alias after alias deletion", "room", roomID, "alias", alias, "err", err)
	}
}

// withoutAlias is canonical alias content with alias removed from alias and
// alt_aliases, every other field kept as it was; changed is false when the
// content did not name it.
func withoutAlias(content json.RawMessage, alias string) (json.RawMessage, bool, error) {
	var c map[string]json.RawMessage
	if err := json.Unmarshal(content, &c); err != nil {
		return nil, false, err
	}
	changed := false
	var main string
	if raw, ok := c["alias"]; ok && json.Unmarshal(raw, &main) == nil && main == alias {
		delete(c, "alias")
		changed = true
	}
	var alt []string
	if raw, ok := c["alt_aliases"]; ok && json.Unmarshal(raw, &alt) == nil && slices.Contains(alt, alias) {
		alt = slices.DeleteFunc(alt, func(a string) bool { return a == alias })
		if len(alt) == 0 {
			delete(c, "alt_aliases")
		} else {
			b, _ := json.Marshal(alt)
			c["alt_aliases"] = b
		}
		changed = true
	}
	if !changed {
		return nil, false, nil
	}
	b, err := json.Marshal(c)
	return b, true, err
}
