package clientapi

import (
	"sync"
	"time"
)

// Registration sessions. POST /register answers a request without auth
// with a 401 and a session; the client then sends m.login.dummy with that
// session. The server remembers, per session, the parameters the first
// request gave (username, password, device, inhibit_login), for a client
// that sends only auth the second time, and the account the session made:
// the same request again after a lost answer logs into that account
// rather than making another or failing with M_USER_IN_USE. Sessions live
// in memory, expire, and are bounded in number; a restart forgets them,
// which costs a client one more 401.

const (
	regTTL         = 10 * time.Minute
	regMaxSessions = 10_000
)

type regParams struct {
	Username, Password, DeviceID, DisplayName string
	InhibitLogin                              *bool
}

type regSession struct {
	params  regParams
	userID  string // the account made, once made
	expires time.Time
}

type regSessions struct {
	mu sync.Mutex
	m  map[string]*regSession
}

// start opens a session remembering p.
func (rs *regSessions) start(p regParams, now time.Time) string {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.m == nil {
		rs.m = map[string]*regSession{}
	}
	if len(rs.m) >= regMaxSessions {
		for id, s := range rs.m {
			if !now.Before(s.expires) {
				delete(rs.m, id)
			}
		}
	}
	for len(rs.m) >= regMaxSessions { // still full: any one goes
		for id := range rs.m {
			delete(rs.m, id)
			break
		}
	}
	id := randomToken(18)
	rs.m[id] = &regSession{params: p, expires: now.Add(regTTL)}
	return id
}

// get returns a copy of a live session.
func (rs *regSessions) get(id string, now time.Time) (regSession, bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	s, ok := rs.m[id]
	if !ok || !now.Before(s.expires) {
		return regSession{}, false
	}
	return *s, true
}

// made records the account a session registered.
func (rs *regSessions) made(id, userID string) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if s, ok := rs.m[id]; ok {
		s.userID = userID
	}
}

// fill takes from the session what the request left out.
func (p *regParams) fill(from regParams) {
	if p.Username == "" {
		p.Username = from.Username
	}
	if p.Password == "" {
		p.Password = from.Password
	}
	if p.DeviceID == "" {
		p.DeviceID = from.DeviceID
	}
	if p.DisplayName == "" {
		p.DisplayName = from.DisplayName
	}
	if p.InhibitLogin == nil {
		p.InhibitLogin = from.InhibitLogin
	}
}
