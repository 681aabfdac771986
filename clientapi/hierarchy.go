package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/rooms"
	"github.com/machi-chat/machi/storage"
)

// The space hierarchy (GET /_matrix/client/v1/rooms/{roomId}/hierarchy) is
// a depth-first walk of m.space.child events from the given room. Pages
// are cut from the same walk: next_batch says how many rooms earlier pages
// gave, with the walk's parameters, and the next request walks again and
// skips them. A walk is bounded (hierarchyMaxVisit rooms), so no request
// costs more than that, however the spaces are nested.
const (
	hierarchyDefaultLimit = 50
	hierarchyMaxLimit     = 100
	hierarchyMaxDepth     = 10
	hierarchyMaxVisit     = 2000
)

// hierarchyRoom is one entry of the response's rooms (room_summary.yaml
// with children_state).
type hierarchyRoom struct {
	RoomID         string            `json:"room_id"`
	Name           string            `json:"name,omitempty"`
	Topic          string            `json:"topic,omitempty"`
	CanonicalAlias string            `json:"canonical_alias,omitempty"`
	AvatarURL      string            `json:"avatar_url,omitempty"`
	NumJoined      int               `json:"num_joined_members"`
	WorldReadable  bool              `json:"world_readable"`
	GuestCanJoin   bool              `json:"guest_can_join"`
	JoinRule       string            `json:"join_rule,omitempty"`
	RoomType       string            `json:"room_type,omitempty"`
	AllowedRoomIDs []string          `json:"allowed_room_ids,omitempty"`
	Encryption     string            `json:"encryption,omitempty"`
	RoomVersion    string            `json:"room_version,omitempty"`
	ChildrenState  []json.RawMessage `json:"children_state"`
}

type hierarchyParams struct {
	suggestedOnly bool
	maxDepth      int
	limit         int
	skip          int
}

// token is next_batch: the rooms already given, and the walk's parameters,
// which a later page may not change.
func (p hierarchyParams) token(skip int) string {
	return fmt.Sprintf("h%d_%d_%t", skip, p.maxDepth, p.suggestedOnly)
}

func parseHierarchyParams(r *http.Request) (hierarchyParams, error) {
	q := r.URL.Query()
	p := hierarchyParams{maxDepth: hierarchyMaxDepth, limit: hierarchyDefaultLimit}
	switch q.Get("suggested_only") {
	case "", "false":
	case "true":
		p.suggestedOnly = true
	default:
		return p, errInvalidParam("suggested_only must be true or false")
	}
	if v := q.Get("max_depth"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return p, errInvalidParam("max_depth must be a non-negative integer")
		}
		p.maxDepth = min(n, hierarchyMaxDepth)
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return p, errInvalidParam("limit must be a positive integer")
		}
		p.limit = min(n, hierarchyMaxLimit)
	}
	if from := q.Get("from"); from != "" {
		var skip, depth int
		var suggested bool
		if n, err := fmt.Sscanf(from, "h%d_%d_%t", &skip, &depth, &suggested); err != nil || n != 3 || skip < 0 {
			return p, errInvalidParam("unknown from token")
		}
		if depth != p.maxDepth || suggested != p.suggestedOnly {
			return p, errInvalidParam("suggested_only and max_depth cannot change on paginated requests")
		}
		p.skip = skip
	}
	return p, nil
}

// handleHierarchy serves GET /_matrix/client/v1/rooms/{roomId}/hierarchy.
// A room is listed when the user may see it (joined, invited, or it is
// public, knockable, world-readable or restricted to a room they are in);
// the others are left out, and so is what is below them.
func (s *Server) handleHierarchy(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	rootID := vars(r)["roomId"]
	p, err := parseHierarchyParams(r)
	if err != nil {
		writeError(w, err)
		return
	}
	ms, err := s.rooms.UserRooms(r.Context(), dev.UserID)
	if err != nil {
		writeError(w, err)
		return
	}
	root, err := s.rooms.CurrentState(r.Context(), rootID)
	if err != nil && !isUnknownRoom(err) {
		writeError(w, err)
		return
	}
	if err != nil || !canPreview(root, dev.UserID, ms) {
		writeError(w, errForbidden("you cannot see room %s", rootID))
		return
	}
	out, next, err := s.walkHierarchy(r.Context(), rootID, dev.UserID, ms, p)
	if err != nil {
		writeError(w, err)
		return
	}
	resp := map[string]any{"rooms": out}
	if next != "" {
		resp["next_batch"] = next
	}
	writeJSON(w, 200, resp)
}

func (s *Server) walkHierarchy(ctx context.Context, rootID, userID string, ms map[string]storage.Membership, p hierarchyParams) ([]hierarchyRoom, string, error) {
	type item struct {
		roomID string
		depth  int
	}
	stack := []item{{rootID, 0}}
	seen := map[string]bool{}
	out := []hierarchyRoom{}
	given := 0
	for len(stack) > 0 && len(out) < p.limit && len(seen) < hierarchyMaxVisit {
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[it.roomID] {
			continue
		}
		seen[it.roomID] = true
		snap, err := s.rooms.CurrentState(ctx, it.roomID)
		if isUnknownRoom(err) {
			continue // a room of another server: federation is to come
		} else if err != nil {
			return nil, "", err
		}
		if it.roomID != rootID && !canPreview(snap, userID, ms) {
			continue
		}
		entry, children, err := s.hierarchyEntry(ctx, it.roomID, snap, p.suggestedOnly)
		if err != nil {
			return nil, "", err
		}
		if given >= p.skip {
			out = append(out, entry)
		}
		given++
		if it.depth < p.maxDepth {
			for i := len(children) - 1; i >= 0; i-- {
				stack = append(stack, item{children[i], it.depth + 1})
			}
		}
	}
	for _, it := range stack {
		if !seen[it.roomID] && len(seen) < hierarchyMaxVisit {
			return out, p.token(given), nil
		}
	}
	return out, "", nil
}

// hierarchyEntry summarises one room and lists the children to walk into,
// in the spec's order.
func (s *Server) hierarchyEntry(ctx context.Context, roomID string, snap *rooms.Snapshot, suggestedOnly bool) (hierarchyRoom, []string, error) {
	h := hierarchyRoom{RoomID: roomID, ChildrenState: []json.RawMessage{}}
	str := func(typ, field string) string {
		ev := snap.Get(typ, "")
		if ev == nil {
			return ""
		}
		var c map[string]any
		_ = json.Unmarshal(ev.PDU.Content(), &c)
		v, _ := c[field].(string)
		return v
	}
	h.Name, h.Topic = str(spec.MRoomName, "name"), str(spec.MRoomTopic, "topic")
	h.CanonicalAlias, h.AvatarURL = str(spec.MRoomCanonicalAlias, "alias"), str(spec.MRoomAvatar, "url")
	h.WorldReadable = str(spec.MRoomHistoryVisibility, "history_visibility") == "world_readable"
	h.GuestCanJoin = str(spec.MRoomGuestAccess, "guest_access") == "can_join"
	h.JoinRule, h.RoomType = str(spec.MRoomJoinRules, "join_rule"), str(spec.MRoomCreate, "type")
	h.Encryption = str(spec.MRoomEncryption, "algorithm")
	if h.JoinRule == spec.Restricted || h.JoinRule == spec.KnockRestricted {
		h.AllowedRoomIDs = allowedRooms(snap)
	}
	version, err := s.rooms.Version(ctx, roomID)
	if err != nil {
		return h, nil, err
	}
	h.RoomVersion = string(version.Version())
	snap.Each(func(ev *rooms.Event) {
		if ev.Type() == spec.MRoomMember && ev.Membership() == spec.Join {
			h.NumJoined++
		}
	})
	if h.RoomType != "m.space" {
		return h, nil, nil
	}
	type child struct {
		id, order string
		ts        spec.Timestamp
		suggested bool
		stripped  json.RawMessage
	}
	var children []child
	snap.Each(func(ev *rooms.Event) {
		if ev.Type() != "m.space.child" || !strings.HasPrefix(*ev.StateKey(), "!") {
			return
		}
		var c struct {
			Via       []any `json:"via"`
			Order     any   `json:"order"`
			Suggested any   `json:"suggested"`
		}
		if json.Unmarshal(ev.PDU.Content(), &c) != nil || len(c.Via) == 0 {
			return // no via: the child was removed
		}
		order, _ := c.Order.(string)
		if !validOrder(order) {
			order = ""
		}
		suggested, _ := c.Suggested.(bool)
		b, _ := json.Marshal(map[string]any{"type": ev.Type(), "state_key": *ev.StateKey(), "content": json.RawMessage(ev.PDU.Content()),
			"sender": ev.Sender(), "origin_server_ts": ev.PDU.OriginServerTS()})
		children = append(children, child{id: *ev.StateKey(), order: order, ts: ev.PDU.OriginServerTS(), suggested: suggested, stripped: b})
	})
	// Ordering of children within a space: those with an order first, by
	// order; then by the child event's timestamp; then by room ID.
	sort.Slice(children, func(i, j int) bool {
		a, b := children[i], children[j]
		if (a.order != "") != (b.order != "") {
			return a.order != ""
		}
		if a.order != b.order {
			return a.order < b.order
		}
		if a.ts != b.ts {
			return a.ts < b.ts
		}
		return a.id < b.id
	})
	var ids []string
	for _, c := range children {
		h.ChildrenState = append(h.ChildrenState, c.stripped)
		if !suggestedOnly || c.suggested {
			ids = append(ids, c.id)
		}
	}
	return h, ids, nil
}

// validOrder: an order is at most 50 printable ASCII characters.
func validOrder(o string) bool {
	if o == "" || len(o) > 50 {
		return false
	}
	for i := 0; i < len(o); i++ {
		if o[i] < 0x20 || o[i] > 0x7e {
			return false
		}
	}
	return true
}

// allowedRooms lists the rooms a restricted join rule admits members of.
func allowedRooms(snap *rooms.Snapshot) []string {
	ev := snap.Get(spec.MRoomJoinRules, "")
	if ev == nil {
		return nil
	}
	var c struct {
		Allow []struct {
			Type   string `json:"type"`
			RoomID string `json:"room_id"`
		} `json:"allow"`
	}
	_ = json.Unmarshal(ev.PDU.Content(), &c)
	var out []string
	for _, a := range c.Allow {
		if a.Type == "m.room_membership" && a.RoomID != "" {
			out = append(out, a.RoomID)
		}
	}
	return out
}

// openRoom reports whether anyone may see the room's summary: it is public,
// knockable or world-readable.
func openRoom(snap *rooms.Snapshot) bool {
	if worldReadable(snap) {
		return true
	}
	switch joinRule(snap) {
	case spec.Public, spec.Knock, spec.KnockRestricted:
		return true
	}
	return false
}

func worldReadable(snap *rooms.Snapshot) bool {
	hv := snap.Get(spec.MRoomHistoryVisibility, "")
	if hv == nil {
		return false
	}
	var c struct {
		HV string `json:"history_visibility"`
	}
	return json.Unmarshal(hv.PDU.Content(), &c) == nil && c.HV == "world_readable"
}

func joinRule(snap *rooms.Snapshot) string {
	ev := snap.Get(spec.MRoomJoinRules, "")
	if ev == nil {
		return spec.Invite
	}
	var c struct {
		JoinRule string `json:"join_rule"`
	}
	_ = json.Unmarshal(ev.PDU.Content(), &c)
	return c.JoinRule
}

// canPreview reports whether the user may see the room in a space
// hierarchy: joined or invited, or the room is open to them (public,
// knockable, world-readable, or restricted to a room they are joined to).
// A banned user sees it only if it is world-readable.
func canPreview(snap *rooms.Snapshot, userID string, ms map[string]storage.Membership) bool {
	switch snap.Membership(userID) {
	case spec.Join, spec.Invite:
		return true
	case spec.Ban:
		return worldReadable(snap)
	}
	if openRoom(snap) {
		return true
	}
	if jr := joinRule(snap); jr == spec.Restricted || jr == spec.KnockRestricted {
		for _, id := range allowedRooms(snap) {
			if ms[id].Membership == spec.Join {
				return true
			}
		}
	}
	return false
}

func isUnknownRoom(err error) bool { return errors.Is(err, rooms.ErrUnknownRoom) }
