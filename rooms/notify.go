package rooms

import "sync"

// Notifier wakes the long-polling /sync requests of users. A waiter takes
// its user's channel before it looks for news, so a wake between the look
// and the wait is never missed; Wake closes the channel and makes a new one.
type Notifier struct {
	mu    sync.Mutex
	chans map[string]*userChan
}

type userChan struct {
	ch      chan struct{}
	waiters int
}

// NewNotifier returns an empty notifier.
func NewNotifier() *Notifier { return &Notifier{chans: map[string]*userChan{}} }

// Listen returns a channel closed at the user's next wake, and a release
// function to call when the caller stops waiting.
func (n *Notifier) Listen(userID string) (<-chan struct{}, func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	uc, ok := n.chans[userID]
	if !ok {
		uc = &userChan{ch: make(chan struct{})}
		n.chans[userID] = uc
	}
	uc.waiters++
	ch := uc.ch
	return ch, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if cur, ok := n.chans[userID]; ok && cur == uc {
			uc.waiters--
			if uc.waiters == 0 {
				delete(n.chans, userID)
			}
		}
	}
}

// Wake wakes every waiter of the given users.
func (n *Notifier) Wake(userIDs ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, u := range userIDs {
		if uc, ok := n.chans[u]; ok {
			close(uc.ch)
			delete(n.chans, u)
		}
	}
}
