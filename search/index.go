// Package search is machi's full-text index of room events (bleve, in the
// data folder), fed after commit and caught up from the database.
//
//	writer goroutine (rooms)            indexer goroutine
//	  OnCommit(ev) ──▶ queue ─────────▶ bleve batch + checkpoint
//	  OnBatch(upTo) ─▶ marker ─┘          ▲
//	  queue full? ─▶ drop, "behind" ──────┴─ catch up from the database
//
// The index records a checkpoint: a stream position up to which every
// event is indexed. The rooms writer tells, after each commit, a position
// up to which it has passed every committed event on (OnBatch); once the
// indexer has indexed what came before that marker, the marker is the new
// checkpoint, written in the same bleve batch as the documents so the two
// are persisted together. At start, and whenever the queue overflowed (the
// send path never waits on the index), events after the checkpoint are
// read back from the database. Indexing is by event ID, so doing an event
// twice is harmless; a redaction deletes its target's document.
package search

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blevesearch/bleve/v2"
	"github.com/blevesearch/bleve/v2/index/scorch"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/machi-chat/machi/rooms"
	"github.com/machi-chat/machi/storage"
)

// Internal keys kept in the index beside the documents.
var (
	checkpointKey = []byte("machi.checkpoint")
	versionKey    = []byte("machi.version")
)

// version changes when the documents or analysis change: an index of
// another version is rebuilt.
const version = "1"

const redactionType = "m.room.redaction"

// indexedTypes are the event types the index reads from the database.
var indexedTypes = []string{"m.room.message", "m.room.name", "m.room.topic", redactionType}

// Tuning. linger is how long a burst may gather into one batch (a
// search that waits cuts it short); maxQueue bounds memory when indexing
// falls behind the sends: past it the indexer reads from the database
// instead.
const (
	linger       = 250 * time.Millisecond
	maxQueue     = 8192
	maxBatchDocs = 1000
	catchUpPage  = 500
)

// Stream is how far the server's stream is durable (rooms.Stream).
type Stream interface{ Current() int64 }

// Index is the search index.
type Index struct {
	log    *slog.Logger
	store  storage.Rooms
	stream Stream
	idx    bleve.Index

	mu         sync.Mutex
	queue      []item
	behind     bool  // items were dropped: catch up from the database
	droppedMax int64 // the highest position dropped
	received   int64 // the last marker received
	advanced   chan struct{}

	applied atomic.Int64 // every event at or below is indexed
	wake    chan struct{}
	hurry   chan struct{} // a search is waiting: stop gathering
	stop    chan struct{}
	done    chan struct{}
}

// item is an event to index, or (ev nil) a marker.
type item struct {
	ev   *rooms.Event
	upTo int64
}

// Open opens (or creates) the index in dir, hooks it to the rooms service
// and starts catching up in the background. A missing, unreadable or
// outdated index is rebuilt from the database.
func Open(ctx context.Context, dir string, svc *rooms.Service, store storage.Rooms, log *slog.Logger) (*Index, error) {
	idx, err := openBleve(dir, log)
	if err != nil {
		return nil, err
	}
	x := &Index{
		log: log, store: store, stream: svc.Stream(), idx: idx,
		advanced: make(chan struct{}),
		wake:     make(chan struct{}, 1),
		hurry:    make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	cp, err := readCheckpoint(idx)
	if err == nil && cp > x.stream.Current() {
		// The index has events the database has not (a database restored
		// from an older backup): its positions would hide new events.
		log.Warn("search index is ahead of the database, rebuilding it", "index", cp, "database", x.stream.Current())
		idx.Close()
		if err = os.RemoveAll(dir); err == nil {
			idx, err = openBleve(dir, log)
			x.idx, cp = idx, 0
		}
	}
	if err != nil {
		if idx != nil {
			idx.Close()
		}
		return nil, err
	}
	x.applied.Store(cp)
	x.received = x.stream.Current()
	svc.OnCommit(x.committed)
	svc.OnBatch(x.batched)
	go x.run()
	return x, nil
}

func readCheckpoint(idx bleve.Index) (int64, error) {
	raw, err := idx.GetInternal(checkpointKey)
	if err != nil {
		return 0, fmt.Errorf("read search index checkpoint: %w", err)
	}
	if len(raw) == 0 {
		return 0, nil
	}
	cp, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("read search index checkpoint %q: %w", raw, err)
	}
	return cp, nil
}

// scorchConfig: a second process on the same index fails instead of
// waiting; a batch returns once searchable, not once fsynced (the
// checkpoint is persisted in the same snapshot as the documents, so a
// crash loses only what the database catch-up redoes). A new map each
// time: bleve writes the index's path into it.
func scorchConfig() map[string]any {
	return map[string]any{"bolt_timeout": "2s", "unsafe_batch": true}
}

// openBleve opens the index at dir, or makes a new one when there is none
// or it cannot be used.
func openBleve(dir string, log *slog.Logger) (bleve.Index, error) {
	idx, err := bleve.OpenUsing(dir, scorchConfig())
	if err == nil {
		v, verr := idx.GetInternal(versionKey)
		if verr == nil && string(v) == version {
			return idx, nil
		}
		idx.Close()
		log.Info("search index: another version, rebuilding it", "dir", dir, "version", string(v))
	} else if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open search index %s: another process has it open", dir)
	} else if !errors.Is(err, bleve.ErrorIndexPathDoesNotExist) {
		// The database has every event: a damaged index is rebuilt.
		log.Warn("search index unreadable, rebuilding it", "dir", dir, "err", err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("remove old search index: %w", err)
	}
	idx, err = bleve.NewUsing(dir, newMapping(), scorch.Name, bleve.Config.DefaultKVStore, scorchConfig())
	if err != nil {
		return nil, fmt.Errorf("create search index %s: %w", dir, err)
	}
	if err := idx.SetInternal(versionKey, []byte(version)); err != nil {
		idx.Close()
		return nil, fmt.Errorf("create search index %s: %w", dir, err)
	}
	return idx, nil
}

// committed queues an event the writer committed. It runs on the writer's
// goroutine: it never blocks and never waits for the index.
func (x *Index) committed(ev *rooms.Event, _ []string) {
	switch ev.Type() {
	case "m.room.message", "m.room.name", "m.room.topic", redactionType:
	default:
		return
	}
	x.mu.Lock()
	if x.behind || len(x.queue) >= maxQueue {
		x.behind = true
		x.droppedMax = max(x.droppedMax, ev.Pos)
	} else {
		x.queue = append(x.queue, item{ev: ev})
	}
	x.mu.Unlock()
	x.signal()
}

// batched queues the writer's marker after a commit.
func (x *Index) batched(upTo int64) {
	x.mu.Lock()
	x.received = upTo
	switch n := len(x.queue); {
	case x.behind:
	case n > 0 && x.queue[n-1].ev == nil:
		x.queue[n-1].upTo = upTo // consecutive markers: the last says it all
	case n >= maxQueue:
		x.behind = true
	default:
		x.queue = append(x.queue, item{upTo: upTo})
	}
	x.mu.Unlock()
	x.signal()
}

func (x *Index) signal() {
	select {
	case x.wake <- struct{}{}:
	default:
	}
}

// Close indexes what is queued and closes the index. Close the rooms
// service first, so that nothing more is queued.
func (x *Index) Close() error {
	close(x.stop)
	<-x.done
	return x.idx.Close()
}

// Checkpoint is the stream position up to which every event is indexed.
func (x *Index) Checkpoint() int64 { return x.applied.Load() }

// Sync waits, up to timeout, until the index holds every event committed
// before the call: a client that searches right after a send finds it.
// While the index is being rebuilt it gives up at the timeout, and the
// search answers from what is indexed so far.
func (x *Index) Sync(ctx context.Context, timeout time.Duration) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		x.mu.Lock()
		target, ch := x.received, x.advanced
		x.mu.Unlock()
		if x.applied.Load() >= target {
			return
		}
		select {
		case x.hurry <- struct{}{}:
		default:
		}
		select {
		case <-ch:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// setApplied records that every event up to pos is indexed.
func (x *Index) setApplied(pos int64) {
	if pos <= x.applied.Load() {
		return
	}
	x.applied.Store(pos)
	x.mu.Lock()
	close(x.advanced)
	x.advanced = make(chan struct{})
	x.mu.Unlock()
}

func (x *Index) run() {
	defer close(x.done)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-x.stop
		cancel()
	}()
	x.catchUp(ctx)
	for {
		stopping := false
		select {
		case <-x.wake:
			// Let a burst gather, unless a search waits: bleve's cost
			// is mostly per batch (a segment built, then merged), not
			// per document.
			x.mu.Lock()
			n := len(x.queue)
			x.mu.Unlock()
			if n < maxBatchDocs {
				t := time.NewTimer(linger)
				select {
				case <-t.C:
				case <-x.hurry:
				case <-x.stop:
					stopping = true
				}
				t.Stop()
			}
		case <-x.stop:
			stopping = true
		}
		x.mu.Lock()
		q, behind := x.queue, x.behind
		x.queue = nil
		x.mu.Unlock()
		if err := x.apply(q); err != nil {
			x.log.Error("search index: index events", "err", err)
			x.mu.Lock()
			x.behind = true // read them back from the database
			x.mu.Unlock()
			behind = true
		}
		if stopping {
			x.saveCheckpoint()
			return
		}
		if behind {
			x.catchUp(ctx)
		}
	}
}

// saveCheckpoint persists the checkpoint if it moved without documents.
func (x *Index) saveCheckpoint() {
	b := x.idx.NewBatch()
	b.SetInternal(checkpointKey, []byte(strconv.FormatInt(x.applied.Load(), 10)))
	if err := x.idx.Batch(b); err != nil {
		x.log.Error("search index: save checkpoint", "err", err)
	}
}

// apply indexes queued items in order, in bleve batches, advancing the
// checkpoint at each marker.
func (x *Index) apply(q []item) error {
	b := x.idx.NewBatch()
	docs := 0
	cp := x.applied.Load()
	flush := func() error {
		if b.Size() == 0 {
			// Nothing to index (other events committed): the position
			// is searchable at once, and persisted with the next
			// documents or at Close; a crash before only rereads
			// positions with nothing to index.
			x.setApplied(cp)
			return nil
		}
		b.SetInternal(checkpointKey, []byte(strconv.FormatInt(cp, 10)))
		if err := x.idx.Batch(b); err != nil {
			return err
		}
		x.setApplied(cp)
		b.Reset()
		docs = 0
		return nil
	}
	for _, it := range q {
		if it.ev == nil {
			cp = max(cp, it.upTo)
			continue
		}
		if it.ev.Pos <= cp {
			continue // read back from the database already
		}
		addEvent(b, it.ev.ID(), it.ev.RoomID(), it.ev.Sender(), it.ev.Type(), it.ev.Pos, it.ev.PDU.Content(), it.ev.PDU.Redacts())
		if docs++; docs >= maxBatchDocs {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// catchUp indexes the events in the database after the checkpoint, up to
// a position where the stream is complete and past anything dropped. On a
// database error it retries, a second apart, until stopped.
func (x *Index) catchUp(ctx context.Context) {
	x.mu.Lock()
	x.behind = false
	dropped := x.droppedMax
	x.mu.Unlock()
	to := x.stream.Current()
	for to < dropped {
		// A dropped event's position is complete, but an earlier one of
		// another room may still be committing.
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
		to = x.stream.Current()
	}
	from := x.applied.Load()
	start, n := time.Now(), 0
	for from < to {
		rows, err := x.store.EventsAfter(ctx, from, to, indexedTypes, catchUpPage)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			x.log.Error("search index: read events to catch up", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		next := to
		if len(rows) == catchUpPage {
			next = rows[len(rows)-1].Pos
		}
		b := x.idx.NewBatch()
		for _, r := range rows {
			if r.RedactedBy != "" {
				b.Delete(r.EventID)
				continue
			}
			var pdu struct {
				Content json.RawMessage `json:"content"`
				Redacts string          `json:"redacts"`
			}
			if err := json.Unmarshal(r.JSON, &pdu); err != nil {
				x.log.Warn("search index: unreadable event", "event", r.EventID, "err", err)
				continue
			}
			addEvent(b, r.EventID, r.RoomID, r.Sender, r.Type, r.Pos, pdu.Content, pdu.Redacts)
		}
		b.SetInternal(checkpointKey, []byte(strconv.FormatInt(next, 10)))
		if err := x.idx.Batch(b); err != nil {
			x.log.Error("search index: index events", "err", err)
			x.mu.Lock()
			x.behind = true // try again at the next commit
			x.mu.Unlock()
			return
		}
		x.setApplied(next)
		n += len(rows)
		from = next
	}
	if n > 0 {
		x.log.Info("search index: caught up from the database", "events", n, "up_to", to, "took", time.Since(start).Round(time.Millisecond))
	}
}

// addEvent adds what the index keeps of one event to b: a document for a
// message, name or topic with text, a deletion for a redaction's target.
func addEvent(b *bleve.Batch, id, room, sender, typ string, pos int64, content json.RawMessage, redacts string) {
	if typ == redactionType {
		if redacts == "" {
			var c struct {
				Redacts string `json:"redacts"`
			}
			_ = json.Unmarshal(content, &c)
			redacts = c.Redacts
		}
		if redacts != "" {
			b.Delete(redacts)
		}
		return
	}
	e, ok := entryOf(id, room, sender, typ, pos, content)
	if !ok {
		return
	}
	_ = b.IndexAdvanced(newDocument(e)) // only fails on an empty ID
}

// entryOf reads the indexed text of an event's content.
func entryOf(id, room, sender, typ string, pos int64, content json.RawMessage) (entry, bool) {
	var c struct {
		Body  any `json:"body"`
		Name  any `json:"name"`
		Topic any `json:"topic"`
		URL   any `json:"url"`
	}
	if json.Unmarshal(content, &c) != nil {
		return entry{}, false
	}
	e := entry{id: id, room: room, sender: sender, typ: typ, pos: pos}
	var v any
	switch typ {
	case "m.room.message":
		e.key, v = "content.body", c.Body
		_, e.hasURL = c.URL.(string)
	case "m.room.name":
		e.key, v = "content.name", c.Name
	case "m.room.topic":
		e.key, v = "content.topic", c.Topic
	}
	s, ok := v.(string)
	if !ok || s == "" {
		return entry{}, false
	}
	e.text = s
	return e, true
}
