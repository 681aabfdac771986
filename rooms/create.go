package rooms

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/internal/config"
	"github.com/machi-chat/machi/policy"
	"github.com/machi-chat/machi/storage"
)

// StateEvent is a state event to put in a new room.
type StateEvent struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

// CreateRequest is a room to create (POST /createRoom, already parsed).
type CreateRequest struct {
	Creator         string
	CreatorMember   json.RawMessage // content of the creator's join
	Version         string          // "" for the default
	Preset          string          // private_chat, trusted_private_chat, public_chat
	CreationContent json.RawMessage
	InitialState    []StateEvent
	Name, Topic     *string
	Alias           string // full alias for m.room.canonical_alias, already reserved
	// Invite are the users to invite (and, for trusted_private_chat, to
	// give power); only local ones are invited here: the caller invites
	// other servers' users once the room exists.
	Invite        []string
	IsDirect      bool
	PowerOverride json.RawMessage
	Actor         policy.Actor
	// RoomID is the new room's ID, chosen by the caller (an upgrade names
	// the replacement in the old room's tombstone first); "" for a random
	// one. Versions whose room ID is the create event's hash ignore it.
	RoomID string
}

// NewRoomID is a random room ID of server, for room versions 1 to 11.
func NewRoomID(server spec.ServerName) string {
	return fmt.Sprintf("!%s:%s", randomString(18), server)
}

// CreateRoom creates a room: every initial event is built, authorised and
// checked first, then all commit in one transaction, or none does.
func (s *Service) CreateRoom(ctx context.Context, req *CreateRequest) (string, error) {
	verStr := req.Version
	if verStr == "" {
		verStr = s.cfg.DefaultVersion
	}
	version, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(verStr))
	if err != nil || !slices.Contains(config.SupportedRoomVersions, verStr) {
		return "", ErrUnsupportedVersion
	}
	events, err := s.initialEvents(req, version)
	if err != nil {
		return "", err
	}

	r := &room{version: version, snap: emptySnapshot()}
	if !version.DomainlessRoomIDs() {
		r.id = req.RoomID
		if r.id == "" {
			r.id = NewRoomID(s.cfg.ServerName)
		}
	}
	var commits []storage.EventCommit
	var evs []*Event
	abandon := func() {
		for _, ev := range evs {
			s.stream.Complete(ev.Pos)
		}
	}
	for i, e := range events {
		proto := gomatrixserverlib.ProtoEvent{
			SenderID: req.Creator, RoomID: r.id, Type: e.Type, StateKey: &e.StateKey,
			PrevEvents: append([]string{}, r.latest...), Depth: r.depth + 1, Content: spec.RawJSON(e.Content),
		}
		if replaced := r.snap.Get(e.Type, e.StateKey); replaced != nil {
			u, _ := json.Marshal(unsignedExtra{PrevContent: replaced.PDU.Content(), PrevSender: replaced.Sender(), ReplacesState: replaced.ID()})
			proto.Unsigned = u
		}
		pdu, err := s.build(version, r.snap, &proto)
		if err != nil {
			abandon()
			return "", err
		}
		if i == 0 {
			r.id = pdu.RoomID().String()
		}
		if err := gomatrixserverlib.Allowed(pdu, authProvider{r.snap}, userIDForSender); err != nil {
			abandon()
			return "", &Forbidden{Reason: fmt.Sprintf("%s event: %v", e.Type, err)}
		}
		if d := s.policy.CheckEvent(ctx, policy.EventInput{
			Sender: req.Creator, RoomID: r.id, Type: e.Type, StateKey: &e.StateKey, Content: e.Content, Actor: req.Actor,
		}); d != nil {
			abandon()
			return "", d
		}
		ev, err := newEvent(pdu, s.stream.Allocate(), r.group, nil)
		if err != nil {
			abandon()
			return "", err
		}
		var newRoom *storage.Room
		if i == 0 {
			newRoom = &storage.Room{RoomID: r.id, Version: verStr, Creator: req.Creator, CreatedTS: time.Now().UnixMilli(), Latest: []string{}}
		}
		evs = append(evs, ev)
		commits = append(commits, s.applyOne(r, ev, newRoom))
	}
	r.used.Store(s.stream.Current())
	r.inflight.Add(1)
	s.mu.Lock()
	s.evictLocked()
	s.rooms[r.id] = r
	s.mu.Unlock()

	p := &pending{commits: commits, evs: evs, room: r, joined: r.joined, snap: r.snap}
	for _, c := range commits {
		if c.Membership != nil && c.Membership.Membership == spec.Invite {
			p.joined = append(slices.Clone(p.joined), c.Membership.UserID)
		}
	}
	s.writer.enqueue(p)
	<-p.done
	if p.err != nil {
		return "", fmt.Errorf("create room: %w", p.err)
	}
	return r.id, nil
}

// ErrUnsupportedVersion is a room version machi does not create.
var ErrUnsupportedVersion = errors.New("unsupported room version")

// initialEvents lists a new room's events in the order the spec gives.
func (s *Service) initialEvents(req *CreateRequest, version gomatrixserverlib.IRoomVersion) ([]StateEvent, error) {
	obj := func(raw json.RawMessage) (map[string]any, error) {
		m := map[string]any{}
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, &m); err != nil {
				return nil, fmt.Errorf("%w: %v", ErrBadEvent, err)
			}
		}
		return m, nil
	}
	mustJSON := func(v any) json.RawMessage { b, _ := json.Marshal(v); return b }

	create, err := obj(req.CreationContent)
	if err != nil {
		return nil, err
	}
	create["room_version"] = string(version.Version())
	if version.CreatorInCreateEvent() {
		create["creator"] = req.Creator
	} else {
		delete(create, "creator")
	}
	preset := req.Preset
	trusted := preset == "trusted_private_chat"
	if trusted && version.PrivilegedCreators() && len(req.Invite) > 0 {
		create["additional_creators"] = req.Invite
	}

	users := map[string]any{}
	if !version.PrivilegedCreators() {
		users[req.Creator] = 100
		if trusted {
			for _, u := range req.Invite {
				users[u] = 100
			}
		}
	}
	pl := map[string]any{
		"users": users, "users_default": 0, "events_default": 0, "state_default": 50,
		"ban": 50, "kick": 50, "redact": 50, "invite": 0,
		"events": map[string]any{
			"m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
			"m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
			"m.room.server_acl": 100, "m.room.encryption": 100, "m.room.topic": 50,
		},
		"notifications": map[string]any{"room": 50},
	}
	if preset == "public_chat" {
		pl["invite"] = 50
	}
	override, err := obj(req.PowerOverride)
	if err != nil {
		return nil, err
	}
	for k, v := range override {
		pl[k] = v
	}

	joinRule, guest := "invite", "can_join"
	if preset == "public_chat" {
		joinRule, guest = "public", "forbidden"
	}
	member := req.CreatorMember
	if len(member) == 0 {
		member = mustJSON(map[string]any{"membership": "join"})
	}
	out := []StateEvent{
		{Type: spec.MRoomCreate, Content: mustJSON(create)},
		{Type: spec.MRoomMember, StateKey: req.Creator, Content: member},
		{Type: spec.MRoomPowerLevels, Content: mustJSON(pl)},
	}
	if req.Alias != "" {
		out = append(out, StateEvent{Type: spec.MRoomCanonicalAlias, Content: mustJSON(map[string]any{"alias": req.Alias})})
	}
	// initial_state takes precedence over the preset: the preset's event
	// is left out rather than sent and then replaced.
	for _, e := range []StateEvent{
		{Type: spec.MRoomJoinRules, Content: mustJSON(map[string]any{"join_rule": joinRule})},
		{Type: spec.MRoomHistoryVisibility, Content: mustJSON(map[string]any{"history_visibility": "shared"})},
		{Type: spec.MRoomGuestAccess, Content: mustJSON(map[string]any{"guest_access": guest})},
	} {
		if !slices.ContainsFunc(req.InitialState, func(i StateEvent) bool { return i.Type == e.Type && i.StateKey == "" }) {
			out = append(out, e)
		}
	}
	for _, e := range req.InitialState {
		if e.Type == spec.MRoomCreate || e.Type == spec.MRoomMember || e.Type == spec.MRoomPowerLevels {
			return nil, fmt.Errorf("%w: initial_state may not set %s", ErrBadEvent, e.Type)
		}
		if len(e.Content) == 0 {
			return nil, fmt.Errorf("%w: initial_state event %s has no content", ErrBadEvent, e.Type)
		}
		out = append(out, e)
	}
	if req.Name != nil {
		out = append(out, StateEvent{Type: spec.MRoomName, Content: mustJSON(map[string]any{"name": *req.Name})})
	}
	if req.Topic != nil {
		out = append(out, StateEvent{Type: spec.MRoomTopic, Content: mustJSON(map[string]any{"topic": *req.Topic})})
	}
	for _, u := range req.Invite {
		if !s.IsLocal(u) {
			continue // another server's user: invited through federation once the room exists
		}
		c := map[string]any{"membership": "invite"}
		if req.IsDirect {
			c["is_direct"] = true
		}
		out = append(out, StateEvent{Type: spec.MRoomMember, StateKey: u, Content: mustJSON(c)})
	}
	return out, nil
}

const idChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

func randomString(n int) string {
	b := make([]byte, n)
	max := big.NewInt(int64(len(idChars)))
	for i := range b {
		v, _ := rand.Int(rand.Reader, max)
		b[i] = idChars[v.Int64()]
	}
	return string(b)
}
