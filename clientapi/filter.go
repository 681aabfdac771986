package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/machi-chat/machi/rooms"
)

// EventFilter is the spec's EventFilter.
type EventFilter struct {
	// Limit is nil when the filter sets none (limit() reads it).
	Limit      *int      `json:"limit,omitempty"`
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

// limit is the filter's limit, or 0 when it sets none.
func (f *EventFilter) limit() int {
	if f.Limit == nil {
		return 0
	}
	return *f.Limit
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

// maxFilterLimit caps every limit of a filter (the spec asks servers to
// impose a maximum); a larger one is taken as this.
const maxFilterLimit = 1000

// validate rejects filters the spec's schema forbids (the JSON types are
// checked when decoding): an event_format other than client or federation,
// a negative limit, room IDs that are not room IDs, senders that are not
// user IDs, an empty event type or field path. A limit of 0 is accepted and
// means no events (the schema asks for more than 0; SyTest and Synapse take
// 0 as "none", which is what a client asking for it wants).
func (f *Filter) validate() error {
	if f.EventFormat != "" && f.EventFormat != "client" && f.EventFormat != "federation" {
		return errBadJSON("event_format must be client or federation")
	}
	for _, p := range f.EventFields {
		if p == "" {
			return errBadJSON("event_fields may not hold an empty path")
		}
	}
	if err := checkRoomIDs("room.rooms", f.Room.Rooms, f.Room.NotRooms); err != nil {
		return err
	}
	for name, ef := range map[string]*EventFilter{"presence": &f.Presence, "account_data": &f.AccountData} {
		if err := ef.validate(name); err != nil {
			return err
		}
	}
	for name, rf := range map[string]*RoomEventFilter{"room.timeline": &f.Room.Timeline, "room.state": &f.Room.State,
		"room.ephemeral": &f.Room.Ephemeral, "room.account_data": &f.Room.AccountData} {
		if err := rf.validate(name); err != nil {
			return err
		}
	}
	return nil
}

// validate checks an event filter; name says where it is, for the error.
func (f *EventFilter) validate(name string) error {
	if f.Limit != nil {
		if *f.Limit < 0 {
			return errBadJSON("%s.limit must not be negative", name)
		}
		if *f.Limit > maxFilterLimit {
			*f.Limit = maxFilterLimit
		}
	}
	types := f.NotTypes
	if f.Types != nil {
		types = append(append([]string{}, types...), *f.Types...)
	}
	for _, t := range types {
		if t == "" {
			return errBadJSON("%s: an event type may not be empty", name)
		}
	}
	senders := f.NotSenders
	if f.Senders != nil {
		senders = append(append([]string{}, senders...), *f.Senders...)
	}
	for _, u := range senders {
		if !validUserID(u) {
			return errBadJSON("%s: %q is not a user ID", name, u)
		}
	}
	return nil
}

// validate checks a room event filter.
func (f *RoomEventFilter) validate(name string) error {
	if err := f.EventFilter.validate(name); err != nil {
		return err
	}
	if f.RelatedBySenders != nil {
		for _, u := range *f.RelatedBySenders {
			if !validUserID(u) {
				return errBadJSON("%s: %q is not a user ID", name, u)
			}
		}
	}
	return checkRoomIDs(name+".rooms", f.Rooms, f.NotRooms)
}

func checkRoomIDs(name string, rooms *[]string, notRooms []string) error {
	ids := notRooms
	if rooms != nil {
		ids = append(append([]string{}, ids...), *rooms...)
	}
	for _, id := range ids {
		if len(id) < 2 || id[0] != '!' {
			return errBadJSON("%s: %q is not a room ID", name, id)
		}
	}
	return nil
}

// validUserID is the filter's check of a user ID: @localpart:server.
func validUserID(u string) bool {
	i := strings.IndexByte(u, ':')
	return strings.HasPrefix(u, "@") && i > 1 && i < len(u)-1
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
	if _, err := parseFilter(body); err != nil {
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

// parseFilter decodes and validates a filter: M_BAD_JSON for a field of
// the wrong type or a value the schema forbids.
func parseFilter(body []byte) (*Filter, error) {
	f := &Filter{}
	if err := json.Unmarshal(body, f); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return nil, errBadJSON("invalid filter: %s must be %s", te.Field, te.Type)
		}
		return nil, errBadJSON("invalid filter: %v", err)
	}
	if err := f.validate(); err != nil {
		return nil, err
	}
	return f, nil
}

// loadFilter resolves a filter parameter: inline JSON (the spec: when its
// first character is "{") or a filter ID. An inline filter that is not
// JSON, or that the schema refuses, is M_BAD_JSON.
func (s *Server) loadFilter(r *http.Request, userID, param string) (*Filter, error) {
	if param == "" {
		return &Filter{}, nil
	}
	var body []byte
	if strings.HasPrefix(param, "{") {
		body = []byte(param)
		if !json.Valid(body) {
			return nil, errBadJSON("the filter parameter is not valid JSON")
		}
	} else {
		var err error
		if body, err = s.store.GetFilter(r.Context(), userID, param); err != nil {
			if isNotFound(err) {
				return nil, errNotFound("no such filter %q", param)
			}
			return nil, err
		}
	}
	return parseFilter(body)
}
