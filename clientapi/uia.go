package clientapi

import (
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"
)

// User-interactive authentication (spec: "User-interactive authentication
// API") for the requests that need the user to prove it is them again:
// removing devices, changing the password, deactivating, replacing
// cross-signing keys. machi offers one flow with one stage,
// m.login.password: the password of the account the access token belongs
// to. (Enrollment codes are for logging a phone in, not for this: the
// device asking already holds a token.)
//
// A session is the server's memory of one such request: a 401 hands one
// out, bound to the user and to the request's purpose (what it does and to
// what), so a session started to delete one device cannot delete another
// or change the password. Sessions live in memory, expire, and are bounded
// in number, overall and per user; a restart forgets them, which costs a
// client one more 401. A session that completed stays known until it
// expires, so that using it again is refused rather than started over.

const (
	uiaTTL         = 10 * time.Minute
	uiaMaxSessions = 10_000
	uiaMaxPerUser  = 16
	uiaStage       = "m.login.password"
)

type uiaSession struct {
	userID, purpose string
	expires         time.Time
	done            bool
}

type uiaSessions struct {
	mu      sync.Mutex
	m       map[string]*uiaSession
	perUser map[string]int
}

// start opens a session for userID's request with purpose.
func (u *uiaSessions) start(userID, purpose string, now time.Time) string {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil {
		u.m, u.perUser = map[string]*uiaSession{}, map[string]int{}
	}
	if len(u.m) >= uiaMaxSessions || u.perUser[userID] >= uiaMaxPerUser {
		u.sweep(now)
	}
	// Still full: the oldest goes, the user's own first, so that one user
	// opening sessions cannot push out everyone else's.
	for u.perUser[userID] >= uiaMaxPerUser {
		u.evictOldest(userID)
	}
	for len(u.m) >= uiaMaxSessions {
		u.evictOldest("")
	}
	id := randomToken(18)
	u.m[id] = &uiaSession{userID: userID, purpose: purpose, expires: now.Add(uiaTTL)}
	u.perUser[userID]++
	return id
}

// get returns a copy of a live session.
func (u *uiaSessions) get(id string, now time.Time) (uiaSession, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	s, ok := u.m[id]
	if !ok || !now.Before(s.expires) {
		return uiaSession{}, false
	}
	return *s, true
}

// finish marks a session completed; it reports false when it already was,
// so two requests racing on one session do not both go ahead.
func (u *uiaSessions) finish(id string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	s, ok := u.m[id]
	if !ok || s.done {
		return false
	}
	s.done = true
	return true
}

func (u *uiaSessions) sweep(now time.Time) {
	for id, s := range u.m {
		if !now.Before(s.expires) {
			u.drop(id, s)
		}
	}
}

// evictOldest drops the session that expires first (of userID's, or of
// all when userID is "").
func (u *uiaSessions) evictOldest(userID string) {
	var oldestID string
	var oldest *uiaSession
	for id, s := range u.m {
		if (userID == "" || s.userID == userID) && (oldest == nil || s.expires.Before(oldest.expires)) {
			oldestID, oldest = id, s
		}
	}
	if oldest != nil {
		u.drop(oldestID, oldest)
	}
}

func (u *uiaSessions) drop(id string, s *uiaSession) {
	delete(u.m, id)
	if u.perUser[s.userID]--; u.perUser[s.userID] <= 0 {
		delete(u.perUser, s.userID)
	}
}

// uiaAuth is the auth field of a request that uses UIA.
type uiaAuth struct {
	Type       string      `json:"type"`
	Session    string      `json:"session"`
	Identifier *identifier `json:"identifier"`
	User       string      `json:"user"` // deprecated form of identifier
	Password   string      `json:"password"`
}

// uia runs user-interactive auth for dev's request, whose purpose names
// what it does and to what. It reports whether the request may go ahead;
// when not, it has written the answer: a 401 with the flows and a session
// (with M_FORBIDDEN after a wrong password), or another error (403
// M_FORBIDDEN for an identifier naming another account).
func (s *Server) uia(w http.ResponseWriter, r *http.Request, dev *Device, purpose string, auth *uiaAuth) bool {
	now := time.Now()
	if auth == nil || (auth.Type == "" && auth.Session == "") {
		writeUIA(w, s.uiaSessions.start(dev.UserID, purpose, now), nil)
		return false
	}
	session := auth.Session
	if session != "" {
		sess, ok := s.uiaSessions.get(session, now)
		switch {
		case !ok:
			// Expired, forgotten at a restart, or never ours: start over.
			writeUIA(w, s.uiaSessions.start(dev.UserID, purpose, now),
				newErr(http.StatusUnauthorized, "M_UNKNOWN", "unknown or expired authentication session: authenticate again"))
			return false
		case sess.userID != dev.UserID || sess.purpose != purpose:
			writeError(w, errForbidden("this authentication session was started for another request: start again without it"))
			return false
		case sess.done:
			writeError(w, errForbidden("this authentication session has already been used"))
			return false
		}
	}
	if auth.Type == "" {
		// A session alone claims stages done out of band; machi has none.
		writeUIA(w, session, nil)
		return false
	}
	// A client may send the password without asking first; a session is
	// made only if it has to try again.
	retry := func(failed *Error) {
		if session == "" {
			session = s.uiaSessions.start(dev.UserID, purpose, now)
		}
		writeUIA(w, session, failed)
	}
	if auth.Type != uiaStage {
		retry(newErr(http.StatusUnauthorized, "M_UNRECOGNIZED", "authentication type %q is not offered: use %s", auth.Type, uiaStage))
		return false
	}
	if s.uiaOtherUser(dev, auth) {
		// Not a failed stage but a request this identity may not make
		// (the spec's "fails for a reason other than authentication"):
		// a 403 in the standard format, and the password is not checked,
		// so that this is no way to test another account's password.
		writeError(w, errForbidden("the identifier names another account: confirm with your own password"))
		return false
	}
	if err := s.uiaPassword(r, dev, auth); err != nil {
		var me *Error
		if errors.As(err, &me) && me.Code == "M_FORBIDDEN" {
			retry(me)
		} else {
			writeError(w, err)
		}
		return false
	}
	if session != "" && !s.uiaSessions.finish(session) {
		writeError(w, errForbidden("this authentication session has already been used"))
		return false
	}
	return true
}

// uiaOtherUser reports whether the stage's identifier names a user other
// than dev's (a localpart or a full user ID).
func (s *Server) uiaOtherUser(dev *Device, auth *uiaAuth) bool {
	name := auth.User
	if auth.Identifier != nil {
		if auth.Identifier.Type != "m.id.user" {
			return false
		}
		name = auth.Identifier.User
	}
	if strings.TrimSpace(name) == "" {
		return false
	}
	userID, err := s.userID(strings.TrimSpace(name))
	return err == nil && userID != dev.UserID
}

// uiaPassword checks the m.login.password stage: the password of dev's own
// account. The identifier may be left out; if given, it must name dev's user.
func (s *Server) uiaPassword(r *http.Request, dev *Device, auth *uiaAuth) error {
	if err := s.limiter.allow("uia:" + dev.UserID); err != nil {
		return err
	}
	id := identifier{Type: "m.id.user", User: auth.User}
	if auth.Identifier != nil {
		id = *auth.Identifier
	}
	if id.Type != "m.id.user" {
		return errInvalidParam("identifier type %q is not supported: use m.id.user", id.Type)
	}
	if id.User == "" {
		id.User = dev.UserID
	}
	if auth.Password == "" {
		return errMissingParam("auth.password is required")
	}
	if u, err := s.store.GetUser(r.Context(), dev.UserID); err != nil {
		return err
	} else if u.PasswordHash == "" {
		return errForbidden("this account has no password, so it cannot confirm this: ask an administrator")
	}
	userID, err := s.checkPassword(r.Context(), passwordAuth{Identifier: id, Password: auth.Password})
	if err != nil {
		return err
	}
	if userID != dev.UserID {
		return errForbidden("the password given is not for your account")
	}
	return nil
}

// writeUIA writes a 401 that asks for (more) authentication in session,
// with the error of a failed stage when there is one.
func writeUIA(w http.ResponseWriter, session string, failed *Error) {
	body := map[string]any{
		"flows":     []any{map[string]any{"stages": []string{uiaStage}}},
		"params":    map[string]any{},
		"session":   session,
		"completed": []string{},
	}
	if failed != nil {
		body["errcode"], body["error"] = failed.Code, failed.Msg
	}
	writeJSON(w, http.StatusUnauthorized, body)
}
