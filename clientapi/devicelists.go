package clientapi

// Device-list tracking across membership changes: who starts and stops
// sharing rooms with whom. The device changes themselves are recorded by
// deviceListChanged (keys.go); this is what joins and leaves mean for them.
//
//   - A remote user who joins a room here, or is invited to one, counts
//     as changed: while this server shared no room with them, their server
//     sent it no m.device_list_update, so whatever the local users'
//     clients hold of their devices may be stale. Invited users count as
//     sharing the room for device lists (whoever encrypts for the room
//     may share its keys with them).
//   - When no local user shares a room with a remote user any more, the
//     cached copy of their device list goes (remotedevices.go).
//   - When a user leaves a room (leave, kick, ban), each local user who was
//     in it with them and now shares no room with them, or no encrypted
//     room when the room left was encrypted, gets them in device_lists.left
//     (and /keys/changes' left), and the leaver, if local, gets each such
//     user: their clients may stop tracking those devices.
//
// Both are worked out off the writer (OnCommit must not block), in commit
// order, and recorded at a stream position of their own, so a sync sees
// them at most one wake-up after the membership event.

import (
	"context"
	"sync"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/rooms"
	"github.com/machi-chat/machi/storage"
)

type memberChange struct {
	roomID, userID string
	joined         bool // true: joined now and not before; false: the reverse
}

// deviceListTracker queues membership changes and works out what they mean
// for device lists, one at a time.
type deviceListTracker struct {
	s      *Server
	mu     sync.Mutex
	queue  []memberChange
	signal chan struct{}
	stop   chan struct{}
	done   chan struct{}
}

func newDeviceListTracker(s *Server) *deviceListTracker {
	t := &deviceListTracker{s: s, signal: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	s.rooms.OnCommit(t.committed)
	go t.run()
	return t
}

func (t *deviceListTracker) close() {
	close(t.stop)
	<-t.done
}

// committed runs on the rooms writer: it only queues.
func (t *deviceListTracker) committed(ev *rooms.Event, _ []string) {
	if ev.Type() != spec.MRoomMember || ev.StateKey() == nil || ev.Pos <= 0 {
		return // outliers (state known from a join elsewhere) are in no timeline
	}
	userID := *ev.StateKey()
	now, before := ev.Membership(), ev.PrevMembership()
	var joined bool
	switch {
	case sharing(now) && now != before && !t.s.rooms.IsLocal(userID):
		// Joined or invited, and not that before: a remote user's devices
		// are news here (an invite→join too: what their server told this
		// one while they were only invited may be incomplete).
		joined = true
	case sharing(before) && !sharing(now):
		joined = false
	default:
		return // no change, or a local user's: their devices are known here all along
	}
	t.mu.Lock()
	t.queue = append(t.queue, memberChange{roomID: ev.RoomID(), userID: userID, joined: joined})
	t.mu.Unlock()
	select {
	case t.signal <- struct{}{}:
	default:
	}
}

func (t *deviceListTracker) run() {
	defer close(t.done)
	for {
		select {
		case <-t.stop:
			return
		case <-t.signal:
		}
		t.mu.Lock()
		batch := t.queue
		t.queue = nil
		t.mu.Unlock()
		for _, c := range batch {
			t.apply(context.Background(), c)
		}
	}
}

func (t *deviceListTracker) apply(ctx context.Context, c memberChange) {
	s := t.s
	if c.joined {
		if err := s.deviceListChanged(ctx, c.userID); err != nil {
			s.log.Warn("device list change for a remote user's join", "user", c.userID, "room", c.roomID, "err", err)
		}
		return
	}
	if err := t.left(ctx, c.roomID, c.userID); err != nil {
		s.log.Warn("device lists after a leave", "user", c.userID, "room", c.roomID, "err", err)
	}
	// Other servers' users no local user shares a room with any more:
	// their cached device lists go (their servers stop telling this one).
	gone := []string{c.userID}
	if s.rooms.IsLocal(c.userID) {
		gone = gone[:0]
		members, err := s.store.RoomMemberships(ctx, c.roomID)
		if err != nil {
			s.log.Warn("device lists after a leave", "room", c.roomID, "err", err)
			return
		}
		for _, m := range members {
			if sharing(m.Membership) && !s.rooms.IsLocal(m.UserID) {
				gone = append(gone, m.UserID)
			}
		}
	}
	if err := s.forgetRemoteDevices(ctx, gone); err != nil {
		s.log.Warn("forget remote device lists", "room", c.roomID, "err", err)
	}
}

// left records who no longer shares rooms with x now that x left roomID.
func (t *deviceListTracker) left(ctx context.Context, roomID, x string) error {
	s := t.s
	members, err := s.store.RoomMemberships(ctx, roomID)
	if err != nil {
		return err
	}
	encrypted := s.roomEncrypted(ctx, roomID)
	xRooms, err := s.joinedRooms(ctx, x)
	if err != nil {
		return err
	}
	xLocal := s.rooms.IsLocal(x)
	var pairs []storage.ViewerDeviceListChange
	var wake []string
	for _, m := range members {
		y := m.UserID
		if m.Membership != spec.Join || y == x {
			continue
		}
		yLocal := s.rooms.IsLocal(y)
		if !xLocal && !yLocal {
			continue // two other servers' users: theirs to tell
		}
		yRooms, err := s.joinedRooms(ctx, y)
		if err != nil {
			return err
		}
		shared, sharedEncrypted := false, false
		for r := range yRooms {
			if xRooms[r] {
				shared = true
				if s.roomEncrypted(ctx, r) {
					sharedEncrypted = true
					break
				}
			}
		}
		if shared && (sharedEncrypted || !encrypted) {
			continue
		}
		if xLocal {
			pairs = append(pairs, storage.ViewerDeviceListChange{Viewer: x, UserID: y, Left: true})
		}
		if yLocal {
			pairs = append(pairs, storage.ViewerDeviceListChange{Viewer: y, UserID: x, Left: true})
			wake = append(wake, y)
		}
	}
	if len(pairs) == 0 {
		return nil
	}
	if xLocal {
		wake = append(wake, x)
	}
	return s.viewerDeviceListChanges(ctx, pairs, wake)
}

// viewerDeviceListChanges records device-list news for single local users
// at a stream position of its own and wakes their syncs.
func (s *Server) viewerDeviceListChanges(ctx context.Context, changes []storage.ViewerDeviceListChange, wake []string) error {
	pos := s.rooms.Stream().Allocate()
	err := s.store.AddViewerDeviceListChanges(ctx, pos, changes)
	if err == nil {
		s.latest.putDeviceList(pos)
	}
	s.rooms.Stream().Complete(pos)
	if err != nil {
		return err
	}
	s.rooms.Notifier().Wake(wake...)
	return nil
}

// joinedRooms is the set of rooms userID is joined to.
func (s *Server) joinedRooms(ctx context.Context, userID string) (map[string]bool, error) {
	ms, err := s.rooms.UserRooms(ctx, userID)
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(ms))
	for roomID, m := range ms {
		if m.Membership == spec.Join {
			out[roomID] = true
		}
	}
	return out, nil
}

// roomEncrypted reports whether a room has m.room.encryption in its state.
func (s *Server) roomEncrypted(ctx context.Context, roomID string) bool {
	snap, err := s.rooms.CurrentState(ctx, roomID)
	return err == nil && snap != nil && snap.Get("m.room.encryption", "") != nil
}

// deviceLists is what /sync's device_lists and /keys/changes report for
// userID over (from, to]: the users whose devices changed that userID
// shares a room with (or userID), with the changes only userID may see,
// and the users userID stopped sharing rooms with — less those listed as
// changed and those userID shares an encrypted room with again.
func (s *Server) deviceLists(ctx context.Context, userID string, from, to int64) (changed, left []string, err error) {
	changed, err = s.visibleDeviceChanges(ctx, userID, from, to)
	if err != nil {
		return nil, nil, err
	}
	left = []string{}
	if !s.latest.deviceListAfter(from) || to <= from {
		return changed, left, nil
	}
	mine, gone, err := s.store.ViewerDeviceListChanges(ctx, userID, from, to)
	if err != nil {
		return nil, nil, err
	}
	listed := map[string]bool{}
	for _, u := range changed {
		listed[u] = true
	}
	for _, u := range mine {
		if !listed[u] {
			listed[u] = true
			changed = append(changed, u)
		}
	}
	if len(gone) == 0 {
		return changed, left, nil
	}
	joined, err := s.joinedRooms(ctx, userID)
	if err != nil {
		return nil, nil, err
	}
	for _, u := range gone {
		if listed[u] {
			continue
		}
		theirs, err := s.joinedRooms(ctx, u)
		if err != nil {
			return nil, nil, err
		}
		again := false
		for r := range theirs {
			if joined[r] && s.roomEncrypted(ctx, r) {
				again = true
				break
			}
		}
		if !again {
			left = append(left, u)
		}
	}
	return changed, left, nil
}
