// Package rooms is machi's event graph and its one write path. Every room
// event — from a client, from an admin, later from federation — goes through
// Service.Submit (or CreateRoom, which uses the same steps):
//
//	lock room → build PDU (prev_events, auth_events, depth, hashes, signature)
//	→ Matrix auth rules → policy → allocate stream position → update the
//	in-memory room → queue for the group-commit writer → unlock → wait for
//	commit → (writer) complete stream position, wake /sync of members
//
// The room lock is held only while building, not while committing: the next
// event in a room can be built on one still being committed. If a commit
// fails, the room is marked broken, every event built on the failed one is
// failed too, and the room is reloaded from the database on next use.
//
// A client's send (Request.WakeSenderLater) is held back from its sender's
// own /sync until the reply is written (holds.go).
package rooms

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/policy"
	"github.com/machi-chat/machi/storage"
)

// Errors Submit returns besides *Forbidden and *policy.Denial.
var (
	ErrUnknownRoom = errors.New("unknown room")
	ErrBadEvent    = errors.New("bad event")
	// ErrTooLarge is an event past the spec's 65536 bytes.
	ErrTooLarge = errors.New("event too large")
	// ErrRedactOtherRoom is a redaction of an event this server has in
	// another room.
	ErrRedactOtherRoom = errors.New("the event to redact is in another room")
	errRoomReset       = errors.New("room reset after a failed commit")
)

// Forbidden is an event the Matrix auth rules (or the server's own rules
// for local senders) do not allow.
type Forbidden struct{ Reason string }

func (f *Forbidden) Error() string { return f.Reason }

// Policy is the city's policy as the write path consults it.
type Policy interface {
	CheckEvent(ctx context.Context, in policy.EventInput) *policy.Denial
}

// Config is what the service needs from the server's configuration.
type Config struct {
	ServerName     spec.ServerName
	KeyID          gomatrixserverlib.KeyID
	Key            ed25519.PrivateKey
	DefaultVersion string
	Log            *slog.Logger
	// MaxRooms bounds the rooms kept in memory.
	MaxRooms int
}

// Service owns the rooms.
type Service struct {
	cfg    Config
	store  storage.Store
	policy Policy
	// committed are told of every committed event.
	committed []func(*Event, []string)
	eval      Evaluator
	// outboxed are told which servers were queued events in a batch.
	outboxed  []func(destinations []string)
	outboxSeq atomic.Int64
	// outlierSeq counts down from -1: positions of outliers.
	outlierSeq atomic.Int64
	// batched are told, after each batch's committed calls, how far the
	// stream is complete (the search index's checkpoint).
	batched  []func(upTo int64)
	stream   *Stream
	writer   *writer
	notifier *Notifier
	members  *memberIndex
	snaps    *snapCache
	groupSeq atomic.Int64

	mu    sync.Mutex
	rooms map[string]*room

	txmu sync.Mutex
	txns map[string]*txnEntry

	upgradeMu sync.Mutex // one room upgrade at a time

	holds replyHolds
}

type txnEntry struct {
	done chan struct{}
	ev   *Event
	err  error
}

// New starts the service: it reads the highest stream position and state
// group, and starts the writer.
func New(ctx context.Context, cfg Config, store storage.Store, pol Policy) (*Service, error) {
	if cfg.MaxRooms == 0 {
		cfg.MaxRooms = 4096
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	pos, err := store.MaxStreamPos(ctx)
	if err != nil {
		return nil, fmt.Errorf("read stream position: %w", err)
	}
	group, err := store.MaxStateGroup(ctx)
	if err != nil {
		return nil, fmt.Errorf("read state group: %w", err)
	}
	s := &Service{
		cfg:      cfg,
		store:    store,
		policy:   pol,
		stream:   NewStream(pos),
		notifier: NewNotifier(),
		members:  newMemberIndex(store),
		snaps:    newSnapCache(1024),
		rooms:    map[string]*room{},
		txns:     map[string]*txnEntry{},
	}
	s.groupSeq.Store(group)
	outbox, err := store.MaxOutboundID(ctx)
	if err != nil {
		return nil, fmt.Errorf("read federation outbox: %w", err)
	}
	s.outboxSeq.Store(outbox)
	minPos, err := store.MinEventPos(ctx)
	if err != nil {
		return nil, fmt.Errorf("read outliers: %w", err)
	}
	s.outlierSeq.Store(minPos)
	s.writer = newWriter(store, cfg.Log, s.afterCommit)
	return s, nil
}

// Close commits what is queued and stops the writer.
func (s *Service) Close() { s.writer.close() }

// Stream is the server's stream position tracker.
func (s *Service) Stream() *Stream { return s.stream }

// Notifier wakes /sync long-polls.
func (s *Service) Notifier() *Notifier { return s.notifier }

// ServerName is this server's name.
func (s *Service) ServerName() spec.ServerName { return s.cfg.ServerName }

// IsLocal reports whether a user ID belongs to this server.
func (s *Service) IsLocal(userID string) bool {
	u, err := spec.NewUserID(userID, true)
	return err == nil && u.Domain() == s.cfg.ServerName
}

// Request is an event to send.
type Request struct {
	RoomID   string
	Sender   string
	Type     string
	StateKey *string
	Content  json.RawMessage
	// Redacts is the target of an m.room.redaction.
	Redacts string
	// TxnDevice and TxnID make a client send idempotent: the same device
	// sending the same txn ID gets the first event back.
	TxnDevice string
	TxnID     string
	// Actor says who sends it, from where, for policy.
	Actor policy.Actor
	// WakeSenderLater holds the event back from the sender's /sync until
	// the caller has replied and calls Replied (see replyHolds).
	WakeSenderLater bool
}

// Submit sends an event into a room through the one write path. It returns
// once the event is durable.
func (s *Service) Submit(ctx context.Context, req *Request) (*Event, error) {
	if req.TxnID != "" {
		key := req.Sender + "|" + req.TxnDevice + "|" + req.TxnID
		s.txmu.Lock()
		if e, ok := s.txns[key]; ok {
			s.txmu.Unlock()
			select {
			case <-e.done:
				return e.ev, e.err
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		e := &txnEntry{done: make(chan struct{})}
		s.txns[key] = e
		s.txmu.Unlock()
		defer func() {
			close(e.done)
			s.txmu.Lock()
			delete(s.txns, key)
			s.txmu.Unlock()
		}()
		if id, err := s.store.EventByTxn(ctx, req.Sender, req.TxnDevice, req.TxnID); err == nil {
			e.ev, e.err = s.Event(ctx, id)
			return e.ev, e.err
		} else if !errors.Is(err, storage.ErrNotFound) {
			e.err = err
			return nil, err
		}
		e.ev, e.err = s.submit(ctx, req)
		return e.ev, e.err
	}
	return s.submit(ctx, req)
}

func (s *Service) submit(ctx context.Context, req *Request) (*Event, error) {
	for attempt := 0; ; attempt++ {
		r, err := s.room(ctx, req.RoomID)
		if err != nil {
			return nil, err
		}
		r.mu.Lock()
		p, err := s.prepare(ctx, r, req)
		if err == nil {
			if req.WakeSenderLater {
				p.lateWake = req.Sender
				s.holds.add(req.Sender, p.evs[0].Pos) // before the commit can complete it
			}
			if s.eval != nil {
				p.evaluated = make(chan struct{})
			}
			s.writer.enqueue(p)
		}
		r.mu.Unlock()
		var same unchanged
		if errors.As(err, &same) {
			return same.ev, nil
		}
		if err != nil {
			return nil, err
		}
		if p.evaluated != nil {
			s.evaluate(p) // while the writer commits
		}
		<-p.done
		if p.err != nil && req.WakeSenderLater {
			s.holds.remove(req.Sender, p.evs[0].Pos)
		}
		if errors.Is(p.err, errRoomReset) && attempt == 0 {
			continue
		}
		if p.err != nil {
			return nil, fmt.Errorf("commit event: %w", p.err)
		}
		return p.evs[0], nil
	}
}

// unchanged is prepare's answer for a state event identical to the current
// one (same sender, same content): Submit returns the current event.
type unchanged struct{ ev *Event }

func (unchanged) Error() string { return "state unchanged" }

// prepare builds, authorises and checks one event with r locked, applies it
// to the in-memory room, and returns it ready for the writer.
func (s *Service) prepare(ctx context.Context, r *room, req *Request) (*pending, error) {
	if r.broken.Load() {
		return nil, errRoomReset
	}
	content := req.Content
	if len(content) == 0 {
		content = json.RawMessage("{}")
	}
	proto := gomatrixserverlib.ProtoEvent{
		SenderID:   req.Sender,
		RoomID:     r.id,
		Type:       req.Type,
		StateKey:   req.StateKey,
		PrevEvents: r.latest,
		Depth:      min(r.depth+1, maxDepth),
		Content:    spec.RawJSON(content),
		Redacts:    req.Redacts,
	}
	var replaced *Event
	if req.StateKey != nil {
		if replaced = r.snap.Get(req.Type, *req.StateKey); replaced != nil {
			u, _ := json.Marshal(unsignedExtra{PrevContent: replaced.PDU.Content(), PrevSender: replaced.Sender(), ReplacesState: replaced.ID()})
			proto.Unsigned = u
		}
	}
	var target *Event
	if req.Type == spec.MRoomRedaction {
		var err error
		if target, err = s.redactionTarget(ctx, r, req); err != nil {
			return nil, err
		}
	}
	pdu, err := s.build(r.version, r.snap, &proto)
	if err != nil {
		return nil, err
	}
	if err := gomatrixserverlib.Allowed(pdu, authProvider{r.snap}, userIDForSender); err != nil {
		return nil, &Forbidden{Reason: err.Error()}
	}
	if d := s.policy.CheckEvent(ctx, policy.EventInput{
		Sender: req.Sender, RoomID: r.id, Type: req.Type, StateKey: req.StateKey, Content: content, Actor: req.Actor,
	}); d != nil {
		return nil, d
	}
	if replaced != nil && replaced.Sender() == req.Sender {
		// The same state again, from the same sender, changes nothing: the
		// current event stands (a second join, a client re-sending a name).
		if c, err := gomatrixserverlib.CanonicalJSON(content); err == nil && bytes.Equal(c, replaced.PDU.Content()) {
			return nil, unchanged{replaced}
		}
	}
	ev, err := newEvent(pdu, 0, r.group, nil)
	if err != nil {
		return nil, err
	}
	if err := s.checkAnnotation(ctx, r, req.Sender, req.Type, ev.rel); err != nil {
		return nil, err
	}
	ev.Pos = s.stream.Allocate()
	ev.TxnDevice, ev.TxnID = req.TxnDevice, req.TxnID
	p := s.apply(r, ev, nil)
	if target != nil {
		redacted, err := s.redact(r, target, ev)
		if err != nil {
			return nil, err
		}
		p.commits[0].Redacts = target.ID()
		p.commits[0].RedactedJSON = redacted.PDU.JSON()
	}
	return p, nil
}

// Check reports whether Submit would accept req now: the event is built on
// the room's current state and put to the auth rules and the policy, but
// not sent. For an action that must know before it starts that its last
// step will be allowed (a room upgrade's tombstone).
func (s *Service) Check(ctx context.Context, req *Request) error {
	r, err := s.room(ctx, req.RoomID)
	if err != nil {
		return err
	}
	r.mu.Lock()
	snap, latest, depth := r.snap, r.latest, r.depth
	r.mu.Unlock()
	proto := gomatrixserverlib.ProtoEvent{
		SenderID: req.Sender, RoomID: r.id, Type: req.Type, StateKey: req.StateKey,
		PrevEvents: latest, Depth: min(depth+1, maxDepth), Content: spec.RawJSON(req.Content),
	}
	pdu, err := s.build(r.version, snap, &proto)
	if err != nil {
		return err
	}
	if err := gomatrixserverlib.Allowed(pdu, authProvider{snap}, userIDForSender); err != nil {
		return &Forbidden{Reason: err.Error()}
	}
	if d := s.policy.CheckEvent(ctx, policy.EventInput{
		Sender: req.Sender, RoomID: r.id, Type: req.Type, StateKey: req.StateKey, Content: req.Content, Actor: req.Actor,
	}); d != nil {
		return d
	}
	return nil
}

// maxDepth is the largest depth the spec allows (2^63 - 1 is canonical JSON's limit).
const maxDepth = 1<<53 - 1

// build fills in auth_events and builds and signs the PDU.
func (s *Service) build(version gomatrixserverlib.IRoomVersion, snap *Snapshot, proto *gomatrixserverlib.ProtoEvent) (gomatrixserverlib.PDU, error) {
	needed, err := gomatrixserverlib.StateNeededForProtoEvent(proto)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadEvent, err)
	}
	refs, err := needed.AuthEventReferences(authProvider{snap})
	if err != nil {
		return nil, fmt.Errorf("select auth events: %w", err)
	}
	if version.DomainlessRoomIDs() {
		// The create event is implied by the room ID in v12.
		if create := snap.Get(spec.MRoomCreate, ""); create != nil {
			out := refs[:0]
			for _, id := range refs {
				if id != create.ID() {
					out = append(out, id)
				}
			}
			refs = out
		}
	}
	proto.AuthEvents = refs
	proto.Version = version
	pdu, ok, err := fastBuild(version, proto, time.Now(), s.cfg.ServerName, s.cfg.KeyID, s.cfg.Key)
	if !ok {
		pdu, err = version.NewEventBuilderFromProtoEvent(proto).Build(time.Now(), s.cfg.ServerName, s.cfg.KeyID, s.cfg.Key)
	}
	if err != nil {
		var invalid gomatrixserverlib.EventValidationError
		if errors.As(err, &invalid) && invalid.Code == gomatrixserverlib.EventValidationTooLarge {
			return nil, fmt.Errorf("%w: %v", ErrTooLarge, err)
		}
		return nil, fmt.Errorf("%w: %v", ErrBadEvent, err)
	}
	return pdu, nil
}

func userIDForSender(_ spec.RoomID, sender spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(sender), true)
}

// apply makes ev the room's newest event in memory and returns its commit.
// newRoom is set for a create event.
func (s *Service) apply(r *room, ev *Event, newRoom *storage.Room) *pending {
	before := r.servers
	c := s.applyOne(r, ev, newRoom)
	if s.IsLocal(ev.Sender()) {
		c.Outbox = s.outboxFor(ev, before, r.servers, "")
	}
	r.inflight.Add(1)
	return &pending{commits: []storage.EventCommit{c}, evs: []*Event{ev}, room: r, joined: r.joined, snap: r.snap}
}

func (s *Service) applyOne(r *room, ev *Event, newRoom *storage.Room) storage.EventCommit {
	c := storage.EventCommit{
		Event:      ev.row(),
		NewRoom:    newRoom,
		Latest:     []string{ev.ID()},
		Depth:      ev.PDU.Depth(),
		StateGroup: r.group,
		Relation:   relationRow(ev),
	}
	if ev.IsState() {
		gid := s.groupSeq.Add(1)
		snap := r.snap.with(ev)
		g := &storage.StateGroup{ID: gid, RoomID: r.id, Prev: r.group, Depth: r.chain + 1}
		if r.group == 0 || g.Depth > maxChain {
			g.Prev, g.Depth, g.Entries = 0, 0, snap.entries()
		} else {
			g.Entries = []storage.StateEntry{{Type: ev.Type(), StateKey: *ev.StateKey(), EventID: ev.ID()}}
		}
		c.NewGroup, c.StateGroup = g, gid
		r.group, r.chain, r.snap = gid, g.Depth, snap
		s.snaps.put(gid, snap)
		if ev.Type() == spec.MRoomMember {
			c.Membership = &storage.Membership{RoomID: r.id, UserID: *ev.StateKey(), Membership: ev.Membership(), EventID: ev.ID(), Pos: ev.Pos}
			r.joined = s.localJoined(snap)
			r.servers = s.remoteServers(snap)
		}
	}
	r.latest, r.depth = c.Latest, c.Depth
	r.extState = map[string]*Snapshot{ev.ID(): r.snap}
	r.addRecent(ev)
	return c
}

// localJoined lists the local users joined in snap.
func (s *Service) localJoined(snap *Snapshot) []string {
	var out []string
	snap.Each(func(ev *Event) {
		if ev.Type() == spec.MRoomMember && ev.Membership() == spec.Join && s.IsLocal(*ev.StateKey()) {
			out = append(out, *ev.StateKey())
		}
	})
	return out
}

// afterCommit runs on the writer after each batch: it publishes what
// committed and wakes the /sync of everyone concerned.
func (s *Service) afterCommit(batch []*pending, _ error) {
	positions := make([]int64, 0, len(batch))
	wake := map[string]struct{}{}
	outboxed := map[string]struct{}{}
	for _, p := range batch {
		p.room.inflight.Add(-1)
		p.room.committed(p)
		for _, ev := range p.evs {
			positions = append(positions, ev.Pos)
			if p.err != nil {
				p.room.removeRecent(ev.Pos)
			}
		}
		if p.err != nil {
			s.evict(p.room)
			continue
		}
		for _, u := range p.joined {
			wake[u] = struct{}{}
		}
		for _, c := range p.commits {
			for _, it := range c.Outbox {
				outboxed[it.Destination] = struct{}{}
			}
			if m := c.Membership; m != nil {
				s.members.update(*m) // remote users' too, where known: device lists need them
				if s.IsLocal(m.UserID) {
					wake[m.UserID] = struct{}{}
				}
			}
		}
	}
	if s.eval != nil {
		for _, p := range batch {
			if p.err != nil {
				continue
			}
			if p.evaluated == nil {
				s.evaluate(p) // a new room's first events: nobody else waits
			} else {
				<-p.evaluated
			}
			for i, ev := range p.evs {
				s.eval.Publish(ev, p.joined, p.results[i])
			}
		}
	}
	s.stream.Complete(positions...)
	for _, p := range batch {
		if p.err != nil {
			continue
		}
		for _, ev := range p.evs {
			for _, fn := range s.committed {
				fn(ev, p.joined)
			}
		}
	}
	for _, p := range batch {
		if p.lateWake != "" {
			delete(wake, p.lateWake) // the submitter wakes them after replying
		}
	}
	if len(s.batched) > 0 {
		upTo := s.stream.Current()
		for _, fn := range s.batched {
			fn(upTo)
		}
	}
	users := make([]string, 0, len(wake))
	for u := range wake {
		users = append(users, u)
	}
	s.notifier.Wake(users...)
	if len(outboxed) > 0 {
		dests := make([]string, 0, len(outboxed))
		for d := range outboxed {
			dests = append(dests, d)
		}
		for _, fn := range s.outboxed {
			fn(dests)
		}
	}
}

// OnCommit registers fn to be told of every committed event with the local
// users joined to its room. It runs on the writer's goroutine: fn must not
// block (queue the work). Register before the service is used.
func (s *Service) OnCommit(fn func(ev *Event, joined []string)) {
	s.committed = append(s.committed, fn)
}

// Evaluator works out what each committed event means for the local users
// of its room (push rules, notification counts). Evaluate runs on the
// goroutine that submitted the event, after the room lock is released and
// while the writer commits, so the work overlaps the commit instead of
// adding to it; Publish runs on the writer after the commit and before the
// event's stream position becomes visible, so what it records is never
// behind the timeline /sync serves. Publish must not block. An event that
// fails to commit is never published.
type Evaluator interface {
	// Evaluate is given the room state after ev and the local users
	// joined after it (and, for a new room, those it invites).
	Evaluate(ev *Event, snap *Snapshot, joined []string) any
	Publish(ev *Event, joined []string, result any)
}

// SetEvaluator installs e. Set it before the service is used.
func (s *Service) SetEvaluator(e Evaluator) { s.eval = e }

// evaluate runs the evaluator over p's events and releases the writer
// waiting for it, even if the evaluator panics.
func (s *Service) evaluate(p *pending) {
	defer func() {
		if v := recover(); v != nil {
			s.cfg.Log.Error("evaluate committed event", "panic", v)
		}
		if p.results == nil {
			p.results = make([]any, len(p.evs))
		}
		if p.evaluated != nil {
			close(p.evaluated)
		}
	}()
	results := make([]any, len(p.evs))
	for i, ev := range p.evs {
		results[i] = s.eval.Evaluate(ev, p.snap, p.joined)
	}
	p.results = results
}

// OnBatch registers fn to be told, after the OnCommit calls of each
// commit, a stream position up to which every committed event has been
// passed to OnCommit: what a consumer that persists its progress may
// record. It runs on the writer's goroutine like OnCommit. Register before
// the service is used.
func (s *Service) OnBatch(fn func(upTo int64)) {
	s.batched = append(s.batched, fn)
}

// UserRooms lists the user's memberships (the user must be local).
func (s *Service) UserRooms(ctx context.Context, userID string) (map[string]storage.Membership, error) {
	return s.members.get(ctx, userID)
}

// Event returns a stored event by ID.
func (s *Service) Event(ctx context.Context, eventID string) (*Event, error) {
	rows, err := s.store.GetEvents(ctx, []string{eventID})
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, storage.ErrNotFound
	}
	r, err := s.room(ctx, rows[0].RoomID)
	if err != nil {
		return nil, err
	}
	evs, err := s.fromRows(ctx, r.version, rows)
	if err != nil {
		return nil, err
	}
	return evs[0], nil
}
