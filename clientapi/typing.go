package clientapi

import (
	"sort"
	"sync"
	"time"

	"github.com/machi-chat/machi/rooms"
)

// maxTypingTimeout bounds how long one typing notice lasts.
const maxTypingTimeout = 2 * time.Minute

// Typing holds who is typing where, in memory only. Every change bumps a
// counter that /sync tokens carry; an expiry is a change too. Timers exist
// only while someone is typing.
type Typing struct {
	notifier *rooms.Notifier
	mu       sync.Mutex
	counter  uint64
	rooms    map[string]*typingRoom
}

type typingRoom struct {
	users     map[string]*time.Timer
	changedAt uint64
}

// NewTyping returns an empty typing tracker that wakes syncs through n.
func NewTyping(n *rooms.Notifier) *Typing {
	return &Typing{notifier: n, rooms: map[string]*typingRoom{}}
}

// Set starts or stops userID typing in roomID; wake are the users whose
// /sync should hear of it (the room's local members). Renewing a typing
// notice only moves its expiry.
func (t *Typing) Set(roomID, userID string, typing bool, timeout time.Duration, wake []string) {
	t.mu.Lock()
	r, ok := t.rooms[roomID]
	if !ok {
		r = &typingRoom{users: map[string]*time.Timer{}}
		t.rooms[roomID] = r
	}
	old, was := r.users[userID]
	if was {
		old.Stop()
		delete(r.users, userID)
	}
	if typing {
		timeout = min(max(timeout, time.Second), maxTypingTimeout)
		var timer *time.Timer
		timer = time.AfterFunc(timeout, func() { t.expire(roomID, userID, timer, wake) })
		r.users[userID] = timer
	}
	changed := typing != was
	if changed {
		t.counter++
		r.changedAt = t.counter
	}
	t.mu.Unlock()
	if changed {
		t.notifier.Wake(wake...)
		t.notifier.Wake(roomID) // /events peeking into the room
	}
}

// expire ends a typing notice whose timeout passed, unless it was renewed.
func (t *Typing) expire(roomID, userID string, timer *time.Timer, wake []string) {
	t.mu.Lock()
	r, ok := t.rooms[roomID]
	if !ok || r.users[userID] != timer {
		t.mu.Unlock()
		return
	}
	delete(r.users, userID)
	t.counter++
	r.changedAt = t.counter
	t.mu.Unlock()
	t.notifier.Wake(wake...)
	t.notifier.Wake(roomID)
}

// Current is the typing counter, for sync tokens.
func (t *Typing) Current() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.counter
}

// InRoom lists who types in the room, sorted, and the counter value of the
// room's last change (0 if never).
func (t *Typing) InRoom(roomID string) ([]string, uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r, ok := t.rooms[roomID]
	if !ok {
		return nil, 0
	}
	users := make([]string, 0, len(r.users))
	for u := range r.users {
		users = append(users, u)
	}
	sort.Strings(users)
	return users, r.changedAt
}
