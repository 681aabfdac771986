package rooms

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/machi-chat/machi/storage"
)

// Relation types the server aggregates (client-server API, "Event
// relationships"); m.annotation is stored and listed but not bundled.
const (
	RelThread     = "m.thread"
	RelReplace    = "m.replace"
	RelReference  = "m.reference"
	RelAnnotation = "m.annotation"
)

// ErrDuplicateAnnotation is a second identical annotation from one sender.
var ErrDuplicateAnnotation = fmt.Errorf("duplicate annotation")

// parseRelation reads content."m.relates_to", once per event. Content
// without the key is not parsed at all, which keeps the send path of a
// plain message free of a second JSON pass.
func parseRelation(content []byte) *storage.Relation {
	if !bytes.Contains(content, []byte(`"m.relates_to"`)) {
		return nil
	}
	var c struct {
		RelatesTo struct {
			RelType string `json:"rel_type"`
			EventID string `json:"event_id"`
			Key     string `json:"key"`
		} `json:"m.relates_to"`
	}
	if json.Unmarshal(content, &c) != nil {
		return nil // a malformed m.relates_to is no relation (e.g. not an object)
	}
	r := c.RelatesTo
	if r.RelType == "" || r.EventID == "" || r.EventID[0] != '$' {
		return nil // a bare m.in_reply_to is a rich reply, not a relation
	}
	return &storage.Relation{Parent: r.EventID, RelType: r.RelType, Key: r.Key}
}

// Relation is the event's relation to a parent, or nil.
func (e *Event) Relation() *storage.Relation { return e.rel }

// relationRow is the storage row of ev's relation.
func relationRow(ev *Event) *storage.Relation {
	if ev.rel == nil {
		return nil
	}
	r := *ev.rel
	r.EventID, r.RoomID, r.Sender, r.Type = ev.ID(), ev.RoomID(), ev.Sender(), ev.Type()
	r.OriginTS, r.Pos = int64(ev.PDU.OriginServerTS()), ev.Pos
	return &r
}

// checkAnnotation enforces the spec's one annotation per sender, type and
// key on an event (M_DUPLICATE_ANNOTATION). It runs with r locked, so two
// identical reactions cannot both pass; events still being committed are
// in r.recent.
func (s *Service) checkAnnotation(ctx context.Context, r *room, sender, typ string, rel *storage.Relation) error {
	if rel == nil || rel.RelType != RelAnnotation {
		return nil
	}
	same := func(ev *Event) bool {
		o := ev.rel
		return o != nil && o.RelType == RelAnnotation && o.Parent == rel.Parent && o.Key == rel.Key &&
			ev.Sender() == sender && ev.Type() == typ && ev.RedactedBy == ""
	}
	r.rmu.RLock()
	for _, ev := range r.recent {
		if same(ev) {
			r.rmu.RUnlock()
			return ErrDuplicateAnnotation
		}
	}
	r.rmu.RUnlock()
	dup, err := s.store.HasAnnotation(ctx, r.id, rel.Parent, sender, typ, rel.Key)
	if err != nil {
		return err
	}
	if dup {
		return ErrDuplicateAnnotation
	}
	return nil
}

// Aggregation is an event's bundled aggregations (unsigned."m.relations").
type Aggregation struct {
	Thread     *ThreadAggregation
	Replace    *Event
	References []string
}

// ThreadAggregation is the m.thread aggregation of a thread root.
type ThreadAggregation struct {
	Latest       *Event
	Count        int
	Participated bool
}

// Aggregations computes the bundled aggregations of evs (all of one room)
// as userID sees them, counting children up to upTo. Events whose children
// are all in memory (every event after the room's recent floor) are
// aggregated without the database, which is what /sync gets; the others
// cost three queries for the whole batch.
func (s *Service) Aggregations(ctx context.Context, roomID, userID string, evs []*Event, upTo int64) (map[string]*Aggregation, error) {
	if len(evs) == 0 {
		return nil, nil
	}
	r, err := s.room(ctx, roomID)
	if err != nil {
		return nil, err
	}
	r.rmu.RLock()
	floor := r.recentFloor
	if !r.hasRelations(upTo) && evs[0].Pos > floor && evs[len(evs)-1].Pos > floor {
		// The common case of a /sync: no child anywhere in memory, and
		// every event recent enough that its children would be there.
		allRecent := true
		for _, ev := range evs {
			allRecent = allRecent && ev.Pos > floor
		}
		if allRecent {
			r.rmu.RUnlock()
			return nil, nil
		}
	}
	out := map[string]*Aggregation{}
	var old []*Event
	inMemory := map[string]*Event{}
	for _, ev := range evs {
		if ev.Pos > floor {
			inMemory[ev.ID()] = ev
		} else {
			old = append(old, ev)
		}
	}
	if len(inMemory) > 0 {
		for _, c := range r.recent {
			if c.Pos > upTo {
				break
			}
			if c.rel != nil {
				if p := inMemory[c.rel.Parent]; p != nil {
					addChild(out, p, c, userID)
				}
			}
		}
	}
	r.rmu.RUnlock()
	for _, ev := range inMemory {
		if a := out[ev.ID()]; a != nil && a.Thread != nil && ev.Sender() == userID {
			a.Thread.Participated = true
		}
	}
	if len(old) > 0 {
		if err := s.aggregateStored(ctx, r, userID, old, upTo, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// hasRelations reports whether any event in memory up to upTo relates to
// another. r.rmu must be held.
func (r *room) hasRelations(upTo int64) bool {
	for _, c := range r.recent {
		if c.Pos > upTo {
			return false
		}
		if c.rel != nil {
			return true
		}
	}
	return false
}

// addChild folds child c of parent p into p's aggregation.
func addChild(out map[string]*Aggregation, p, c *Event, userID string) {
	agg := func() *Aggregation {
		a := out[p.ID()]
		if a == nil {
			a = &Aggregation{}
			out[p.ID()] = a
		}
		return a
	}
	switch c.rel.RelType {
	case RelThread:
		a := agg()
		if a.Thread == nil {
			a.Thread = &ThreadAggregation{}
		}
		a.Thread.Count++
		a.Thread.Latest = c // r.recent is in position order
		if c.Sender() == userID {
			a.Thread.Participated = true
		}
	case RelReference:
		a := agg()
		a.References = append(a.References, c.ID())
	case RelReplace:
		if validReplacement(p, c) {
			a := agg()
			if a.Replace == nil || newerEdit(c, a.Replace) {
				a.Replace = c
			}
		}
	}
}

// validReplacement applies the spec's conditions on an m.replace that a
// server can check: same sender and type, neither a state event, the
// original neither redacted nor itself an edit.
func validReplacement(orig, edit *Event) bool {
	if orig.RedactedBy != "" || orig.IsState() || edit.IsState() || orig.Sender() != edit.Sender() || orig.Type() != edit.Type() {
		return false
	}
	return orig.rel == nil || orig.rel.RelType != RelReplace
}

// newerEdit orders edits as the spec does: origin_server_ts, then the
// lexicographically larger event ID.
func newerEdit(a, b *Event) bool {
	ta, tb := a.PDU.OriginServerTS(), b.PDU.OriginServerTS()
	if ta != tb {
		return ta > tb
	}
	return a.ID() > b.ID()
}

// maxReferences bounds the m.reference rows read for one batch (a poll
// with many responses).
const maxReferences = 2000

// aggregateStored aggregates evs from the relations table.
func (s *Service) aggregateStored(ctx context.Context, r *room, userID string, evs []*Event, upTo int64, out map[string]*Aggregation) error {
	ids := make([]string, len(evs))
	byID := make(map[string]*Event, len(evs))
	for i, ev := range evs {
		ids[i] = ev.ID()
		byID[ev.ID()] = ev
	}
	agg := func(id string) *Aggregation {
		a := out[id]
		if a == nil {
			a = &Aggregation{}
			out[id] = a
		}
		return a
	}
	threads, err := s.store.ThreadSummaries(ctx, r.id, ids, userID, upTo)
	if err != nil {
		return err
	}
	edits, err := s.store.RelationsTo(ctx, r.id, ids, RelReplace, upTo, maxReferences)
	if err != nil {
		return err
	}
	refs, err := s.store.RelationsTo(ctx, r.id, ids, RelReference, upTo, maxReferences)
	if err != nil {
		return err
	}
	for _, ref := range refs {
		a := agg(ref.Parent)
		a.References = append(a.References, ref.EventID)
	}
	// The newest valid edit per original, by the relation rows alone.
	best := map[string]storage.Relation{}
	for _, e := range edits {
		orig := byID[e.Parent]
		if orig == nil || orig.RedactedBy != "" || orig.IsState() || orig.Sender() != e.Sender || orig.Type() != e.Type ||
			(orig.rel != nil && orig.rel.RelType == RelReplace) {
			continue
		}
		if b, ok := best[e.Parent]; !ok || e.OriginTS > b.OriginTS || (e.OriginTS == b.OriginTS && e.EventID > b.EventID) {
			best[e.Parent] = e
		}
	}
	var load []string
	for _, t := range threads {
		load = append(load, t.Latest)
	}
	for _, e := range best {
		load = append(load, e.EventID)
	}
	loaded := map[string]*Event{}
	if len(load) > 0 {
		list, err := s.loadEvents(ctx, r.version, load)
		if err != nil {
			return err
		}
		for _, ev := range list {
			loaded[ev.ID()] = ev
		}
	}
	for _, t := range threads {
		root := byID[t.Root]
		a := agg(t.Root)
		a.Thread = &ThreadAggregation{Latest: loaded[t.Latest], Count: t.Count, Participated: t.Participated || (root != nil && root.Sender() == userID)}
		if a.Thread.Latest == nil {
			a.Thread = nil
		}
	}
	for parent, e := range best {
		if ev := loaded[e.EventID]; ev != nil && !ev.IsState() {
			agg(parent).Replace = ev
		}
	}
	for id, a := range out {
		if a.Thread == nil && a.Replace == nil && len(a.References) == 0 {
			delete(out, id)
		}
	}
	return nil
}

// appendJSON appends `,"m.relations":{…}` to b, or nothing when a has
// nothing to bundle.
func (a *Aggregation) appendJSON(b []byte, now time.Time, forDevice string) []byte {
	if a == nil || (a.Thread == nil && a.Replace == nil && len(a.References) == 0) {
		return b
	}
	b = append(b, `,"m.relations":{`...)
	comma := false
	if t := a.Thread; t != nil {
		b = append(b, `"m.thread":{"latest_event":`...)
		b = t.Latest.AppendClientJSON(b, now, forDevice)
		b = append(b, `,"count":`...)
		b = strconv.AppendInt(b, int64(t.Count), 10)
		b = append(b, `,"current_user_participated":`...)
		b = strconv.AppendBool(b, t.Participated)
		b = append(b, '}')
		comma = true
	}
	if a.Replace != nil {
		if comma {
			b = append(b, ',')
		}
		b = append(b, `"m.replace":`...)
		b = a.Replace.AppendClientJSON(b, now, forDevice)
		comma = true
	}
	if len(a.References) > 0 {
		if comma {
			b = append(b, ',')
		}
		b = append(b, `"m.reference":{"chunk":[`...)
		for i, id := range a.References {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"event_id":`...)
			b = strconv.AppendQuote(b, id)
			b = append(b, '}')
		}
		b = append(b, "]}"...)
	}
	return append(b, '}')
}

// AppendBundledJSON appends ev's client JSON with its bundled aggregations
// from aggs (which may be nil).
func (e *Event) AppendBundledJSON(b []byte, now time.Time, forDevice string, aggs map[string]*Aggregation) []byte {
	a := aggs[e.ID()]
	if a == nil {
		if b == nil {
			b = make([]byte, 0, len(e.prefix)+len(e.extra)+64)
		}
		return e.AppendClientJSON(b, now, forDevice)
	}
	b = e.appendClientJSONOpen(b, now, forDevice)
	b = a.appendJSON(b, now, forDevice)
	return append(b, "}}"...)
}

// RelatedEvents lists the children of parent (and, with depth > 1, their
// children, down to depth levels) that q's filters select. A page is read
// per level, so the work is bounded by depth and limit.
func (s *Service) RelatedEvents(ctx context.Context, q storage.RelationQuery, depth int) ([]*Event, error) {
	r, err := s.room(ctx, q.RoomID)
	if err != nil {
		return nil, err
	}
	if depth > 1 {
		// Gather the descendants up to depth-1 levels; each level's
		// children become parents of the next.
		all := append([]string(nil), q.Parents...)
		level := q.Parents
		for d := 1; d < depth && len(level) > 0; d++ {
			rows, err := s.store.RelatedEvents(ctx, storage.RelationQuery{RoomID: q.RoomID, Parents: level, From: 0, To: q.To, Limit: maxDescendants})
			if err != nil {
				return nil, err
			}
			level = level[:0:0]
			for _, row := range rows {
				level = append(level, row.EventID)
			}
			all = append(all, level...)
			if len(all) > maxDescendants {
				break
			}
		}
		q.Parents = all
	}
	rows, err := s.store.RelatedEvents(ctx, q)
	if err != nil {
		return nil, err
	}
	return s.fromRows(ctx, r.version, rows)
}

// maxDescendants bounds a recursive /relations walk.
const maxDescendants = 1000

// ThreadRoots returns the room's thread roots q selects, with the position
// of each thread's latest event (the pagination key).
func (s *Service) ThreadRoots(ctx context.Context, q storage.ThreadQuery) ([]*Event, []int64, error) {
	r, err := s.room(ctx, q.RoomID)
	if err != nil {
		return nil, nil, err
	}
	roots, err := s.store.ThreadRoots(ctx, q)
	if err != nil {
		return nil, nil, err
	}
	ids := make([]string, len(roots))
	for i, t := range roots {
		ids[i] = t.Root
	}
	list, err := s.loadEvents(ctx, r.version, ids)
	if err != nil {
		return nil, nil, err
	}
	byID := make(map[string]*Event, len(list))
	for _, ev := range list {
		byID[ev.ID()] = ev
	}
	var evs []*Event
	var latest []int64
	for _, t := range roots {
		if ev := byID[t.Root]; ev != nil && ev.RoomID() == q.RoomID {
			evs = append(evs, ev)
			latest = append(latest, t.LatestPos)
		}
	}
	return evs, latest, nil
}

// IsThreadRoot reports whether eventID, in the room, has thread replies.
func (s *Service) IsThreadRoot(ctx context.Context, roomID, eventID string) (bool, error) {
	return s.store.HasRelation(ctx, roomID, eventID, RelThread)
}

// WithChildren returns the events of evs (all of one room) that have a
// child up to upTo with a rel_type in relTypes and a sender in senders
// (nil matches any): the related_by_rel_types and related_by_senders of
// a RoomEventFilter. Recent events are checked in memory.
func (s *Service) WithChildren(ctx context.Context, roomID string, evs []*Event, relTypes, senders []string, upTo int64) ([]*Event, error) {
	if len(evs) == 0 {
		return nil, nil
	}
	r, err := s.room(ctx, roomID)
	if err != nil {
		return nil, err
	}
	match := func(c *Event) bool {
		return (relTypes == nil || slices.Contains(relTypes, c.rel.RelType)) && (senders == nil || slices.Contains(senders, c.Sender()))
	}
	keep := map[string]bool{}
	var old []string
	r.rmu.RLock()
	want := map[string]bool{}
	for _, ev := range evs {
		if ev.Pos > r.recentFloor {
			want[ev.ID()] = true
		} else {
			old = append(old, ev.ID())
		}
	}
	for _, c := range r.recent {
		if c.Pos > upTo {
			break
		}
		if c.rel != nil && want[c.rel.Parent] && match(c) {
			keep[c.rel.Parent] = true
		}
	}
	r.rmu.RUnlock()
	if len(old) > 0 {
		ids, err := s.store.RelatedParents(ctx, roomID, old, relTypes, senders, upTo)
		if err != nil {
			return nil, err
		}
		for _, id := range ids {
			keep[id] = true
		}
	}
	out := make([]*Event, 0, len(keep))
	for _, ev := range evs {
		if keep[ev.ID()] {
			out = append(out, ev)
		}
	}
	return out, nil
}
