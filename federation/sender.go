package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/storage"
)

// The sender delivers the outbox: per destination, in the order items were
// queued, in transactions of at most 50 PDUs and 100 EDUs (the spec's
// limits). An item leaves the outbox only when the destination has
// acknowledged its transaction; a destination that does not answer is
// retried with exponential backoff, and at once when it next contacts us
// (it is back).
//
//	enqueue ─▶ outbox table ─▶ wake ─▶ one goroutine per destination
//	                                    └─ PUT /send/{txnId} ─▶ delete
const (
	maxTxnPDUs  = 50
	maxTxnEDUs  = 100
	backoffMin  = 2 * time.Second
	backoffMax  = time.Hour
	sendTimeout = 60 * time.Second
)

type sender struct {
	f *Federation
	// epoch makes transaction IDs unique across restarts: outbox IDs start
	// again from the highest stored one, which may have been sent already.
	epoch int64
	stop  chan struct{}
	wg    sync.WaitGroup

	enqMu sync.Mutex // IDs are stored in the order they are given

	mu    sync.Mutex
	dests map[string]*destination
}

type destination struct {
	name string
	wake chan struct{} // capacity 1: there may be work
	back chan struct{} // capacity 1: it contacted us, so it is up
}

func newSender(ctx context.Context, f *Federation) (*sender, error) {
	s := &sender{f: f, epoch: time.Now().UnixMilli(), stop: make(chan struct{}), dests: map[string]*destination{}}
	pending, err := f.store.OutboundDestinations(ctx)
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	for _, d := range pending {
		s.poke(d) // what a previous run owed, delivered now
	}
	return s, nil
}

// enqueue stores items for their destinations (durable on return) and
// wakes their senders.
func (s *sender) enqueue(ctx context.Context, items []storage.OutboundItem) error {
	if len(items) == 0 {
		return nil
	}
	s.enqMu.Lock()
	now := s.f.now().UnixMilli()
	for i := range items {
		items[i].ID, items[i].CreatedTS = s.f.rooms.NextOutboxID(), now
	}
	err := s.f.store.EnqueueOutbound(ctx, items)
	s.enqMu.Unlock()
	if err != nil {
		return fmt.Errorf("queue for other servers: %w", err)
	}
	for _, it := range items {
		s.poke(it.Destination)
	}
	return nil
}

// poke wakes the destination's sender, starting it if needed.
func (s *sender) poke(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.stop:
		return
	default:
	}
	d, ok := s.dests[name]
	if !ok {
		d = &destination{name: name, wake: make(chan struct{}, 1), back: make(chan struct{}, 1)}
		s.dests[name] = d
		s.wg.Add(1)
		go s.run(d)
	}
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// contacted is told of every authenticated request from server: it is
// up, so what we owe it goes now rather than after the backoff.
func (s *sender) contacted(server string) {
	s.mu.Lock()
	d, ok := s.dests[server]
	s.mu.Unlock()
	if ok {
		select {
		case d.back <- struct{}{}:
		default:
		}
	}
}

func (s *sender) close() {
	s.mu.Lock()
	close(s.stop)
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *sender) run(d *destination) {
	defer s.wg.Done()
	failures := 0
	for {
		select {
		case <-s.stop:
			return
		case <-d.wake:
		case <-d.back:
		}
		for {
			sent, err := s.sendOnce(d.name)
			if err != nil {
				failures++
				wait := min(backoffMin<<min(failures-1, 20), backoffMax)
				wait += time.Duration(rand.Int64N(int64(wait) / 4)) // jitter
				s.f.log.Info("federation: delivery failed, will retry", "destination", d.name, "in", wait.Round(time.Second), "err", err)
				select { // more work waits for the backoff; the server's return does not
				case <-s.stop:
					return
				case <-d.back:
				case <-time.After(wait):
				}
				continue
			}
			failures = 0
			if sent == 0 {
				break
			}
		}
	}
}

// sendOnce sends the destination's oldest items in one transaction and
// reports how many went.
func (s *sender) sendOnce(dest string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), sendTimeout)
	defer cancel()
	go func() {
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	pdus, err := s.f.store.PendingOutbound(ctx, dest, "pdu", 0, maxTxnPDUs)
	if err != nil {
		return 0, err
	}
	edus, err := s.f.store.PendingOutbound(ctx, dest, "edu", 0, maxTxnEDUs)
	if err != nil {
		return 0, err
	}
	if len(pdus)+len(edus) == 0 {
		return 0, nil
	}
	txn := struct {
		Origin         spec.ServerName   `json:"origin"`
		OriginServerTS spec.Timestamp    `json:"origin_server_ts"`
		PDUs           []json.RawMessage `json:"pdus"`
		EDUs           []json.RawMessage `json:"edus"`
	}{Origin: s.f.cfg.ServerName, OriginServerTS: spec.AsTimestamp(s.f.now()), PDUs: []json.RawMessage{}, EDUs: []json.RawMessage{}}
	ids := make([]int64, 0, len(pdus)+len(edus))
	for _, it := range pdus {
		txn.PDUs, ids = append(txn.PDUs, it.Payload), append(ids, it.ID)
	}
	for _, it := range edus {
		txn.EDUs, ids = append(txn.EDUs, it.Payload), append(ids, it.ID)
	}
	// The same items make the same transaction ID while this process runs,
	// so a retry after a lost answer is recognised as the same transaction.
	txnID := fmt.Sprintf("%d.%d.%d.%d.%d", s.epoch, first(pdus), first(edus), len(pdus), len(edus))
	var resp json.RawMessage
	if err := s.f.signedRequest(ctx, "PUT", dest, "/_matrix/federation/v1/send/"+url.PathEscape(txnID), txn, &resp); err != nil {
		return 0, err
	}
	if err := s.f.store.DeleteOutbound(ctx, dest, ids); err != nil {
		return 0, err
	}
	return len(ids), nil
}

func first(items []storage.OutboundItem) int64 {
	if len(items) == 0 {
		return 0
	}
	return items[0].ID
}
