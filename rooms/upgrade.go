package rooms

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/internal/config"
	"github.com/machi-chat/machi/policy"
)

// UpgradeRequest is a room to replace with a new room of another version
// (POST /rooms/{roomId}/upgrade, already parsed).
type UpgradeRequest struct {
	RoomID     string
	Sender     string
	NewVersion string
	// AdditionalCreators are more creators of the new room, for versions
	// that have them (12); ignored otherwise.
	AdditionalCreators []string
	CreatorMember      json.RawMessage // content of the sender's join
	Actor              policy.Actor
}

// transferable are the state events an upgrade copies to the new room
// (besides the power levels, which it adjusts, and the bans).
var transferable = []string{
	spec.MRoomJoinRules, spec.MRoomHistoryVisibility, spec.MRoomGuestAccess, spec.MRoomName, spec.MRoomTopic,
	spec.MRoomAvatar, spec.MRoomEncryption, "m.room.server_acl", "m.room.pinned_events", spec.MRoomCanonicalAlias,
}

// UpgradeRoom replaces a room (room upgrades, "Server behaviour"): it
// checks that the sender may send the tombstone, creates the new room naming its predecessor with the old room's
// state, bans and (lowered back after) power levels, moves the local
// aliases and the directory listing, then tombstones the old room and,
// if the sender may, raises its power levels so nobody without power can
// talk or invite there. Every event goes through CreateRoom or Submit, so the city's
// policy applies. Upgrades are serialised: two at once would make two
// replacement rooms.
func (s *Service) UpgradeRoom(ctx context.Context, req *UpgradeRequest) (string, error) {
	s.upgradeMu.Lock()
	defer s.upgradeMu.Unlock()
	newVersion, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(req.NewVersion))
	if err != nil || !slices.Contains(config.SupportedRoomVersions, req.NewVersion) {
		return "", ErrUnsupportedVersion
	}
	r, err := s.room(ctx, req.RoomID)
	if err != nil {
		return "", err
	}
	r.mu.Lock()
	old, latest, oldVersion := r.snap, slices.Clone(r.latest), r.version
	r.mu.Unlock()

	oldPL, err := powerLevels(old)
	if err != nil {
		return "", err
	}
	restricted := restrictOld(oldPL)
	tombstone := func(replacement string) json.RawMessage {
		b, _ := json.Marshal(map[string]string{"body": "このルームは新しいルームに移行しました / This room has been replaced", "replacement_room": replacement})
		return b
	}
	empty := ""
	// The checks Submit will make, made now, before the new room exists.
	if err := s.Check(ctx, &Request{RoomID: req.RoomID, Sender: req.Sender, Type: "m.room.tombstone", StateKey: &empty, Content: tombstone("!placeholder"), Actor: req.Actor}); err != nil {
		return "", err
	}
	// Restricting the old room takes the power to change its power
	// levels, which the spec does not make a condition of upgrading.
	restrict := s.Check(ctx, &Request{RoomID: req.RoomID, Sender: req.Sender, Type: spec.MRoomPowerLevels, StateKey: &empty, Content: mustJSON(restricted), Actor: req.Actor}) == nil

	create := map[string]any{}
	if ev := old.Get(spec.MRoomCreate, ""); ev != nil {
		_ = json.Unmarshal(ev.PDU.Content(), &create)
	}
	for _, k := range []string{"creator", "room_version", "predecessor", "additional_creators"} {
		delete(create, k)
	}
	pred := map[string]any{"room_id": req.RoomID}
	if len(latest) > 0 {
		pred["event_id"] = latest[0]
	}
	// Where the new room's ID can be chosen (not in v12, whose room ID is
	// its create event's hash), the tombstone is built first, so that the
	// predecessor names it: the old room's last event, where clients jump
	// to when they follow the link back.
	var newID string
	var tomb gomatrixserverlib.PDU
	if !newVersion.DomainlessRoomIDs() {
		newID = NewRoomID(s.cfg.ServerName)
		if tomb, err = s.BuildEvent(ctx, &Request{RoomID: req.RoomID, Sender: req.Sender, Type: "m.room.tombstone", StateKey: &empty, Content: tombstone(newID), Actor: req.Actor}); err != nil {
			return "", err
		}
		pred["event_id"] = tomb.EventID()
	}
	create["predecessor"] = pred
	var creators []string
	if newVersion.PrivilegedCreators() {
		creators = append(creators, req.Sender)
		for _, u := range req.AdditionalCreators {
			if !slices.Contains(creators, u) {
				creators = append(creators, u)
			}
		}
		if len(creators) > 1 {
			create["additional_creators"] = creators[1:]
		}
	}

	// The new room's power levels: the old ones, with the sender at the
	// top while the state is copied, lowered back to their old level
	// after. Creators of a v12 room are not listed at all.
	final := clonePL(oldPL)
	users, _ := final["users"].(map[string]any)
	if users == nil {
		users = map[string]any{}
		final["users"] = users
	}
	top := maxLevel(final)
	initial := clonePL(final)
	if newVersion.PrivilegedCreators() {
		for _, u := range creators {
			delete(users, u)
			delete(initial["users"].(map[string]any), u)
		}
	} else {
		level := s.userLevel(old, oldVersion, oldPL, req.Sender)
		if math.IsInf(level, 1) {
			level = max(top, 100)
		}
		users[req.Sender] = level
		initial["users"].(map[string]any)[req.Sender] = max(level, top)
	}

	var state []StateEvent
	for _, typ := range transferable {
		if ev := old.Get(typ, ""); ev != nil {
			state = append(state, StateEvent{Type: typ, Content: json.RawMessage(ev.PDU.Content())})
		}
	}
	var bans []string
	old.Each(func(ev *Event) {
		switch {
		case strings.HasPrefix(ev.Type(), "m.space."):
			state = append(state, StateEvent{Type: ev.Type(), StateKey: *ev.StateKey(), Content: json.RawMessage(ev.PDU.Content())})
		case ev.Type() == spec.MRoomMember && ev.Membership() == spec.Ban:
			bans = append(bans, *ev.StateKey())
		}
	})
	slices.Sort(bans)

	newID, err = s.CreateRoom(ctx, &CreateRequest{
		RoomID:  newID,
		Creator: req.Sender, CreatorMember: req.CreatorMember, Version: req.NewVersion, Preset: "private_chat",
		CreationContent: mustJSON(create), InitialState: state, PowerOverride: mustJSON(initial), Actor: req.Actor,
	})
	if err != nil {
		return "", fmt.Errorf("create the replacement room: %w", err)
	}
	send := func(roomID, typ, key string, content json.RawMessage) error {
		_, err := s.Submit(ctx, &Request{RoomID: roomID, Sender: req.Sender, Type: typ, StateKey: &key, Content: content, Actor: req.Actor})
		return err
	}
	for _, u := range bans {
		if err := send(newID, spec.MRoomMember, u, json.RawMessage(`{"membership":"ban"}`)); err != nil {
			return "", fmt.Errorf("copy the ban of %s: %w", u, err)
		}
	}
	if !newVersion.PrivilegedCreators() && users[req.Sender] != initial["users"].(map[string]any)[req.Sender] {
		if err := send(newID, spec.MRoomPowerLevels, "", mustJSON(final)); err != nil {
			return "", fmt.Errorf("restore the power levels: %w", err)
		}
	}
	if err := s.store.ReplaceRoom(ctx, req.RoomID, newID); err != nil {
		return "", err
	}
	if tomb != nil {
		if _, err := s.Receive(ctx, &ReceiveRequest{PDU: tomb, Origin: s.cfg.ServerName, Forward: true, Actor: req.Actor}); err != nil {
			return "", fmt.Errorf("send the tombstone: %w", err)
		}
	}
	if ev := old.Get(spec.MRoomCanonicalAlias, ""); ev != nil && string(ev.PDU.Content()) != "{}" {
		// The aliases now lead to the new room; the old one stops naming them.
		if err := send(req.RoomID, spec.MRoomCanonicalAlias, "", json.RawMessage(`{}`)); err != nil {
			s.cfg.Log.Warn("room upgrade: old canonical alias left in place", "room", req.RoomID, "err", err)
		}
	}
	if tomb == nil {
		if err := send(req.RoomID, "m.room.tombstone", "", tombstone(newID)); err != nil {
			return "", fmt.Errorf("send the tombstone: %w", err)
		}
	}
	if !restrict {
		s.cfg.Log.Info("room upgrade: the upgrader may not change the old room's power levels; left as they are", "room", req.RoomID)
	} else if err := send(req.RoomID, spec.MRoomPowerLevels, "", mustJSON(restricted)); err != nil {
		return "", fmt.Errorf("restrict the old room: %w", err)
	}
	return newID, nil
}

func mustJSON(v any) json.RawMessage { b, _ := json.Marshal(v); return b }

// powerLevels is the room's power levels content as a generic object (to
// keep every field), or the spec's defaults when the room has none.
func powerLevels(snap *Snapshot) (map[string]any, error) {
	pl := map[string]any{}
	ev := snap.Get(spec.MRoomPowerLevels, "")
	if ev == nil {
		return pl, nil
	}
	if err := json.Unmarshal(ev.PDU.Content(), &pl); err != nil {
		return nil, fmt.Errorf("read power levels: %w", err)
	}
	return pl, nil
}

func clonePL(pl map[string]any) map[string]any {
	var out map[string]any
	_ = json.Unmarshal(mustJSON(pl), &out)
	if out == nil {
		out = map[string]any{}
	}
	return out
}

// num reads a power level (an integer, or a string of one in old rooms).
func num(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case string:
		var f float64
		if _, err := fmt.Sscanf(n, "%g", &f); err == nil {
			return f, true
		}
	}
	return 0, false
}

// maxLevel is the highest level the power levels ask for anything, so a
// user at it may send every state event.
func maxLevel(pl map[string]any) float64 {
	top := 0.0
	for _, k := range []string{"ban", "kick", "redact", "invite", "state_default", "events_default", "users_default"} {
		if n, ok := num(pl[k]); ok {
			top = max(top, n)
		} else if k == "ban" || k == "kick" || k == "redact" || k == "state_default" {
			top = max(top, 50) // the spec's default when absent
		}
	}
	if evs, ok := pl["events"].(map[string]any); ok {
		for _, v := range evs {
			if n, ok := num(v); ok {
				top = max(top, n)
			}
		}
	}
	return top
}

// userLevel is the user's power in the room: +Inf for the creators of a
// room version whose creators outrank everyone.
func (s *Service) userLevel(snap *Snapshot, version gomatrixserverlib.IRoomVersion, pl map[string]any, userID string) float64 {
	if version.PrivilegedCreators() {
		if create := snap.Get(spec.MRoomCreate, ""); create != nil && slices.Contains(gomatrixserverlib.CreatorsFromCreateEvent(create.PDU), userID) {
			return math.Inf(1)
		}
	}
	if users, ok := pl["users"].(map[string]any); ok {
		if n, ok := num(users[userID]); ok {
			return n
		}
	}
	if n, ok := num(pl["users_default"]); ok {
		return n
	}
	return 0
}

// restrictOld is the old room's power levels after an upgrade: sending
// messages and inviting take max(50, users_default+1).
func restrictOld(pl map[string]any) map[string]any {
	out := clonePL(pl)
	def, _ := num(out["users_default"])
	level := max(50, def+1)
	for _, k := range []string{"events_default", "invite"} {
		if n, ok := num(out[k]); !ok || n < level {
			out[k] = level
		}
	}
	return out
}
