package federation

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/rooms"
	"github.com/machi-chat/machi/storage"
)

// txnHandler receives transactions: PUT /_matrix/federation/v1/send/{txnId}.
type txnHandler struct {
	f     *Federation
	local Local
}

type edu struct {
	Type    string          `json:"edu_type"`
	Content json.RawMessage `json:"content"`
}

// send serves PUT /_matrix/federation/v1/send/{txnId}. Idempotent per
// origin and transaction ID: a retried transaction is answered again
// without being processed twice.
//
// PDUs enter their rooms through the write path, in the order given, each
// answered with its outcome. EDUs: to-device messages go to local devices;
// typing and public read receipts to rooms the sender's user is joined to;
// device list and signing key updates mark the user's devices changed for
// local users sharing a room (their clients query the keys again);
// presence is shown to the local users sharing a room.
func (h txnHandler) send(w http.ResponseWriter, r *http.Request, origin spec.ServerName) {
	txnID := vars(r)["txnId"]
	var txn struct {
		Origin spec.ServerName   `json:"origin"`
		PDUs   []json.RawMessage `json:"pdus"`
		EDUs   []edu             `json:"edus"`
	}
	if err := readJSONMax(r, &txn, maxTxnBytes); err != nil {
		writeError(w, err)
		return
	}
	switch {
	case txn.Origin != origin:
		writeError(w, newErr(http.StatusBadRequest, "M_BAD_JSON", "the transaction's origin %q is not the signing server %q", txn.Origin, origin))
		return
	case txn.PDUs == nil:
		writeError(w, errMissingParam("pdus is required"))
		return
	case len(txn.PDUs) > maxTxnPDUs || len(txn.EDUs) > maxTxnEDUs:
		writeError(w, newErr(http.StatusBadRequest, "M_TOO_LARGE", "a transaction holds at most %d PDUs and %d EDUs", maxTxnPDUs, maxTxnEDUs))
		return
	}
	key := string(origin) + "|" + txnID
	if !h.f.txns.First(key) {
		writeJSON(w, http.StatusOK, map[string]any{"pdus": map[string]any{}})
		return
	}
	for _, e := range txn.EDUs {
		if err := h.edu(r.Context(), origin, e); err != nil {
			h.f.txns.Forget(key) // let the origin retry what failed here
			writeError(w, err)
			return
		}
	}
	results := map[string]pduResult{}
	for _, raw := range txn.PDUs {
		if id, err := h.aclRefused(r.Context(), origin, raw); err != nil {
			results[id] = pduResult{Error: err.Error()}
			h.f.log.Info("federation: PDU refused", "origin", origin, "event", id, "err", err)
			continue
		}
		id, err := h.f.receivePDU(r.Context(), origin, raw)
		if id == "" {
			h.f.log.Info("federation: unreadable PDU", "origin", origin, "err", err)
			continue
		}
		results[id] = pduResult{}
		var rejected *rooms.Forbidden
		switch {
		case errors.As(err, &rejected):
			// Processed: the auth rules rejected it (or it soft-failed and
			// is kept out of the timeline). That is this server's decision
			// about a sound PDU, not a failure to process it, so the
			// origin gets no error for it (and no reason to retry).
			h.f.log.Info("federation: PDU rejected", "origin", origin, "event", id, "reason", rejected.Reason)
		case err != nil:
			results[id] = pduResult{Error: err.Error()}
			h.f.log.Info("federation: PDU refused", "origin", origin, "event", id, "err", err)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"pdus": results})
}

func (h txnHandler) edu(ctx context.Context, origin spec.ServerName, e edu) error {
	switch e.Type {
	case "m.typing":
		h.typing(ctx, origin, e.Content)
		return nil
	case "m.receipt":
		h.receipts(ctx, origin, e.Content)
		return nil
	case "m.presence":
		var c struct {
			Push []struct {
				UserID          string `json:"user_id"`
				Presence        string `json:"presence"`
				StatusMsg       string `json:"status_msg"`
				LastActiveAgo   int64  `json:"last_active_ago"`
				CurrentlyActive bool   `json:"currently_active"`
			} `json:"push"`
		}
		if json.Unmarshal(e.Content, &c) == nil {
			for _, p := range c.Push {
				if ofOrigin(p.UserID, origin) {
					h.local.ApplyRemotePresence(ctx, p.UserID, p.Presence, p.StatusMsg, p.LastActiveAgo, p.CurrentlyActive)
				}
			}
		}
		return nil
	case "m.device_list_update":
		var c DeviceListUpdate
		if err := json.Unmarshal(e.Content, &c); err != nil || c.DeviceID == "" {
			h.f.log.Info("federation: malformed m.device_list_update", "origin", origin)
			return nil
		}
		if !ofOrigin(c.UserID, origin) {
			h.f.log.Info("federation: m.device_list_update for a user not of its origin", "origin", origin, "user", c.UserID)
			return nil
		}
		if err := h.local.RemoteDeviceListUpdate(ctx, c); err != nil {
			h.f.log.Info("federation: device list update not taken", "origin", origin, "user", c.UserID, "err", err)
		}
		return nil
	case "m.signing_key_update":
		var c struct {
			UserID      string          `json:"user_id"`
			Master      json.RawMessage `json:"master_key"`
			SelfSigning json.RawMessage `json:"self_signing_key"`
		}
		if json.Unmarshal(e.Content, &c) != nil || !ofOrigin(c.UserID, origin) {
			h.f.log.Info("federation: malformed m.signing_key_update", "origin", origin)
			return nil
		}
		if err := h.local.RemoteSigningKeyUpdate(ctx, c.UserID, jsonObjectOrNil(c.Master), jsonObjectOrNil(c.SelfSigning)); err != nil {
			h.f.log.Info("federation: signing key update not taken", "origin", origin, "user", c.UserID, "err", err)
		}
		return nil
	case "m.direct_to_device":
	default:
		return nil
	}
	var c struct {
		Sender    string                                `json:"sender"`
		Type      string                                `json:"type"`
		MessageID string                                `json:"message_id"`
		Messages  map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := json.Unmarshal(e.Content, &c); err != nil || c.Type == "" {
		h.f.log.Info("federation: malformed to-device EDU", "origin", origin)
		return nil // one bad EDU does not fail the transaction
	}
	if !ofOrigin(c.Sender, origin) {
		h.f.log.Info("federation: to-device EDU from a user not of its origin", "origin", origin, "sender", c.Sender)
		return nil
	}
	if c.MessageID != "" && !h.f.txns.First(string(origin)+"|msg|"+c.MessageID) {
		return nil // already delivered (the same message in a retried transaction)
	}
	mine := map[string]map[string]json.RawMessage{}
	for u, byDevice := range c.Messages {
		if ofOrigin(u, h.f.cfg.ServerName) {
			mine[u] = byDevice
		}
	}
	if len(mine) == 0 {
		return nil
	}
	if err := h.local.DeliverToDevice(ctx, c.Sender, c.Type, mine); err != nil {
		h.f.txns.Forget(string(origin) + "|msg|" + c.MessageID)
		return err
	}
	return nil
}

// aclRefused refuses a PDU of a room whose server ACL bans origin: its
// event ID and why (nil error when it is not refused, or is unreadable:
// receivePDU says why).
func (h txnHandler) aclRefused(ctx context.Context, origin spec.ServerName, raw json.RawMessage) (string, error) {
	var head struct {
		RoomID string `json:"room_id"`
	}
	if json.Unmarshal(raw, &head) != nil || head.RoomID == "" {
		return "", nil
	}
	denied := h.f.aclDenied(ctx, head.RoomID, origin)
	if denied == nil {
		return "", nil
	}
	version, err := h.f.rooms.Version(ctx, head.RoomID)
	if err != nil {
		return "", nil
	}
	pdu, err := version.NewEventFromUntrustedJSON(raw)
	if err != nil {
		return "", nil
	}
	return pdu.EventID(), denied
}

// ofOrigin reports whether userID is a user of origin: a server speaks
// only for its own users (and this one answers only for its own).
func ofOrigin(userID string, origin spec.ServerName) bool {
	uid, err := spec.NewUserID(userID, true)
	return err == nil && uid.Domain() == origin
}

// typing takes an m.typing EDU: shown where the user is joined (unless
// the room's server ACL bans origin, as for receipts).
func (h txnHandler) typing(ctx context.Context, origin spec.ServerName, content json.RawMessage) {
	var c struct {
		RoomID  string `json:"room_id"`
		UserID  string `json:"user_id"`
		Typing  bool   `json:"typing"`
		Timeout int64  `json:"timeout"`
	}
	if json.Unmarshal(content, &c) != nil || !ofOrigin(c.UserID, origin) || h.f.aclDenied(ctx, c.RoomID, origin) != nil {
		return
	}
	timeout := 30 * time.Second
	if c.Timeout > 0 {
		timeout = min(time.Duration(c.Timeout)*time.Millisecond, 2*time.Minute)
	}
	if err := h.local.ApplyTyping(ctx, c.RoomID, c.UserID, c.Typing, timeout); err != nil {
		h.f.log.Debug("federation: typing not taken", "origin", origin, "room", c.RoomID, "err", err)
	}
}

// receipts takes an m.receipt EDU: public read receipts of the origin's
// users, for events of rooms they are joined to.
func (h txnHandler) receipts(ctx context.Context, origin spec.ServerName, content json.RawMessage) {
	var byRoom map[string]map[string]map[string]struct {
		EventIDs []string `json:"event_ids"`
		Data     struct {
			TS       int64  `json:"ts"`
			ThreadID string `json:"thread_id"`
		} `json:"data"`
	}
	if json.Unmarshal(content, &byRoom) != nil {
		return
	}
	for roomID, types := range byRoom {
		if h.f.aclDenied(ctx, roomID, origin) != nil {
			continue
		}
		for userID, r := range types["m.read"] {
			if !ofOrigin(userID, origin) || len(r.EventIDs) == 0 {
				continue
			}
			if err := h.local.ApplyReceipt(ctx, roomID, userID, r.EventIDs[len(r.EventIDs)-1], r.Data.ThreadID, r.Data.TS); err != nil {
				h.f.log.Debug("federation: receipt not taken", "origin", origin, "room", roomID, "err", err)
			}
		}
	}
}

// SendToDevice queues to-device messages for other servers' users (server
// → user → device → content); durable on return. Servers off the
// allow-list get nothing.
func (f *Federation) SendToDevice(ctx context.Context, sender, eventType, messageID string, byServer map[string]map[string]map[string]json.RawMessage) error {
	var items []storage.OutboundItem
	for server, msgs := range byServer {
		if d := f.allowed(ctx, server); d != nil {
			continue
		}
		payload, err := eduPayload("m.direct_to_device", map[string]any{"sender": sender, "type": eventType, "message_id": messageID, "messages": msgs})
		if err != nil {
			return err
		}
		items = append(items, storage.OutboundItem{Destination: server, Kind: "edu", Payload: payload})
	}
	return f.sender.enqueue(ctx, items)
}

// SendTyping tells the room's other servers that userID is typing (m.typing).
func (f *Federation) SendTyping(ctx context.Context, roomID, userID string, typing bool, timeout time.Duration) error {
	return f.sendRoomEDU(ctx, roomID, "m.typing", map[string]any{"room_id": roomID, "user_id": userID, "typing": typing,
		"timeout": timeout.Milliseconds()})
}

// SendReceipt tells the room's other servers of userID's public read
// receipt (m.receipt).
func (f *Federation) SendReceipt(ctx context.Context, roomID, userID, eventID, threadID string, ts int64) error {
	data := map[string]any{"ts": ts}
	if threadID != "" {
		data["thread_id"] = threadID
	}
	return f.sendRoomEDU(ctx, roomID, "m.receipt", map[string]any{roomID: map[string]any{"m.read": map[string]any{
		userID: map[string]any{"event_ids": []string{eventID}, "data": data}}}})
}

// sendRoomEDU queues an EDU for every other server in the room.
func (f *Federation) sendRoomEDU(ctx context.Context, roomID, typ string, content any) error {
	var allowed []string
	for _, server := range f.rooms.Servers(ctx, roomID) {
		if f.allowed(ctx, server) == nil {
			allowed = append(allowed, server)
		}
	}
	return f.queueEDU(ctx, typ, content, allowed)
}

// SendDeviceListUpdate tells the servers sharing a room with userID that
// one of their devices changed (m.device_list_update): its keys and name,
// or deleted when it is gone; streamID is this update's position and prev
// the one before it (0: none), so a server that missed one resyncs.
func (f *Federation) SendDeviceListUpdate(ctx context.Context, userID, deviceID string, streamID, prev int64) error {
	servers, err := f.sharingServers(ctx, userID)
	if err != nil || len(servers) == 0 {
		return err
	}
	c := DeviceListUpdate{UserID: userID, DeviceID: deviceID, StreamID: streamID, PrevID: []int64{}}
	if prev > 0 {
		c.PrevID = []int64{prev}
	}
	if d, err := f.store.GetDevice(ctx, userID, deviceID); err == nil {
		c.DisplayName = d.DisplayName
		keys, err := f.store.DeviceKeys(ctx, map[string][]string{userID: {deviceID}})
		if err != nil {
			return err
		}
		if k := keys[userID][deviceID]; k != nil {
			c.Keys = k
		}
	} else if errors.Is(err, storage.ErrNotFound) {
		c.Deleted = true
	} else {
		return err
	}
	return f.queueEDU(ctx, "m.device_list_update", c, servers)
}

// SendSigningKeyUpdate tells the servers sharing a room with userID of
// their master and self-signing keys (m.signing_key_update).
func (f *Federation) SendSigningKeyUpdate(ctx context.Context, userID string) error {
	servers, err := f.sharingServers(ctx, userID)
	if err != nil || len(servers) == 0 {
		return err
	}
	cs, err := f.store.CrossSigningKeys(ctx, []string{userID})
	if err != nil {
		return err
	}
	c := map[string]any{"user_id": userID}
	if k := cs[userID]["master"]; k != nil {
		c["master_key"] = json.RawMessage(k)
	}
	if k := cs[userID]["self_signing"]; k != nil {
		c["self_signing_key"] = json.RawMessage(k)
	}
	return f.queueEDU(ctx, "m.signing_key_update", c, servers)
}

// jsonObjectOrNil is raw if it is a JSON object, else nil.
func jsonObjectOrNil(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 || raw[0] != '{' {
		return nil
	}
	return raw
}

// SendPresence tells the servers sharing a room with userID of their
// presence (m.presence).
func (f *Federation) SendPresence(ctx context.Context, userID string, content map[string]any) error {
	servers, err := f.sharingServers(ctx, userID)
	if err != nil || len(servers) == 0 {
		return err
	}
	return f.queueEDU(ctx, "m.presence", map[string]any{"push": []any{content}}, servers)
}

// SendPresenceTo gives one server the presence of local users.
func (f *Federation) SendPresenceTo(ctx context.Context, server string, contents []map[string]any) error {
	if f.allowed(ctx, server) != nil {
		return nil
	}
	push := make([]any, len(contents))
	for i, c := range contents {
		push[i] = c
	}
	return f.queueEDU(ctx, "m.presence", map[string]any{"push": push}, []string{server})
}

// sharingServers are the allowed servers with members in a room userID is
// joined to.
func (f *Federation) sharingServers(ctx context.Context, userID string) ([]string, error) {
	memberships, err := f.rooms.UserRooms(ctx, userID)
	if err != nil {
		return nil, err
	}
	var servers []string
	for roomID, m := range memberships {
		if m.Membership != spec.Join {
			continue
		}
		for _, s := range f.rooms.Servers(ctx, roomID) {
			if !slices.Contains(servers, s) && f.allowed(ctx, s) == nil {
				servers = append(servers, s)
			}
		}
	}
	return servers, nil
}

// eduPayload is an EDU of typ with content, as the outbox keeps it.
func eduPayload(typ string, content any) ([]byte, error) {
	c, err := json.Marshal(content)
	if err != nil {
		return nil, err
	}
	return json.Marshal(edu{Type: typ, Content: c})
}

// queueEDU queues one EDU for each of servers (already allowed).
func (f *Federation) queueEDU(ctx context.Context, typ string, content any, servers []string) error {
	if len(servers) == 0 {
		return nil
	}
	payload, err := eduPayload(typ, content)
	if err != nil {
		return err
	}
	items := make([]storage.OutboundItem, 0, len(servers))
	for _, server := range servers {
		items = append(items, storage.OutboundItem{Destination: server, Kind: "edu", Payload: payload})
	}
	return f.sender.enqueue(ctx, items)
}
