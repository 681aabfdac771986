package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/rooms"
)

// handleUpgrade serves POST /_matrix/client/v3/rooms/{roomId}/upgrade. Not
// idempotent: each call replaces the room (the current one, which after a
// first call is the tombstoned old room, so a retry makes a second
// replacement only if the user still has the power to).
func (s *Server) handleUpgrade(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	var req struct {
		NewVersion         *string  `json:"new_version"`
		AdditionalCreators []string `json:"additional_creators"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.NewVersion == nil {
		writeError(w, errMissingParam("new_version is required"))
		return
	}
	for _, u := range req.AdditionalCreators {
		if _, err := spec.NewUserID(u, true); err != nil {
			writeError(w, errInvalidParam("invalid user ID %q in additional_creators", u))
			return
		}
	}
	if err := s.limiter.allow(dev.UserID); err != nil {
		writeError(w, err)
		return
	}
	roomID := vars(r)["roomId"]
	if _, err := s.rooms.Version(r.Context(), roomID); errors.Is(err, rooms.ErrUnknownRoom) {
		writeError(w, errNotFound("unknown room %s", roomID))
		return
	}
	if _, err := s.access(r.Context(), dev.UserID, roomID); err != nil {
		writeError(w, err)
		return
	}
	member, err := s.memberContent(r.Context(), dev.UserID, spec.Join, "")
	if err != nil {
		writeError(w, err)
		return
	}
	newID, err := s.rooms.UpgradeRoom(r.Context(), &rooms.UpgradeRequest{
		RoomID: roomID, Sender: dev.UserID, NewVersion: *req.NewVersion, AdditionalCreators: req.AdditionalCreators,
		CreatorMember: member, Actor: dev.actor(),
	})
	if err != nil {
		writeError(w, err)
		return
	}
	s.copyRoomPushRules(r.Context(), roomID, newID)
	s.carryUserState(r.Context(), dev.UserID, newID)
	writeJSON(w, 200, map[string]string{"replacement_room": newID})
}

// carryUserState gives a user who joins a room that replaced another (an
// upgrade) what was theirs in the old one: its tags, the push rules naming
// it (copyRulesForRoom), and its place in m.direct. What the user has set
// for the new room already stays.
func (s *Server) carryUserState(ctx context.Context, userID, roomID string) {
	snap, err := s.rooms.CurrentState(ctx, roomID)
	if err != nil {
		return
	}
	old := snap.Predecessor()
	if old == "" {
		return
	}
	ms, err := s.rooms.UserRooms(ctx, userID)
	if err != nil {
		return
	}
	if _, ok := ms[old]; !ok {
		return // never in the old room
	}
	if tags, err := s.store.GetAccountData(ctx, userID, old, "m.tag"); err == nil {
		if _, err := s.store.GetAccountData(ctx, userID, roomID, "m.tag"); isNotFound(err) {
			if err := s.putAccountData(ctx, userID, roomID, "m.tag", tags); err != nil {
				s.log.Warn("room upgrade: tags not carried over", "user", userID, "room", roomID, "err", err)
			}
		}
	}
	if rules, err := s.pushRules(ctx, userID); err == nil && copyRulesForRoom(rules, old, roomID) {
		if err := s.savePushRules(ctx, userID, rules); err != nil {
			s.log.Warn("room upgrade: push rules not carried over", "user", userID, "room", roomID, "err", err)
		}
	}
	s.carryDirect(ctx, userID, old, roomID)
}

// copyRoomPushRules gives every local member of the old room a copy, for
// the new room, of their own push rules that name the old room: its room
// rule, and override and underride rules with a room_id condition on it
// (what Element's per-room notification settings write). A copy takes the
// rule's ID with the old room ID replaced; a rule whose ID does not contain
// the room ID, or whose new ID the user already has, is not copied.
func (s *Server) copyRoomPushRules(ctx context.Context, oldRoom, newRoom string) {
	snap, err := s.rooms.CurrentState(ctx, oldRoom)
	if err != nil {
		return
	}
	var users []string
	snap.Each(func(ev *rooms.Event) {
		if ev.Type() == spec.MRoomMember && ev.PDU.StateKey() != nil && s.rooms.IsLocal(*ev.PDU.StateKey()) && snap.Membership(*ev.PDU.StateKey()) == spec.Join {
			users = append(users, *ev.PDU.StateKey())
		}
	})
	for _, u := range users {
		rules, err := s.pushRules(ctx, u)
		if err != nil {
			s.log.Warn("copy push rules to the upgraded room", "user", u, "err", err)
			continue
		}
		if !copyRulesForRoom(rules, oldRoom, newRoom) {
			continue
		}
		if err := s.savePushRules(ctx, u, rules); err != nil {
			s.log.Warn("copy push rules to the upgraded room", "user", u, "err", err)
		}
	}
}

// copyRulesForRoom adds to rules the copies copyRoomPushRules describes;
// it reports whether it added any.
func copyRulesForRoom(rules *pushRuleset, oldRoom, newRoom string) bool {
	added := false
	for _, kind := range []string{"override", "room", "underride"} {
		list := rules.list(kind)
		have := map[string]bool{}
		for _, r := range *list {
			have[r.RuleID] = true
		}
		var out []pushRule
		for _, r := range *list {
			out = append(out, r)
			if r.Default || !strings.Contains(r.RuleID, oldRoom) {
				continue
			}
			names := false
			conds := make([]pushCondition, len(r.Conditions))
			for i, c := range r.Conditions {
				if c.Kind == "event_match" && c.Key == "room_id" && c.Pattern == oldRoom {
					c.Pattern = newRoom
					names = true
				}
				conds[i] = c
			}
			newID := strings.ReplaceAll(r.RuleID, oldRoom, newRoom)
			if !names || have[newID] {
				continue
			}
			cp := r
			cp.RuleID, cp.Conditions, cp.Actions = newID, conds, slices.Clone(r.Actions)
			out = append(out, cp)
			have[newID] = true
			added = true
		}
		*list = out
	}
	return added
}

// carryDirect lists the replacement room wherever the user's m.direct
// lists the old one, so a direct chat stays one after its upgrade. A
// failure here leaves the upgrade done; it is logged.
func (s *Server) carryDirect(ctx context.Context, userID, oldID, newID string) {
	raw, err := s.store.GetAccountData(ctx, userID, "", "m.direct")
	if err != nil {
		return // none (or unreadable: nothing to carry)
	}
	var direct map[string][]string
	if json.Unmarshal(raw, &direct) != nil {
		return
	}
	changed := false
	for u, rooms := range direct {
		if slices.Contains(rooms, oldID) && !slices.Contains(rooms, newID) {
			direct[u] = append(rooms, newID)
			changed = true
		}
	}
	if !changed {
		return
	}
	b, _ := json.Marshal(direct)
	if err := s.putAccountData(ctx, userID, "", "m.direct", b); err != nil {
		s.log.Warn("room upgrade: m.direct not carried over", "user", userID, "room", newID, "err", err)
	}
}
