package clientapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/storage"
)

// Reports go to the city's admins, not to room moderators: each is stored
// with its audit log entry in one transaction, and read through the admin
// API (GET /_machi/admin/v1/reports, `machi admin reports`).

// maxReasonBytes bounds a report's reason.
const maxReasonBytes = 4096

type reportRequest struct {
	Reason *string `json:"reason"`
}

func readReport(r *http.Request, reasonRequired bool) (string, error) {
	var req reportRequest
	if err := readJSON(r, &req); err != nil {
		return "", err
	}
	if req.Reason == nil {
		if reasonRequired {
			return "", errMissingParam("reason is required (it may be empty)")
		}
		return "", nil
	}
	if len(*req.Reason) > maxReasonBytes {
		return "", errInvalidParam("reason is longer than %d bytes", maxReasonBytes)
	}
	return *req.Reason, nil
}

// handleReportEvent serves POST /_matrix/client/v3/rooms/{roomId}/report/{eventId}.
// Only a member of the room may report, and only an event they can see;
// anything else is M_NOT_FOUND, so reports cannot probe for events. Not
// idempotent: each call is a report.
func (s *Server) handleReportEvent(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	v := vars(r)
	roomID, eventID := v["roomId"], v["eventId"]
	reason, err := readReport(r, false)
	if err != nil {
		writeError(w, err)
		return
	}
	if err := s.limiter.allow(dev.UserID); err != nil {
		writeError(w, err)
		return
	}
	notFound := errNotFound("the event was not found, or you are not in its room")
	ms, err := s.rooms.UserRooms(r.Context(), dev.UserID)
	if err != nil {
		writeError(w, err)
		return
	}
	if ms[roomID].Membership != spec.Join {
		writeError(w, notFound)
		return
	}
	ev, err := s.rooms.Event(r.Context(), eventID)
	if err != nil && !isNotFound(err) {
		writeError(w, err)
		return
	}
	if err != nil || ev.RoomID() != roomID || !s.visibility(r.Context(), dev.UserID, roomID).allows(ev) {
		writeError(w, notFound)
		return
	}
	now := s.policy.Now()
	rep := storage.Report{TS: now.UnixMilli(), Reporter: dev.UserID, RoomID: roomID, EventID: eventID, Reason: reason,
		EventJSON: ev.ClientJSON(now, "")}
	s.putReport(w, r, rep, "report.event")
}

// handleReportRoom serves POST /_matrix/client/v3/rooms/{roomId}/report.
// Anyone who knows the room (has or had a membership: a spam invite is
// reportable) or could join or read it may report it; otherwise
// M_NOT_FOUND. Not idempotent: each call is a report.
func (s *Server) handleReportRoom(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	roomID := vars(r)["roomId"]
	reason, err := readReport(r, true)
	if err != nil {
		writeError(w, err)
		return
	}
	if err := s.limiter.allow(dev.UserID); err != nil {
		writeError(w, err)
		return
	}
	ms, err := s.rooms.UserRooms(r.Context(), dev.UserID)
	if err != nil {
		writeError(w, err)
		return
	}
	if _, known := ms[roomID]; !known {
		snap, err := s.rooms.CurrentState(r.Context(), roomID)
		if err != nil || !openRoom(snap) {
			if err != nil && !isUnknownRoom(err) {
				writeError(w, err)
				return
			}
			writeError(w, errNotFound("the room was not found"))
			return
		}
	}
	rep := storage.Report{TS: s.policy.Now().UnixMilli(), Reporter: dev.UserID, RoomID: roomID, Reason: reason}
	s.putReport(w, r, rep, "report.room")
}

func (s *Server) putReport(w http.ResponseWriter, r *http.Request, rep storage.Report, action string) {
	dev := DeviceFrom(r.Context())
	detail := map[string]any{"reason": rep.Reason}
	if rep.EventID != "" {
		detail["event_id"] = rep.EventID
	}
	b, _ := json.Marshal(detail)
	audit := storage.AuditEntry{TS: rep.TS, Actor: dev.UserID, DeviceID: dev.DeviceID, Action: action, Target: rep.RoomID, Detail: string(b)}
	id, err := s.store.PutReport(r.Context(), rep, audit)
	if err != nil {
		writeError(w, err)
		return
	}
	s.log.Info("content reported", "report", id, "room", rep.RoomID, "event", rep.EventID, "reporter", rep.Reporter)
	writeJSON(w, 200, map[string]any{})
}

type reportJSON struct {
	ID       int64           `json:"id"`
	TS       int64           `json:"ts"`
	Time     string          `json:"time"`
	Reporter string          `json:"reporter"`
	RoomID   string          `json:"room_id"`
	EventID  string          `json:"event_id,omitempty"`
	Reason   string          `json:"reason"`
	Event    json.RawMessage `json:"event,omitempty"`
}

// adminReports serves GET /_machi/admin/v1/reports: oldest first;
// filters room_id, after (a report ID, for paging) and limit.
func (s *Server) adminReports(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	rq := storage.ReportQuery{RoomID: q.Get("room_id"), Limit: 1000}
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeError(w, errInvalidParam("after must be a non-negative integer"))
			return
		}
		rq.AfterID = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > 10000 {
			writeError(w, errInvalidParam("limit must be 1 to 10000"))
			return
		}
		rq.Limit = n
	}
	list, err := s.store.ListReports(r.Context(), rq)
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]reportJSON, 0, len(list))
	for _, rep := range list {
		out = append(out, reportJSON{ID: rep.ID, TS: rep.TS, Time: time.UnixMilli(rep.TS).UTC().Format(time.RFC3339),
			Reporter: rep.Reporter, RoomID: rep.RoomID, EventID: rep.EventID, Reason: rep.Reason, Event: rep.EventJSON})
	}
	writeJSON(w, http.StatusOK, map[string]any{"reports": out})
}
