package clientapi

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/pushrules"

	"github.com/machi-chat/machi/rooms"
	"github.com/machi-chat/machi/storage"
)

// Push rule evaluation, once per event and local member. It is the rooms
// service's Evaluator: Evaluate runs in the sender's goroutine while the
// writer commits the event (so the work overlaps the commit, and the send
// path makes no extra query: rulesets are cached, room facts come from the
// state snapshot); Publish, before the event becomes visible, counts its
// notifications in memory (unread.go), queues their rows and hands them
// to the pusher, which sends them without evaluating again.
//
// The rows are written by one goroutine, everything queued at once, every
// rowFlushEvery (or sooner when many are queued): a message in a room of
// 50 is 49 rows, and written with the event, or one transaction each,
// they made a send on SQLite several times slower (the members' index
// pages are rewritten per transaction; batched, they are shared). A crash
// loses at most the last interval's rows (the counts after the restart
// miss those notifications), never an event; a clean stop writes them
// all. GET /notifications waits for the rows queued before it.
//
// Conditions that depend on the event and room alone (most of the default
// rules) are checked once per event, not once per member. Rows are pruned
// every few hours: read ones after notificationReadKeep, any after
// notificationKeep.

const (
	notificationReadKeep = 30 * 24 * time.Hour
	notificationKeep     = 180 * 24 * time.Hour
	pruneEvery           = 6 * time.Hour
	maxCachedRulesets    = 50000
	maxCachedParses      = 100000
	rowFlushEvery        = 100 * time.Millisecond
	rowFlushRows         = 20000
	// rowTxRows bounds one transaction, so that on SQLite's one writer
	// the events' commits get their turn between the rows'.
	rowTxRows = 1000
)

// ruleInfo is what a rule's actions mean, worked out once per ruleset.
type ruleInfo struct {
	actions   []byte // JSON
	notify    bool
	highlight bool
	sound     string
}

// userRules is one user's parsed ruleset.
type userRules struct {
	rs   *pushrules.PushRuleset
	info map[*pushrules.PushRule]*ruleInfo
	// literal is, per content rule without glob characters, its pattern
	// lower-cased: a body without it cannot match, so the rule's regexp
	// is never compiled for it.
	literal map[*pushrules.PushRule]string
	// override and underride are the rules of those kinds with each
	// condition's memo ID.
	override, underride []compiledRule
}

// compiledRule is an override or underride rule with, per condition, an ID
// shared by every equal condition of every user when the condition depends
// only on the event and its room (not on the member): one event checks
// it once for all the members who have it (most of the default rules).
type compiledRule struct {
	rule  *pushrules.PushRule
	conds []compiledCond
}

type compiledCond struct {
	c  *pushrules.PushCondition
	id int32 // 0: depends on the member, never memoized
}

// condIDs interns memoizable conditions, across users.
type condIDs struct {
	mu sync.Mutex
	m  map[string]int32
}

func (ids *condIDs) id(c *pushrules.PushCondition) int32 {
	switch c.Kind {
	case pushrules.KindEventMatch, pushrules.KindEventPropertyIs, pushrules.KindEventPropertyContains,
		pushrules.KindRoomMemberCount, pushrules.KindSenderNotificationPermission:
	default:
		return 0
	}
	v, _ := json.Marshal(c.Value)
	key := string(c.Kind) + "\x00" + c.Key + "\x00" + c.Pattern + "\x00" + c.MemberCountCondition + "\x00" + string(v)
	ids.mu.Lock()
	defer ids.mu.Unlock()
	if ids.m == nil {
		ids.m = map[string]int32{}
	}
	id, ok := ids.m[key]
	if !ok {
		id = int32(len(ids.m) + 1)
		ids.m[key] = id
	}
	return id
}

func (ids *condIDs) compile(list pushrules.PushRuleArray) []compiledRule {
	out := make([]compiledRule, 0, len(list))
	for _, r := range list {
		cr := compiledRule{rule: r, conds: make([]compiledCond, 0, len(r.Conditions))}
		for _, c := range r.Conditions {
			cr.conds = append(cr.conds, compiledCond{c: c, id: ids.id(c)})
		}
		out = append(out, cr)
	}
	return out
}

// noted is one user to notify of an event. An invitee (not in the room)
// is pushed the invite, but it is not counted in the room nor listed by
// /notifications: the counts are of the rooms one is in.
type noted struct {
	user    string
	info    *ruleInfo
	invitee bool
}

// evaluation is an event's Evaluate result.
type evaluation struct {
	thread string
	ts     int64
	users  []noted
}

type evaluator struct {
	s *Server

	ids   condIDs
	mu    sync.RWMutex
	rules map[string]*userRules
	gen   map[string]int // bumped by forget, so a read racing a change is not cached

	cacheMu sync.Mutex
	cache   map[*rooms.Event]any

	rowMu   sync.Mutex
	rows    []storage.Notification
	queued  int64         // batches of rows queued so far
	written int64         // and written (or given up on)
	wrote   chan struct{} // closed, and replaced, when written grows
	closed  bool
	kick    chan struct{}

	stop    chan struct{}
	stopped chan struct{}
}

func newEvaluator(s *Server) *evaluator {
	e := &evaluator{s: s, rules: map[string]*userRules{}, gen: map[string]int{}, cache: map[*rooms.Event]any{},
		wrote: make(chan struct{}), kick: make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{})}
	go e.background()
	return e
}

// forget drops the user's cached ruleset: their push rules changed.
func (e *evaluator) forget(userID string) {
	e.mu.Lock()
	delete(e.rules, userID)
	e.gen[userID]++
	e.mu.Unlock()
}

// ruleset returns the user's parsed ruleset, reading it on first need.
func (e *evaluator) ruleset(ctx context.Context, userID string) (*userRules, error) {
	e.mu.RLock()
	ur, ok := e.rules[userID]
	gen := e.gen[userID]
	e.mu.RUnlock()
	if ok {
		return ur, nil
	}
	rules, err := e.s.pushRules(ctx, userID)
	if err != nil {
		return nil, err
	}
	if ur, err = compileRules(rules, &e.ids); err != nil {
		return nil, err
	}
	e.mu.Lock()
	if len(e.rules) >= maxCachedRulesets {
		clear(e.rules)
	}
	if e.gen[userID] == gen {
		e.rules[userID] = ur
	}
	e.mu.Unlock()
	return ur, nil
}

// compileRules parses a ruleset for mautrix's engine and works out what
// each rule's actions mean.
func compileRules(rules *pushRuleset, ids *condIDs) (*userRules, error) {
	raw, err := json.Marshal(rules)
	if err != nil {
		return nil, err
	}
	ur := &userRules{rs: &pushrules.PushRuleset{}, info: map[*pushrules.PushRule]*ruleInfo{}, literal: map[*pushrules.PushRule]string{}}
	if err := json.Unmarshal(raw, ur.rs); err != nil {
		return nil, err
	}
	ur.override, ur.underride = ids.compile(ur.rs.Override), ids.compile(ur.rs.Underride)
	add := func(r *pushrules.PushRule) {
		should := r.Actions.Should()
		actions, _ := json.Marshal(r.Actions)
		if r.Actions == nil {
			actions = []byte("[]")
		}
		ur.info[r] = &ruleInfo{actions: actions, notify: should.Notify, highlight: should.Notify && should.Highlight}
		if should.PlaySound {
			ur.info[r].sound = should.SoundName
		}
	}
	for _, list := range []pushrules.PushRuleArray{ur.rs.Override, ur.rs.Content, ur.rs.Underride} {
		for _, r := range list {
			add(r)
		}
	}
	for _, m := range []pushrules.PushRuleMap{ur.rs.Room, ur.rs.Sender} {
		for _, r := range m.Map {
			add(r)
		}
	}
	for _, r := range ur.rs.Content {
		if !strings.ContainsAny(r.Pattern, "*?[") {
			ur.literal[r] = strings.ToLower(r.Pattern)
		}
	}
	return ur, nil
}

// match is mautrix's GetMatchingRule, in the spec's order, with each
// condition's own Match, but conditions of the event alone looked up in
// memo first, and content rules skipped cheaply when their literal
// pattern is not in the body.
func (ur *userRules) match(room pushrules.Room, evt *event.Event, bodyLower string, memo map[int32]bool) *pushrules.PushRule {
	rs := ur.rs
	for i := range ur.override {
		if r := &ur.override[i]; r.match(room, evt, memo) {
			return r.rule
		}
	}
	for _, r := range rs.Content {
		if lit, ok := ur.literal[r]; ok && !strings.Contains(bodyLower, lit) {
			continue
		}
		if r.Match(room, evt) {
			return r
		}
	}
	if r := rs.Room.GetMatchingRule(room, evt); r != nil {
		return r
	}
	if r := rs.Sender.GetMatchingRule(room, evt); r != nil {
		return r
	}
	for i := range ur.underride {
		if r := &ur.underride[i]; r.match(room, evt, memo) {
			return r.rule
		}
	}
	return nil
}

// legacyMentionRules give way to m.mentions (spec: "Mentions").
var legacyMentionRules = map[string]bool{".m.rule.contains_display_name": true, ".m.rule.contains_user_name": true, ".m.rule.roomnotif": true}

func (cr *compiledRule) match(room pushrules.Room, evt *event.Event, memo map[int32]bool) bool {
	r := cr.rule
	if !r.Enabled {
		return false
	}
	if legacyMentionRules[r.RuleID] {
		if _, ok := evt.Content.Raw["m.mentions"]; ok {
			return false
		}
	}
	for _, c := range cr.conds {
		if c.id == 0 {
			if !c.c.Match(room, evt) {
				return false
			}
			continue
		}
		v, seen := memo[c.id]
		if !seen {
			v = c.c.Match(room, evt)
			memo[c.id] = v
		}
		if !v {
			return false
		}
	}
	return true
}

// pushRoom is the room as mautrix's rule engine asks about it, from the
// state snapshot after the event.
type pushRoom struct {
	members     int
	displayName string
	levels      *event.PowerLevelsEventContent
}

func (r *pushRoom) GetOwnDisplayname() string                      { return r.displayName }
func (r *pushRoom) GetMemberCount() int                            { return r.members }
func (r *pushRoom) GetPowerLevels() *event.PowerLevelsEventContent { return r.levels }

// Evaluate implements rooms.Evaluator.
func (e *evaluator) Evaluate(ev *rooms.Event, snap *rooms.Snapshot, joined []string) any {
	users, invitee := joined, ""
	if ev.Type() == "m.room.member" && ev.Membership() == "invite" && e.s.rooms.IsLocal(*ev.StateKey()) {
		invitee = *ev.StateKey()
		users = append(users[:len(users):len(users)], invitee)
	}
	if len(users) == 0 {
		return nil
	}
	mev := &event.Event{Type: event.Type{Type: ev.Type()}, Sender: id.UserID(ev.Sender()), RoomID: id.RoomID(ev.RoomID()),
		ID: id.EventID(ev.ID()), StateKey: ev.StateKey(), Timestamp: int64(ev.PDU.OriginServerTS())}
	mev.Content.VeryRaw = json.RawMessage(ev.PDU.Content())
	if err := json.Unmarshal(ev.PDU.Content(), &mev.Content.Raw); err != nil || mev.Content.Raw == nil {
		mev.Content.Raw = map[string]any{}
	}
	body, _ := mev.Content.Raw["body"].(string)
	bodyLower := strings.ToLower(body)
	out := &evaluation{thread: threadOf(mev.Content.Raw), ts: time.Now().UnixMilli()}

	room := &pushRoom{}
	if snap != nil {
		room.members = snap.Joined()
		room.levels = e.powerLevels(snap)
	}
	memo := make(map[int32]bool, 32)
	ctx := context.Background()
	for _, u := range users {
		if u == ev.Sender() {
			continue // one's own events never notify
		}
		ur, err := e.ruleset(ctx, u)
		if err != nil {
			e.s.log.Warn("push rules unavailable: event not evaluated", "user", u, "event", ev.ID(), "err", err)
			continue
		}
		room.displayName = ""
		if snap != nil {
			if m := snap.Get("m.room.member", u); m != nil {
				room.displayName = e.displayName(m)
			}
		}
		r := ur.match(room, mev, bodyLower, memo)
		if r == nil {
			continue
		}
		if info := ur.info[r]; info != nil && info.notify {
			out.users = append(out.users, noted{user: u, info: info, invitee: u == invitee})
		}
	}
	if len(out.users) == 0 {
		return nil
	}
	return out
}

// parsed caches what Evaluate reads from state events, by event: state
// changes rarely, messages often.
func (e *evaluator) parsed(ev *rooms.Event, parse func() any) any {
	e.cacheMu.Lock()
	v, ok := e.cache[ev]
	e.cacheMu.Unlock()
	if ok {
		return v
	}
	v = parse()
	e.cacheMu.Lock()
	if len(e.cache) >= maxCachedParses {
		clear(e.cache)
	}
	e.cache[ev] = v
	e.cacheMu.Unlock()
	return v
}

// displayName is a member event's displayname.
func (e *evaluator) displayName(m *rooms.Event) string {
	return e.parsed(m, func() any {
		var c struct {
			DisplayName string `json:"displayname"`
		}
		_ = json.Unmarshal(m.PDU.Content(), &c)
		return c.DisplayName
	}).(string)
}

type levelsKey struct{ pl, create *rooms.Event }

// powerLevels is the room's power levels as mautrix reads them, or nil.
func (e *evaluator) powerLevels(snap *rooms.Snapshot) *event.PowerLevelsEventContent {
	pl := snap.Get("m.room.power_levels", "")
	if pl == nil {
		return nil
	}
	v := e.parsed(pl, func() any {
		var c event.PowerLevelsEventContent
		if json.Unmarshal(pl.PDU.Content(), &c) != nil {
			return (*event.PowerLevelsEventContent)(nil)
		}
		if create := snap.Get("m.room.create", ""); create != nil {
			// Room v12's creators outrank every power level.
			var cev event.Event
			if json.Unmarshal(create.ClientJSON(time.Time{}, ""), &cev) == nil && cev.Content.ParseRaw(cev.Type) == nil {
				c.CreateEvent = &cev
			}
		}
		return &c
	})
	return v.(*event.PowerLevelsEventContent)
}

// threadOf is the thread an event is in: its m.thread relation's root, or
// the main timeline.
func threadOf(content map[string]any) string {
	rel, _ := content["m.relates_to"].(map[string]any)
	if rel != nil && rel["rel_type"] == "m.thread" {
		if root, _ := rel["event_id"].(string); root != "" {
			return root
		}
	}
	return mainThread
}

// Publish implements rooms.Evaluator.
func (e *evaluator) Publish(ev *rooms.Event, _ []string, result any) {
	out, _ := result.(*evaluation)
	if out == nil {
		return
	}
	rows := make([]storage.Notification, 0, len(out.users))
	for _, n := range out.users {
		if n.invitee {
			continue
		}
		e.s.unread.add(n.user, ev.RoomID(), unreadNote{pos: ev.Pos, thread: out.thread, highlight: n.info.highlight})
		rows = append(rows, storage.Notification{UserID: n.user, RoomID: ev.RoomID(), EventID: ev.ID(), Pos: ev.Pos, ThreadID: out.thread,
			Notify: true, Highlight: n.info.highlight, Actions: n.info.actions, TS: out.ts})
	}
	e.rowMu.Lock()
	if e.closed {
		e.rowMu.Unlock()
		e.put(rows) // stopping: the rooms writer drains after us
	} else {
		e.rows = append(e.rows, rows...)
		e.queued++
		many := len(e.rows) >= rowFlushRows
		e.rowMu.Unlock()
		if many {
			select {
			case e.kick <- struct{}{}:
			default:
			}
		}
	}
	e.s.push.committed(ev, out)
}

func (e *evaluator) put(rows []storage.Notification) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for attempt := 0; ; attempt++ {
		err := e.s.store.PutNotifications(ctx, rows)
		if err == nil {
			return
		}
		if attempt == 2 {
			e.s.log.Error("notifications not stored", "rows", len(rows), "err", err)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// writeRows writes everything queued.
func (e *evaluator) writeRows() {
	e.rowMu.Lock()
	rows, upTo := e.rows, e.queued
	e.rows = nil
	e.rowMu.Unlock()
	for len(rows) > 0 {
		n := min(len(rows), rowTxRows)
		e.put(rows[:n])
		rows = rows[n:]
	}
	e.rowMu.Lock()
	if upTo > e.written {
		e.written = upTo
		close(e.wrote)
		e.wrote = make(chan struct{})
	}
	e.rowMu.Unlock()
}

// flush waits until the rows queued so far are written, so that a read of
// the table sees every notification published before it.
func (e *evaluator) flush(ctx context.Context) error {
	e.rowMu.Lock()
	target := e.queued
	if e.written < target {
		select {
		case e.kick <- struct{}{}:
		default:
		}
	}
	for e.written < target && !e.closed {
		ch := e.wrote
		e.rowMu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		e.rowMu.Lock()
	}
	e.rowMu.Unlock()
	return nil
}

// background writes rows every rowFlushEvery (or when kicked) and prunes
// old ones every pruneEvery.
func (e *evaluator) background() {
	defer close(e.stopped)
	flush := time.NewTicker(rowFlushEvery)
	defer flush.Stop()
	prune := time.NewTimer(time.Minute)
	defer prune.Stop()
	for {
		select {
		case <-flush.C:
			e.writeRows()
		case <-e.kick:
			e.writeRows()
		case <-prune.C:
			e.prune()
			prune.Reset(pruneEvery)
		case <-e.stop:
			e.rowMu.Lock()
			e.closed = true
			e.rowMu.Unlock()
			e.writeRows()
			return
		}
	}
}

func (e *evaluator) prune() {
	now := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	n, err := e.s.store.PruneNotifications(ctx, now.Add(-notificationReadKeep).UnixMilli(), now.Add(-notificationKeep).UnixMilli())
	if err != nil {
		e.s.log.Warn("prune notifications", "err", err)
	} else if n > 0 {
		e.s.log.Info("pruned notifications", "rows", n)
	}
}

// close writes what is queued; rows published later are written at once.
func (e *evaluator) close() {
	close(e.stop)
	<-e.stopped
}
