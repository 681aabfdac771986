package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/internal/config"
	"github.com/machi-chat/machi/policy"
	"github.com/machi-chat/machi/rooms"
	"github.com/machi-chat/machi/storage"
)

// Invites across servers: the invitee's server signs the invite before
// the inviting server commits it, and keeps it (with the stripped state it
// was given) until the invitee joins or refuses.

// handleInvite serves PUT /_matrix/federation/v2/invite/{roomId}/{eventId}:
// an invite of a local user, signed back if it is sound.
func (f *Federation) handleInvite(w http.ResponseWriter, r *http.Request, origin spec.ServerName) {
	var req struct {
		RoomVersion string            `json:"room_version"`
		Event       json.RawMessage   `json:"event"`
		InviteState []json.RawMessage `json:"invite_room_state"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	f.acceptInvite(w, r, origin, req.RoomVersion, req.Event, req.InviteState)
}

// handleInviteV1 serves PUT /_matrix/federation/v1/invite/{roomId}/{eventId}:
// the body is the invite itself, with the stripped state in its unsigned
// part, and the room's version is 1 or 2 (whose events are alike).
func (f *Federation) handleInviteV1(w http.ResponseWriter, r *http.Request, origin spec.ServerName) {
	var raw json.RawMessage
	if err := readJSON(r, &raw); err != nil {
		writeError(w, err)
		return
	}
	var ev struct {
		Unsigned struct {
			InviteState []json.RawMessage `json:"invite_room_state"`
		} `json:"unsigned"`
	}
	_ = json.Unmarshal(raw, &ev) // readJSON checked it is an object; a bad unsigned part only loses the state
	f.acceptInvite(w, r, origin, string(gomatrixserverlib.RoomVersionV1), raw, ev.Unsigned.InviteState)
}

// acceptInvite checks an invite of a local user and answers it signed.
func (f *Federation) acceptInvite(w http.ResponseWriter, r *http.Request, origin spec.ServerName, roomVersion string, event json.RawMessage, inviteState []json.RawMessage) {
	v := vars(r)
	req := struct {
		RoomVersion string
		Event       json.RawMessage
		InviteState []json.RawMessage
	}{roomVersion, event, inviteState}
	if !slices.Contains(config.SupportedRoomVersions, req.RoomVersion) {
		writeError(w, newErr(http.StatusBadRequest, "M_INCOMPATIBLE_ROOM_VERSION", "this server does not support room version %q", req.RoomVersion).
			with("room_version", req.RoomVersion))
		return
	}
	version, _ := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(req.RoomVersion))
	pdu, err := version.NewEventFromUntrustedJSON(req.Event)
	if err != nil {
		writeError(w, newErr(http.StatusBadRequest, "M_BAD_JSON", "not an event of room version %s: %v", req.RoomVersion, err))
		return
	}
	sender, _ := spec.NewUserID(string(pdu.SenderID()), true)
	var invitee *spec.UserID
	if pdu.StateKey() != nil {
		invitee, _ = spec.NewUserID(*pdu.StateKey(), true)
	}
	switch {
	case pdu.EventID() != v["eventId"] || pdu.RoomID().String() != v["roomId"]:
		writeError(w, newErr(http.StatusBadRequest, "M_BAD_JSON", "the event is not %s in %s", v["eventId"], v["roomId"]))
		return
	case pdu.Type() != spec.MRoomMember || membership(pdu) != spec.Invite || invitee == nil:
		writeError(w, newErr(http.StatusBadRequest, "M_BAD_JSON", "not an invite"))
		return
	case sender == nil || sender.Domain() != origin:
		writeError(w, newErr(http.StatusForbidden, "M_FORBIDDEN", "%s may only send invites of its own users", origin))
		return
	case invitee.Domain() != f.cfg.ServerName:
		writeError(w, newErr(http.StatusBadRequest, "M_INVALID_PARAM", "%s is not a user of this server", invitee))
		return
	}
	if u, err := f.store.GetUser(r.Context(), invitee.String()); err != nil || u.Deactivated {
		writeError(w, errNotFound("no user %s here", invitee))
		return
	}
	// An invite needs the invitee's server's signature too: sign, then
	// check the whole (the sender's signature is what can fail).
	signed := pdu.Sign(string(f.cfg.ServerName), f.cfg.KeyID, f.cfg.Key)
	if err := gomatrixserverlib.VerifyEventSignatures(r.Context(), signed, f.keyRing, userIDForSender); err != nil {
		writeError(w, newErr(http.StatusForbidden, "M_FORBIDDEN", "the invite's signatures do not verify: %v", err))
		return
	}
	if _, err := f.rooms.Version(r.Context(), pdu.RoomID().String()); errors.Is(err, rooms.ErrUnknownRoom) || f.rooms.Departed(r.Context(), pdu.RoomID().String()) {
		// Not in the room (never, or not any more): keep the invite for
		// the invitee's /sync. (In a room this server is in, the invite
		// arrives like any event.)
		state, _ := json.Marshal(req.InviteState)
		if err := f.rooms.StoreRemoteInvite(r.Context(), storage.RemoteInvite{RoomID: pdu.RoomID().String(), UserID: invitee.String(),
			EventID: pdu.EventID(), Sender: sender.String(), RoomVersion: req.RoomVersion, Event: signed.JSON(), InviteState: state}); err != nil {
			writeError(w, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"event": json.RawMessage(signed.JSON())})
}

// Invite invites a user of another server into a room here: the invite is
// built and checked, signed by the invitee's server, then committed like
// any event (and sent to the room's other servers).
func (f *Federation) Invite(ctx context.Context, actor policy.Actor, roomID, sender, invitee string, content json.RawMessage) error {
	uid, err := spec.NewUserID(invitee, true)
	if err != nil {
		return errInvalidParam("%q is not a user ID", invitee)
	}
	server := string(uid.Domain())
	if d := f.allowed(ctx, server); d != nil {
		return d
	}
	key := invitee
	pdu, err := f.rooms.BuildEvent(ctx, &rooms.Request{RoomID: roomID, Sender: sender, Type: spec.MRoomMember, StateKey: &key, Content: content, Actor: actor})
	if err != nil {
		return err
	}
	state, err := f.rooms.StrippedState(ctx, roomID, sender)
	if err != nil {
		return err
	}
	var res struct {
		Event json.RawMessage `json:"event"`
	}
	version, err := gomatrixserverlib.GetRoomVersion(pdu.Version())
	if err != nil {
		return err
	}
	path := pathEscape(roomID) + "/" + pathEscape(pdu.EventID())
	body := map[string]any{"room_version": pdu.Version(), "event": json.RawMessage(pdu.JSON()), "invite_room_state": state}
	err = f.signedRequest(ctx, http.MethodPut, server, "/_matrix/federation/v2/invite/"+path, body, &res)
	var remote *RemoteError
	if errors.As(err, &remote) && remote.Status == http.StatusNotFound && (remote.Code == "" || remote.Code == "M_UNRECOGNIZED") &&
		version.EventFormat() == gomatrixserverlib.EventFormatV1 {
		// A server without the v2 API: the v1 form (rooms of versions 1
		// and 2 only) takes the event itself, the stripped state in its
		// unsigned part, and answers [200, {"event": …}].
		withState, serr := withUnsigned(pdu.JSON(), "invite_room_state", state)
		if serr != nil {
			return serr
		}
		var v1 []json.RawMessage
		if err = f.signedRequest(ctx, http.MethodPut, server, "/_matrix/federation/v1/invite/"+path, json.RawMessage(withState), &v1); err == nil {
			if len(v1) != 2 || json.Unmarshal(v1[1], &res) != nil {
				return &RemoteError{Server: server, Status: http.StatusBadGateway, Msg: "answered the v1 invite with something else"}
			}
		}
	}
	if err != nil {
		return err
	}
	signed, err := version.NewEventFromUntrustedJSON(res.Event)
	if err != nil {
		return fmt.Errorf("%w: %s answered the invite with an event that is not of room version %s: %v", rooms.ErrBadEvent, server, version.Version(), err)
	}
	if signed.EventID() != pdu.EventID() {
		return &RemoteError{Server: server, Status: http.StatusBadGateway, Msg: "answered the invite with another event"}
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, signed, f.keyRing, userIDForSender); err != nil {
		return &RemoteError{Server: server, Status: http.StatusBadGateway, Msg: "its signature of the invite does not verify"}
	}
	_, err = f.rooms.Receive(ctx, &rooms.ReceiveRequest{PDU: signed, Origin: f.cfg.ServerName, Forward: true, Actor: actor})
	return err
}

// handleMakeLeave serves GET /_matrix/federation/v1/make_leave/{roomId}/{userId}:
// a leave for the origin's user (who may be refusing an invite) to sign.
func (f *Federation) handleMakeLeave(w http.ResponseWriter, r *http.Request, origin spec.ServerName) {
	v := vars(r)
	if !ofOrigin(v["userId"], origin) {
		writeError(w, newErr(http.StatusForbidden, "M_FORBIDDEN", "%s may only make leaves for its own users", origin))
		return
	}
	proto, version, err := f.rooms.MembershipTemplate(r.Context(), v["roomId"], v["userId"], spec.Leave)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"room_version": version.Version(), "event": proto})
}

// handleSendLeave serves PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}.
func (f *Federation) handleSendLeave(w http.ResponseWriter, r *http.Request, origin spec.ServerName) {
	v := vars(r)
	version, err := f.rooms.Version(r.Context(), v["roomId"])
	if err != nil {
		writeError(w, err)
		return
	}
	var raw json.RawMessage
	if err := readJSON(r, &raw); err != nil {
		writeError(w, err)
		return
	}
	pdu, err := version.NewEventFromUntrustedJSON(raw)
	if err != nil {
		writeError(w, newErr(http.StatusBadRequest, "M_BAD_JSON", "not an event of this room's version: %v", err))
		return
	}
	uid, _ := spec.NewUserID(string(pdu.SenderID()), true)
	switch {
	case pdu.EventID() != v["eventId"] || pdu.RoomID().String() != v["roomId"] || pdu.Type() != spec.MRoomMember ||
		pdu.StateKey() == nil || *pdu.StateKey() != string(pdu.SenderID()) || membership(pdu) != spec.Leave:
		writeError(w, newErr(http.StatusBadRequest, "M_BAD_JSON", "not a leave of its sender from this room"))
		return
	case uid == nil || uid.Domain() != origin:
		writeError(w, newErr(http.StatusForbidden, "M_FORBIDDEN", "%s may only send leaves of its own users", origin))
		return
	}
	if err := gomatrixserverlib.VerifyEventSignatures(r.Context(), pdu, f.keyRing, userIDForSender); err != nil {
		writeError(w, newErr(http.StatusForbidden, "M_FORBIDDEN", "the leave's signatures do not verify: %v", err))
		return
	}
	if _, err := f.rooms.Receive(r.Context(), &rooms.ReceiveRequest{PDU: pdu, Origin: origin, Forward: true}); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{})
}

// RejectInvite refuses a local user's invite to a room this server is not
// in, through the inviting server (make_leave, send_leave). When that
// server refuses or cannot be reached, the invite is refused here alone
// (with a leave this server signs and keeps, which nobody else hears of):
// an invite must never be stuck because its server is gone.
func (f *Federation) RejectInvite(ctx context.Context, userID, roomID string) error {
	inv, err := f.store.GetRemoteInvite(ctx, roomID, userID)
	if err != nil {
		return err
	}
	sender, err := spec.NewUserID(inv.Sender, true)
	if err != nil {
		return err
	}
	server := string(sender.Domain())
	leave, err := f.remoteLeave(ctx, server, inv)
	if err != nil {
		// (A server now off the allow-list is not contacted: refused here.)
		f.log.Info("federation: invite refused here only: its server did not take the leave", "room", roomID, "user", userID, "via", server, "err", err)
		if leave, err = f.localLeave(inv); err != nil {
			return err
		}
	}
	return f.rooms.EndRemoteInvite(ctx, roomID, userID, leave)
}

// remoteLeave refuses inv through server: make_leave, then send_leave (v2,
// or v1 where the server has no v2). It returns the leave.
func (f *Federation) remoteLeave(ctx context.Context, server string, inv storage.RemoteInvite) (gomatrixserverlib.PDU, error) {
	if d := f.allowed(ctx, server); d != nil {
		return nil, d
	}
	roomID, userID := inv.RoomID, inv.UserID
	var tmpl struct {
		RoomVersion string                       `json:"room_version"`
		Event       gomatrixserverlib.ProtoEvent `json:"event"`
	}
	path := "/_matrix/federation/v1/make_leave/" + pathEscape(roomID) + "/" + pathEscape(userID)
	if err := f.signedRequest(ctx, http.MethodGet, server, path, nil, &tmpl); err != nil {
		return nil, err
	}
	if tmpl.RoomVersion == "" {
		tmpl.RoomVersion = inv.RoomVersion
	}
	version, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(tmpl.RoomVersion))
	if err != nil || tmpl.Event.Type != spec.MRoomMember || tmpl.Event.StateKey == nil || *tmpl.Event.StateKey != userID {
		return nil, &RemoteError{Server: server, Status: http.StatusBadGateway, Msg: "answered make_leave with something else"}
	}
	tmpl.Event.SenderID, tmpl.Event.RoomID, tmpl.Event.Content = userID, roomID, spec.RawJSON(`{"membership":"leave"}`)
	leave, err := version.NewEventBuilderFromProtoEvent(&tmpl.Event).Build(f.now(), f.cfg.ServerName, f.cfg.KeyID, f.cfg.Key)
	if err != nil {
		return nil, err
	}
	tail := pathEscape(roomID) + "/" + pathEscape(leave.EventID())
	var out json.RawMessage
	err = f.signedRequest(ctx, http.MethodPut, server, "/_matrix/federation/v2/send_leave/"+tail, json.RawMessage(leave.JSON()), &out)
	var remote *RemoteError
	if errors.As(err, &remote) && remote.Status == http.StatusNotFound && (remote.Code == "" || remote.Code == "M_UNRECOGNIZED") {
		err = f.signedRequest(ctx, http.MethodPut, server, "/_matrix/federation/v1/send_leave/"+tail, json.RawMessage(leave.JSON()), &out)
	}
	if err != nil {
		return nil, err
	}
	return leave, nil
}

// localLeave is a leave of inv's invitee built on the invite alone, signed
// by this server, for a refusal the inviting server never took.
func (f *Federation) localLeave(inv storage.RemoteInvite) (gomatrixserverlib.PDU, error) {
	version, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(inv.RoomVersion))
	if err != nil {
		return nil, err
	}
	invite, err := version.NewEventFromTrustedJSON(inv.Event, false)
	if err != nil {
		return nil, fmt.Errorf("the stored invite: %w", err)
	}
	key := inv.UserID
	proto := gomatrixserverlib.ProtoEvent{SenderID: inv.UserID, RoomID: inv.RoomID, Type: spec.MRoomMember, StateKey: &key,
		PrevEvents: []string{invite.EventID()}, AuthEvents: []string{invite.EventID()}, Depth: invite.Depth() + 1,
		Content: spec.RawJSON(`{"membership":"leave"}`)}
	return version.NewEventBuilderFromProtoEvent(&proto).Build(f.now(), f.cfg.ServerName, f.cfg.KeyID, f.cfg.Key)
}

// InviteServers are the servers to join an invited room through: the
// inviter's.
func (f *Federation) InviteServers(ctx context.Context, userID, roomID string) []string {
	inv, err := f.store.GetRemoteInvite(ctx, roomID, userID)
	if err != nil {
		return nil
	}
	if uid, err := spec.NewUserID(inv.Sender, true); err == nil {
		return []string{string(uid.Domain())}
	}
	return nil
}

// withUnsigned is the event JSON with key set in its unsigned part (which
// no hash or signature covers).
func withUnsigned(event []byte, key string, value any) ([]byte, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(event, &fields); err != nil {
		return nil, err
	}
	unsigned := map[string]any{}
	if raw, ok := fields["unsigned"]; ok {
		if err := json.Unmarshal(raw, &unsigned); err != nil {
			return nil, err
		}
	}
	unsigned[key] = value
	b, err := json.Marshal(unsigned)
	if err != nil {
		return nil, err
	}
	fields["unsigned"] = b
	return json.Marshal(fields)
}
