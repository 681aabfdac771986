package clientapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/machi-chat/machi/storage"
)

const (
	notificationsDefaultLimit = 20
	notificationsMaxLimit     = 100
)

type notificationJSON struct {
	Actions json.RawMessage `json:"actions"`
	Event   json.RawMessage `json:"event"`
	Read    bool            `json:"read"`
	RoomID  string          `json:"room_id"`
	TS      int64           `json:"ts"`
}

// handleNotifications serves GET /_matrix/client/v3/notifications: the
// events the user was notified of, newest first. next_token is "n" and the
// stream position of the last notification listed; the next page lists
// the ones before it.
func (s *Server) handleNotifications(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	ctx := r.Context()
	q := r.URL.Query()
	query := storage.NotificationQuery{UserID: dev.UserID, Limit: notificationsDefaultLimit}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 {
			writeError(w, errInvalidParam("limit must be a positive integer"))
			return
		}
		query.Limit = min(n, notificationsMaxLimit)
	}
	if from := q.Get("from"); from != "" {
		pos, err := strconv.ParseInt(strings.TrimPrefix(from, "n"), 10, 64)
		if err != nil || !strings.HasPrefix(from, "n") || pos < 1 {
			writeError(w, errInvalidParam("invalid from token %q", from))
			return
		}
		query.Before = pos
	}
	switch q.Get("only") {
	case "":
	case "highlight":
		query.OnlyHighlight = true
	default:
		writeError(w, errInvalidParam("only may be \"highlight\""))
		return
	}
	if err := s.ensureUnread(ctx, dev.UserID); err != nil { // for read
		writeError(w, err)
		return
	}
	if err := s.eval.flush(ctx); err != nil {
		writeError(w, err)
		return
	}
	want := query.Limit
	query.Limit++ // one more tells whether there is a next page
	rows, err := s.store.ListNotifications(ctx, query)
	if err != nil {
		writeError(w, err)
		return
	}
	out := struct {
		NextToken     string             `json:"next_token,omitempty"`
		Notifications []notificationJSON `json:"notifications"`
	}{Notifications: []notificationJSON{}}
	if len(rows) > want {
		rows = rows[:want]
		out.NextToken = "n" + strconv.FormatInt(rows[want-1].Pos, 10)
	}
	vis := map[string]*visibility{}
	now := nowTime()
	for _, n := range rows {
		ev, err := s.rooms.Event(ctx, n.EventID)
		if isNotFound(err) {
			continue
		} else if err != nil {
			writeError(w, err)
			return
		}
		v, ok := vis[n.RoomID]
		if !ok {
			v = s.visibility(ctx, dev.UserID, n.RoomID)
			vis[n.RoomID] = v
		}
		if !v.allows(ev) {
			continue
		}
		// The spec's format here is the client event without room_id.
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(ev.ClientJSON(now, dev.key()), &fields); err != nil {
			writeError(w, err)
			return
		}
		delete(fields, "room_id")
		b, err := json.Marshal(fields)
		if err != nil {
			writeError(w, err)
			return
		}
		out.Notifications = append(out.Notifications, notificationJSON{Actions: n.Actions, Event: b,
			Read: s.isRead(dev.UserID, n.RoomID, n.ThreadID, n.Pos), RoomID: n.RoomID, TS: n.TS})
	}
	writeJSON(w, http.StatusOK, out)
}
