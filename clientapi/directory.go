package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/rooms"
)

// maxPublicRooms bounds one page of the room directory.
const maxPublicRooms = 500

// publicRoom is one room in the published room directory
// (public_rooms_chunk.yaml).
type publicRoom struct {
	RoomID         string `json:"room_id"`
	Name           string `json:"name,omitempty"`
	Topic          string `json:"topic,omitempty"`
	CanonicalAlias string `json:"canonical_alias,omitempty"`
	AvatarURL      string `json:"avatar_url,omitempty"`
	JoinRule       string `json:"join_rule,omitempty"`
	RoomType       string `json:"room_type,omitempty"`
	Joined         int    `json:"num_joined_members"`
	WorldReadable  bool   `json:"world_readable"`
	GuestCanJoin   bool   `json:"guest_can_join"`
}

type publicRoomsRequest struct {
	Limit  *int   `json:"limit,omitempty"`
	Since  string `json:"since,omitempty"`
	Filter struct {
		Term      string    `json:"generic_search_term,omitempty"`
		RoomTypes []*string `json:"room_types,omitempty"`
	} `json:"filter"`
	IncludeAllNetworks bool   `json:"include_all_networks,omitempty"`
	ThirdPartyInstance string `json:"third_party_instance_id,omitempty"`
}

// handlePublicRooms serves GET and POST /_matrix/client/v3/publicRooms:
// this server's published rooms (publicRoomsPage), or, with ?server=,
// another server's, asked over federation (if the allow-list lets it).
func (s *Server) handlePublicRooms(w http.ResponseWriter, r *http.Request) {
	var req publicRoomsRequest
	if r.Method == http.MethodPost {
		if err := readJSON(r, &req); err != nil {
			writeError(w, err)
			return
		}
	} else {
		var err error
		if req, err = publicRoomsQuery(r.URL.Query()); err != nil {
			writeError(w, err)
			return
		}
	}
	if srv := r.URL.Query().Get("server"); srv != "" && srv != s.cfg.ServerName {
		if _, _, ok := spec.ParseAndValidateServerName(spec.ServerName(srv)); !ok {
			writeError(w, errInvalidParam("invalid server name %q", srv))
			return
		}
		if s.remote == nil {
			writeError(w, errNotFound("the room directory of %s is not available: this server does not federate", srv))
			return
		}
		if DeviceFrom(r.Context()) == nil {
			// Asking another server takes a user: anyone could otherwise
			// make this server send requests (GET is open for its own
			// directory only).
			s.requireAuth(http.HandlerFunc(s.handlePublicRooms)).ServeHTTP(w, r)
			return
		}
		body, err := json.Marshal(req)
		if err != nil {
			writeError(w, err)
			return
		}
		resp, err := s.remote.PublicRooms(r.Context(), srv, body)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, 200, resp)
		return
	}
	resp, err := s.publicRoomsPage(r.Context(), req)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, resp)
}

// publicRoomsQuery is the request of GET /publicRooms's query parameters.
func publicRoomsQuery(q url.Values) (publicRoomsRequest, error) {
	req := publicRoomsRequest{Since: q.Get("since"), ThirdPartyInstance: q.Get("third_party_instance_id")}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil {
			return req, errInvalidParam("limit must be an integer")
		}
		req.Limit = &n
	}
	switch v := q.Get("include_all_networks"); v {
	case "", "false":
	case "true":
		req.IncludeAllNetworks = true
	default:
		return req, errInvalidParam("include_all_networks must be true or false")
	}
	return req, nil
}

// PublicRooms answers another server's /_matrix/federation/v1/publicRooms
// (body: the POST form's request) as the client API answers this
// server's own users.
func (s *Server) PublicRooms(ctx context.Context, body json.RawMessage) (json.RawMessage, error) {
	var req publicRoomsRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, errBadJSON("invalid request: %v", err)
	}
	resp, err := s.publicRoomsPage(ctx, req)
	if err != nil {
		return nil, err
	}
	return json.Marshal(resp)
}

// publicRoomsPage is one page of this server's published rooms, most
// members first (then by room ID, so pages are stable while nothing
// changes). Tokens are offsets.
func (s *Server) publicRoomsPage(ctx context.Context, req publicRoomsRequest) (map[string]any, error) {
	if req.ThirdPartyInstance != "" {
		return nil, errNotFound("unknown third-party network %q: this server has no bridges", req.ThirdPartyInstance)
	}
	limit := maxPublicRooms
	if req.Limit != nil {
		if *req.Limit < 0 {
			return nil, errInvalidParam("limit must not be negative")
		}
		if *req.Limit > 0 {
			limit = min(*req.Limit, maxPublicRooms)
		}
	}
	offset := 0
	if req.Since != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(req.Since, "o"))
		if err != nil || n < 0 || !strings.HasPrefix(req.Since, "o") {
			return nil, errInvalidParam("invalid since token %q", req.Since)
		}
		offset = n
	}
	all, err := s.publishedRooms(ctx)
	if err != nil {
		return nil, err
	}
	matched := all[:0]
	for _, pr := range all {
		if matchesRoomFilter(pr, req.Filter.Term, req.Filter.RoomTypes) {
			matched = append(matched, pr)
		}
	}
	resp := map[string]any{"total_room_count_estimate": len(matched)}
	page := []publicRoom{}
	if offset < len(matched) {
		page = matched[offset:min(offset+limit, len(matched))]
	}
	resp["chunk"] = page
	if offset+limit < len(matched) {
		resp["next_batch"] = "o" + strconv.Itoa(offset+limit)
	}
	if offset > 0 {
		resp["prev_batch"] = "o" + strconv.Itoa(max(0, offset-limit))
	}
	return resp, nil
}

// publishedRooms describes every published room from its current state,
// sorted for paging.
func (s *Server) publishedRooms(ctx context.Context) ([]publicRoom, error) {
	ids, err := s.store.PublishedRooms(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]publicRoom, 0, len(ids))
	for _, id := range ids {
		snap, err := s.rooms.CurrentState(ctx, id)
		if err != nil {
			if isNotFound(err) || errors.Is(err, rooms.ErrUnknownRoom) {
				continue
			}
			return nil, err
		}
		out = append(out, describeRoom(id, snap))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Joined != out[j].Joined {
			return out[i].Joined > out[j].Joined
		}
		return out[i].RoomID < out[j].RoomID
	})
	return out, nil
}

// stateFields are the content fields of the state events a directory
// entry is made of.
type stateFields struct {
	Name       string `json:"name"`
	Topic      string `json:"topic"`
	TopicBlock struct {
		Text []struct {
			MimeType string `json:"mimetype"`
			Body     string `json:"body"`
		} `json:"m.text"`
	} `json:"m.topic"`
	Alias       string `json:"alias"`
	URL         string `json:"url"`
	JoinRule    string `json:"join_rule"`
	Type        string `json:"type"`
	HistoryVis  string `json:"history_visibility"`
	GuestAccess string `json:"guest_access"`
}

// describeRoom is a room's directory entry from its state.
func describeRoom(roomID string, snap *rooms.Snapshot) publicRoom {
	pr := publicRoom{RoomID: roomID}
	var c stateFields
	read := func(typ string) bool {
		c = stateFields{}
		ev := snap.Get(typ, "")
		return ev != nil && json.Unmarshal(ev.PDU.Content(), &c) == nil
	}
	if read(spec.MRoomName) {
		pr.Name = c.Name
	}
	if read(spec.MRoomTopic) {
		pr.Topic = c.Topic
		if pr.Topic == "" {
			for _, t := range c.TopicBlock.Text {
				if t.MimeType == "" || t.MimeType == "text/plain" {
					pr.Topic = t.Body
					break
				}
			}
		}
	}
	if read(spec.MRoomCanonicalAlias) {
		pr.CanonicalAlias = c.Alias
	}
	if read(spec.MRoomAvatar) {
		pr.AvatarURL = c.URL
	}
	if read(spec.MRoomJoinRules) {
		pr.JoinRule = c.JoinRule
	}
	if read(spec.MRoomCreate) {
		pr.RoomType = c.Type
	}
	if read(spec.MRoomHistoryVisibility) {
		pr.WorldReadable = c.HistoryVis == "world_readable"
	}
	if read("m.room.guest_access") {
		pr.GuestCanJoin = c.GuestAccess == "can_join"
	}
	snap.Each(func(ev *rooms.Event) {
		if ev.Type() == spec.MRoomMember && ev.Membership() == spec.Join {
			pr.Joined++
		}
	})
	return pr
}

// matchesRoomFilter applies the directory filter: the term anywhere in
// the name, topic, alias or room ID (case-insensitive, width-folded), and
// the room type (nil in the list stands for rooms without one).
func matchesRoomFilter(pr publicRoom, term string, types []*string) bool {
	if types != nil {
		ok := false
		for _, t := range types {
			if (t == nil && pr.RoomType == "") || (t != nil && *t == pr.RoomType) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	term = foldSearch(strings.TrimSpace(term))
	if term == "" {
		return true
	}
	for _, f := range []string{pr.Name, pr.Topic, pr.CanonicalAlias, pr.RoomID} {
		if strings.Contains(foldSearch(f), term) {
			return true
		}
	}
	return false
}

// handleGetRoomVisibility serves GET
// /_matrix/client/v3/directory/list/room/{roomId}.
func (s *Server) handleGetRoomVisibility(w http.ResponseWriter, r *http.Request) {
	room, err := s.store.GetRoom(r.Context(), vars(r)["roomId"])
	if err != nil {
		if isNotFound(err) {
			err = errNotFound("room not found")
		}
		writeError(w, err)
		return
	}
	vis := "private"
	if room.Published {
		vis = "public"
	}
	writeJSON(w, 200, map[string]string{"visibility": vis})
}

// handlePutRoomVisibility serves PUT
// /_matrix/client/v3/directory/list/room/{roomId}: server admins, and
// joined members with the power to set the room's canonical alias (who
// decide how the room is found anyway), publish or unpublish it.
// Idempotent: setting the visibility it has changes nothing.
func (s *Server) handlePutRoomVisibility(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	roomID := vars(r)["roomId"]
	var req struct {
		Visibility string `json:"visibility"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	switch req.Visibility {
	case "":
		req.Visibility = "public"
	case "public", "private":
	default:
		writeError(w, errInvalidParam("visibility must be public or private"))
		return
	}
	snap, err := s.rooms.CurrentState(r.Context(), roomID)
	if err != nil {
		if isNotFound(err) || errors.Is(err, rooms.ErrUnknownRoom) {
			err = errNotFound("room not found")
		}
		writeError(w, err)
		return
	}
	version, err := s.rooms.Version(r.Context(), roomID)
	if err != nil {
		writeError(w, err)
		return
	}
	if !dev.IsAdmin && !mayPublish(snap, version, dev.UserID) {
		writeError(w, errForbidden("only room members with the power to set the room's main address (m.room.canonical_alias), or server admins, may change its visibility in the room directory"))
		return
	}
	if err := s.store.SetPublished(r.Context(), roomID, req.Visibility == "public"); err != nil {
		if isNotFound(err) {
			err = errNotFound("room not found")
		}
		writeError(w, err)
		return
	}
	writeJSON(w, 200, map[string]any{})
}

// mayPublish reports whether userID is joined to the room with at least
// the power level m.room.canonical_alias needs (a creator of a room whose
// version makes creators all-powerful always has it).
func mayPublish(snap *rooms.Snapshot, version gomatrixserverlib.IRoomVersion, userID string) bool {
	if snap.Membership(userID) != spec.Join {
		return false
	}
	if create := snap.Get(spec.MRoomCreate, ""); create != nil && version.PrivilegedCreators() {
		var c struct {
			AdditionalCreators []string `json:"additional_creators"`
		}
		_ = json.Unmarshal(create.PDU.Content(), &c)
		if create.Sender() == userID || slices.Contains(c.AdditionalCreators, userID) {
			return true
		}
	}
	var pl gomatrixserverlib.PowerLevelContent
	if ev := snap.Get(spec.MRoomPowerLevels, ""); ev != nil {
		p, err := ev.PDU.PowerLevels()
		if err != nil {
			return false
		}
		pl = *p
	} else {
		pl.Defaults()
		if create := snap.Get(spec.MRoomCreate, ""); create != nil && create.Sender() == userID {
			return true // no power levels yet: the creator holds 100
		}
	}
	return pl.UserLevel(spec.SenderID(userID)) >= pl.EventLevel(spec.MRoomCanonicalAlias, true)
}
