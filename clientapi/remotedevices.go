package clientapi

// Other servers' users' device lists, cached while a local user shares a
// room with them (joined or invited on either side: an invited user's
// devices matter to those who will encrypt for them).
//
//   - /keys/query serves a cached list as it is, even one marked stale
//     (an update went missing and the resync has not worked yet: their
//     server may be down), and fills the cache from their server's
//     /user/devices the first time a tracked user is asked for. Users no
//     local user shares a room with are asked of their server each time
//     (/user/keys/query), and nothing is kept.
//   - m.device_list_update applies to the cached list when its prev_id
//     shows nothing was missed (every prev_id at or below the list's
//     stream ID); otherwise, or with nothing cached, the list is fetched
//     again in the background. m.signing_key_update replaces the
//     cross-signing keys.
//   - Each change, and each resync, is a device-list change for the
//     local users sharing a room with them (/sync's device_lists), so
//     their clients query the keys again.
//   - The list is dropped when no local user shares a room with them any
//     more (devicelists.go): their server stops telling this one, so it
//     would go stale unseen.

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/federation"
	"github.com/machi-chat/machi/storage"
)

// resyncTimeout bounds one background fetch of a device list.
const resyncTimeout = 30 * time.Second

// remoteDeviceLists serialises the updates of each remote user's cached
// list and runs at most one background resync per user.
type remoteDeviceLists struct {
	mu       sync.Mutex
	locks    map[string]*userLock
	resyncs  map[string]bool // user → resync running; true: run once more after it
	inFlight sync.WaitGroup
	ctx      context.Context
	cancel   context.CancelFunc
}

type userLock struct {
	sync.Mutex
	users int
}

func (r *remoteDeviceLists) init() {
	r.locks, r.resyncs = map[string]*userLock{}, map[string]bool{}
	r.ctx, r.cancel = context.WithCancel(context.Background())
}

func (r *remoteDeviceLists) close() {
	r.cancel()
	r.inFlight.Wait()
}

// lock takes userID's lock and returns its release.
func (r *remoteDeviceLists) lock(userID string) func() {
	r.mu.Lock()
	l := r.locks[userID]
	if l == nil {
		l = &userLock{}
		r.locks[userID] = l
	}
	l.users++
	r.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		r.mu.Lock()
		if l.users--; l.users == 0 {
			delete(r.locks, userID)
		}
		r.mu.Unlock()
	}
}

// sharesRoomLocally reports whether a local user shares a room with
// userID, joined or invited on either side.
func (s *Server) sharesRoomLocally(ctx context.Context, userID string) (bool, error) {
	theirs, err := s.rooms.UserRooms(ctx, userID)
	if err != nil {
		return false, err
	}
	for roomID, m := range theirs {
		if !sharing(m.Membership) {
			continue
		}
		members, err := s.store.RoomMemberships(ctx, roomID)
		if err != nil {
			return false, err
		}
		for _, mm := range members {
			if mm.UserID != userID && sharing(mm.Membership) && s.rooms.IsLocal(mm.UserID) {
				return true, nil
			}
		}
	}
	return false, nil
}

// sharing reports whether a membership counts as being in the room for
// device lists: joined, or invited (whoever encrypts for the room may
// share its keys with invited members).
func sharing(membership string) bool {
	return membership == spec.Join || membership == spec.Invite
}

// RemoteDeviceListUpdate implements federation.Local: another server's
// m.device_list_update for one of its users.
func (s *Server) RemoteDeviceListUpdate(ctx context.Context, u federation.DeviceListUpdate) error {
	tracked, err := s.sharesRoomLocally(ctx, u.UserID)
	if err != nil {
		return err
	}
	if !tracked {
		return nil // no local user shares a room with them: nothing kept, nobody to tell
	}
	release := s.remoteLists.lock(u.UserID)
	lists, err := s.store.RemoteDeviceLists(ctx, []string{u.UserID})
	if err != nil {
		release()
		return err
	}
	l, cached := lists[u.UserID]
	switch {
	case cached && u.StreamID <= l.StreamID:
		release()
		return nil // applied already, or older than the list fetched since
	case !cached || missedUpdate(u.PrevID, l.StreamID):
		if cached {
			err = s.store.MarkRemoteDeviceListStale(ctx, u.UserID)
		}
		release()
		s.resyncLater(u.UserID)
		return err
	}
	err = s.store.UpdateRemoteDevice(ctx, u.UserID, u.StreamID,
		storage.RemoteDevice{DeviceID: u.DeviceID, DisplayName: u.DisplayName, Keys: jsonObjectBytes(u.Keys)}, u.Deleted)
	release()
	if err != nil {
		return err
	}
	return s.deviceListChanged(ctx, u.UserID)
}

// missedUpdate reports whether an update's prev_id names one this server
// has not seen: one past the cached list's stream ID.
func missedUpdate(prev []int64, streamID int64) bool {
	for _, p := range prev {
		if p > streamID {
			return true
		}
	}
	return false
}

// RemoteSigningKeyUpdate implements federation.Local: another server's
// m.signing_key_update.
func (s *Server) RemoteSigningKeyUpdate(ctx context.Context, userID string, master, selfSigning json.RawMessage) error {
	tracked, err := s.sharesRoomLocally(ctx, userID)
	if err != nil || !tracked {
		return err
	}
	release := s.remoteLists.lock(userID)
	err = s.store.PutRemoteCrossSigningKeys(ctx, userID, jsonObjectBytes(master), jsonObjectBytes(selfSigning))
	release()
	if err != nil {
		return err
	}
	return s.deviceListChanged(ctx, userID)
}

func jsonObjectBytes(raw json.RawMessage) []byte {
	if len(raw) == 0 || raw[0] != '{' {
		return nil
	}
	return raw
}

// resyncLater fetches userID's device list in the background; asked while
// a fetch runs, it fetches once more after it.
func (s *Server) resyncLater(userID string) {
	r := &s.remoteLists
	r.mu.Lock()
	if _, running := r.resyncs[userID]; running {
		r.resyncs[userID] = true
		r.mu.Unlock()
		return
	}
	r.resyncs[userID] = false
	r.inFlight.Add(1)
	r.mu.Unlock()
	go func() {
		defer r.inFlight.Done()
		for {
			ctx, cancel := context.WithTimeout(r.ctx, resyncTimeout)
			if _, err := s.resyncDevices(ctx, userID); err != nil {
				s.log.Info("device list resync", "user", userID, "err", err)
				// Whatever changed is news even so: clients asking again
				// get the list as it is, or the failure.
				if err := s.deviceListChanged(ctx, userID); err != nil {
					s.log.Warn("device list change after a failed resync", "user", userID, "err", err)
				}
			}
			cancel()
			r.mu.Lock()
			if !r.resyncs[userID] || r.ctx.Err() != nil {
				delete(r.resyncs, userID)
				r.mu.Unlock()
				return
			}
			r.resyncs[userID] = false
			r.mu.Unlock()
		}
	}()
}

// resyncDevices fetches userID's device list from their server and, while
// a local user shares a room with them, caches it and records the change.
func (s *Server) resyncDevices(ctx context.Context, userID string) (storage.RemoteDeviceList, error) {
	if s.remote == nil {
		return storage.RemoteDeviceList{}, errors.New("this server does not federate")
	}
	got, err := s.remote.UserDevices(ctx, userID)
	if err != nil {
		release := s.remoteLists.lock(userID)
		_ = s.store.MarkRemoteDeviceListStale(ctx, userID)
		release()
		return storage.RemoteDeviceList{}, err
	}
	l := storage.RemoteDeviceList{UserID: userID, StreamID: got.StreamID, Devices: []storage.RemoteDevice{},
		Master: jsonObjectBytes(got.Master), SelfSigning: jsonObjectBytes(got.Self)}
	for _, d := range got.Devices {
		if d.DeviceID == "" {
			continue
		}
		l.Devices = append(l.Devices, storage.RemoteDevice{DeviceID: d.DeviceID, DisplayName: d.DisplayName, Keys: jsonObjectBytes(d.Keys)})
	}
	tracked, err := s.sharesRoomLocally(ctx, userID)
	if err != nil || !tracked {
		return l, err
	}
	release := s.remoteLists.lock(userID)
	lists, err := s.store.RemoteDeviceLists(ctx, []string{userID})
	if err == nil {
		if old, ok := lists[userID]; ok && !old.Stale && old.StreamID > l.StreamID {
			release()
			return old, nil // updated past this answer meanwhile
		}
		err = s.store.PutRemoteDeviceList(ctx, l)
	}
	release()
	if err != nil {
		return l, err
	}
	return l, s.deviceListChanged(ctx, userID)
}

// forgetRemoteDevices drops the cached lists of those of users (other
// servers' users) no local user shares a room with any more.
func (s *Server) forgetRemoteDevices(ctx context.Context, users []string) error {
	for _, u := range users {
		if s.rooms.IsLocal(u) {
			continue
		}
		tracked, err := s.sharesRoomLocally(ctx, u)
		if err != nil {
			return err
		}
		if !tracked {
			release := s.remoteLists.lock(u)
			err = s.store.DeleteRemoteDeviceList(ctx, u)
			release()
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// remoteKeys answers /keys/query for other servers' users (server → user
// → devices): tracked users from the cache (filled from their server the
// first time), the others from their servers. It returns the failures by
// server.
func (s *Server) remoteKeys(ctx context.Context, timeout time.Duration, remote map[string]map[string][]string, res *federation.KeysResult) map[string]any {
	var users []string
	for _, byUser := range remote {
		for u := range byUser {
			users = append(users, u)
		}
	}
	cached, err := s.store.RemoteDeviceLists(ctx, users)
	if err != nil {
		s.log.Warn("read cached device lists", "err", err)
		cached = map[string]storage.RemoteDeviceList{}
	}
	return s.askServers(ctx, timeout, sortedKeys(remote), func(ctx context.Context, server string) error {
		ask := map[string][]string{}
		var lists []storage.RemoteDeviceList
		var firstErr error
		for u, devices := range remote[server] {
			if l, ok := cached[u]; ok {
				if l.Stale {
					s.resyncLater(u) // served as it is meanwhile
				}
				lists = append(lists, l)
				continue
			}
			tracked, err := s.sharesRoomLocally(ctx, u)
			if err != nil || !tracked {
				ask[u] = devices
				continue
			}
			l, err := s.resyncDevices(ctx, u)
			if err != nil {
				firstErr = err
				continue
			}
			lists = append(lists, l)
		}
		var got federation.KeysResult
		if len(ask) > 0 {
			var err error
			if got, err = s.remote.QueryKeys(ctx, server, ask); err != nil {
				firstErr = err
			}
		}
		s.keysMu.Lock()
		defer s.keysMu.Unlock()
		for _, l := range lists {
			addCachedKeys(res, l, remote[server][l.UserID])
		}
		if len(ask) > 0 && firstErr == nil {
			res.Merge(got, ask)
		}
		return firstErr
	})
}

// addCachedKeys adds a cached list's keys to a /keys/query answer (only
// the devices asked for, if any are named).
func addCachedKeys(res *federation.KeysResult, l storage.RemoteDeviceList, devices []string) {
	out := map[string]json.RawMessage{}
	for _, d := range l.Devices {
		if d.Keys == nil || (len(devices) > 0 && !slices.Contains(devices, d.DeviceID)) {
			continue
		}
		out[d.DeviceID] = withDisplayName(d.Keys, d.DisplayName)
	}
	res.DeviceKeys[l.UserID] = out
	if l.Master != nil {
		res.MasterKeys[l.UserID] = l.Master
	}
	if l.SelfSigning != nil {
		res.SelfSigningKeys[l.UserID] = l.SelfSigning
	}
}
