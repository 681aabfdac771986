package rooms

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/machi-chat/machi/storage"
)

// writer commits events in groups. Submitters enqueue a commit and wait;
// the writer takes everything queued while the previous transaction ran and
// commits it in one transaction, so many sends share one commit (and, with
// synchronous=full, one fsync).
//
//	Submit ─┐                    ┌─ CommitEvents(batch) ─┐
//	Submit ─┼─▶ queue ─▶ writer ─┤                       ├─▶ Stream.Complete
//	Submit ─┘                    └───────────────────────┘   notify, reply
//
// With an Evaluator, each submitter evaluates its event after queueing it,
// while the writer commits; the writer waits for a batch's evaluations
// (usually done by then) before it publishes the batch.
type writer struct {
	queue   chan *pending
	store   storage.Rooms
	after   func(batch []*pending, err error)
	log     *slog.Logger
	maxSize int
	done    chan struct{}

	closeMu sync.RWMutex
	closed  bool
}

// pending is one event — or the first events of a new room, which commit
// together or not at all — on its way to the database.
type pending struct {
	commits []storage.EventCommit
	evs     []*Event
	room    *room
	joined  []string // local users joined after the events, for notification
	// lateWake is a sender whose /sync the submitter wakes itself.
	lateWake string
	// snap is the room state after the events; results are the
	// Evaluator's, one per event, set before evaluated closes (nil
	// channel: the writer evaluates).
	snap      *Snapshot
	results   []any
	evaluated chan struct{}
	err       error
	done      chan struct{}
}

func newWriter(store storage.Rooms, log *slog.Logger, after func([]*pending, error)) *writer {
	w := &writer{
		queue:   make(chan *pending, 4096),
		store:   store,
		after:   after,
		log:     log,
		maxSize: 512,
		done:    make(chan struct{}),
	}
	go w.run()
	return w
}

// enqueue hands p to the writer; the caller waits on p.done. After close,
// p fails at once.
func (w *writer) enqueue(p *pending) {
	p.done = make(chan struct{})
	w.closeMu.RLock()
	defer w.closeMu.RUnlock()
	if w.closed {
		p.err = errClosed
		w.after([]*pending{p}, errClosed)
		close(p.done)
		return
	}
	w.queue <- p
}

var errClosed = errors.New("server is shutting down")

// close stops the writer after it has committed everything queued.
func (w *writer) close() {
	w.closeMu.Lock()
	if !w.closed {
		w.closed = true
		close(w.queue)
	}
	w.closeMu.Unlock()
	<-w.done
}

func (w *writer) run() {
	defer close(w.done)
	batch := make([]*pending, 0, w.maxSize)
	commits := make([]storage.EventCommit, 0, w.maxSize)
	for first := range w.queue {
		batch = append(batch[:0], first)
	drain:
		for len(batch) < w.maxSize {
			select {
			case p, ok := <-w.queue:
				if !ok {
					break drain
				}
				batch = append(batch, p)
			default:
				break drain
			}
		}
		// An event built on one that failed to commit must not commit.
		commits = commits[:0]
		live := batch[:0:0]
		for _, p := range batch {
			if p.room.broken.Load() {
				p.err = errRoomReset
				continue
			}
			commits = append(commits, p.commits...)
			live = append(live, p)
		}
		var err error
		if len(commits) > 0 {
			start := time.Now()
			err = w.store.CommitEvents(context.Background(), commits)
			commitSeconds.Observe(time.Since(start).Seconds())
			commitBatchSize.Observe(float64(len(commits)))
			if err != nil {
				w.log.Error("commit events", "err", err, "batch", len(commits))
				for _, p := range live {
					p.err = err
					p.room.broken.Store(true)
				}
			}
		}
		w.after(batch, err)
		for _, p := range batch {
			close(p.done)
		}
	}
}
