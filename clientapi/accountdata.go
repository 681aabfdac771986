package clientapi

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/rooms"
	"github.com/machi-chat/machi/storage"
)

// jsonObject is raw JSON that must be an object.
type jsonObject json.RawMessage

// UnmarshalJSON implements json.Unmarshaler.
func (o *jsonObject) UnmarshalJSON(b []byte) error {
	if !rawObject(b) {
		return errBadJSON("expected a JSON object")
	}
	*o = append((*o)[:0], b...)
	return nil
}

// handleGetAccountData serves GET /user/{userId}/account_data/{type} and
// /user/{userId}/rooms/{roomId}/account_data/{type}.
func (s *Server) handleGetAccountData(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	v := vars(r)
	if v["userId"] != dev.UserID {
		writeError(w, errForbidden("you can only read your own account data"))
		return
	}
	content, err := s.store.GetAccountData(r.Context(), dev.UserID, v["roomId"], v["type"])
	if err != nil {
		if isNotFound(err) {
			writeError(w, errNotFound("no account data of type %s", v["type"]))
			return
		}
		writeError(w, err)
		return
	}
	writeJSON(w, 200, json.RawMessage(content))
}

// handlePutAccountData serves PUT /user/{userId}/account_data/{type} and
// /user/{userId}/rooms/{roomId}/account_data/{type}. Idempotent: the last
// write wins.
func (s *Server) handlePutAccountData(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	v := vars(r)
	if v["userId"] != dev.UserID {
		writeError(w, errForbidden("you can only set your own account data"))
		return
	}
	content, err := readObject(r)
	if err != nil {
		writeError(w, err)
		return
	}
	switch v["type"] {
	case "m.fully_read":
		writeError(w, errBadJSON("m.fully_read is set through /read_markers"))
		return
	case "m.push_rules":
		writeError(w, errBadJSON("push rules are set through /pushrules"))
		return
	}
	if roomID := v["roomId"]; roomID != "" {
		if _, err := s.rooms.Version(r.Context(), roomID); err != nil {
			writeError(w, err)
			return
		}
	}
	if err := s.putAccountData(r.Context(), dev.UserID, v["roomId"], v["type"], content); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, map[string]any{})
}

// putAccountData stores account data at a new stream position and wakes the
// user's syncs.
func (s *Server) putAccountData(ctx context.Context, userID, roomID, typ string, content []byte) error {
	pos := s.rooms.Stream().Allocate()
	err := s.store.PutAccountData(ctx, storage.AccountData{UserID: userID, RoomID: roomID, Type: typ, Content: content, Pos: pos})
	if err == nil {
		s.latest.putAccountData(userID, pos) // before Complete makes pos visible
		if roomID == "" && typ == ignoredUserListType {
			s.noteIgnored(userID, content)
		}
	}
	s.rooms.Stream().Complete(pos)
	if err == nil {
		s.rooms.Notifier().Wake(userID)
	}
	return err
}

// handleTyping serves PUT /rooms/{roomId}/typing/{userId}.
func (s *Server) handleTyping(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	v := vars(r)
	if v["userId"] != dev.UserID {
		writeError(w, errForbidden("you can only set your own typing state"))
		return
	}
	var req struct {
		Typing  *bool  `json:"typing"`
		Timeout *int64 `json:"timeout"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.Typing == nil {
		writeError(w, errMissingParam("typing is required"))
		return
	}
	timeout := 30 * time.Second
	if req.Timeout != nil {
		timeout = time.Duration(*req.Timeout) * time.Millisecond
	}
	members, err := s.joinedLocal(r.Context(), dev.UserID, v["roomId"])
	if err != nil {
		writeError(w, err)
		return
	}
	s.typing.Set(v["roomId"], dev.UserID, *req.Typing, timeout, members)
	if s.remote != nil {
		if err := s.remote.SendTyping(r.Context(), v["roomId"], dev.UserID, *req.Typing, timeout); err != nil {
			s.log.Warn("typing for other servers", "room", v["roomId"], "err", err)
		}
	}
	writeJSON(w, 200, map[string]any{})
}

// ApplyTyping is another server's user typing in a room (federation's
// m.typing): shown to the room's local members like a local user's.
func (s *Server) ApplyTyping(ctx context.Context, roomID, userID string, typing bool, timeout time.Duration) error {
	members, err := s.joinedLocal(ctx, userID, roomID)
	if err != nil {
		return err
	}
	s.typing.Set(roomID, userID, typing, timeout, members)
	return nil
}

// joinedLocal checks that userID is joined to the room and returns the
// room's joined local users.
func (s *Server) joinedLocal(ctx context.Context, userID, roomID string) ([]string, error) {
	snap, err := s.rooms.CurrentState(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if snap.Membership(userID) != spec.Join {
		return nil, errForbidden("you are not in room %s", roomID)
	}
	var out []string
	snap.Each(func(ev *rooms.Event) {
		if ev.Type() == spec.MRoomMember && ev.Membership() == spec.Join && s.rooms.IsLocal(*ev.StateKey()) {
			out = append(out, *ev.StateKey())
		}
	})
	return out, nil
}

// handleReceipt serves POST /rooms/{roomId}/receipt/{receiptType}/{eventId}.
// Idempotent: a receipt replaces the user's previous one of that type.
func (s *Server) handleReceipt(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	v := vars(r)
	var req map[string]json.RawMessage
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	threadID := ""
	if raw, ok := req["thread_id"]; ok {
		if json.Unmarshal(raw, &threadID) != nil || threadID == "" {
			writeError(w, errInvalidParam("thread_id must be a non-empty string"))
			return
		}
		if v["receiptType"] == "m.fully_read" {
			writeError(w, errInvalidParam("m.fully_read cannot be threaded"))
			return
		}
	}
	if err := s.markRead(r.Context(), dev.UserID, v["roomId"], v["receiptType"], v["eventId"], threadID); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, map[string]any{})
}

// handleReadMarkers serves POST /rooms/{roomId}/read_markers.
func (s *Server) handleReadMarkers(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	var req map[string]string
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	for _, typ := range []string{"m.fully_read", "m.read", "m.read.private"} {
		if id := req[typ]; id != "" {
			if err := s.markRead(r.Context(), dev.UserID, vars(r)["roomId"], typ, id, ""); err != nil {
				writeError(w, err)
				return
			}
		}
	}
	writeJSON(w, 200, map[string]any{})
}

// markRead stores a receipt or the fully-read marker.
func (s *Server) markRead(ctx context.Context, userID, roomID, typ, eventID, threadID string) error {
	switch typ {
	case "m.read", "m.read.private", "m.fully_read":
	default:
		return errInvalidParam("unknown receipt type %q", typ)
	}
	members, err := s.joinedLocal(ctx, userID, roomID)
	if err != nil {
		return err
	}
	ev, err := s.rooms.Event(ctx, eventID)
	if err != nil || ev.RoomID() != roomID {
		if err != nil && !isNotFound(err) {
			return err
		}
		return errNotFound("event %s not found in this room", eventID)
	}
	if threadID != "" && threadID != "main" {
		if err := s.checkThreadReceipt(ctx, roomID, ev, threadID); err != nil {
			return err
		}
	}
	if typ == "m.fully_read" {
		content, _ := json.Marshal(map[string]string{"event_id": eventID})
		return s.putAccountData(ctx, userID, roomID, "m.fully_read", content)
	}
	ts := time.Now().UnixMilli()
	if typ == "m.read.private" {
		members = []string{userID}
	}
	if err := s.storeReceipt(ctx, storage.Receipt{RoomID: roomID, UserID: userID, Type: typ, ThreadID: threadID, EventID: eventID, TS: ts}, ev, members); err != nil {
		return err
	}
	if typ == "m.read" && s.remote != nil {
		if err := s.remote.SendReceipt(ctx, roomID, userID, eventID, threadID, ts); err != nil {
			s.log.Warn("receipt for other servers", "room", roomID, "err", err)
		}
	}
	return nil
}

// storeReceipt stores a receipt at a new stream position and wakes wake.
func (s *Server) storeReceipt(ctx context.Context, rec storage.Receipt, ev *rooms.Event, wake []string) error {
	// Receipts only move forwards: one for an event before the user's
	// current receipt (a client catching up on an old device, a late
	// federation EDU) is acknowledged and dropped, so unread counts do not
	// go back up.
	current, err := s.roomReceipts(ctx, rec.RoomID, 0, math.MaxInt64)
	if err != nil {
		return err
	}
	for _, old := range current {
		if old.UserID != rec.UserID || old.Type != rec.Type || old.ThreadID != rec.ThreadID {
			continue
		}
		if prev, err := s.rooms.Event(ctx, old.EventID); err == nil && prev.Pos > ev.Pos {
			return nil
		}
	}
	rec.Pos = s.rooms.Stream().Allocate()
	err = s.store.PutReceipt(ctx, rec)
	if err == nil { // before Complete makes pos visible
		s.receipts.put(rec)
		if s.rooms.IsLocal(rec.UserID) {
			s.unread.read(rec.UserID, rec.RoomID, rec.ThreadID, ev.Pos)
		}
	}
	s.rooms.Stream().Complete(rec.Pos)
	if err != nil {
		return err
	}
	s.rooms.Notifier().Wake(wake...)
	s.rooms.Notifier().Wake(rec.RoomID) // /events peeking into the room
	return nil
}

// ApplyReceipt is another server's user's public read receipt (federation's
// m.receipt), for an event of a room both servers are in.
func (s *Server) ApplyReceipt(ctx context.Context, roomID, userID, eventID, threadID string, ts int64) error {
	members, err := s.joinedLocal(ctx, userID, roomID)
	if err != nil {
		return err
	}
	ev, err := s.rooms.Event(ctx, eventID)
	if err != nil || ev.RoomID() != roomID {
		return errNotFound("event %s not found in this room", eventID)
	}
	return s.storeReceipt(ctx, storage.Receipt{RoomID: roomID, UserID: userID, Type: "m.read", ThreadID: threadID, EventID: eventID, TS: ts}, ev, members)
}

// checkThreadReceipt checks a threaded receipt's thread_id: it must name
// a thread root of the room, and the event must be that root or in its
// thread (receipts.yaml, 400 M_INVALID_PARAM otherwise).
func (s *Server) checkThreadReceipt(ctx context.Context, roomID string, ev *rooms.Event, threadID string) error {
	root, err := s.rooms.IsThreadRoot(ctx, roomID, threadID)
	if err != nil {
		return err
	}
	if !root {
		return errInvalidParam("thread_id %s is not a thread root in this room", threadID)
	}
	if ev.ID() == threadID {
		return nil
	}
	if rel := ev.Relation(); rel == nil || rel.RelType != rooms.RelThread || rel.Parent != threadID {
		return errInvalidParam("event %s is not in thread %s", ev.ID(), threadID)
	}
	return nil
}

// receiptCache keeps each room's latest receipt per user, type and thread
// in memory, loaded from the database once, so a sync woken by a message
// reads no receipts from the database. (Unread counts keep their own
// view of receipts: unread.go.)
type receiptCache struct {
	mu    sync.Mutex
	rooms map[string][]storage.Receipt // room → latest receipts
}

func (c *receiptCache) put(r storage.Receipt) {
	c.mu.Lock()
	defer c.mu.Unlock()
	list, ok := c.rooms[r.RoomID]
	if !ok {
		return // loaded from the database, with this one, when first needed
	}
	out := make([]storage.Receipt, 0, len(list)+1) // copy: readers hold the old slice
	for _, old := range list {
		if old.UserID != r.UserID || old.Type != r.Type || old.ThreadID != r.ThreadID {
			out = append(out, old)
		}
	}
	c.rooms[r.RoomID] = append(out, r)
}

// roomReceipts returns the room's receipts with from < Pos <= to.
func (s *Server) roomReceipts(ctx context.Context, roomID string, from, to int64) ([]storage.Receipt, error) {
	c := &s.receipts
	c.mu.Lock()
	list, ok := c.rooms[roomID]
	if !ok {
		rs, err := s.store.ReceiptsSince(ctx, []string{roomID}, 0, math.MaxInt64)
		if err != nil {
			c.mu.Unlock()
			return nil, err
		}
		if c.rooms == nil {
			c.rooms = map[string][]storage.Receipt{}
		}
		c.rooms[roomID], list = rs, rs
	}
	c.mu.Unlock()
	var out []storage.Receipt
	for _, r := range list {
		if r.Pos > from && r.Pos <= to {
			out = append(out, r)
		}
	}
	return out, nil
}
