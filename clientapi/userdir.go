package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strings"
	"unicode"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"golang.org/x/text/unicode/norm"

	"github.com/machi-chat/machi/rooms"
	"github.com/machi-chat/machi/storage"
)

// User directory limits: the default and the most results of one search.
const (
	userSearchDefault = 10
	userSearchMax     = 100
)

type userResult struct {
	UserID      string `json:"user_id"`
	DisplayName string `json:"display_name,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
	rank        int
}

// handleUserSearch serves POST /_matrix/client/v3/user_directory/search.
// As the spec has it, a search finds the users who share a room with the
// searcher or are joined to a public room (join rule public, or history
// world_readable); with user_directory.search_all_users every active local
// account is findable too (a city's staff find each other). Deactivated
// accounts never. The term matches display names anywhere in them and user
// IDs, ignoring case, full/half width, hiragana/katakana and spaces.
func (s *Server) handleUserSearch(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	var req struct {
		Term  *string `json:"search_term"`
		Limit *int    `json:"limit"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.Term == nil {
		writeError(w, errMissingParam("search_term is required"))
		return
	}
	limit := userSearchDefault
	if req.Limit != nil {
		if *req.Limit < 0 {
			writeError(w, errInvalidParam("limit must not be negative"))
			return
		}
		if *req.Limit > 0 {
			limit = min(*req.Limit, userSearchMax)
		}
	}
	results, err := s.searchUsers(r.Context(), dev.UserID, foldSearch(*req.Term))
	if err != nil {
		writeError(w, err)
		return
	}
	limited := len(results) > limit
	if limited {
		results = results[:limit]
	}
	writeJSON(w, 200, map[string]any{"results": results, "limited": limited})
}

// searchUsers finds the users matching a folded term, best first.
func (s *Server) searchUsers(ctx context.Context, searcher, term string) ([]userResult, error) {
	users, err := s.store.ListUsers(ctx)
	if err != nil {
		return nil, err
	}
	out := []userResult{} // "results" is an array even when nothing matches
	seen := map[string]bool{}
	notices := s.notices.sender()
	vis, err := s.directoryScope(ctx, searcher)
	if err != nil {
		return nil, err
	}
	for _, u := range users {
		if u.Deactivated || u.UserID == notices {
			continue
		}
		rank, ok := matchUser(term, u.UserID, u.DisplayName)
		if !ok {
			continue
		}
		if visible, err := vis.findable(ctx, u.UserID); err != nil {
			return nil, err
		} else if !visible {
			continue
		}
		seen[u.UserID] = true
		out = append(out, userResult{UserID: u.UserID, DisplayName: u.DisplayName, AvatarURL: u.AvatarURL, rank: rank})
	}
	remote, err := s.remoteRoommates(ctx, searcher, vis, users)
	if err != nil {
		return nil, err
	}
	for _, u := range remote {
		if seen[u.UserID] {
			continue
		}
		seen[u.UserID] = true
		if rank, ok := matchUser(term, u.UserID, u.DisplayName); ok {
			u.rank = rank
			out = append(out, u)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.rank != b.rank {
			return a.rank < b.rank
		}
		if (a.DisplayName != "") != (b.DisplayName != "") {
			return a.DisplayName != ""
		}
		return a.UserID < b.UserID
	})
	return out, nil
}

// directoryScope decides which local users one searcher may find.
type directoryScope struct {
	s        *Server
	searcher string
	all      bool            // user_directory.search_all_users
	shared   map[string]bool // the rooms the searcher is joined to
	public   map[string]bool // rooms looked at: public or not
}

func (s *Server) directoryScope(ctx context.Context, searcher string) (*directoryScope, error) {
	d := &directoryScope{s: s, searcher: searcher, all: s.cfg.UserDir.SearchAllUsers, shared: map[string]bool{}, public: map[string]bool{}}
	if d.all {
		return d, nil
	}
	ms, err := s.rooms.UserRooms(ctx, searcher)
	if err != nil {
		return nil, err
	}
	for roomID, m := range ms {
		if m.Membership == spec.Join {
			d.shared[roomID] = true
		}
	}
	return d, nil
}

// findable reports whether the searcher may find local user userID: every
// user with search_all_users, otherwise one joined to a room the searcher
// is joined to or to a public room. The searcher shares no room with
// themselves: they find themselves only through a public room.
func (d *directoryScope) findable(ctx context.Context, userID string) (bool, error) {
	if d.all {
		return true, nil
	}
	ms, err := d.s.rooms.UserRooms(ctx, userID)
	if err != nil {
		return false, err
	}
	for roomID, m := range ms {
		if m.Membership != spec.Join {
			continue
		}
		if d.shared[roomID] && userID != d.searcher {
			return true, nil
		}
		if pub, err := d.isPublic(ctx, roomID); err != nil {
			return false, err
		} else if pub {
			return true, nil
		}
	}
	return false, nil
}

// isPublic is publicForDirectory, remembered for the search.
func (d *directoryScope) isPublic(ctx context.Context, roomID string) (bool, error) {
	pub, ok := d.public[roomID]
	if !ok {
		var err error
		if pub, err = d.s.publicForDirectory(ctx, roomID); err != nil {
			return false, err
		}
		d.public[roomID] = pub
	}
	return pub, nil
}

// publicForDirectory reports whether a room's members are findable by
// everyone: anyone may join it (join rule public) or read it
// (history_visibility world_readable).
func (s *Server) publicForDirectory(ctx context.Context, roomID string) (bool, error) {
	snap, err := s.rooms.CurrentState(ctx, roomID)
	if errors.Is(err, rooms.ErrUnknownRoom) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if ev := snap.Get(spec.MRoomJoinRules, ""); ev != nil {
		var c struct {
			JoinRule string `json:"join_rule"`
		}
		if json.Unmarshal(ev.PDU.Content(), &c) == nil && c.JoinRule == spec.Public {
			return true, nil
		}
	}
	if ev := snap.Get(spec.MRoomHistoryVisibility, ""); ev != nil {
		var c struct {
			HistoryVisibility string `json:"history_visibility"`
		}
		if json.Unmarshal(ev.PDU.Content(), &c) == nil && c.HistoryVisibility == "world_readable" {
			return true, nil
		}
	}
	return false, nil
}

// remoteRoommates lists the remote users joined to the rooms the searcher
// is joined to or to the public rooms this server knows (those a local
// user is joined to), with the profile their member event carries.
// search_all_users does not widen it: it is about this server's accounts.
func (s *Server) remoteRoommates(ctx context.Context, searcher string, vis *directoryScope, users []storage.User) ([]userResult, error) {
	memberships, err := s.rooms.UserRooms(ctx, searcher)
	if err != nil {
		return nil, err
	}
	roomIDs := map[string]bool{}
	for roomID, m := range memberships {
		if m.Membership == spec.Join {
			roomIDs[roomID] = true
		}
	}
	for _, u := range users {
		if u.Deactivated {
			continue
		}
		ms, err := s.rooms.UserRooms(ctx, u.UserID)
		if err != nil {
			return nil, err
		}
		for roomID, m := range ms {
			if m.Membership != spec.Join || roomIDs[roomID] {
				continue
			}
			if pub, err := vis.isPublic(ctx, roomID); err != nil {
				return nil, err
			} else if pub {
				roomIDs[roomID] = true
			}
		}
	}
	var out []userResult
	for roomID := range roomIDs {
		snap, err := s.rooms.CurrentState(ctx, roomID)
		if err != nil {
			return nil, err
		}
		snap.Each(func(ev *rooms.Event) {
			if ev.Type() != spec.MRoomMember || ev.Membership() != spec.Join || s.rooms.IsLocal(*ev.StateKey()) {
				return
			}
			var c struct {
				DisplayName string `json:"displayname"`
				AvatarURL   string `json:"avatar_url"`
			}
			_ = json.Unmarshal(ev.PDU.Content(), &c)
			out = append(out, userResult{UserID: *ev.StateKey(), DisplayName: c.DisplayName, AvatarURL: c.AvatarURL})
		})
	}
	return out, nil
}

// matchUser ranks how a user matches a folded term: 0 an exact display
// name or localpart, 1 a prefix of either, 2 anywhere in the display name
// or user ID. The empty term matches everyone.
func matchUser(term, userID, displayName string) (int, bool) {
	if term == "" {
		return 2, true
	}
	id := foldSearch(userID)
	local, _, _ := strings.Cut(strings.TrimPrefix(id, "@"), ":")
	name := foldSearch(displayName)
	switch {
	case name == term || local == term || id == term:
		return 0, true
	case (name != "" && strings.HasPrefix(name, term)) || strings.HasPrefix(local, term):
		return 1, true
	case strings.Contains(name, term) || strings.Contains(id, term):
		return 2, true
	}
	return 0, false
}

// foldSearch normalises text for matching: NFKC (full-width Latin and
// half-width katakana to their usual forms), lower case, katakana to
// hiragana, and no spaces ("山田　太郎" matches "山田太郎").
func foldSearch(s string) string {
	s = strings.ToLower(norm.NFKC.String(s))
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		switch {
		case unicode.IsSpace(r):
			continue
		case r >= 'ァ' && r <= 'ヶ':
			r -= 'ァ' - 'ぁ'
		}
		b.WriteRune(r)
	}
	return b.String()
}
