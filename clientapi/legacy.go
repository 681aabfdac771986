package clientapi

// The client-server API's deprecated endpoints that older clients (and
// SyTest's fixtures) still call: the event stream (GET /events, which also
// peeks into world_readable rooms), GET /events/{eventId}, and the global
// and per-room /initialSync. They are built from what /sync uses: its
// tokens, notifier, timeline reader, receipts, typing and presence.

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/rooms"
	"github.com/machi-chat/machi/storage"
)

const (
	// legacyEventsTimeout is /events' long-poll when the client names none.
	legacyEventsTimeout = 30 * time.Second
	// legacyEventsLimit and legacyMaxLimit bound /events' room events per
	// response; legacyMessagesLimit is /initialSync's messages per room.
	legacyEventsLimit   = 100
	legacyMaxLimit      = 1000
	legacyMessagesLimit = 10
)

// wakePeekersOnCommit wakes, for every committed event, the /events
// long-polls peeking into its room: they wait on the room ID, which no
// user ID can equal.
func (s *Server) wakePeekersOnCommit() {
	n := s.rooms.Notifier()
	s.rooms.OnCommit(func(ev *rooms.Event, _ []string) { n.Wake(ev.RoomID()) })
}

// wakePeekers wakes the /events long-polls peeking into the rooms userID
// is joined to (a presence change of theirs).
func (s *Server) wakePeekers(ctx context.Context, userID string) {
	ms, err := s.rooms.UserRooms(ctx, userID)
	if err != nil {
		return
	}
	ids := make([]string, 0, len(ms))
	for roomID, m := range ms {
		if m.Membership == spec.Join {
			ids = append(ids, roomID)
		}
	}
	s.rooms.Notifier().Wake(ids...)
}

// queryInt reads an optional non-negative integer parameter.
func queryInt(r *http.Request, name string, def int64) (int64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, errInvalidParam("%s must be a non-negative integer", name)
	}
	return n, nil
}

// legacyJSON is an event in the client format with the legacy user_id
// (its sender) that clients of these endpoints read.
func legacyJSON(ev *rooms.Event, now time.Time, key string) json.RawMessage {
	b := ev.ClientJSON(now, key)
	out := make([]byte, 0, len(b)+len(ev.Sender())+16)
	out = append(out, `{"user_id":`...)
	out = strconv.AppendQuote(out, ev.Sender())
	out = append(out, ',')
	return append(out, b[1:]...)
}

// legacyPresence is a presence as these endpoints show it: with the
// content's legacy user_id.
func legacyPresence(v presenceView, now time.Time) json.RawMessage {
	c := presenceContent(v, now)
	c["user_id"] = v.UserID
	b, _ := json.Marshal(map[string]any{"type": "m.presence", "sender": v.UserID, "content": c})
	return b
}

// withRoomID adds room_id to an ephemeral or account data event.
func withRoomID(b json.RawMessage, roomID string) json.RawMessage {
	out := make([]byte, 0, len(b)+len(roomID)+16)
	out = append(out, `{"room_id":`...)
	out = strconv.AppendQuote(out, roomID)
	if len(b) > 2 {
		out = append(out, ',')
	}
	return append(out, b[1:]...)
}

// currentToken is the sync token of now, for userID.
func (s *Server) currentToken(userID string) syncToken {
	t := syncToken{pos: s.rooms.SyncCeiling(userID, s.rooms.Stream().Current()), typing: s.typing.Current()}
	if s.presence != nil {
		t.presence = s.presence.Current()
	}
	return t
}

// handleEvents serves GET /events (old_sync.yaml) and its peeking form
// with room_id (peeking_events.yaml): what happened since from, waiting up
// to timeout for something to happen.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	dev := DeviceFrom(ctx)
	q := r.URL.Query()
	ms, err := queryInt(r, "timeout", legacyEventsTimeout.Milliseconds())
	if err != nil {
		writeError(w, err)
		return
	}
	timeout := min(time.Duration(ms)*time.Millisecond, maxSyncTimeout)
	limit, err := queryInt(r, "limit", legacyEventsLimit)
	if err != nil {
		writeError(w, err)
		return
	}
	limit = min(max(limit, 1), legacyMaxLimit)
	var from syncToken
	if t := q.Get("from"); t != "" {
		if from, err = parseSyncToken(t); err != nil {
			writeError(w, errInvalidParam("invalid from token %q", t))
			return
		}
	} else {
		from = s.currentToken(dev.UserID)
	}
	st := &eventStream{dev: dev, roomID: q.Get("room_id"), limit: int(limit)}
	if st.roomID != "" {
		memberships, err := s.rooms.UserRooms(ctx, dev.UserID)
		if err != nil {
			writeError(w, err)
			return
		}
		if memberships[st.roomID].Membership != spec.Join {
			if !s.worldReadable(ctx, st.roomID) {
				writeError(w, errForbidden("you are not in room %s and its history is not world_readable", st.roomID))
				return
			}
			st.peek = true
		}
	}
	defer s.notePresenceSync(ctx, dev.UserID, "")()

	var timer <-chan time.Time
	for {
		wake, release := s.rooms.Notifier().Listen(dev.UserID)
		roomWake, roomRelease := (<-chan struct{})(nil), func() {}
		if st.peek {
			roomWake, roomRelease = s.rooms.Notifier().Listen(st.roomID)
		}
		resp, err := s.buildEvents(ctx, st, from)
		if err != nil {
			release()
			roomRelease()
			writeError(w, err)
			return
		}
		if len(resp.Chunk) > 0 || timeout == 0 {
			release()
			roomRelease()
			writeJSON(w, 200, resp)
			return
		}
		if timer == nil {
			t := time.NewTimer(timeout)
			defer t.Stop()
			timer = t.C
		}
		select {
		case <-wake:
		case <-roomWake:
		case <-timer:
			timeout = 0 // answer now, even if empty
		case <-ctx.Done():
			release()
			roomRelease()
			return
		}
		release()
		roomRelease()
	}
}

// eventStream is one /events request.
type eventStream struct {
	dev    *Device
	roomID string // only this room ("" for all the user's rooms)
	peek   bool   // roomID is world_readable and the user is not joined
	limit  int    // room events per response
}

type eventsResponse struct {
	Chunk []json.RawMessage `json:"chunk"`
	Start string            `json:"start"`
	End   string            `json:"end"`
}

// buildEvents collects what happened after from: room events of the
// rooms the user is joined to (or was, up to their leave or invite, in
// the range), at most st.limit of them, oldest first, then receipts,
// account data, typing and presence.
func (s *Server) buildEvents(ctx context.Context, st *eventStream, from syncToken) (*eventsResponse, error) {
	userID := st.dev.UserID
	now := s.currentToken(userID)
	// A token from before a restart may be ahead of us.
	start := from
	from.pos = min(from.pos, now.pos)
	if from.typing > now.typing {
		from.typing = 0
	}
	if from.presence > now.presence {
		from.presence = 0
	}
	memberships, err := s.rooms.UserRooms(ctx, userID)
	if err != nil {
		return nil, err
	}
	// Each room read, up to where.
	upTo := map[string]int64{}
	joined := map[string]bool{}
	for roomID, m := range memberships {
		if st.roomID != "" && roomID != st.roomID {
			continue
		}
		switch {
		case m.Membership == spec.Join:
			upTo[roomID], joined[roomID] = now.pos, true
		case m.Pos > from.pos && m.Pos <= now.pos:
			upTo[roomID] = m.Pos
		}
	}
	if st.peek {
		upTo[st.roomID], joined[st.roomID] = now.pos, true
	}

	// Room events: the oldest after from in each room; where a room has
	// more than the limit, the response stops at the last one read.
	ceiling := now.pos
	var cand []*rooms.Event
	for roomID, hi := range upTo {
		evs, more, err := s.rooms.RoomEvents(ctx, roomID, from.pos, hi, st.limit)
		if errors.Is(err, rooms.ErrUnknownRoom) {
			continue // an invite to another server's room
		}
		if err != nil {
			return nil, err
		}
		if more { // the newest limit: read the oldest instead
			if evs, err = s.rooms.Paginate(ctx, roomID, from.pos, hi, false, st.limit); err != nil {
				return nil, err
			}
			if len(evs) > 0 {
				ceiling = min(ceiling, evs[len(evs)-1].Pos)
			}
		}
		cand = append(cand, evs...)
	}
	sort.Slice(cand, func(i, j int) bool { return cand[i].Pos < cand[j].Pos })
	vis := map[string]*visibility{}
	var shown []*rooms.Event
	for _, ev := range cand {
		if ev.Pos > ceiling {
			break
		}
		v, ok := vis[ev.RoomID()]
		if !ok {
			v = s.visibility(ctx, userID, ev.RoomID())
			vis[ev.RoomID()] = v
		}
		if v.allows(ev) {
			shown = append(shown, ev)
			if len(shown) == st.limit {
				ceiling = ev.Pos
				break
			}
		}
	}
	t := nowTime()
	key := st.dev.key()
	resp := &eventsResponse{Chunk: []json.RawMessage{}, Start: start.String()}
	for _, ev := range shown {
		resp.Chunk = append(resp.Chunk, legacyJSON(ev, t, key))
	}

	// Receipts and typing of the rooms the user is in (or peeks into).
	for roomID := range joined {
		if from.pos < ceiling {
			rs, err := s.roomReceipts(ctx, roomID, from.pos, ceiling)
			if err != nil {
				return nil, err
			}
			if b := receiptEvent(rs, userID); b != nil {
				resp.Chunk = append(resp.Chunk, withRoomID(b, roomID))
			}
		}
		if users, changedAt := s.typing.InRoom(roomID); changedAt > from.typing {
			if users == nil {
				users = []string{}
			}
			b, _ := json.Marshal(map[string]any{"type": "m.typing", "room_id": roomID, "content": map[string]any{"user_ids": users}})
			resp.Chunk = append(resp.Chunk, b)
		}
	}
	// The user's own account data, global and of their rooms.
	if !st.peek && from.pos < ceiling && s.latest.accountDataAfter(userID, from.pos) {
		ads, err := s.store.AccountDataSince(ctx, userID, from.pos, ceiling)
		if err != nil {
			return nil, err
		}
		for _, ad := range ads {
			if st.roomID != "" && ad.RoomID != st.roomID {
				continue
			}
			b, _ := json.Marshal(map[string]any{"type": ad.Type, "content": json.RawMessage(ad.Content)})
			if ad.RoomID != "" {
				b = withRoomID(b, ad.RoomID)
			}
			resp.Chunk = append(resp.Chunk, b)
		}
	}
	// Presence of the user and of those they share a room with; when
	// reading one room, of its members.
	if s.presence != nil && from.presence < now.presence {
		var snap *rooms.Snapshot
		if st.roomID != "" {
			if snap, err = s.rooms.CurrentState(ctx, st.roomID); err != nil {
				return nil, err
			}
		}
		for _, v := range s.presence.ChangedIn(from.presence, now.presence) {
			ok := false
			if snap != nil {
				ok = snap.Membership(v.UserID) == spec.Join
			} else if ok, err = s.sharesRoom(ctx, v.UserID, userID, memberships); err != nil {
				return nil, err
			}
			if ok {
				resp.Chunk = append(resp.Chunk, legacyPresence(v, time.Now()))
			}
		}
	}
	resp.End = syncToken{pos: ceiling, typing: now.typing, presence: now.presence}.String()
	return resp, nil
}

// handleEventByID serves GET /events/{eventId}: an event of a room the
// user may read, if they may see it; 404 otherwise.
func (s *Server) handleEventByID(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	dev := DeviceFrom(ctx)
	ev, err := s.rooms.Event(ctx, vars(r)["eventId"])
	if err != nil {
		if isNotFound(err) || errors.Is(err, rooms.ErrUnknownRoom) {
			err = errNotFound("event not found")
		}
		writeError(w, err)
		return
	}
	upTo, err := s.readAccess(ctx, dev.UserID, ev.RoomID())
	if err != nil || ev.Pos > upTo || !s.visibility(ctx, dev.UserID, ev.RoomID()).allows(ev) {
		var me *Error
		if err == nil || errors.As(err, &me) {
			err = errNotFound("event not found")
		}
		writeError(w, err)
		return
	}
	writeJSON(w, 200, []byte(legacyJSON(ev, nowTime(), dev.key())))
}

// roomInfo is one room of /initialSync, and /rooms/{roomId}/initialSync's
// answer (room_initial_sync.yaml; presence and receipts as clients of it
// read them).
type roomInfo struct {
	RoomID      string            `json:"room_id"`
	Membership  string            `json:"membership,omitempty"`
	Invite      json.RawMessage   `json:"invite,omitempty"`
	Messages    *paginationChunk  `json:"messages,omitempty"`
	State       []json.RawMessage `json:"state,omitempty"`
	Visibility  string            `json:"visibility,omitempty"`
	AccountData []json.RawMessage `json:"account_data"`
	// Presence and Receipts are left out of /initialSync's rooms, which
	// has them once for all.
	Presence *[]json.RawMessage `json:"presence,omitempty"`
	Receipts *[]json.RawMessage `json:"receipts,omitempty"`
}

type paginationChunk struct {
	Chunk []json.RawMessage `json:"chunk"`
	Start string            `json:"start,omitempty"`
	End   string            `json:"end"`
}

// roomAccountData lists the user's account data, global (under "") and
// per room.
func (s *Server) roomAccountData(ctx context.Context, userID string, upTo int64) (map[string][]json.RawMessage, error) {
	ads, err := s.store.AccountDataSince(ctx, userID, 0, upTo)
	if err != nil {
		return nil, err
	}
	out := map[string][]json.RawMessage{}
	for _, ad := range ads {
		b, _ := json.Marshal(map[string]any{"type": ad.Type, "content": json.RawMessage(ad.Content)})
		out[ad.RoomID] = append(out[ad.RoomID], b)
	}
	return out, nil
}

// roomInitial builds one room's snapshot for a user with membership m
// (zero for one peeking into a world_readable room): the latest limit
// messages they may see, up to their leave if they left, the state then,
// and, while they are in the room, its receipts and (with presence) its
// members' presence (other servers' members as this server heard it).
func (s *Server) roomInitial(ctx context.Context, dev *Device, roomID string, m storage.Membership, limit int, ad map[string][]json.RawMessage, now syncToken, presence bool) (*roomInfo, error) {
	upTo, err := s.readAccess(ctx, dev.UserID, roomID)
	if err != nil {
		return nil, err
	}
	upTo = min(upTo, now.pos)
	in := m.Membership == spec.Join || s.worldReadable(ctx, roomID)
	snap, err := s.stateAt(ctx, dev.UserID, roomID)
	if err != nil {
		return nil, err
	}
	presenceList, receipts := []json.RawMessage{}, []json.RawMessage{}
	info := &roomInfo{RoomID: roomID, Membership: m.Membership, State: []json.RawMessage{}, AccountData: ad[roomID],
		Presence: &presenceList, Receipts: &receipts, Visibility: "private"}
	if info.AccountData == nil {
		info.AccountData = []json.RawMessage{}
	}
	if room, err := s.store.GetRoom(ctx, roomID); err == nil && room.Published {
		info.Visibility = "public"
	}
	var shown []*rooms.Event
	if limit > 0 {
		vis := s.visibility(ctx, dev.UserID, roomID)
		if shown, _, _, err = s.filteredTimeline(ctx, roomID, math.MinInt64, upTo, limit, vis.allows); err != nil {
			return nil, err
		}
	}
	t := nowTime()
	key := dev.key()
	info.Messages = &paginationChunk{Chunk: make([]json.RawMessage, 0, len(shown)), Start: posToken(upTo)}
	for _, ev := range shown {
		info.Messages.Chunk = append(info.Messages.Chunk, legacyJSON(ev, t, key))
	}
	if len(shown) > 0 {
		info.Messages.Start = posToken(shown[0].Pos - 1)
	}
	end := now
	end.pos = upTo
	info.Messages.End = end.String()
	snap.Each(func(ev *rooms.Event) { info.State = append(info.State, legacyJSON(ev, t, key)) })
	if !in {
		return info, nil
	}
	if presence && s.presence != nil {
		snap.Each(func(ev *rooms.Event) {
			if ev.Type() == spec.MRoomMember && ev.Membership() == spec.Join {
				presenceList = append(presenceList, legacyPresence(s.presence.Get(*ev.StateKey()), time.Now()))
			}
		})
	}
	rs, err := s.roomReceipts(ctx, roomID, 0, upTo)
	if err != nil {
		return nil, err
	}
	if b := receiptEvent(rs, dev.UserID); b != nil {
		receipts = append(receipts, withRoomID(b, roomID))
	}
	return info, nil
}

// initialView is what both initialSync forms start from: the user's
// memberships, the current token, and their room account data up to it.
func (s *Server) initialView(ctx context.Context, userID string) (map[string]storage.Membership, syncToken, map[string][]json.RawMessage, error) {
	memberships, err := s.rooms.UserRooms(ctx, userID)
	if err != nil {
		return nil, syncToken{}, nil, err
	}
	now := s.currentToken(userID)
	ad, err := s.roomAccountData(ctx, userID, now.pos)
	return memberships, now, ad, err
}

// handleRoomInitialSync serves GET /rooms/{roomId}/initialSync: for a
// member, a left member (up to their leave) or anyone when the room is
// world_readable; 403 otherwise.
func (s *Server) handleRoomInitialSync(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	dev := DeviceFrom(ctx)
	roomID := vars(r)["roomId"]
	limit, err := queryInt(r, "limit", legacyMessagesLimit)
	if err != nil {
		writeError(w, err)
		return
	}
	memberships, now, ad, err := s.initialView(ctx, dev.UserID)
	if err != nil {
		writeError(w, err)
		return
	}
	info, err := s.roomInitial(ctx, dev, roomID, memberships[roomID], int(min(limit, legacyMaxLimit)), ad, now, true)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, info)
}

// handleInitialSync serves GET /initialSync: every room the user is
// joined or invited to (and, with archived=true, has left), their
// presence and account data.
func (s *Server) handleInitialSync(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	dev := DeviceFrom(ctx)
	limit, err := queryInt(r, "limit", legacyMessagesLimit)
	if err != nil {
		writeError(w, err)
		return
	}
	archived := false
	switch r.URL.Query().Get("archived") {
	case "", "false":
	case "true":
		archived = true
	default:
		writeError(w, errInvalidParam("archived must be true or false"))
		return
	}
	defer s.notePresenceSync(ctx, dev.UserID, "")()
	memberships, now, ad, err := s.initialView(ctx, dev.UserID)
	if err != nil {
		writeError(w, err)
		return
	}
	resp := struct {
		End         string            `json:"end"`
		Rooms       []*roomInfo       `json:"rooms"`
		Presence    []json.RawMessage `json:"presence"`
		Receipts    []json.RawMessage `json:"receipts"`
		AccountData []json.RawMessage `json:"account_data"`
	}{End: now.String(), Rooms: []*roomInfo{}, Presence: []json.RawMessage{}, Receipts: []json.RawMessage{}, AccountData: ad[""]}
	if resp.AccountData == nil {
		resp.AccountData = []json.RawMessage{}
	}
	ids := make([]string, 0, len(memberships))
	for roomID := range memberships {
		ids = append(ids, roomID)
	}
	sort.Strings(ids)
	t := nowTime()
	for _, roomID := range ids {
		m := memberships[roomID]
		if m.Pos > now.pos {
			continue
		}
		switch m.Membership {
		case spec.Invite:
			info := &roomInfo{RoomID: roomID, Membership: m.Membership, AccountData: []json.RawMessage{}}
			if ev, err := s.rooms.Event(ctx, m.EventID); err == nil {
				info.Invite = legacyJSON(ev, t, dev.key())
			} else if inv, err := s.store.GetRemoteInvite(ctx, roomID, dev.UserID); err == nil {
				info.Invite = inv.Event
			}
			resp.Rooms = append(resp.Rooms, info)
			continue
		case spec.Join:
		case spec.Leave, spec.Ban:
			if !archived || m.Forgotten {
				continue
			}
		default:
			continue
		}
		info, err := s.roomInitial(ctx, dev, roomID, m, int(min(limit, legacyMaxLimit)), ad, now, false)
		if err != nil {
			writeError(w, err)
			return
		}
		// Presence and receipts are given once, for all rooms.
		resp.Receipts = append(resp.Receipts, *info.Receipts...)
		info.Presence, info.Receipts = nil, nil
		resp.Rooms = append(resp.Rooms, info)
	}
	if s.presence != nil {
		views, err := s.initialPresence(ctx, dev.UserID, memberships, now.presence)
		if err != nil {
			writeError(w, err)
			return
		}
		for _, v := range views {
			resp.Presence = append(resp.Presence, legacyPresence(v, time.Now()))
		}
	}
	writeJSON(w, 200, resp)
}
