package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/rooms"
	"github.com/machi-chat/machi/storage"
)

// maxSyncTimeout bounds a long-poll.
const maxSyncTimeout = 2 * time.Minute

// handleSync serves GET /_matrix/client/v3/sync. A long-poll waits on the
// notifier, which every commit touching the user wakes at once; nothing
// polls.
func (s *Server) handleSync(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	q := r.URL.Query()
	filter, err := s.loadFilter(r, dev.UserID, q.Get("filter"))
	if err != nil {
		writeError(w, err)
		return
	}
	var since *syncToken
	if t := q.Get("since"); t != "" {
		st, err := parseSyncToken(t)
		if err != nil {
			writeError(w, err)
			return
		}
		since = &st
	}
	timeout := time.Duration(0)
	if t := q.Get("timeout"); t != "" {
		ms, err := strconv.ParseInt(t, 10, 64)
		if err != nil || ms < 0 {
			writeError(w, errInvalidParam("invalid timeout"))
			return
		}
		timeout = min(time.Duration(ms)*time.Millisecond, maxSyncTimeout)
	}
	fullState := q.Get("full_state") == "true"
	setPresence := q.Get("set_presence")
	switch setPresence {
	case "", presOnline, presUnavailable, presOffline:
	default:
		writeError(w, errInvalidParam("set_presence must be online, unavailable or offline"))
		return
	}
	defer s.notePresenceSync(r.Context(), dev.UserID, setPresence)()
	req := &syncRequest{dev: dev, since: since, filter: filter, fullState: fullState}
	lazyFrom := "" // the token lazy-loading's held members are looked up by
	if since != nil && !fullState {
		lazyFrom = q.Get("since")
	}
	if filter.Room.State.LazyLoadMembers {
		req.lazyHeld = s.lazy.held(dev.key(), lazyFrom)
	}

	var timer <-chan time.Time
	for {
		wake, release := s.rooms.Notifier().Listen(dev.UserID)
		body, empty, err := s.buildSync(r.Context(), req)
		if err != nil {
			release()
			writeError(w, err)
			return
		}
		if !empty || since == nil || fullState || timeout == 0 {
			release()
			if filter.Room.State.LazyLoadMembers {
				s.lazy.record(dev.key(), lazyFrom, req.nextBatch, req.lazySent)
			}
			writeJSON(w, 200, body)
			return
		}
		if timer == nil {
			t := time.NewTimer(timeout)
			defer t.Stop()
			timer = t.C
		}
		select {
		case <-wake:
			release()
		case <-timer:
			release()
			timeout = 0 // answer now, even if empty
		case <-r.Context().Done():
			release()
			return
		}
	}
}

type syncRequest struct {
	dev       *Device
	since     *syncToken
	filter    *Filter
	fullState bool
	ignored   ignoreSet // users whose events and invites are left out
	// Lazy-loading members: what the client holds at since, and what this
	// response sends (buildSync starts it afresh).
	lazyHeld, lazySent lazySent
	nextBatch          string // of the last response built
	// newMembers are users whose joins an incremental sync's timelines
	// show: their presence comes with it.
	newMembers map[string]bool
}

// Response shapes (sync.yaml).
type syncResponse struct {
	NextBatch   string         `json:"next_batch"`
	Rooms       syncRooms      `json:"rooms"`
	AccountData eventList      `json:"account_data"`
	Presence    eventList      `json:"presence"`
	ToDevice    eventList      `json:"to_device"`
	DeviceLists *deviceLists   `json:"device_lists,omitempty"`
	OTKCount    map[string]int `json:"device_one_time_keys_count"`
	Fallback    []string       `json:"device_unused_fallback_key_types"`
}

type deviceLists struct {
	Changed []string `json:"changed"`
	Left    []string `json:"left"`
}

type eventList struct {
	Events []json.RawMessage `json:"events"`
}

type syncRooms struct {
	Join   map[string]*joinedRoom  `json:"join"`
	Invite map[string]*invitedRoom `json:"invite"`
	Leave  map[string]*leftRoom    `json:"leave"`
	Knock  map[string]*knockedRoom `json:"knock"`
}

type timeline struct {
	Events    []json.RawMessage `json:"events"`
	Limited   bool              `json:"limited"`
	PrevBatch string            `json:"prev_batch,omitempty"`
}

type unreadCounts struct {
	Notifications int `json:"notification_count"`
	Highlights    int `json:"highlight_count"`
}

type roomSummary struct {
	Heroes  []string `json:"m.heroes,omitempty"`
	Joined  int      `json:"m.joined_member_count"`
	Invited int      `json:"m.invited_member_count"`
}

type joinedRoom struct {
	Summary     *roomSummary  `json:"summary,omitempty"`
	State       eventList     `json:"state"`
	Timeline    timeline      `json:"timeline"`
	Ephemeral   eventList     `json:"ephemeral"`
	AccountData eventList     `json:"account_data"`
	Unread      *unreadCounts `json:"unread_notifications,omitempty"`
	// UnreadThreads is sent when the filter asks for per-thread counts.
	UnreadThreads map[string]*unreadCounts `json:"unread_thread_notifications,omitempty"`
}

type invitedRoom struct {
	InviteState eventList `json:"invite_state"`
}

type knockedRoom struct {
	KnockState eventList `json:"knock_state"`
}

type leftRoom struct {
	State       eventList `json:"state"`
	Timeline    timeline  `json:"timeline"`
	AccountData eventList `json:"account_data"`
}

func newEventList() eventList { return eventList{Events: []json.RawMessage{}} }

// buildSync assembles one /sync response; empty reports that an
// incremental sync found nothing new.
func (s *Server) buildSync(ctx context.Context, req *syncRequest) ([]byte, bool, error) {
	dev := req.dev
	cur := s.rooms.SyncCeiling(dev.UserID, s.rooms.Stream().Current())
	typingNow := s.typing.Current()
	var presenceNow uint64
	if s.presence != nil {
		presenceNow = s.presence.Current()
	}
	from := syncToken{}
	if req.since != nil {
		from = *req.since
		// A token from before a restart may be ahead of us.
		from.pos = min(from.pos, cur)
		if from.typing > typingNow {
			from.typing = 0
		}
		if from.presence > presenceNow {
			from.presence = 0
		}
	}
	resp := &syncResponse{
		Rooms:       syncRooms{Join: map[string]*joinedRoom{}, Invite: map[string]*invitedRoom{}, Leave: map[string]*leftRoom{}, Knock: map[string]*knockedRoom{}},
		AccountData: newEventList(), Presence: newEventList(), ToDevice: newEventList(),
		OTKCount: map[string]int{},
	}
	empty := true
	req.newMembers = nil
	if req.filter.Room.State.LazyLoadMembers {
		req.lazySent = lazySent{}
	}

	// To-device first: when there are more than one response carries, the
	// whole response stops at the last one delivered.
	// The since token acknowledges what earlier responses delivered.
	if req.since != nil && s.latest.mayDelete(dev.key(), from.pos) {
		if err := s.store.DeleteToDevice(ctx, dev.UserID, dev.DeviceID, from.pos); err != nil {
			return nil, false, err
		}
		s.latest.markDeleted(dev.key(), from.pos)
	}
	const toDeviceLimit = 100
	var msgs []storage.ToDevice
	if s.latest.toDeviceAfter(dev.key(), from.pos) {
		var err error
		if msgs, err = s.store.ToDeviceSince(ctx, dev.UserID, dev.DeviceID, from.pos, cur, toDeviceLimit); err != nil {
			return nil, false, err
		}
	}
	if len(msgs) == toDeviceLimit {
		cur = msgs[len(msgs)-1].Pos
	}
	for _, m := range msgs {
		b, _ := json.Marshal(map[string]any{"sender": m.Sender, "type": m.Type, "content": json.RawMessage(m.Content)})
		resp.ToDevice.Events = append(resp.ToDevice.Events, b)
		empty = false
	}

	// Account data, global and per room.
	roomData := map[string][]json.RawMessage{}
	var ads []storage.AccountData
	if s.latest.accountDataAfter(dev.UserID, from.pos) {
		var err error
		if ads, err = s.store.AccountDataSince(ctx, dev.UserID, from.pos, cur); err != nil {
			return nil, false, err
		}
	}
	for _, ad := range ads {
		b, _ := json.Marshal(map[string]any{"type": ad.Type, "content": json.RawMessage(ad.Content)})
		if ad.RoomID == "" {
			if req.filter.AccountData.allows(ad.Type, "") {
				resp.AccountData.Events = append(resp.AccountData.Events, b)
				empty = false
			}
		} else if req.filter.Room.AccountData.allows(ad.Type, "") {
			roomData[ad.RoomID] = append(roomData[ad.RoomID], b)
		}
	}

	memberships, err := s.rooms.UserRooms(ctx, dev.UserID)
	if err != nil {
		return nil, false, err
	}
	if req.ignored, err = s.ignoredUsers(ctx, dev.UserID); err != nil {
		return nil, false, err
	}
	var joinedNow []string // rooms joined since the token
	for roomID, m := range memberships {
		if m.Pos > cur || !allowsRoom(req.filter.Room.Rooms, req.filter.Room.NotRooms, roomID) {
			continue // not yet visible at cur; the next sync has it
		}
		changed := req.since == nil || m.Pos > from.pos
		switch m.Membership {
		case spec.Join:
			// Joined since the token: the client has nothing of the room
			// yet. A membership change of one joined before (a new
			// displayname) is no join.
			newlyJoined := false
			if changed && req.since != nil {
				was, err := s.membershipAt(ctx, roomID, dev.UserID, from.pos)
				if err != nil {
					return nil, false, err
				}
				if newlyJoined = was != spec.Join; newlyJoined {
					joinedNow = append(joinedNow, roomID)
				}
			}
			jr, err := s.syncJoined(ctx, req, roomID, from, cur, req.since == nil || newlyJoined || req.fullState)
			if err != nil {
				return nil, false, err
			}
			if ad := roomData[roomID]; len(ad) > 0 {
				jr.AccountData.Events = ad
			}
			if req.since == nil || req.fullState || newlyJoined || len(jr.Timeline.Events) > 0 || len(jr.State.Events) > 0 ||
				len(jr.Ephemeral.Events) > 0 || len(jr.AccountData.Events) > 0 {
				resp.Rooms.Join[roomID] = jr
				empty = false
			}
		case spec.Invite:
			if changed {
				ir, err := s.syncInvited(ctx, roomID, m)
				if err != nil {
					return nil, false, err
				}
				if req.ignored[invitedBy(ir, dev.UserID)] {
					continue
				}
				resp.Rooms.Invite[roomID] = ir
				empty = false
			}
		case spec.Knock:
			if changed {
				ir, err := s.syncInvited(ctx, roomID, m)
				if err != nil {
					return nil, false, err
				}
				resp.Rooms.Knock[roomID] = &knockedRoom{KnockState: ir.InviteState}
				empty = false
			}
		case spec.Leave, spec.Ban:
			// Left rooms appear once, in the sync after the leave; an
			// initial sync shows them only with include_leave.
			if m.Forgotten || (req.since == nil && !req.filter.Room.IncludeLeave) || (req.since != nil && !changed) {
				continue
			}
			lr, err := s.syncLeft(ctx, req, roomID, m, from)
			if err != nil {
				return nil, false, err
			}
			lr.AccountData.Events = append(lr.AccountData.Events, roomData[roomID]...)
			resp.Rooms.Leave[roomID] = lr
			empty = false
		}
	}
	// Encryption: whose devices changed, and this device's key counts.
	if req.since != nil {
		changed, left, err := s.deviceLists(ctx, dev.UserID, from.pos, cur)
		if err != nil {
			return nil, false, err
		}
		if len(changed) > 0 || len(left) > 0 {
			resp.DeviceLists = &deviceLists{Changed: changed, Left: left}
			empty = false
		}
	}
	// Presence: nothing to look at unless some presence changed since the
	// token or new roommates came (a sync woken by a message skips it).
	if s.presence != nil && (req.since == nil || from.presence < presenceNow || len(joinedNow) > 0 || len(req.newMembers) > 0) {
		evs, err := s.syncPresence(ctx, req, memberships, joinedNow, from.presence, presenceNow)
		if err != nil {
			return nil, false, err
		}
		if len(evs) > 0 {
			resp.Presence.Events = evs
			empty = false
		}
	}
	counts, err := s.deviceKeyCounts(ctx, dev.UserID, dev.DeviceID)
	if err != nil {
		return nil, false, err
	}
	resp.OTKCount, resp.Fallback = counts.otk, counts.fallback
	resp.NextBatch = syncToken{pos: cur, typing: typingNow, presence: presenceNow}.String()
	req.nextBatch = resp.NextBatch
	body, err := json.Marshal(resp)
	return body, empty, err
}

// syncJoined builds a joined room's section. initial is set for initial
// and full-state syncs and for rooms joined since the token.
func (s *Server) syncJoined(ctx context.Context, req *syncRequest, roomID string, from syncToken, cur int64, initial bool) (*joinedRoom, error) {
	dev := req.dev
	tf := &req.filter.Room.Timeline
	lo := from.pos
	if initial {
		lo = 0
	}
	lo = max(lo, s.rooms.TimelineFloor(ctx, roomID))
	vis := s.visibility(ctx, dev.UserID, roomID).ignoring(req.ignored)
	shown, limited, gap, err := s.filteredTimeline(ctx, roomID, lo, cur, timelineLimit(tf), func(ev *rooms.Event) bool {
		return tf.allowsEvent(ev) && vis.allowsOrCurrent(ev)
	})
	if err != nil {
		return nil, err
	}
	jr := &joinedRoom{State: newEventList(), Ephemeral: newEventList(), AccountData: newEventList(),
		Timeline: timeline{Events: []json.RawMessage{}, Limited: limited}}
	before := len(shown)
	if shown, err = s.relatedOnly(ctx, tf, roomID, shown, cur); err != nil {
		return nil, err
	}
	gap = gap || len(shown) < before
	if !initial {
		for _, ev := range shown {
			if ev.Type() == spec.MRoomMember && *ev.StateKey() != dev.UserID && ev.Membership() == spec.Join {
				if req.newMembers == nil {
					req.newMembers = map[string]bool{}
				}
				req.newMembers[*ev.StateKey()] = true
			}
		}
	}
	if jr.Timeline.Events, err = s.bundled(ctx, dev, roomID, shown, cur); err != nil {
		return nil, err
	}
	// prev_batch is just before the first event shown, so that paging
	// back from it reaches every event the timeline left out.
	if len(shown) > 0 {
		jr.Timeline.PrevBatch = posToken(shown[0].Pos - 1)
	} else {
		jr.Timeline.PrevBatch = posToken(cur)
	}
	if jr.State.Events, err = s.roomState(ctx, req, roomID, shown, initial, gap, from.pos, cur); err != nil {
		return nil, err
	}
	if initial {
		// The summary counts the members now, not at the start of the
		// timeline, whose joins may be in the timeline itself.
		current, err := s.rooms.CurrentState(ctx, roomID)
		if err != nil {
			return nil, err
		}
		jr.Summary = summarize(current, dev.UserID)
	}
	// Ephemeral: typing and receipts.
	ef := &req.filter.Room.Ephemeral
	if users, changedAt := s.typing.InRoom(roomID); (initial && len(users) > 0) || changedAt > from.typing {
		if ef.allows("m.typing", "") {
			if users == nil {
				users = []string{}
			}
			b, _ := json.Marshal(map[string]any{"type": "m.typing", "content": map[string]any{"user_ids": users}})
			jr.Ephemeral.Events = append(jr.Ephemeral.Events, b)
		}
	}
	if ef.allows("m.receipt", "") {
		rfrom := from.pos
		if initial {
			rfrom = 0
		}
		if rfrom < cur {
			rs, err := s.roomReceipts(ctx, roomID, rfrom, cur)
			if err != nil {
				return nil, err
			}
			if b := receiptEvent(rs, dev.UserID); b != nil {
				jr.Ephemeral.Events = append(jr.Ephemeral.Events, b)
			}
		}
	}
	counts, err := s.roomCounts(ctx, dev.UserID, roomID, cur)
	if err != nil {
		return nil, err
	}
	if tf.UnreadThreadNotifications {
		jr.Unread, jr.UnreadThreads = &counts.main, counts.threads
	} else {
		jr.Unread = &counts.total
	}
	return jr, nil
}

// receiptEvent folds receipts into one m.receipt event; other users'
// private receipts are left out.
func receiptEvent(rs []storage.Receipt, userID string) json.RawMessage {
	content := map[string]map[string]map[string]map[string]any{}
	n := 0
	for _, r := range rs {
		if r.Type == "m.read.private" && r.UserID != userID {
			continue
		}
		byType, ok := content[r.EventID]
		if !ok {
			byType = map[string]map[string]map[string]any{}
			content[r.EventID] = byType
		}
		byUser, ok := byType[r.Type]
		if !ok {
			byUser = map[string]map[string]any{}
			byType[r.Type] = byUser
		}
		rec := map[string]any{"ts": r.TS}
		if r.ThreadID != "" {
			rec["thread_id"] = r.ThreadID
		}
		byUser[r.UserID] = rec
		n++
	}
	if n == 0 {
		return nil
	}
	b, _ := json.Marshal(map[string]any{"type": "m.receipt", "content": content})
	return b
}

// summarize computes the room summary: member counts and heroes.
func summarize(snap *rooms.Snapshot, userID string) *roomSummary {
	sum := &roomSummary{}
	var heroes []string
	snap.Each(func(ev *rooms.Event) {
		if ev.Type() != spec.MRoomMember {
			return
		}
		switch ev.Membership() {
		case spec.Join:
			sum.Joined++
		case spec.Invite:
			sum.Invited++
		default:
			return
		}
		if *ev.StateKey() != userID {
			heroes = append(heroes, *ev.StateKey())
		}
	})
	if snap.Get(spec.MRoomName, "") == nil && snap.Get(spec.MRoomCanonicalAlias, "") == nil {
		sort.Strings(heroes)
		if len(heroes) > 5 {
			heroes = heroes[:5]
		}
		sum.Heroes = heroes
	}
	return sum
}

// syncInvited builds an invited room's stripped state, which is also a
// knocked room's: the room's description and the user's own member event
// (with, for an invite, the inviter's).
func (s *Server) syncInvited(ctx context.Context, roomID string, m storage.Membership) (*invitedRoom, error) {
	snap, err := s.rooms.CurrentState(ctx, roomID)
	if errors.Is(err, rooms.ErrUnknownRoom) {
		return s.syncRemoteInvite(ctx, roomID, m)
	}
	if err != nil {
		return nil, err
	}
	ir := &invitedRoom{InviteState: newEventList()}
	for _, t := range []string{spec.MRoomCreate, spec.MRoomJoinRules, spec.MRoomName, spec.MRoomAvatar, spec.MRoomCanonicalAlias, spec.MRoomEncryption, spec.MRoomTopic} {
		if ev := snap.Get(t, ""); ev != nil {
			ir.InviteState.Events = append(ir.InviteState.Events, ev.StrippedJSON())
		}
	}
	inv := snap.Get(spec.MRoomMember, m.UserID)
	if inv == nil || inv.ID() != m.EventID {
		// Not the invite of the state here: an invite to a room this
		// server has left, kept as another server's invite.
		if ri, err := s.store.GetRemoteInvite(ctx, roomID, m.UserID); err == nil && ri.EventID == m.EventID {
			return s.syncRemoteInvite(ctx, roomID, m)
		}
	}
	if inv != nil {
		if sender := snap.Get(spec.MRoomMember, inv.Sender()); sender != nil && sender != inv {
			ir.InviteState.Events = append(ir.InviteState.Events, sender.StrippedJSON())
		}
		ir.InviteState.Events = append(ir.InviteState.Events, inv.StrippedJSON())
	}
	return ir, nil
}

// syncRemoteInvite is an invite to a room on another server: the state its
// server gave, and the invite.
func (s *Server) syncRemoteInvite(ctx context.Context, roomID string, m storage.Membership) (*invitedRoom, error) {
	inv, err := s.store.GetRemoteInvite(ctx, roomID, m.UserID)
	if err != nil {
		return nil, err
	}
	ir := &invitedRoom{InviteState: newEventList()}
	var state []json.RawMessage
	_ = json.Unmarshal(inv.InviteState, &state)
	ir.InviteState.Events = append(ir.InviteState.Events, state...)
	var ev struct {
		Content  json.RawMessage `json:"content"`
		Sender   string          `json:"sender"`
		StateKey string          `json:"state_key"`
		Type     string          `json:"type"`
	}
	if json.Unmarshal(inv.Event, &ev) == nil {
		stripped, _ := json.Marshal(ev)
		ir.InviteState.Events = append(ir.InviteState.Events, stripped)
	}
	return ir, nil
}

// syncLeft builds a left room's section: the timeline up to the leave,
// and the state at its start (all of it when the user joined since the
// token, the changes since the token otherwise).
func (s *Server) syncLeft(ctx context.Context, req *syncRequest, roomID string, m storage.Membership, from syncToken) (*leftRoom, error) {
	known := true
	if _, err := s.rooms.Version(ctx, roomID); errors.Is(err, rooms.ErrUnknownRoom) {
		known = false
	} else if err != nil {
		return nil, err
	}
	if !known || s.rooms.Departed(ctx, roomID) {
		// Maybe an invite to a room of another server this one is not in,
		// refused: the leave that refused it is the timeline.
		lr := &leftRoom{State: newEventList(), AccountData: newEventList(), Timeline: timeline{Events: []json.RawMessage{}}}
		leave, err := s.rooms.RemoteLeave(ctx, m)
		switch {
		case err == nil:
			if req.filter.Room.Timeline.allowsEvent(leave) {
				lr.Timeline.Events = append(lr.Timeline.Events, leave.ClientJSON(nowTime(), req.dev.key()))
			}
			return lr, nil
		case !errors.Is(err, storage.ErrNotFound):
			return nil, err
		case !known:
			return lr, nil // nothing kept: nothing to show but that it is left
		}
	}
	initial := req.since == nil || req.fullState
	if !initial {
		was, err := s.membershipAt(ctx, roomID, req.dev.UserID, from.pos)
		if err != nil {
			return nil, err
		}
		initial = was != spec.Join
	}
	lo := from.pos
	if req.since == nil {
		lo = 0
	}
	if floor := s.rooms.TimelineFloor(ctx, roomID); floor < m.Pos {
		lo = max(lo, floor)
	}
	vis := s.visibility(ctx, req.dev.UserID, roomID).ignoring(req.ignored)
	shown, limited, gap, err := s.filteredTimeline(ctx, roomID, min(lo, m.Pos), m.Pos, timelineLimit(&req.filter.Room.Timeline), func(ev *rooms.Event) bool {
		return req.filter.Room.Timeline.allowsEvent(ev) && vis.allows(ev)
	})
	if err != nil {
		return nil, err
	}
	lr := &leftRoom{State: newEventList(), AccountData: newEventList(), Timeline: timeline{Events: []json.RawMessage{}, Limited: limited}}
	before := len(shown)
	if shown, err = s.relatedOnly(ctx, &req.filter.Room.Timeline, roomID, shown, m.Pos); err != nil {
		return nil, err
	}
	gap = gap || len(shown) < before
	if lr.Timeline.Events, err = s.bundled(ctx, req.dev, roomID, shown, m.Pos); err != nil {
		return nil, err
	}
	if len(shown) > 0 {
		lr.Timeline.PrevBatch = posToken(shown[0].Pos - 1)
	}
	if lr.State.Events, err = s.roomState(ctx, req, roomID, shown, initial, gap, from.pos, m.Pos); err != nil {
		return nil, err
	}
	return lr, nil
}

// A filtered timeline reads back through at most timelineRounds batches to
// find the events its filter keeps: the first of limit events (all an
// unfiltered timeline needs), then from timelineBatch events, doubling.
const (
	timelineRounds = 8
	timelineBatch  = 32
)

// filteredTimeline returns the last limit events in (lo, hi] that keep
// accepts, oldest first. limited is the spec's: more events keep accepts
// are in the range than the limit let through (or the bounded search
// stopped before the range's start). gap says the range holds any event
// older than the first shown, kept or not: the client's state may then miss
// something the timeline does not show. A timeline filtered by type must
// still reach its limit, so when keep drops events it reads further back;
// when keep drops nothing (no filter) it is the one read it always was.
func (s *Server) filteredTimeline(ctx context.Context, roomID string, lo, hi int64, limit int, keep func(*rooms.Event) bool) (shown []*rooms.Event, limited, gap bool, err error) {
	if limit <= 0 {
		// No events wanted: limited and a gap when the range has any
		// (whether the filter would keep one is not worth a search).
		evs, _, err := s.rooms.RoomEvents(ctx, roomID, lo, hi, 1)
		return nil, len(evs) > 0, len(evs) > 0, err
	}
	batch := limit
	for round := 0; round < timelineRounds; round++ {
		if round > 0 {
			batch = max(batch*2, timelineBatch)
		}
		evs, more, err := s.rooms.RoomEvents(ctx, roomID, lo, hi, batch)
		if err != nil {
			return nil, false, false, err
		}
		if len(evs) == 0 {
			break
		}
		hi = evs[0].Pos - 1
		var kept []*rooms.Event
		for _, ev := range evs {
			if keep(ev) {
				kept = append(kept, ev)
			}
		}
		cut := false
		if need := limit - len(shown); len(kept) > need {
			kept, cut = kept[len(kept)-need:], true
		}
		shown = append(kept, shown...)
		limited = more || cut
		gap = more || len(shown) == 0 || evs[0] != shown[0]
		if len(shown) >= limit || !more {
			break
		}
	}
	return shown, limited, gap, nil
}
