package clientapi

import (
	"context"
	"fmt"
	"sort"
	"sync"
)

// Unread notification counts, kept in memory per user and room so that a
// /sync reads no database for them:
//
//	commit ─▶ Evaluator.Publish ─▶ unread.add   (before the event is visible)
//	receipt ─▶ markRead ─────────▶ unread.read  (before the receipt is visible)
//	/sync, pusher ───────────────▶ unread.counts
//
// A user's state is loaded from the database (their notifications and
// read receipts) the first time it is asked for after a start; what was
// added before that is merged in. Only unread notifications are kept: a
// receipt drops the ones it covers. A room keeps at most maxUnreadNotes;
// past that the oldest are forgotten (the count stops growing there).

const maxUnreadNotes = 5000

// mainThread is the thread ID of events outside any thread.
const mainThread = "main"

// unreadNote is one notification not yet read.
type unreadNote struct {
	pos       int64
	thread    string
	highlight bool
}

// roomUnread is one user's unread notifications in one room.
type roomUnread struct {
	// read is, per receipt thread ID ("" for unthreaded receipts), the
	// stream position of the latest event read with m.read or
	// m.read.private.
	read  map[string]int64
	notes []unreadNote // by position
}

func (r *roomUnread) readPos(thread string) int64 {
	return max(r.read[""], r.read[thread])
}

// prune drops the notes the receipts cover, and the oldest past the bound.
func (r *roomUnread) prune() {
	out := r.notes[:0]
	for _, n := range r.notes {
		if n.pos > r.readPos(n.thread) {
			out = append(out, n)
		}
	}
	if len(out) > maxUnreadNotes {
		out = append(out[:0], out[len(out)-maxUnreadNotes:]...)
	}
	clear(r.notes[len(out):])
	r.notes = out
}

type userUnread struct {
	loaded bool
	rooms  map[string]*roomUnread
}

func (u *userUnread) room(roomID string) *roomUnread {
	r, ok := u.rooms[roomID]
	if !ok {
		r = &roomUnread{read: map[string]int64{}}
		u.rooms[roomID] = r
	}
	return r
}

type unreadCache struct {
	mu    sync.Mutex
	users map[string]*userUnread
}

func (c *unreadCache) userLocked(userID string) *userUnread {
	if c.users == nil {
		c.users = map[string]*userUnread{}
	}
	u, ok := c.users[userID]
	if !ok {
		u = &userUnread{rooms: map[string]*roomUnread{}}
		c.users[userID] = u
	}
	return u
}

// add records a notification; it never touches the database.
func (c *unreadCache) add(userID, roomID string, n unreadNote) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.userLocked(userID).room(roomID)
	if n.pos <= r.readPos(n.thread) {
		return
	}
	i := sort.Search(len(r.notes), func(i int) bool { return r.notes[i].pos >= n.pos })
	if i < len(r.notes) && r.notes[i].pos == n.pos {
		return
	}
	r.notes = append(r.notes, unreadNote{})
	copy(r.notes[i+1:], r.notes[i:])
	r.notes[i] = n
	if len(r.notes) > maxUnreadNotes {
		r.prune()
	}
}

// read records a read receipt (thread "" for an unthreaded one) up to the
// event at pos.
func (c *unreadCache) read(userID, roomID, thread string, pos int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.userLocked(userID).room(roomID)
	if pos > r.read[thread] {
		r.read[thread] = pos
		r.prune()
	}
}

// threadCounts are a room's unread counts: all of them, the main
// timeline's, and each thread's.
type threadCounts struct {
	total, main unreadCounts
	threads     map[string]*unreadCounts
}

// ensure loads the user's state from the database if this process has not
// yet.
func (s *Server) ensureUnread(ctx context.Context, userID string) error {
	c := &s.unread
	c.mu.Lock()
	loaded := c.userLocked(userID).loaded
	c.mu.Unlock()
	if loaded {
		return nil
	}
	ns, err := s.store.UserNotifications(ctx, userID)
	if err != nil {
		return fmt.Errorf("load unread counts: %w", err)
	}
	rs, err := s.store.UserReceipts(ctx, userID)
	if err != nil {
		return fmt.Errorf("load unread counts: %w", err)
	}
	var ids []string
	for _, r := range rs {
		if r.Type == "m.read" || r.Type == "m.read.private" {
			ids = append(ids, r.EventID)
		}
	}
	rows, err := s.store.GetEvents(ctx, ids)
	if err != nil {
		return fmt.Errorf("load unread counts: %w", err)
	}
	posOf := make(map[string]int64, len(rows))
	for _, e := range rows {
		posOf[e.EventID] = e.Pos
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	u := c.userLocked(userID)
	if u.loaded {
		return nil
	}
	for _, r := range rs {
		if p, ok := posOf[r.EventID]; ok && (r.Type == "m.read" || r.Type == "m.read.private") {
			room := u.room(r.RoomID)
			room.read[r.ThreadID] = max(room.read[r.ThreadID], p)
		}
	}
	// Merge: what was added since the start may be in the database too.
	byRoom := map[string][]unreadNote{}
	for _, n := range ns {
		byRoom[n.RoomID] = append(byRoom[n.RoomID], unreadNote{pos: n.Pos, thread: n.ThreadID, highlight: n.Highlight})
	}
	for roomID, notes := range byRoom {
		room := u.room(roomID)
		seen := make(map[int64]bool, len(room.notes))
		for _, n := range room.notes {
			seen[n.pos] = true
		}
		for _, n := range notes {
			if !seen[n.pos] {
				room.notes = append(room.notes, n)
			}
		}
		sort.Slice(room.notes, func(i, j int) bool { return room.notes[i].pos < room.notes[j].pos })
	}
	for _, room := range u.rooms {
		room.prune()
	}
	u.loaded = true
	return nil
}

// roomCounts returns the user's unread counts in the room, up to the
// stream position cur.
func (s *Server) roomCounts(ctx context.Context, userID, roomID string, cur int64) (*threadCounts, error) {
	if err := s.ensureUnread(ctx, userID); err != nil {
		return nil, err
	}
	c := &s.unread
	c.mu.Lock()
	defer c.mu.Unlock()
	out := &threadCounts{}
	r, ok := c.userLocked(userID).rooms[roomID]
	if !ok {
		return out, nil
	}
	for _, n := range r.notes {
		if n.pos > cur {
			break
		}
		tc := &out.main
		if n.thread != mainThread {
			if out.threads == nil {
				out.threads = map[string]*unreadCounts{}
			}
			if tc = out.threads[n.thread]; tc == nil {
				tc = &unreadCounts{}
				out.threads[n.thread] = tc
			}
		}
		tc.Notifications++
		out.total.Notifications++
		if n.highlight {
			tc.Highlights++
			out.total.Highlights++
		}
	}
	return out, nil
}

// userTotals sums the user's unread notifications over the rooms they are
// joined to (for the push gateway's counts).
func (s *Server) userTotals(ctx context.Context, userID string) (int, error) {
	memberships, err := s.rooms.UserRooms(ctx, userID)
	if err != nil {
		return 0, err
	}
	unread := 0
	for roomID, m := range memberships {
		if m.Membership != "join" {
			continue
		}
		tc, err := s.roomCounts(ctx, userID, roomID, 1<<63-1)
		if err != nil {
			return 0, err
		}
		unread += tc.total.Notifications
	}
	return unread, nil
}

// isRead reports whether the user has read the notification, by their
// receipts as this process knows them.
func (s *Server) isRead(userID, roomID, thread string, pos int64) bool {
	c := &s.unread
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.userLocked(userID).rooms[roomID]
	return ok && pos <= r.readPos(thread)
}
