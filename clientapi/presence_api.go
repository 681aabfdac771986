package clientapi

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/rooms"
	"github.com/machi-chat/machi/storage"
)

// maxStatusMsg bounds a status message, in bytes.
const maxStatusMsg = 1024

// LoadPresence restores the presence users set by hand before a restart.
func (s *Server) LoadPresence(ctx context.Context) error {
	if s.presence == nil {
		return nil
	}
	list, err := s.store.AllPresence(ctx)
	if err != nil {
		return err
	}
	s.presence.Load(list)
	return nil
}

// forgetPresence drops a deactivated account's presence (the store drops
// its row with the account).
func (s *Server) forgetPresence(userID string) {
	if s.presence != nil {
		s.presence.Forget(userID)
	}
}

// handlePutPresence serves PUT /_matrix/client/v3/presence/{userId}/status.
// Idempotent: setting the presence one has changes nothing but the time of
// last activity (and stores nothing). With presence disabled the request
// is checked and ignored.
func (s *Server) handlePutPresence(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	if vars(r)["userId"] != dev.UserID {
		writeError(w, errForbidden("you can only set your own presence"))
		return
	}
	var req struct {
		Presence  *string `json:"presence"`
		StatusMsg *string `json:"status_msg"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.Presence == nil {
		writeError(w, errMissingParam("presence is required"))
		return
	}
	switch *req.Presence {
	case presOnline, presUnavailable, presOffline:
	default:
		writeError(w, errInvalidParam("presence must be online, unavailable or offline"))
		return
	}
	if req.StatusMsg != nil && len(*req.StatusMsg) > maxStatusMsg {
		writeError(w, errInvalidParam("status_msg is longer than %d bytes", maxStatusMsg))
		return
	}
	if s.presence == nil {
		writeJSON(w, 200, map[string]any{})
		return
	}
	state, changed := s.presence.Set(dev.UserID, *req.Presence, req.StatusMsg)
	if !changed {
		// Clients repeat themselves; the stored copy only has to survive
		// a restart, so a newer activity time is not worth a write.
		writeJSON(w, 200, map[string]any{})
		return
	}
	if err := s.store.PutPresence(r.Context(), state); err != nil {
		writeError(w, err)
		return
	}
	s.wakePresence(r.Context(), dev.UserID)
	writeJSON(w, 200, map[string]any{})
}

// handleGetPresence serves GET /_matrix/client/v3/presence/{userId}/status.
// Every local account's presence is visible to every local user (staff see
// each other, as in the user directory); remote users' is not known.
func (s *Server) handleGetPresence(w http.ResponseWriter, r *http.Request) {
	userID := vars(r)["userId"]
	if _, err := spec.NewUserID(userID, true); err != nil {
		writeError(w, errInvalidParam("invalid user ID %q", userID))
		return
	}
	if s.presence == nil {
		writeError(w, errNotFound("presence is disabled on this server"))
		return
	}
	if !s.rooms.IsLocal(userID) {
		writeError(w, errNotFound("no presence is known for %s", userID))
		return
	}
	if u, err := s.store.GetUser(r.Context(), userID); err != nil || u.Deactivated {
		if err == nil || isNotFound(err) {
			err = errNotFound("no presence is known for %s", userID)
		}
		writeError(w, err)
		return
	}
	writeJSON(w, 200, presenceContent(s.presence.Get(userID), time.Now()))
}

// presenceContent is a presence as GET and m.presence show it.
func presenceContent(v presenceView, now time.Time) map[string]any {
	c := map[string]any{"presence": v.Presence, "currently_active": v.Active}
	if v.LastActive > 0 {
		c["last_active_ago"] = max(0, now.UnixMilli()-v.LastActive)
	}
	if v.StatusMsg != "" {
		c["status_msg"] = v.StatusMsg
	}
	return c
}

// notePresenceSync marks the user of a /sync online (or idle) and returns
// what to call when the sync ends.
func (s *Server) notePresenceSync(ctx context.Context, userID, setPresence string) func() {
	if s.presence == nil {
		return func() {}
	}
	if s.presence.SyncStarted(userID, setPresence) {
		s.wakePresence(ctx, userID)
	}
	return func() { s.presence.SyncEnded(userID) }
}

// noteActivity records that the user did something.
func (s *Server) noteActivity(ctx context.Context, userID string) {
	if s.presence != nil && s.presence.Active(userID) {
		s.wakePresence(ctx, userID)
	}
}

// wakePresence wakes the long-polls of everyone who sees userID's
// presence: themself and the members of the rooms they are in.
func (s *Server) wakePresence(ctx context.Context, userID string) {
	// The change is made: tell everyone even if the client that made it
	// has gone.
	ctx = context.WithoutCancel(ctx)
	audience := map[string]bool{userID: true}
	if err := s.roommates(ctx, userID, audience); err != nil {
		s.log.Warn("find who sees a presence change", "user", userID, "err", err)
	}
	users := make([]string, 0, len(audience))
	for u := range audience {
		users = append(users, u)
	}
	s.rooms.Notifier().Wake(users...)
	s.wakePeekers(ctx, userID)
	if s.remote != nil && s.rooms.IsLocal(userID) {
		content := presenceContent(s.presence.Get(userID), time.Now())
		content["user_id"] = userID
		if err := s.remote.SendPresence(ctx, userID, content); err != nil {
			s.log.Warn("presence for other servers", "user", userID, "err", err)
		}
	}
}

// presenceForJoiningServers gives a server whose user joins a room the
// presence of the room's local members, and the room's other servers the
// presence of a local user who joins: they hear of changes from then on,
// but of what is already so only this way (an existing member online for
// hours changes nothing).
func (s *Server) presenceForJoiningServers() {
	if s.presence == nil || s.remote == nil {
		return
	}
	s.rooms.OnCommit(func(ev *rooms.Event, joined []string) {
		if ev.Type() != spec.MRoomMember || ev.Membership() != spec.Join || len(joined) == 0 {
			return
		}
		uid, err := spec.NewUserID(*ev.StateKey(), true)
		if err != nil {
			return
		}
		if ev.PrevMembership() == spec.Join {
			return // a profile change, not a join
		}
		if s.rooms.IsLocal(uid.String()) {
			// A local user joins: the room's other servers hear their
			// presence (they may have heard nothing of them before).
			if v := s.presence.Get(uid.String()); v.Presence != presOffline || v.StatusMsg != "" {
				c := presenceContent(v, time.Now())
				c["user_id"] = uid.String()
				go func() {
					if err := s.remote.SendPresence(context.Background(), uid.String(), c); err != nil {
						s.log.Warn("presence of a joining user", "user", uid.String(), "err", err)
					}
				}()
			}
			return
		}
		server := string(uid.Domain())
		now := time.Now()
		var contents []map[string]any
		for _, u := range joined {
			v := s.presence.Get(u)
			if v.Presence == presOffline && v.StatusMsg == "" {
				continue
			}
			c := presenceContent(v, now)
			c["user_id"] = u
			contents = append(contents, c)
		}
		if len(contents) == 0 {
			return
		}
		go func() { // OnCommit runs on the writer: queue it elsewhere
			if err := s.remote.SendPresenceTo(context.Background(), server, contents); err != nil {
				s.log.Warn("presence for a joining server", "server", server, "err", err)
			}
		}()
	})
}

// ApplyRemotePresence is another server's user's presence (federation's
// m.presence), shown to the local users sharing a room with them.
func (s *Server) ApplyRemotePresence(ctx context.Context, userID, presence, statusMsg string, lastActiveAgo int64, active bool) {
	if s.presence == nil {
		return
	}
	if s.presence.SetRemote(userID, presence, statusMsg, lastActiveAgo, active) {
		s.wakePresence(ctx, userID)
	}
}

// roommates adds the users joined to the rooms userID is joined to.
func (s *Server) roommates(ctx context.Context, userID string, into map[string]bool) error {
	ms, err := s.rooms.UserRooms(ctx, userID)
	if err != nil {
		return err
	}
	for roomID, m := range ms {
		if m.Membership != spec.Join {
			continue
		}
		snap, err := s.rooms.CurrentState(ctx, roomID)
		if err != nil {
			return err
		}
		// Remote users are kept too: they have no presence here and no
		// long-poll to wake, and telling them apart costs more than that.
		snap.Each(func(ev *rooms.Event) {
			if ev.Type() == spec.MRoomMember && !into[*ev.StateKey()] && ev.Membership() == spec.Join {
				into[*ev.StateKey()] = true
			}
		})
	}
	return nil
}

// sweepPresence turns idle and disconnected users' presence over until
// the server closes.
func (s *Server) sweepPresence() {
	defer close(s.presenceDone)
	t := time.NewTicker(presenceSweepEvery)
	defer t.Stop()
	for {
		select {
		case <-s.presenceStop:
			return
		case <-t.C:
			for _, u := range s.presence.Sweep() {
				s.wakePresence(context.Background(), u)
			}
		}
	}
}

// syncPresence lists the m.presence events a /sync carries: the changes
// in (from, to] of the user and of those who share a joined room with
// them, and what is known of the members of rooms joined since the token;
// on an initial sync, what is known of all of them.
func (s *Server) syncPresence(ctx context.Context, req *syncRequest, memberships map[string]storage.Membership, joinedNow []string, from, to uint64) ([]json.RawMessage, error) {
	userID := req.dev.UserID
	var views []presenceView
	if req.since == nil {
		var err error
		if views, err = s.initialPresence(ctx, userID, memberships, to); err != nil {
			return nil, err
		}
	} else {
		shown := map[string]bool{userID: true}
		if from < to {
			for _, v := range s.presence.ChangedIn(from, to) {
				ok, err := s.sharesRoom(ctx, v.UserID, userID, memberships)
				if err != nil {
					return nil, err
				}
				if ok {
					views = append(views, v)
					shown[v.UserID] = true
				}
			}
		}
		more, err := s.newRoommatesPresence(ctx, joinedNow, to, shown)
		if err != nil {
			return nil, err
		}
		views = append(views, more...)
		// Those who joined the user's rooms since the token: what is
		// known of them, even unchanged.
		for u := range req.newMembers {
			if !shown[u] {
				shown[u] = true
				views = append(views, s.presence.Get(u))
			}
		}
	}
	now := time.Now()
	var out []json.RawMessage
	for _, v := range views {
		if !req.filter.Presence.allows("m.presence", v.UserID) {
			continue
		}
		b, err := json.Marshal(map[string]any{"type": "m.presence", "sender": v.UserID, "content": presenceContent(v, now)})
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// initialPresence is what an initial /sync shows: the presence known of
// the user and of everyone in their joined rooms. It looks each known user
// up in the rooms' state, or walks the rooms' members when that is less
// work (reading a member event's membership costs a JSON parse).
func (s *Server) initialPresence(ctx context.Context, userID string, memberships map[string]storage.Membership, to uint64) ([]presenceView, error) {
	known := s.presence.Known(to)
	if len(known) == 0 {
		return nil, nil
	}
	var snaps []*rooms.Snapshot
	members := 0
	for roomID, m := range memberships {
		if m.Membership != spec.Join {
			continue
		}
		snap, err := s.rooms.CurrentState(ctx, roomID)
		if err != nil {
			return nil, err
		}
		snaps = append(snaps, snap)
		members += snap.Len()
	}
	var out []presenceView
	if len(known)*len(snaps) <= members {
		for _, v := range known {
			if v.UserID == userID || slices.ContainsFunc(snaps, func(snap *rooms.Snapshot) bool { return snap.Membership(v.UserID) == spec.Join }) {
				out = append(out, v)
			}
		}
		return out, nil
	}
	audience := map[string]bool{userID: true}
	if err := s.roommates(ctx, userID, audience); err != nil {
		return nil, err
	}
	for _, v := range known {
		if audience[v.UserID] {
			out = append(out, v)
		}
	}
	return out, nil
}

// newRoommatesPresence is what is known of the members of the rooms just
// joined, except those already shown.
func (s *Server) newRoommatesPresence(ctx context.Context, roomIDs []string, to uint64, shown map[string]bool) ([]presenceView, error) {
	if len(roomIDs) == 0 {
		return nil, nil
	}
	snaps := make([]*rooms.Snapshot, 0, len(roomIDs))
	for _, id := range roomIDs {
		snap, err := s.rooms.CurrentState(ctx, id)
		if err != nil {
			return nil, err
		}
		snaps = append(snaps, snap)
	}
	var out []presenceView
	for _, v := range s.presence.Known(to) {
		if !shown[v.UserID] && slices.ContainsFunc(snaps, func(snap *rooms.Snapshot) bool { return snap.Membership(v.UserID) == spec.Join }) {
			out = append(out, v)
		}
	}
	return out, nil
}

// sharesRoom reports whether other is the syncing user or joined to a room
// the syncing user (whose memberships are given) is joined to.
func (s *Server) sharesRoom(ctx context.Context, other, userID string, memberships map[string]storage.Membership) (bool, error) {
	if other == userID {
		return true, nil
	}
	theirs, err := s.rooms.UserRooms(ctx, other)
	if err != nil {
		return false, err
	}
	for roomID, m := range theirs {
		if m.Membership == spec.Join && memberships[roomID].Membership == spec.Join {
			return true, nil
		}
	}
	return false, nil
}
