package clientapi

import (
	"net/http"
	"strconv"
)

// tsCandidates bounds how many events around the timestamp are looked at
// for one the user may see.
const tsCandidates = 200

// handleTimestampToEvent serves GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event:
// the event closest to ts in direction dir that the user may see (up to
// their leave, and under the room's history visibility).
func (s *Server) handleTimestampToEvent(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	roomID := vars(r)["roomId"]
	q := r.URL.Query()
	if q.Get("ts") == "" || q.Get("dir") == "" {
		writeError(w, errMissingParam("ts and dir are required"))
		return
	}
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil || ts < 0 {
		writeError(w, errInvalidParam("ts must be a timestamp in milliseconds"))
		return
	}
	dir := q.Get("dir")
	if dir != "f" && dir != "b" {
		writeError(w, errInvalidParam("dir must be f or b"))
		return
	}
	upTo, err := s.access(r.Context(), dev.UserID, roomID)
	if err != nil {
		writeError(w, err)
		return
	}
	evs, err := s.rooms.EventsAtTS(r.Context(), roomID, ts, dir == "f", tsCandidates)
	if err != nil {
		writeError(w, err)
		return
	}
	vis := s.visibility(r.Context(), dev.UserID, roomID)
	for _, ev := range evs {
		if ev.Pos <= upTo && vis.allows(ev) {
			writeJSON(w, 200, map[string]any{"event_id": ev.ID(), "origin_server_ts": ev.PDU.OriginServerTS()})
			return
		}
	}
	writeError(w, errNotFound("no event found %s %d", map[string]string{"f": "at or after", "b": "at or before"}[dir], ts))
}
