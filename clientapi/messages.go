package clientapi

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/rooms"
)

var nowTime = time.Now

// syncToken is a /sync position: the stream position and the typing and
// presence counters. Written "s<pos>_<typing>_<presence>"; tokens from
// before presence ("s<pos>_<typing>") read as presence 0.
type syncToken struct {
	pos      int64
	typing   uint64
	presence uint64
}

func (t syncToken) String() string {
	b := make([]byte, 0, 64)
	b = strconv.AppendInt(append(b, 's'), t.pos, 10)
	b = strconv.AppendUint(append(b, '_'), t.typing, 10)
	b = strconv.AppendUint(append(b, '_'), t.presence, 10)
	return string(b)
}

func parseSyncToken(s string) (syncToken, error) {
	var t syncToken
	rest, ok := strings.CutPrefix(s, "s")
	if !ok {
		return t, errInvalidParam("invalid since token %q", s)
	}
	p, rest, _ := strings.Cut(rest, "_")
	ty, pr, _ := strings.Cut(rest, "_")
	var err error
	if t.pos, err = strconv.ParseInt(p, 10, 64); err != nil || t.pos < 0 {
		return t, errInvalidParam("invalid since token %q", s)
	}
	if ty != "" {
		if t.typing, err = strconv.ParseUint(ty, 10, 64); err != nil {
			return t, errInvalidParam("invalid since token %q", s)
		}
	}
	if pr != "" {
		if t.presence, err = strconv.ParseUint(pr, 10, 64); err != nil {
			return t, errInvalidParam("invalid since token %q", s)
		}
	}
	return t, nil
}

// Pagination tokens are "t<pos>": every event at or before pos is behind
// the token. /messages also accepts sync tokens.
func posToken(pos int64) string { return "t" + strconv.FormatInt(pos, 10) }

func parsePosToken(s string) (int64, error) {
	if strings.HasPrefix(s, "s") {
		t, err := parseSyncToken(s)
		return t.pos, err
	}
	// Positions below 0 are history backfilled from other servers.
	p, err := strconv.ParseInt(strings.TrimPrefix(s, "t"), 10, 64)
	if err != nil || !strings.HasPrefix(s, "t") {
		return 0, errInvalidParam("invalid pagination token %q", s)
	}
	return p, nil
}

// handleMessages serves GET /rooms/{roomId}/messages.
func (s *Server) handleMessages(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	roomID := vars(r)["roomId"]
	q := r.URL.Query()
	upTo, err := s.readAccess(r.Context(), dev.UserID, roomID)
	if err != nil {
		writeError(w, err)
		return
	}
	backwards := true
	switch q.Get("dir") {
	case "b":
	case "f":
		backwards = false
	default:
		writeError(w, errInvalidParam("dir must be b or f"))
		return
	}
	from := upTo
	if !backwards {
		from = math.MinInt64 // the room's start, backfilled history included
	}
	if t := q.Get("from"); t != "" {
		if from, err = parsePosToken(t); err != nil {
			writeError(w, err)
			return
		}
	}
	to := int64(math.MinInt64)
	if !backwards {
		to = upTo
	}
	if t := q.Get("to"); t != "" {
		if to, err = parsePosToken(t); err != nil {
			writeError(w, err)
			return
		}
	}
	from, to = min(from, upTo), min(to, upTo)
	limit := 10
	if l := q.Get("limit"); l != "" {
		if limit, err = strconv.Atoi(l); err != nil || limit < 0 {
			writeError(w, errInvalidParam("invalid limit"))
			return
		}
	}
	limit = min(limit, 1000)
	filter := &RoomEventFilter{}
	if f := q.Get("filter"); f != "" {
		if err := json.Unmarshal([]byte(f), filter); err != nil {
			writeError(w, errBadJSON("invalid filter: %v", err))
			return
		}
	}
	if l := filter.limit(); l > 0 && l < limit {
		limit = l
	}

	var chunk []*rooms.Event
	ignored, err := s.ignoredUsers(r.Context(), dev.UserID)
	if err != nil {
		writeError(w, err)
		return
	}
	vis := s.visibility(r.Context(), dev.UserID, roomID).ignoring(ignored)
	cursor := from
	more := true
	var oldest *rooms.Event // the oldest event read, for backfill
	// Filtered events don't count towards the limit; read pages until the
	// limit is met, bounded.
	read := func() error {
		for page := 0; page < 20 && len(chunk) < limit && more; page++ {
			evs, err := s.rooms.Paginate(r.Context(), roomID, cursor, to, backwards, limit)
			if err != nil {
				return err
			}
			pass, err := s.passing(r.Context(), filter, vis, roomID, evs, upTo)
			if err != nil {
				return err
			}
			consumed := 0
			for _, ev := range evs {
				consumed++
				if backwards {
					cursor, oldest = ev.Pos-1, ev
				} else {
					cursor = ev.Pos
				}
				if pass[ev] {
					chunk = append(chunk, ev)
					if len(chunk) == limit {
						break
					}
				}
			}
			more = consumed < len(evs) || (len(evs) == limit && limit > 0)
		}
		return nil
	}
	if err := read(); err != nil {
		writeError(w, err)
		return
	}
	// Paging back past the start of what this server has of a room shared
	// with other servers: fetch the history before it, then read on.
	if backwards && !more && len(chunk) < limit && s.remote != nil && q.Get("to") == "" {
		if oldest == nil {
			oldest, _ = s.rooms.OldestEvent(r.Context(), roomID)
		}
		if oldest != nil && oldest.Type() != spec.MRoomCreate {
			n, err := s.remote.Backfill(r.Context(), roomID, oldest.PDU.PrevEventIDs(), max(limit-len(chunk), 10))
			if err != nil {
				s.log.Info("backfill", "room", roomID, "err", err)
			}
			if n > 0 {
				cursor, more = oldest.Pos-1, true
				if err := read(); err != nil {
					writeError(w, err)
					return
				}
			}
		}
	}
	out, err := s.bundled(r.Context(), dev, roomID, chunk, upTo)
	if err != nil {
		writeError(w, err)
		return
	}
	// end is left out where the room's history stops: paging back past its
	// start. Forwards, the live end is only where the room is now: end is
	// where to go on from when more arrives.
	resp := map[string]any{"chunk": out, "start": posToken(from)}
	if more || !backwards {
		resp["end"] = posToken(cursor)
	}
	if filter.LazyLoadMembers && len(chunk) > 0 {
		resp["state"] = s.memberEvents(r, dev, roomID, chunk)
	}
	writeJSON(w, 200, resp)
}

// passing returns the events of evs that filter and history visibility
// let through.
func (s *Server) passing(ctx context.Context, filter *RoomEventFilter, vis *visibility, roomID string, evs []*rooms.Event, upTo int64) (map[*rooms.Event]bool, error) {
	var cand []*rooms.Event
	for _, ev := range evs {
		if filter.allowsEvent(ev) && vis.allows(ev) {
			cand = append(cand, ev)
		}
	}
	cand, err := s.relatedOnly(ctx, filter, roomID, cand, upTo)
	if err != nil {
		return nil, err
	}
	pass := make(map[*rooms.Event]bool, len(cand))
	for _, ev := range cand {
		pass[ev] = true
	}
	return pass, nil
}

// memberEvents returns the current member events of the senders of evs,
// for lazy-loading clients.
func (s *Server) memberEvents(r *http.Request, dev *Device, roomID string, evs []*rooms.Event) []json.RawMessage {
	snap, err := s.stateAt(r.Context(), dev.UserID, roomID)
	if err != nil {
		return []json.RawMessage{}
	}
	seen := map[string]bool{}
	out := []json.RawMessage{}
	now := nowTime()
	for _, ev := range evs {
		if seen[ev.Sender()] {
			continue
		}
		seen[ev.Sender()] = true
		if m := snap.Get(spec.MRoomMember, ev.Sender()); m != nil {
			out = append(out, m.ClientJSON(now, dev.key()))
		}
	}
	return out
}

// handleContext serves GET /rooms/{roomId}/context/{eventId}.
func (s *Server) handleContext(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	v := vars(r)
	roomID := v["roomId"]
	upTo, err := s.readAccess(r.Context(), dev.UserID, roomID)
	if err != nil {
		writeError(w, err)
		return
	}
	limit := 10
	if l := r.URL.Query().Get("limit"); l != "" {
		if limit, err = strconv.Atoi(l); err != nil || limit < 0 {
			writeError(w, errInvalidParam("invalid limit"))
			return
		}
	}
	limit = min(limit, 100)
	filter := &RoomEventFilter{}
	if f := r.URL.Query().Get("filter"); f != "" {
		if err := json.Unmarshal([]byte(f), filter); err != nil {
			writeError(w, errBadJSON("invalid filter: %v", err))
			return
		}
	}
	vis := s.visibility(r.Context(), dev.UserID, roomID)
	ev, err := s.rooms.Event(r.Context(), v["eventId"])
	if err != nil || ev.RoomID() != roomID || ev.Pos > upTo || !vis.allows(ev) {
		writeError(w, errNotFound("event not found"))
		return
	}
	before, err := s.rooms.Paginate(r.Context(), roomID, ev.Pos-1, 0, true, limit/2)
	if err != nil {
		writeError(w, err)
		return
	}
	after, err := s.rooms.Paginate(r.Context(), roomID, ev.Pos, upTo, false, limit-limit/2)
	if err != nil {
		writeError(w, err)
		return
	}
	now := nowTime()
	all := []*rooms.Event{ev}
	keep := func(evs []*rooms.Event) ([]*rooms.Event, error) {
		pass, err := s.passing(r.Context(), filter, vis, roomID, evs, upTo)
		out := []*rooms.Event{}
		for _, e := range evs {
			if pass[e] {
				out = append(out, e)
			}
		}
		all = append(all, out...)
		return out, err
	}
	shownBefore, err := keep(before)
	if err != nil {
		writeError(w, err)
		return
	}
	shownAfter, err := keep(after)
	if err != nil {
		writeError(w, err)
		return
	}
	aggs, err := s.rooms.Aggregations(r.Context(), roomID, dev.UserID, all, upTo)
	if err != nil {
		writeError(w, err)
		return
	}
	enc := func(evs []*rooms.Event) []json.RawMessage {
		out := make([]json.RawMessage, 0, len(evs))
		for _, e := range evs {
			out = append(out, e.AppendBundledJSON(nil, now, dev.key(), aggs))
		}
		return out
	}
	start, end := ev.Pos-1, ev.Pos
	if len(before) > 0 {
		start = before[len(before)-1].Pos - 1
	}
	last := ev
	if len(after) > 0 {
		last = after[len(after)-1]
		end = last.Pos
	}
	snap, err := s.rooms.StateAfter(r.Context(), last)
	if err != nil {
		writeError(w, err)
		return
	}
	// Lazy-loading members keeps, of the member events, those of the
	// senders of the events returned.
	senders := map[string]bool{ev.Sender(): true}
	for _, e := range append(append([]*rooms.Event(nil), before...), after...) {
		if filter.allowsEvent(e) && vis.allows(e) {
			senders[e.Sender()] = true
		}
	}
	state := []json.RawMessage{}
	snap.Each(func(e *rooms.Event) {
		if !filter.LazyLoadMembers || e.Type() != spec.MRoomMember || senders[*e.StateKey()] {
			state = append(state, e.ClientJSON(now, dev.key()))
		}
	})
	writeJSON(w, 200, map[string]any{
		"event": json.RawMessage(ev.AppendBundledJSON(nil, now, dev.key(), aggs)), "events_before": enc(shownBefore), "events_after": enc(shownAfter),
		"start": posToken(start), "end": posToken(end), "state": state,
	})
}
