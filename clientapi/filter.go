package clientapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/machi-chat/machi/rooms"
)

// EventFilter is the spec's EventFilter.
type EventFilter struct {
	Limit      int       `json:"limit,omitempty"`
	Types      *[]string `json:"types,omitempty"`
	NotTypes   []string  `json:"not_types,omitempty"`
	Senders    *[]string `json:"senders,omitempty"`
	NotSenders []string  `json:"not_senders,omitempty"`
}

// RoomEventFilter is the spec's RoomEventFilter (also used for state).
type RoomEventFilter struct {
	EventFilter
	Rooms                   *[]string `json:"rooms,omitempty"`
	NotRooms                []string  `json:"not_rooms,omitempty"`
	ContainsURL             *bool     `json:"contains_url,omitempty"`
	LazyLoadMembers         bool      `json:"lazy_load_members,omitempty"`
	IncludeRedundantMembers bool      `json:"include_redundant_members,omitempty"`
	// RelatedByRelTypes and RelatedBySenders keep only events that have
	// a child with one of those rel_types, from one of those senders.
	RelatedByRelTypes *[]string `json:"related_by_rel_types,omitempty"`
	RelatedBySenders  *[]string `json:"related_by_senders,omitempty"`
	// UnreadThreadNotifications asks /sync for per-thread counts.
	UnreadThreadNotifications bool `json:"unread_thread_notifications,omitempty"`
}

// byRelated reports whether the filter selects events by their children.
func (f *RoomEventFilter) byRelated() bool {
	return f.RelatedByRelTypes != nil || f.RelatedBySenders != nil
}

// relatedOnly applies related_by_rel_types and related_by_senders to evs:
// a no-op (and no lookup) for filters without them.
func (s *Server) relatedOnly(ctx context.Context, f *RoomEventFilter, roomID string, evs []*rooms.Event, upTo int64) ([]*rooms.Event, error) {
	if !f.byRelated() || len(evs) == 0 {
		return evs, nil
	}
	var relTypes, senders []string
	if f.RelatedByRelTypes != nil {
		relTypes = append([]string{}, *f.RelatedByRelTypes...)
	}
	if f.RelatedBySenders != nil {
		senders = append([]string{}, *f.RelatedBySenders...)
	}
	return s.rooms.WithChildren(ctx, roomID, evs, relTypes, senders, upTo)
}

// RoomFilter is the spec's RoomFilter.
type RoomFilter struct {
	Rooms        *[]string       `json:"rooms,omitempty"`
	NotRooms     []string        `json:"not_rooms,omitempty"`
	Timeline     RoomEventFilter `json:"timeline"`
	State        RoomEventFilter `json:"state"`
	Ephemeral    RoomEventFilter `json:"ephemeral"`
	AccountData  RoomEventFilter `json:"account_data"`
	IncludeLeave bool            `json:"include_leave,omitempty"`
}

// Filter is the spec's Filter.
type Filter struct {
	EventFields []string    `json:"event_fields,omitempty"`
	EventFormat string      `json:"event_format,omitempty"`
	Presence    EventFilter `json:"presence"`
	AccountData EventFilter `json:"account_data"`
	Room        RoomFilter  `json:"room"`
}

// validate rejects filters the spec forbids.
func (f *Filter) validate() error {
	if f.EventFormat != "" && f.EventFormat != "client" && f.EventFormat != "federation" {
		return errBadJSON("event_format must be client or federation")
	}
	for _, l := range []int{f.Room.Timeline.Limit, f.Room.State.Limit, f.Presence.Limit, f.AccountData.Limit} {
		if l < 0 {
			return errBadJSON("limits must not be negative")
		}
	}
	return nil
}

// matchType matches an event type against a pattern with '*' wildcards.
func matchType(pattern, typ string) bool {
	if !strings.Contains(pattern, "*") {
		return pattern == typ
	}
	parts := strings.Split(pattern, "*")
	if !strings.HasPrefix(typ, parts[0]) {
		return false
	}
	typ = typ[len(parts[0]):]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(typ, p)
		if i < 0 {
			return false
		}
		typ = typ[i+len(p):]
	}
	return strings.HasSuffix(typ, parts[len(parts)-1])
}

func anyMatch(patterns []string, typ string) bool {
	for _, p := range patterns {
		if matchType(p, typ) {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// allowsType reports whether the filter lets an event type and sender through.
func (f *EventFilter) allows(typ, sender string) bool {
	if anyMatch(f.NotTypes, typ) || contains(f.NotSenders, sender) {
		return false
	}
	if f.Types != nil && !anyMatch(*f.Types, typ) {
		return false
	}
	if f.Senders != nil && !contains(*f.Senders, sender) {
		return false
	}
	return true
}

// allowsRoom reports whether a room passes the filter's room lists.
func allowsRoom(rooms *[]string, notRooms []string, roomID string) bool {
	if contains(notRooms, roomID) {
		return false
	}
	return rooms == nil || contains(*rooms, roomID)
}

// allowsEvent applies a room event filter to an event.
func (f *RoomEventFilter) allowsEvent(ev *rooms.Event) bool {
	if !f.allows(ev.Type(), ev.Sender()) {
		return false
	}
	if f.ContainsURL != nil {
		var c struct {
			URL *string `json:"url"`
		}
		_ = json.Unmarshal(ev.PDU.Content(), &c)
		if (c.URL != nil) != *f.ContainsURL {
			return false
		}
	}
	return true
}

// handlePostFilter serves POST /user/{userId}/filter.
func (s *Server) handlePostFilter(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	if vars(r)["userId"] != dev.UserID {
		writeError(w, errForbidden("you can only create filters for yourself"))
		return
	}
	body, err := readObject(r)
	if err != nil {
		writeError(w, err)
		return
	}
	var f Filter
	if err := json.Unmarshal(body, &f); err != nil {
		writeError(w, errBadJSON("invalid filter: %v", err))
		return
	}
	if err := f.validate(); err != nil {
		writeError(w, err)
		return
	}
	id, err := s.store.CreateFilter(r.Context(), dev.UserID, body)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, map[string]string{"filter_id": id})
}

// handleGetFilter serves GET /user/{userId}/filter/{filterId}.
func (s *Server) handleGetFilter(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	v := vars(r)
	if v["userId"] != dev.UserID {
		writeError(w, errForbidden("you can only read your own filters"))
		return
	}
	body, err := s.store.GetFilter(r.Context(), dev.UserID, v["filterId"])
	if err != nil {
		if isNotFound(err) {
			writeError(w, errNotFound("no such filter"))
			return
		}
		writeError(w, err)
		return
	}
	writeJSON(w, 200, json.RawMessage(body))
}

// loadFilter resolves a filter parameter: inline JSON or a filter ID.
func (s *Server) loadFilter(r *http.Request, userID, param string) (*Filter, error) {
	f := &Filter{}
	if param == "" {
		return f, nil
	}
	var body []byte
	if strings.HasPrefix(strings.TrimSpace(param), "{") {
		body = []byte(param)
	} else {
		var err error
		if body, err = s.store.GetFilter(r.Context(), userID, param); err != nil {
			if isNotFound(err) {
				return nil, errNotFound("no such filter %q", param)
			}
			return nil, err
		}
	}
	if err := json.Unmarshal(body, f); err != nil {
		return nil, errBadJSON("invalid filter: %v", err)
	}
	if err := f.validate(); err != nil {
		return nil, err
	}
	return f, nil
}
