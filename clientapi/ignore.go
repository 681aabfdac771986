package clientapi

import (
	"context"
	"encoding/json"
	"sync"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// Ignoring users (spec: "Ignoring Users"). A user's m.ignored_user_list
// account data names users whose events the server leaves out of what it
// sends them: the timelines of /sync and /messages, and invites. State
// events of ignored users are still sent, so that a room's name or members
// do not look different to the one who ignores. The lists are kept in
// memory once read, and replaced when the user writes the account data, so
// a sync right after the change applies it and a sync woken by a message
// reads no database for it.

const ignoredUserListType = "m.ignored_user_list"

// ignoreSet is the users one user ignores; nil ignores no one.
type ignoreSet map[string]bool

// hides reports whether ev is left out for the user: sent by someone they
// ignore and not a state event.
func (ig ignoreSet) hides(ev interface {
	Sender() string
	StateKey() *string
}) bool {
	return len(ig) > 0 && ev.StateKey() == nil && ig[ev.Sender()]
}

// ignoreLists caches every user's ignoreSet that has been read.
type ignoreLists struct {
	mu sync.Mutex
	m  map[string]ignoreSet
}

// parseIgnored reads m.ignored_user_list content: {"ignored_users":
// {userID: {}}}. Unreadable content ignores no one.
func parseIgnored(content []byte) ignoreSet {
	var c struct {
		Ignored map[string]json.RawMessage `json:"ignored_users"`
	}
	if json.Unmarshal(content, &c) != nil || len(c.Ignored) == 0 {
		return nil
	}
	set := make(ignoreSet, len(c.Ignored))
	for u := range c.Ignored {
		set[u] = true
	}
	return set
}

// ignoredUsers is the set of users userID ignores.
func (s *Server) ignoredUsers(ctx context.Context, userID string) (ignoreSet, error) {
	l := &s.ignores
	l.mu.Lock()
	set, ok := l.m[userID]
	l.mu.Unlock()
	if ok {
		return set, nil
	}
	raw, err := s.store.GetAccountData(ctx, userID, "", ignoredUserListType)
	if err != nil && !isNotFound(err) {
		return nil, err
	}
	if err == nil {
		set = parseIgnored(raw)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]ignoreSet{}
	}
	if cached, ok := l.m[userID]; ok {
		return cached, nil // written meanwhile: the write is newer
	}
	l.m[userID] = set
	return set, nil
}

// noteIgnored replaces userID's cached set after a write of their
// m.ignored_user_list.
func (s *Server) noteIgnored(userID string, content []byte) {
	l := &s.ignores
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]ignoreSet{}
	}
	l.m[userID] = parseIgnored(content)
}

// invitedBy is the sender of userID's invite among an invited room's
// stripped state, or "".
func invitedBy(ir *invitedRoom, userID string) string {
	for _, raw := range ir.InviteState.Events {
		var ev struct {
			Type     string  `json:"type"`
			StateKey *string `json:"state_key"`
			Sender   string  `json:"sender"`
		}
		if json.Unmarshal(raw, &ev) == nil && ev.Type == spec.MRoomMember && ev.StateKey != nil && *ev.StateKey == userID {
			return ev.Sender
		}
	}
	return ""
}
