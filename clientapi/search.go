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
	"github.com/machi-chat/machi/search"
)

// searchRequest is the body of POST /search.
type searchRequest struct {
	SearchCategories *struct {
		RoomEvents *roomEventsCriteria `json:"room_events"`
	} `json:"search_categories"`
}

type roomEventsCriteria struct {
	SearchTerm   *string          `json:"search_term"`
	Keys         []string         `json:"keys"`
	Filter       *RoomEventFilter `json:"filter"`
	OrderBy      string           `json:"order_by"`
	EventContext *struct {
		BeforeLimit    *int `json:"before_limit"`
		AfterLimit     *int `json:"after_limit"`
		IncludeProfile bool `json:"include_profile"`
	} `json:"event_context"`
	IncludeState bool `json:"include_state"`
	Groupings    *struct {
		GroupBy []struct {
			Key string `json:"key"`
		} `json:"group_by"`
	} `json:"groupings"`
}

// Search bounds: results per page, context events each side, and how
// long a search waits for the index to take in the latest commits.
const (
	searchDefaultLimit = 10
	searchMaxLimit     = 100
	searchMaxContext   = 50
	searchSyncWait     = 3 * time.Second
	searchMaxPages     = 10
)

// searchToken is where the next page of a search starts: for rank order
// the hits to skip and the stream position the first page saw (so later
// messages do not shift the pages), for recent order the position to go
// below (and the first page's position, for the count). Written
// "r<skip>_<upTo>" or "p<below>_<upTo>".
type searchToken struct {
	recent bool
	skip   int
	upTo   int64
	below  int64
}

func (t searchToken) String() string {
	if t.recent {
		return "p" + strconv.FormatInt(t.below, 10) + "_" + strconv.FormatInt(t.upTo, 10)
	}
	return "r" + strconv.Itoa(t.skip) + "_" + strconv.FormatInt(t.upTo, 10)
}

func parseSearchToken(s string, recent bool) (searchToken, error) {
	bad := errInvalidParam("invalid next_batch %q: pass the next_batch of the previous page, with the same order_by", s)
	t := searchToken{recent: recent}
	prefix := "r"
	if recent {
		prefix = "p"
	}
	first, upTo, ok := strings.Cut(strings.TrimPrefix(s, prefix), "_")
	if !ok || !strings.HasPrefix(s, prefix) {
		return t, bad
	}
	var err error
	if t.upTo, err = strconv.ParseInt(upTo, 10, 64); err != nil || t.upTo <= 0 {
		return t, bad
	}
	if recent {
		if t.below, err = strconv.ParseInt(first, 10, 64); err != nil || t.below <= 0 || t.below > t.upTo+1 {
			return t, bad
		}
	} else if t.skip, err = strconv.Atoi(first); err != nil || t.skip < 0 {
		return t, bad
	}
	return t, nil
}

// handleSearch serves POST /_matrix/client/v3/search (room events only).
// It only reads, so repeating it is harmless.
func (s *Server) handleSearch(w http.ResponseWriter, r *http.Request) {
	var req searchRequest
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.SearchCategories == nil {
		writeError(w, errMissingParam("search_categories is required"))
		return
	}
	c := req.SearchCategories.RoomEvents
	if c == nil {
		writeJSON(w, 200, map[string]any{"search_categories": map[string]any{}})
		return
	}
	out, err := s.searchRoomEvents(r.Context(), DeviceFrom(r.Context()), c, r.URL.Query().Get("next_batch"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, map[string]any{"search_categories": map[string]any{"room_events": out}})
}

// searchPlan is a validated search.
type searchPlan struct {
	q            search.Query
	filter       *RoomEventFilter
	limit        int
	tok          searchToken
	before       int
	after        int
	withContext  bool
	withProfile  bool
	groupBy      []string
	includeState bool
}

func (s *Server) planSearch(c *roomEventsCriteria, next string) (*searchPlan, error) {
	if c.SearchTerm == nil {
		return nil, errMissingParam("search_term is required")
	}
	if strings.TrimSpace(*c.SearchTerm) == "" {
		return nil, errInvalidParam("search_term must not be empty")
	}
	p := &searchPlan{q: search.Query{Term: *c.SearchTerm}, limit: searchDefaultLimit, before: 5, after: 5, includeState: c.IncludeState}
	for _, k := range c.Keys {
		if _, ok := search.Keys[k]; !ok {
			return nil, errInvalidParam("unknown key %q: use content.body, content.name or content.topic", k)
		}
	}
	p.q.Keys = c.Keys
	switch c.OrderBy {
	case "", "rank":
	case "recent":
		p.q.Recent = true
	default:
		return nil, errInvalidParam("order_by must be rank or recent, not %q", c.OrderBy)
	}
	p.filter = c.Filter
	if p.filter == nil {
		p.filter = &RoomEventFilter{}
	}
	if l := p.filter.limit(); l < 0 {
		return nil, errInvalidParam("filter.limit must not be negative")
	} else if l > 0 {
		p.limit = min(l, searchMaxLimit)
	}
	if ec := c.EventContext; ec != nil {
		p.withContext, p.withProfile = true, ec.IncludeProfile
		for _, l := range []struct {
			v   *int
			dst *int
		}{{ec.BeforeLimit, &p.before}, {ec.AfterLimit, &p.after}} {
			if l.v != nil {
				if *l.v < 0 {
					return nil, errInvalidParam("event_context limits must not be negative")
				}
				*l.dst = min(*l.v, searchMaxContext)
			}
		}
	}
	if g := c.Groupings; g != nil {
		for _, k := range g.GroupBy {
			if k.Key != "room_id" && k.Key != "sender" {
				return nil, errInvalidParam("group_by key must be room_id or sender, not %q", k.Key)
			}
			p.groupBy = append(p.groupBy, k.Key)
		}
	}
	if next != "" {
		tok, err := parseSearchToken(next, p.q.Recent)
		if err != nil {
			return nil, err
		}
		p.tok = tok
	}
	f := p.filter
	if f.Senders != nil {
		p.q.Senders = *f.Senders
	}
	p.q.NotSenders = f.NotSenders
	if f.Types != nil && !hasWildcard(*f.Types) {
		p.q.Types = *f.Types
	}
	if !hasWildcard(f.NotTypes) {
		p.q.NotTypes = f.NotTypes
	}
	p.q.ContainsURL = f.ContainsURL
	return p, nil
}

func hasWildcard(types []string) bool {
	for _, t := range types {
		if strings.Contains(t, "*") {
			return true
		}
	}
	return false
}

// searchRooms maps the rooms a user may search to how far they may read
// each: everything while joined, up to their leave after; never invites,
// rooms they forgot or rooms the filter leaves out.
func (s *Server) searchRooms(ctx context.Context, userID string, f *RoomEventFilter) (map[string]int64, error) {
	ms, err := s.rooms.UserRooms(ctx, userID)
	if err != nil {
		return nil, err
	}
	out := make(map[string]int64, len(ms))
	for roomID, m := range ms {
		if m.Forgotten || !allowsRoom(f.Rooms, f.NotRooms, roomID) {
			continue
		}
		switch m.Membership {
		case spec.Join:
			out[roomID] = math.MaxInt64
		case spec.Leave, spec.Ban:
			out[roomID] = m.Pos
		}
	}
	return out, nil
}

type searchResult struct {
	Rank    float64         `json:"rank"`
	Result  json.RawMessage `json:"result"`
	Context *searchContext  `json:"context,omitempty"`
}

type searchContext struct {
	Start        string                    `json:"start"`
	End          string                    `json:"end"`
	EventsBefore []json.RawMessage         `json:"events_before"`
	EventsAfter  []json.RawMessage         `json:"events_after"`
	ProfileInfo  map[string]map[string]any `json:"profile_info,omitempty"`
}

// searchRoomEvents runs one page of a room event search.
func (s *Server) searchRoomEvents(ctx context.Context, dev *Device, c *roomEventsCriteria, next string) (map[string]any, error) {
	p, err := s.planSearch(c, next)
	if err != nil {
		return nil, err
	}
	if p.q.Rooms, err = s.searchRooms(ctx, dev.UserID, p.filter); err != nil {
		return nil, err
	}
	s.search.Sync(ctx, searchSyncWait)
	upTo := p.tok.upTo
	if upTo == 0 {
		upTo = s.rooms.Stream().Current()
	}
	p.q.UpTo = upTo
	skip, below := p.tok.skip, p.tok.below

	// Hits the user may not see (history visibility, wildcard type
	// filters) are dropped here, so read pages until the limit is met.
	type found struct {
		ev   *rooms.Event
		rank float64
	}
	var hits []found
	var total uint64
	vis := map[string]*visibility{}
	more := false
	for page := 0; page < searchMaxPages && len(hits) < p.limit; page++ {
		p.q.Size = p.limit
		if p.q.Recent {
			p.q.Below = below
		} else {
			p.q.From = skip
		}
		res, err := s.search.Search(ctx, p.q)
		if err != nil {
			return nil, err
		}
		if page == 0 {
			total = res.Total
			if p.q.Below > 0 {
				// A later page by recency: count from the top.
				cq := p.q
				cq.Below, cq.Size = 0, 0
				if total, err = s.search.Count(ctx, cq); err != nil {
					return nil, err
				}
			}
		}
		consumed := 0
		for _, h := range res.Hits {
			if len(hits) == p.limit {
				break
			}
			consumed++
			ev, err := s.rooms.Event(ctx, h.EventID)
			if err != nil {
				if isNotFound(err) {
					continue
				}
				return nil, err
			}
			below = ev.Pos
			v := vis[ev.RoomID()]
			if v == nil {
				v = s.visibility(ctx, dev.UserID, ev.RoomID())
				vis[ev.RoomID()] = v
			}
			if ev.Pos > p.q.Rooms[ev.RoomID()] || ev.RedactedBy != "" || !p.filter.allowsEvent(ev) || !v.allows(ev) {
				continue
			}
			hits = append(hits, found{ev, h.Score})
		}
		skip += consumed
		more = consumed < len(res.Hits) || len(res.Hits) == p.q.Size
		if !more {
			break
		}
	}

	now := nowTime()
	results := make([]searchResult, 0, len(hits))
	for _, h := range hits {
		sr := searchResult{Rank: h.rank, Result: h.ev.ClientJSON(now, dev.key())}
		if p.withContext {
			if sr.Context, err = s.searchContext(ctx, dev, h.ev, p, vis[h.ev.RoomID()]); err != nil {
				return nil, err
			}
		}
		results = append(results, sr)
	}
	out := map[string]any{"count": total, "highlights": search.Highlights(p.q.Term), "results": results}
	nextBatch := ""
	if more && (!p.q.Recent || below > 0) {
		nextBatch = searchToken{recent: p.q.Recent, skip: skip, upTo: upTo, below: below}.String()
		out["next_batch"] = nextBatch
	}
	if len(p.groupBy) > 0 {
		evs := make([]*rooms.Event, len(hits))
		for i, h := range hits {
			evs[i] = h.ev
		}
		out["groups"] = searchGroups(p.groupBy, evs, nextBatch)
	}
	if p.includeState {
		state := map[string][]json.RawMessage{}
		for _, h := range hits {
			roomID := h.ev.RoomID()
			if _, ok := state[roomID]; ok {
				continue
			}
			snap, err := s.stateAt(ctx, dev.UserID, roomID)
			if err != nil {
				return nil, err
			}
			list := []json.RawMessage{}
			snap.Each(func(e *rooms.Event) { list = append(list, e.ClientJSON(now, dev.key())) })
			state[roomID] = list
		}
		out["state"] = state
	}
	return out, nil
}

// searchContext is the events around a result, as /context would show
// them to the user, and optionally their senders' profiles at the time.
func (s *Server) searchContext(ctx context.Context, dev *Device, ev *rooms.Event, p *searchPlan, vis *visibility) (*searchContext, error) {
	roomID := ev.RoomID()
	upTo := p.q.Rooms[roomID]
	if cur := s.rooms.Stream().Current(); upTo > cur {
		upTo = cur
	}
	sc := &searchContext{Start: posToken(ev.Pos - 1), End: posToken(ev.Pos), EventsBefore: []json.RawMessage{}, EventsAfter: []json.RawMessage{}}
	now := nowTime()
	senders := []string{ev.Sender()}
	if p.before > 0 {
		before, err := s.rooms.Paginate(ctx, roomID, ev.Pos-1, 0, true, p.before)
		if err != nil {
			return nil, err
		}
		for _, e := range before {
			if vis.allows(e) {
				sc.EventsBefore = append(sc.EventsBefore, e.ClientJSON(now, dev.key()))
				senders = append(senders, e.Sender())
			}
		}
		if len(before) > 0 {
			sc.Start = posToken(before[len(before)-1].Pos - 1)
		}
	}
	if p.after > 0 && upTo > ev.Pos {
		after, err := s.rooms.Paginate(ctx, roomID, ev.Pos, upTo, false, p.after)
		if err != nil {
			return nil, err
		}
		for _, e := range after {
			if vis.allows(e) {
				sc.EventsAfter = append(sc.EventsAfter, e.ClientJSON(now, dev.key()))
				senders = append(senders, e.Sender())
			}
		}
		if len(after) > 0 {
			sc.End = posToken(after[len(after)-1].Pos)
		}
	}
	if p.withProfile {
		snap, err := s.rooms.StateAfter(ctx, ev)
		if err != nil {
			return nil, err
		}
		sc.ProfileInfo = map[string]map[string]any{}
		for _, u := range senders {
			if _, ok := sc.ProfileInfo[u]; ok {
				continue
			}
			prof := map[string]any{}
			if m := snap.Get(spec.MRoomMember, u); m != nil {
				var c struct {
					DisplayName *string `json:"displayname"`
					AvatarURL   *string `json:"avatar_url"`
				}
				_ = json.Unmarshal(m.PDU.Content(), &c)
				if c.DisplayName != nil {
					prof["displayname"] = *c.DisplayName
				}
				if c.AvatarURL != nil {
					prof["avatar_url"] = *c.AvatarURL
				}
			}
			sc.ProfileInfo[u] = prof
		}
	}
	return sc, nil
}

// searchGroups partitions a page's results by room or sender; a group's
// order is where its first result stands on the page.
func searchGroups(keys []string, evs []*rooms.Event, nextBatch string) map[string]map[string]map[string]any {
	out := map[string]map[string]map[string]any{}
	for _, key := range keys {
		groups := map[string]map[string]any{}
		for _, ev := range evs {
			v := ev.RoomID()
			if key == "sender" {
				v = ev.Sender()
			}
			g := groups[v]
			if g == nil {
				g = map[string]any{"order": len(groups) + 1, "results": []string{}}
				if nextBatch != "" {
					// The next page holds the rest of every group.
					g["next_batch"] = nextBatch
				}
				groups[v] = g
			}
			g["results"] = append(g["results"].([]string), ev.ID())
		}
		out[key] = groups
	}
	return out
}
