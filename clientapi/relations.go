package clientapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/gorilla/mux"

	"github.com/machi-chat/machi/rooms"
	"github.com/machi-chat/machi/storage"
)

// relationRoutes registers the relations and threads API, which the spec
// puts under /_matrix/client/v1 only.
func (s *Server) relationRoutes(r *mux.Router) {
	const p = "/_matrix/client/v1/rooms/{roomId}"
	for _, path := range []string{"/relations/{eventId}", "/relations/{eventId}/{relType}", "/relations/{eventId}/{relType}/{eventType}"} {
		r.Handle(p+path, s.requireAuth(http.HandlerFunc(s.handleRelations))).Methods(http.MethodGet)
	}
	r.Handle(p+"/threads", s.requireAuth(http.HandlerFunc(s.handleThreads))).Methods(http.MethodGet)
}

// recurseDepth is how many levels of relations recurse=true follows (the
// spec asks for at least 3).
const recurseDepth = 3

// handleRelations serves GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId},
// …/{relType} and …/{relType}/{eventType}: the parent's children, newest
// first (dir=b) or oldest first (dir=f), under the same history visibility
// as /messages.
func (s *Server) handleRelations(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	v := vars(r)
	roomID, q := v["roomId"], r.URL.Query()
	backwards := true
	switch q.Get("dir") {
	case "", "b":
	case "f":
		backwards = false
	default:
		writeError(w, errInvalidParam("dir must be b or f"))
		return
	}
	limit, err := queryLimit(q.Get("limit"), 20, 100)
	if err != nil {
		writeError(w, err)
		return
	}
	depth := 1
	switch q.Get("recurse") {
	case "", "false":
	case "true":
		depth = recurseDepth
	default:
		writeError(w, errInvalidParam("recurse must be true or false"))
		return
	}
	var from, to *int64
	for _, p := range []struct {
		name string
		dst  **int64
	}{{"from", &from}, {"to", &to}} {
		if t := q.Get(p.name); t != "" {
			pos, err := parsePosToken(t)
			if err != nil {
				writeError(w, err)
				return
			}
			*p.dst = &pos
		}
	}
	upTo, err := s.readAccess(r.Context(), dev.UserID, roomID)
	if err != nil {
		writeError(w, err)
		return
	}
	vis := s.visibility(r.Context(), dev.UserID, roomID)
	parent, err := s.rooms.Event(r.Context(), v["eventId"])
	if err != nil && !isNotFound(err) {
		writeError(w, err)
		return
	}
	if err != nil || parent.RoomID() != roomID || parent.Pos > upTo || !vis.allows(parent) {
		writeError(w, errNotFound("event not found"))
		return
	}
	rq := storage.RelationQuery{RoomID: roomID, Parents: []string{parent.ID()}, RelType: v["relType"], Type: v["eventType"],
		Limit: limit + 1, Backwards: backwards}
	// Tokens are stream positions: backwards pages cover (to, from],
	// forwards ones (from, to].
	if backwards {
		rq.From, rq.To = 0, upTo
		if to != nil {
			rq.From = *to
		}
		if from != nil {
			rq.To = min(*from, upTo)
		}
	} else {
		rq.From, rq.To = 0, upTo
		if from != nil {
			rq.From = *from
		}
		if to != nil {
			rq.To = min(*to, upTo)
		}
	}
	var evs []*rooms.Event
	if limit > 0 && rq.From < rq.To {
		if evs, err = s.rooms.RelatedEvents(r.Context(), rq, depth); err != nil {
			writeError(w, err)
			return
		}
	}
	more := len(evs) > limit
	if more {
		evs = evs[:limit]
	}
	chunk, err := s.bundled(r.Context(), dev, roomID, vis.only(evs), upTo)
	if err != nil {
		writeError(w, err)
		return
	}
	resp := map[string]any{"chunk": chunk}
	if more {
		last := evs[len(evs)-1].Pos
		if backwards {
			last--
		}
		resp["next_batch"] = posToken(last)
	}
	if t := q.Get("from"); t != "" {
		resp["prev_batch"] = t
	}
	if q.Has("recurse") {
		resp["recursion_depth"] = depth
	}
	writeJSON(w, 200, resp)
}

// handleThreads serves GET /_matrix/client/v1/rooms/{roomId}/threads: the
// room's thread roots, the thread with the newest reply first.
func (s *Server) handleThreads(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	roomID, q := vars(r)["roomId"], r.URL.Query()
	tq := storage.ThreadQuery{RoomID: roomID}
	switch q.Get("include") {
	case "", "all":
	case "participated":
		tq.UserID = dev.UserID
	default:
		writeError(w, errInvalidParam("include must be all or participated"))
		return
	}
	limit := 20
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 {
			writeError(w, errInvalidParam("limit must be an integer greater than zero"))
			return
		}
		limit = min(n, 100)
	}
	before := int64(-1)
	if t := q.Get("from"); t != "" {
		pos, err := parsePosToken(t)
		if err != nil {
			writeError(w, errInvalidParam("unknown pagination token %q", t))
			return
		}
		before = pos
	}
	upTo, err := s.readAccess(r.Context(), dev.UserID, roomID)
	if err != nil {
		writeError(w, err)
		return
	}
	if before < 0 {
		before = upTo + 1
	}
	tq.UpTo, tq.Before, tq.Limit = upTo, before, limit+1
	roots, latest, err := s.rooms.ThreadRoots(r.Context(), tq)
	if err != nil {
		writeError(w, err)
		return
	}
	more := len(roots) > limit
	if more {
		roots, latest = roots[:limit], latest[:limit]
	}
	vis := s.visibility(r.Context(), dev.UserID, roomID)
	chunk, err := s.bundled(r.Context(), dev, roomID, vis.only(roots), upTo)
	if err != nil {
		writeError(w, err)
		return
	}
	resp := map[string]any{"chunk": chunk}
	if more {
		resp["next_batch"] = posToken(latest[len(latest)-1])
	}
	writeJSON(w, 200, resp)
}

// queryLimit parses a limit parameter: def when absent, at most max.
func queryLimit(s string, def, max int) (int, error) {
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, errInvalidParam("invalid limit")
	}
	return min(n, max), nil
}

// bundled encodes a room's events for dev with their bundled aggregations
// (unsigned."m.relations"), counting children up to upTo. One call per
// response: events recent enough are aggregated in memory, the rest in
// one batch.
func (s *Server) bundled(ctx context.Context, dev *Device, roomID string, evs []*rooms.Event, upTo int64) ([]json.RawMessage, error) {
	out := make([]json.RawMessage, 0, len(evs))
	if len(evs) == 0 {
		return out, nil
	}
	aggs, err := s.rooms.Aggregations(ctx, roomID, dev.UserID, evs, upTo)
	if err != nil {
		return nil, err
	}
	now := nowTime()
	key := dev.key()
	for _, ev := range evs {
		out = append(out, ev.AppendBundledJSON(nil, now, key, aggs))
	}
	return out, nil
}
