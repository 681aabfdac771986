package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/policy"
	"github.com/machi-chat/machi/rooms"
	"github.com/machi-chat/machi/storage"
)

// handleCreateRoom serves POST /_matrix/client/v3/createRoom. Not
// idempotent: each call makes a room.
func (s *Server) handleCreateRoom(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	if err := s.limiter.allow(dev.UserID); err != nil {
		writeError(w, err)
		return
	}
	var req struct {
		Visibility      string             `json:"visibility"`
		RoomAliasName   string             `json:"room_alias_name"`
		Name            *string            `json:"name"`
		Topic           *string            `json:"topic"`
		Invite          []string           `json:"invite"`
		RoomVersion     string             `json:"room_version"`
		CreationContent json.RawMessage    `json:"creation_content"`
		InitialState    []rooms.StateEvent `json:"initial_state"`
		Preset          string             `json:"preset"`
		IsDirect        bool               `json:"is_direct"`
		PowerOverride   json.RawMessage    `json:"power_level_content_override"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	for _, raw := range []json.RawMessage{req.CreationContent, req.PowerOverride} {
		if len(raw) > 0 && string(raw) != "null" && !rawObject(raw) {
			writeError(w, errBadJSON("creation_content and power_level_content_override must be objects"))
			return
		}
	}
	for _, e := range req.InitialState {
		if e.Type == "" || !rawObject(e.Content) {
			writeError(w, errBadJSON("each initial_state event needs a type and an object content"))
			return
		}
	}
	switch req.Visibility {
	case "", "private", "public":
	default:
		writeError(w, errBadJSON("visibility must be public or private"))
		return
	}
	if req.Preset == "" {
		req.Preset = "private_chat"
		if req.Visibility == "public" {
			req.Preset = "public_chat"
		}
	}
	switch req.Preset {
	case "private_chat", "trusted_private_chat", "public_chat":
	default:
		writeError(w, errBadJSON("unknown preset %q", req.Preset))
		return
	}
	var remoteInvites []string
	for _, u := range req.Invite {
		if _, err := spec.NewUserID(u, true); err != nil {
			writeError(w, errInvalidParam("invalid user ID %q in invite", u))
			return
		}
		if !s.rooms.IsLocal(u) {
			if s.remote == nil {
				writeError(w, errForbidden("%s is on another server, and this server does not federate", u))
				return
			}
			remoteInvites = append(remoteInvites, u)
		}
	}
	alias := ""
	if req.RoomAliasName != "" {
		if strings.ContainsAny(req.RoomAliasName, ":# ") {
			writeError(w, errInvalidParam("room_alias_name must be a localpart"))
			return
		}
		alias = "#" + req.RoomAliasName + ":" + s.cfg.ServerName
		if _, err := s.store.GetAlias(r.Context(), alias); err == nil {
			writeError(w, newErr(http.StatusBadRequest, "M_ROOM_IN_USE", "room alias %s is taken", alias))
			return
		}
	}
	member, err := s.memberContent(r.Context(), dev.UserID, "join", "")
	if err != nil {
		writeError(w, err)
		return
	}
	roomID, err := s.rooms.CreateRoom(r.Context(), &rooms.CreateRequest{
		Creator: dev.UserID, CreatorMember: member, Version: req.RoomVersion, Preset: req.Preset,
		CreationContent: req.CreationContent, InitialState: req.InitialState, Name: req.Name, Topic: req.Topic,
		Alias: alias, Invite: req.Invite, IsDirect: req.IsDirect, PowerOverride: req.PowerOverride, Actor: dev.actor(),
	})
	if err != nil {
		writeError(w, err)
		return
	}
	if alias != "" {
		if err := s.store.PutAlias(r.Context(), alias, roomID, dev.UserID); err != nil {
			s.log.Warn("room alias taken after room creation", "alias", alias, "err", err)
		}
	}
	for _, u := range remoteInvites {
		// The room exists: a failed invite is logged, not answered, or the
		// client would retry and create a second room.
		content, _ := json.Marshal(map[string]any{"membership": spec.Invite, "is_direct": req.IsDirect})
		if err := s.remote.Invite(r.Context(), dev.actor(), roomID, dev.UserID, u, content); err != nil {
			s.log.Warn("invite to the new room", "room", roomID, "user", u, "err", err)
		}
	}
	if req.Visibility == "public" {
		if err := s.store.SetPublished(r.Context(), roomID, true); err != nil {
			// The room exists: answering an error would make the client
			// retry and create a second one.
			s.log.Warn("publish new room in the directory", "room", roomID, "err", err)
		}
	}
	writeJSON(w, 200, map[string]string{"room_id": roomID})
}

// memberContent is the content of a member event for userID, with their
// profile for joins.
func (s *Server) memberContent(ctx context.Context, userID, membership, reason string) (json.RawMessage, error) {
	c := map[string]any{"membership": membership}
	if membership == spec.Join && s.rooms.IsLocal(userID) {
		if u, err := s.store.GetUser(ctx, userID); err == nil {
			if u.DisplayName != "" {
				c["displayname"] = u.DisplayName
			}
			if u.AvatarURL != "" {
				c["avatar_url"] = u.AvatarURL
			}
		}
	}
	if reason != "" {
		c["reason"] = reason
	}
	b, err := json.Marshal(c)
	return b, err
}

// setMembership sends sender's member event about target.
func (s *Server) setMembership(ctx context.Context, actor policy.Actor, roomID, sender, target, membership, reason string) (*rooms.Event, error) {
	content, err := s.memberContent(ctx, target, membership, reason)
	if err != nil {
		return nil, err
	}
	return s.rooms.Submit(ctx, &rooms.Request{
		RoomID: roomID, Sender: sender, Type: spec.MRoomMember, StateKey: &target, Content: content, Actor: actor,
	})
}

// resolveRoom turns a room ID or an alias into a room ID, and for
// another server's alias the servers in the room too.
func (s *Server) resolveRoom(ctx context.Context, idOrAlias string) (string, []string, error) {
	if strings.HasPrefix(idOrAlias, "!") {
		return idOrAlias, nil, nil
	}
	if strings.HasPrefix(idOrAlias, "#") && !strings.HasSuffix(idOrAlias, ":"+s.cfg.ServerName) && s.remote != nil {
		return s.remote.QueryAlias(ctx, idOrAlias)
	}
	if strings.HasPrefix(idOrAlias, "#") {
		roomID, err := s.store.GetAlias(ctx, idOrAlias)
		if isNotFound(err) {
			return "", nil, errNotFound("room alias %s not found", idOrAlias)
		}
		return roomID, nil, err
	}
	return "", nil, errInvalidParam("%q is neither a room ID nor an alias", idOrAlias)
}

// handleJoin serves POST /join/{roomIdOrAlias} and /rooms/{roomId}/join.
// Idempotent: joining a room one is in changes nothing but the profile.
func (s *Server) handleJoin(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	var req struct {
		Reason string `json:"reason"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	v := vars(r)
	target := v["roomIdOrAlias"]
	if target == "" {
		target = v["roomId"]
	}
	roomID, via, err := s.resolveRoom(r.Context(), target)
	if err != nil {
		writeError(w, err)
		return
	}
	if s.remote != nil && s.rooms.Departed(r.Context(), roomID) {
		// A room this server has left, which goes on elsewhere: its state
		// here is stale, so the join goes through a server still in it.
		err = s.joinRemote(r, dev, roomID, req.Reason, via)
	} else {
		_, err = s.setMembership(r.Context(), dev.actor(), roomID, dev.UserID, dev.UserID, spec.Join, req.Reason)
		if errors.Is(err, rooms.ErrUnknownRoom) && s.remote != nil {
			err = s.joinRemote(r, dev, roomID, req.Reason, via)
		}
	}
	if err != nil {
		writeError(w, err)
		return
	}
	s.carryUserState(r.Context(), dev.UserID, roomID)
	writeJSON(w, 200, map[string]string{"room_id": roomID})
}

type targetRequest struct {
	UserID string `json:"user_id"`
	Reason string `json:"reason"`
}

// handleMembership serves POST /rooms/{roomId}/{invite,kick,ban,unban,leave}.
func (s *Server) handleMembership(action string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		dev := DeviceFrom(r.Context())
		var req targetRequest
		if err := readJSON(r, &req); err != nil {
			writeError(w, err)
			return
		}
		roomID := vars(r)["roomId"]
		target, membership := req.UserID, ""
		switch action {
		case "invite":
			membership = spec.Invite
		case "kick", "unban":
			membership = spec.Leave
		case "ban":
			membership = spec.Ban
		case "leave":
			target, membership = dev.UserID, spec.Leave
		}
		if target == "" {
			writeError(w, errMissingParam("user_id is required"))
			return
		}
		if _, err := spec.NewUserID(target, true); err != nil {
			writeError(w, errInvalidParam("invalid user_id %q", target))
			return
		}
		if action == "unban" || action == "kick" {
			snap, err := s.rooms.CurrentState(r.Context(), roomID)
			if err != nil {
				writeError(w, err)
				return
			}
			cur := snap.Membership(target)
			if action == "unban" && cur != spec.Ban {
				writeError(w, errForbidden("%s is not banned", target))
				return
			}
			if action == "kick" && cur != spec.Join && cur != spec.Invite && cur != spec.Knock {
				writeError(w, errForbidden("%s is not in the room", target))
				return
			}
		}
		if action == "leave" && (s.remote == nil || s.knowsRoom(r, roomID)) {
			ms, err := s.rooms.UserRooms(r.Context(), dev.UserID)
			if err != nil {
				writeError(w, err)
				return
			}
			if m, ok := ms[roomID]; !ok || m.Membership == spec.Leave {
				// Leaving a room one is not in is a no-op per spec, but an
				// unknown room is an error.
				if _, err := s.rooms.Version(r.Context(), roomID); err != nil {
					writeError(w, err)
					return
				}
				writeJSON(w, 200, map[string]any{})
				return
			}
		}
		var err error
		switch {
		case action == "invite" && !s.rooms.IsLocal(target):
			err = s.inviteRemote(r, dev, roomID, target, req.Reason)
		case action == "leave" && s.remote != nil && s.remote.InviteServers(r.Context(), dev.UserID, roomID) != nil &&
			(!s.knowsRoom(r, roomID) || s.rooms.Departed(r.Context(), roomID)):
			// An invite to a room on another server (one this server is
			// not in, or has left).
			err = s.remote.RejectInvite(r.Context(), dev.UserID, roomID)
		default:
			_, err = s.setMembership(r.Context(), dev.actor(), roomID, dev.UserID, target, membership, req.Reason)
		}
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, 200, map[string]any{})
	}
}

// handleForget serves POST /rooms/{roomId}/forget.
func (s *Server) handleForget(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	if err := s.rooms.Forget(r.Context(), dev.UserID, vars(r)["roomId"]); err != nil {
		if errors.Is(err, rooms.ErrUnknownRoom) {
			writeError(w, errNotFound("you have no membership in this room"))
			return
		}
		writeError(w, err)
		return
	}
	writeJSON(w, 200, map[string]any{})
}

// leaveAll makes a user leave every room they are in or invited to.
func (s *Server) leaveAll(ctx context.Context, actor policy.Actor, userID string) error {
	ms, err := s.rooms.UserRooms(ctx, userID)
	if err != nil {
		return err
	}
	for roomID, m := range ms {
		if m.Membership == spec.Join || m.Membership == spec.Invite {
			if _, err := s.setMembership(ctx, actor, roomID, userID, userID, spec.Leave, ""); err != nil {
				return err
			}
		}
	}
	return nil
}

// handleJoinedRooms serves GET /joined_rooms.
func (s *Server) handleJoinedRooms(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	ms, err := s.rooms.UserRooms(r.Context(), dev.UserID)
	if err != nil {
		writeError(w, err)
		return
	}
	out := []string{}
	for roomID, m := range ms {
		if m.Membership == spec.Join {
			out = append(out, roomID)
		}
	}
	writeJSON(w, 200, map[string]any{"joined_rooms": out})
}

// handleSend serves PUT /rooms/{roomId}/send/{eventType}/{txnId}.
// Idempotent per device and txnId: a retry returns the first event's ID.
func (s *Server) handleSend(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	v := vars(r)
	content, err := readObject(r)
	if err != nil {
		writeError(w, err)
		return
	}
	if err := s.limiter.allow(dev.UserID); err != nil {
		writeError(w, err)
		return
	}
	ev, err := s.rooms.Submit(r.Context(), &rooms.Request{
		RoomID: v["roomId"], Sender: dev.UserID, Type: v["eventType"], Content: content,
		TxnDevice: dev.DeviceID, TxnID: v["txnId"], Actor: dev.actor(), WakeSenderLater: true,
	})
	defer s.replied(w, dev.UserID, ev)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, []byte(`{"event_id":"`+ev.ID()+`"}`))
}

// txnKey is the key a transaction ID is remembered under; none without one
// (the POST forms, which are not idempotent).
func txnKey(prefix, txnID string) string {
	if txnID == "" {
		return ""
	}
	return prefix + txnID
}

// replied flushes the reply to a send, then releases the event to the
// sender's /sync: the sending device learns its event's ID before the
// event comes back through /sync (see rooms.Request.WakeSenderLater).
func (s *Server) replied(w http.ResponseWriter, userID string, ev *rooms.Event) {
	_ = http.NewResponseController(w).Flush()
	s.rooms.Replied(userID, ev)
}

// handlePutState serves PUT /rooms/{roomId}/state/{eventType}/{stateKey}.
// Not idempotent by ID: each call is a new state event.
func (s *Server) handlePutState(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	v := vars(r)
	content, err := readObject(r)
	if err != nil {
		writeError(w, err)
		return
	}
	key := v["stateKey"]
	typ := v["eventType"]
	if typ == spec.MRoomMember {
		// Membership changes go through the membership endpoints' checks
		// too, but the auth rules are what decide.
		var c struct {
			Membership string `json:"membership"`
		}
		if json.Unmarshal(content, &c) != nil || c.Membership == "" {
			writeError(w, errBadJSON("m.room.member content needs a membership"))
			return
		}
	}
	if typ == spec.MRoomCanonicalAlias && key == "" {
		if err := s.checkCanonicalAlias(r.Context(), v["roomId"], content); err != nil {
			writeError(w, err)
			return
		}
	}
	ev, err := s.rooms.Submit(r.Context(), &rooms.Request{
		RoomID: v["roomId"], Sender: dev.UserID, Type: typ, StateKey: &key, Content: content, Actor: dev.actor(),
	})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, map[string]string{"event_id": ev.ID()})
}

// checkCanonicalAlias is what the spec asks of an m.room.canonical_alias
// sent by a client: every alias well-formed (M_INVALID_PARAM) and, for this
// server's aliases, pointing to the room (M_BAD_ALIAS). Another server's
// aliases cannot be resolved without federation and are taken as given.
func (s *Server) checkCanonicalAlias(ctx context.Context, roomID string, content json.RawMessage) error {
	var c struct {
		Alias      *string  `json:"alias"`
		AltAliases []string `json:"alt_aliases"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return errBadJSON("m.room.canonical_alias content: %v", err)
	}
	aliases := c.AltAliases
	if c.Alias != nil && *c.Alias != "" {
		aliases = append([]string{*c.Alias}, aliases...)
	}
	for _, alias := range aliases {
		local, server, ok := strings.Cut(strings.TrimPrefix(alias, "#"), ":")
		if !strings.HasPrefix(alias, "#") || !ok || local == "" || server == "" {
			return errInvalidParam("%q is not a room alias", alias)
		}
		if server != s.cfg.ServerName {
			continue
		}
		target, err := s.store.GetAlias(ctx, alias)
		if err != nil && !isNotFound(err) {
			return err
		}
		if err != nil || target != roomID {
			return newErr(http.StatusBadRequest, "M_BAD_ALIAS", "the alias %s does not point to this room", alias)
		}
	}
	return nil
}

// handleRedact serves PUT /rooms/{roomId}/redact/{eventId}/{txnId}.
// Idempotent per device and txnId.
func (s *Server) handleRedact(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	v := vars(r)
	var req struct {
		Reason string `json:"reason"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	content := map[string]any{}
	if req.Reason != "" {
		content["reason"] = req.Reason
	}
	version, err := s.rooms.Version(r.Context(), v["roomId"])
	if err != nil {
		writeError(w, err)
		return
	}
	if !version.CreatorInCreateEvent() {
		// From room version 11 redacts is part of the content.
		content["redacts"] = v["eventId"]
	}
	body, _ := json.Marshal(content)
	ev, err := s.rooms.Submit(r.Context(), &rooms.Request{
		RoomID: v["roomId"], Sender: dev.UserID, Type: spec.MRoomRedaction, Content: body, Redacts: v["eventId"],
		TxnDevice: dev.DeviceID, TxnID: txnKey("redact:", v["txnId"]), Actor: dev.actor(), WakeSenderLater: true,
	})
	defer s.replied(w, dev.UserID, ev)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, map[string]string{"event_id": ev.ID()})
}

// handleState serves GET /rooms/{roomId}/state.
func (s *Server) handleState(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	snap, err := s.stateAt(r.Context(), dev.UserID, vars(r)["roomId"])
	if err != nil {
		writeError(w, err)
		return
	}
	now := nowTime()
	b := []byte{'['}
	first := true
	snap.Each(func(ev *rooms.Event) {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = ev.AppendClientJSON(b, now, dev.key())
	})
	writeJSON(w, 200, append(b, ']'))
}

// handleGetState serves GET /rooms/{roomId}/state/{eventType}/{stateKey}.
func (s *Server) handleGetState(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	v := vars(r)
	snap, err := s.stateAt(r.Context(), dev.UserID, v["roomId"])
	if err != nil {
		writeError(w, err)
		return
	}
	ev := snap.Get(v["eventType"], v["stateKey"])
	if ev == nil {
		writeError(w, errNotFound("no %s state with key %q in this room", v["eventType"], v["stateKey"]))
		return
	}
	if r.URL.Query().Get("format") == "event" {
		writeJSON(w, 200, ev.ClientJSON(nowTime(), dev.key()))
		return
	}
	writeJSON(w, 200, json.RawMessage(ev.PDU.Content()))
}

// handleEvent serves GET /rooms/{roomId}/event/{eventId}.
func (s *Server) handleEvent(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	v := vars(r)
	upTo, err := s.readAccess(r.Context(), dev.UserID, v["roomId"])
	var me *Error
	if errors.As(err, &me) && me.Code == "M_FORBIDDEN" {
		// The spec's answer for an event the user may not read is 404: it
		// tells nothing of whether the room or the event exists.
		err = errNotFound("event not found")
	}
	if err != nil {
		writeError(w, err)
		return
	}
	ev, err := s.rooms.Event(r.Context(), v["eventId"])
	if err == nil && ev.RoomID() == v["roomId"] && !s.visibility(r.Context(), dev.UserID, v["roomId"]).allows(ev) {
		err = storage.ErrNotFound
	}
	if err != nil || ev.RoomID() != v["roomId"] || ev.Pos > upTo {
		if err != nil && !isNotFound(err) {
			writeError(w, err)
			return
		}
		writeError(w, errNotFound("event not found"))
		return
	}
	out, err := s.bundled(r.Context(), dev, v["roomId"], []*rooms.Event{ev}, upTo)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, []byte(out[0]))
}

// handleMembers serves GET /rooms/{roomId}/members (membership and
// not_membership filters).
func (s *Server) handleMembers(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	snap, err := s.stateAt(r.Context(), dev.UserID, vars(r)["roomId"])
	if err != nil {
		writeError(w, err)
		return
	}
	q := r.URL.Query()
	want, notWant := q.Get("membership"), q.Get("not_membership")
	now := nowTime()
	var chunk []json.RawMessage
	snap.Each(func(ev *rooms.Event) {
		if ev.Type() != spec.MRoomMember {
			return
		}
		m := ev.Membership()
		if (want != "" && m != want) || (notWant != "" && m == notWant) {
			return
		}
		chunk = append(chunk, ev.ClientJSON(now, dev.key()))
	})
	if chunk == nil {
		chunk = []json.RawMessage{}
	}
	writeJSON(w, 200, map[string]any{"chunk": chunk})
}

// handleJoinedMembers serves GET /rooms/{roomId}/joined_members.
func (s *Server) handleJoinedMembers(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	// Members (and those who were) only, even in a world_readable room.
	if _, err := s.access(r.Context(), dev.UserID, vars(r)["roomId"]); err != nil {
		writeError(w, err)
		return
	}
	snap, err := s.stateAt(r.Context(), dev.UserID, vars(r)["roomId"])
	if err != nil {
		writeError(w, err)
		return
	}
	type profile struct {
		DisplayName string `json:"display_name,omitempty"`
		AvatarURL   string `json:"avatar_url,omitempty"`
	}
	joined := map[string]profile{}
	snap.Each(func(ev *rooms.Event) {
		if ev.Type() == spec.MRoomMember && ev.Membership() == spec.Join {
			var c struct {
				DisplayName string `json:"displayname"`
				AvatarURL   string `json:"avatar_url"`
			}
			_ = json.Unmarshal(ev.PDU.Content(), &c)
			joined[*ev.StateKey()] = profile{c.DisplayName, c.AvatarURL}
		}
	})
	writeJSON(w, 200, map[string]any{"joined": joined})
}

// handleDirectory serves GET/PUT/DELETE /directory/room/{roomAlias}.
func (s *Server) handleDirectory(w http.ResponseWriter, r *http.Request) {
	alias := vars(r)["roomAlias"]
	if !strings.HasPrefix(alias, "#") || !strings.Contains(alias, ":") {
		writeError(w, errInvalidParam("invalid room alias %q", alias))
		return
	}
	switch r.Method {
	case http.MethodGet:
		if !strings.HasSuffix(alias, ":"+s.cfg.ServerName) && s.remote != nil {
			roomID, servers, err := s.remote.QueryAlias(r.Context(), alias)
			if err != nil {
				writeError(w, err)
				return
			}
			writeJSON(w, 200, map[string]any{"room_id": roomID, "servers": servers})
			return
		}
		roomID, err := s.store.GetAlias(r.Context(), alias)
		if err != nil {
			if isNotFound(err) {
				writeError(w, errNotFound("room alias %s not found", alias))
				return
			}
			writeError(w, err)
			return
		}
		writeJSON(w, 200, map[string]any{"room_id": roomID, "servers": append([]string{s.cfg.ServerName}, s.rooms.Servers(r.Context(), roomID)...)})
	case http.MethodPut:
		dev := DeviceFrom(r.Context())
		var req struct {
			RoomID string `json:"room_id"`
		}
		if err := readJSON(r, &req); err != nil {
			writeError(w, err)
			return
		}
		if !strings.HasSuffix(alias, ":"+s.cfg.ServerName) {
			writeError(w, errInvalidParam("aliases must be on this server"))
			return
		}
		if _, err := s.access(r.Context(), dev.UserID, req.RoomID); err != nil {
			writeError(w, err)
			return
		}
		if err := s.store.PutAlias(r.Context(), alias, req.RoomID, dev.UserID); err != nil {
			if errors.Is(err, storage.ErrConflict) {
				writeError(w, newErr(http.StatusConflict, "M_UNKNOWN", "room alias %s already exists", alias))
				return
			}
			writeError(w, err)
			return
		}
		writeJSON(w, 200, map[string]any{})
	case http.MethodDelete:
		dev := DeviceFrom(r.Context())
		roomID, err := s.store.GetAlias(r.Context(), alias)
		if err != nil {
			writeError(w, err)
			return
		}
		if !dev.IsAdmin {
			if _, err := s.access(r.Context(), dev.UserID, roomID); err != nil {
				writeError(w, err)
				return
			}
		}
		if err := s.store.DeleteAlias(r.Context(), alias); err != nil {
			writeError(w, err)
			return
		}
		s.dropCanonicalAlias(r.Context(), dev, roomID, alias)
		writeJSON(w, 200, map[string]any{})
	}
}

// handleRoomAliases serves GET /rooms/{roomId}/aliases.
func (s *Server) handleRoomAliases(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	roomID := vars(r)["roomId"]
	if _, err := s.access(r.Context(), dev.UserID, roomID); err != nil {
		writeError(w, err)
		return
	}
	aliases, err := s.store.RoomAliases(r.Context(), roomID)
	if err != nil {
		writeError(w, err)
		return
	}
	if aliases == nil {
		aliases = []string{}
	}
	writeJSON(w, 200, map[string]any{"aliases": aliases})
}
