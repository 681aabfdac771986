package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/policy"
	"github.com/machi-chat/machi/rooms"
	"github.com/machi-chat/machi/storage"
)

// Broadcast notices (一斉通知) go to each person's own server-notice room
// (the spec's server notices): a room the system user makes on the first
// notice, invites the person to and tags m.server_notice for them. Nobody
// is ever joined to anything automatically: the person accepts the invite
// in their client, like any other. There is no all-staff room.

// NoticesLocalpart is the system user that sends notices.
const NoticesLocalpart = "notices"

var adminActor = policy.Actor{Origin: policy.OriginAdmin}

type notices struct {
	s     *Server
	locks sync.Map // user ID → *sync.Mutex: one notice room per user
}

func newNotices(s *Server) *notices { return &notices{s: s} }

func (n *notices) sender() string { return "@" + NoticesLocalpart + ":" + n.s.cfg.ServerName }

// EnsureNoticesUser creates the system user if it does not exist. It has
// no password: nobody can log in as it.
func (s *Server) EnsureNoticesUser(ctx context.Context) error {
	id := s.notices.sender()
	if _, err := s.store.GetUser(ctx, id); err == nil {
		return nil
	} else if !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	if err := CreateUser(ctx, s.store, id, "", false, s.cfg.Registration.BcryptCost); err != nil && !errors.Is(err, storage.ErrConflict) {
		return err
	}
	return s.store.SetDisplayName(ctx, id, "お知らせ (Notices)")
}

// room returns userID's notice room with userID invited or joined, making
// the room on first use.
func (n *notices) room(ctx context.Context, userID string) (string, error) {
	mu, _ := n.locks.LoadOrStore(userID, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()

	roomID, err := n.s.store.GetNoticeRoom(ctx, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return n.create(ctx, userID)
	} else if err != nil {
		return "", err
	}
	// Someone who left their notice room is invited back.
	ms, err := n.s.rooms.UserRooms(ctx, userID)
	if err != nil {
		return "", err
	}
	if m, ok := ms[roomID]; !ok || (m.Membership != spec.Join && m.Membership != spec.Invite) {
		if _, err := n.s.setMembership(ctx, adminActor, roomID, n.sender(), userID, spec.Invite, ""); err != nil {
			return "", fmt.Errorf("re-invite to the notice room: %w", err)
		}
	}
	return roomID, nil
}

func (n *notices) create(ctx context.Context, userID string) (string, error) {
	name := "お知らせ (Notices)"
	topic := "市からの一斉通知 / Notices to all staff"
	sender := n.sender()
	// Only the system user writes; the person reads (and may send receipts).
	power, _ := json.Marshal(map[string]any{"users": map[string]int{sender: 100}, "events_default": 100, "invite": 100})
	roomID, err := n.s.rooms.CreateRoom(ctx, &rooms.CreateRequest{
		Creator: sender, Preset: "private_chat", Name: &name, Topic: &topic,
		Invite: []string{userID}, PowerOverride: power, Actor: adminActor,
	})
	if err != nil {
		return "", fmt.Errorf("create notice room: %w", err)
	}
	if err := n.s.putAccountData(ctx, userID, roomID, "m.tag", []byte(`{"tags":{"m.server_notice":{"order":0}}}`)); err != nil {
		return "", err
	}
	if err := n.s.store.PutNoticeRoom(ctx, userID, roomID); err != nil {
		return "", err
	}
	return roomID, nil
}

// send delivers one notice to one person.
func (n *notices) send(ctx context.Context, b storage.Broadcast, userID string) error {
	roomID, err := n.room(ctx, userID)
	if err != nil {
		return err
	}
	content, _ := json.Marshal(map[string]any{
		"msgtype": "m.server_notice", "server_notice_type": "org.machi.broadcast", "body": b.Body,
		"org.machi.broadcast_id": b.ID,
	})
	ev, err := n.s.rooms.Submit(ctx, &rooms.Request{RoomID: roomID, Sender: n.sender(), Type: "m.room.message", Content: content, Actor: adminActor})
	if err != nil {
		return err
	}
	return n.s.store.PutBroadcastDelivery(ctx, storage.BroadcastDelivery{BroadcastID: b.ID, UserID: userID, RoomID: roomID, EventID: ev.ID(), Pos: ev.Pos})
}

// recipients are the active accounts of a group, or of everyone.
func (n *notices) recipients(ctx context.Context, group string) ([]string, error) {
	users, err := n.s.store.ListUsers(ctx)
	if err != nil {
		return nil, err
	}
	var members []string
	if group != "" {
		if members, err = n.s.store.GroupMembers(ctx, group); err != nil {
			return nil, err
		}
	}
	var out []string
	for _, u := range users {
		if u.Deactivated || u.UserID == n.sender() || (group != "" && !slices.Contains(members, u.UserID)) {
			continue
		}
		out = append(out, u.UserID)
	}
	return out, nil
}

// broadcast sends b to every recipient, a few at a time, and returns the
// users it could not reach.
func (n *notices) broadcast(ctx context.Context, b storage.Broadcast, users []string) []string {
	const workers = 8
	var mu sync.Mutex
	var failed []string
	next := make(chan string)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := range next {
				if err := n.send(ctx, b, u); err != nil {
					n.s.log.Error("broadcast delivery failed", "broadcast", b.ID, "user", u, "err", err)
					mu.Lock()
					failed = append(failed, u)
					mu.Unlock()
				}
			}
		}()
	}
	for _, u := range users {
		next <- u
	}
	close(next)
	wg.Wait()
	slices.Sort(failed)
	return failed
}
