package rooms

import (
	"sync"
	"sync/atomic"
)

// replyHolds keep a sender's /sync from showing an event it sent until the
// send has been answered (Request.WakeSenderLater). A client that sees its
// own event come back through /sync before the send's response has to
// reconcile the two, and matrix-js-sdk (Element) gets that wrong for
// relations and thread replies: it retries the send and finally shows it
// as failed. Waking the sender only after the reply is not enough: a /sync
// that arrives between the commit and the reply would still see the event.
//
//	commit ─▶ Stream.Complete(pos) ─▶ reply written ─▶ Replied: release, wake
//	          /sync of the sender: up to pos-1 only ─┘
type replyHolds struct {
	n  atomic.Int64 // held positions, so a sync checks without the lock
	mu sync.Mutex
	m  map[string][]int64 // user → positions awaiting their reply
}

func (h *replyHolds) add(userID string, pos int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = map[string][]int64{}
	}
	h.m[userID] = append(h.m[userID], pos)
	h.n.Add(1)
}

func (h *replyHolds) remove(userID string, pos int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	list := h.m[userID]
	for i, p := range list {
		if p == pos {
			list = append(list[:i:i], list[i+1:]...)
			h.n.Add(-1)
			break
		}
	}
	if len(list) == 0 {
		delete(h.m, userID)
	} else {
		h.m[userID] = list
	}
}

// ceiling lowers cur below the user's oldest held position.
func (h *replyHolds) ceiling(userID string, cur int64) int64 {
	if h.n.Load() == 0 {
		return cur
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range h.m[userID] {
		cur = min(cur, p-1)
	}
	return cur
}

// SyncCeiling is the highest position userID's /sync may serve: cur, or
// less while an event the user sent waits for its reply.
func (s *Service) SyncCeiling(userID string, cur int64) int64 {
	return s.holds.ceiling(userID, cur)
}

// Replied tells the service that the reply to userID's send of ev (nil if
// the send failed) is on the wire: the event is released to the user's
// /sync, which is woken.
func (s *Service) Replied(userID string, ev *Event) {
	if ev != nil {
		s.holds.remove(userID, ev.Pos)
	}
	s.notifier.Wake(userID)
}
