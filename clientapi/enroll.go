package clientapi

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/machi-chat/machi/policy"
	"github.com/machi-chat/machi/storage"
)

// Enrollment codes (端末認証コード): an admin issues one for a user; the user
// types it into the phone once, with their password (m.login.password with
// org.machi.enrollment_code, or the SSO sign-in page), or alone as an
// m.login.token. A code is 12 characters from an alphabet without look-alikes
// (no 0/O, 1/I/L, U/V), shown as XXXX-XXXX-XXXX; about 59 bits. Only its
// SHA-256 is stored; it expires and works once; wrong tries are limited.

const codeAlphabet = "23456789ABCDEFGHJKMNPQRSTWXYZ"

// newEnrollmentCode returns a fresh code as shown to people.
func newEnrollmentCode() string {
	var b strings.Builder
	buf := make([]byte, 12)
	for i := 0; i < len(buf); {
		if _, err := rand.Read(buf[i : i+1]); err != nil {
			panic(err) // crypto/rand never fails on Linux
		}
		// Rejection sampling keeps the characters uniform.
		if int(buf[i]) < 256-256%len(codeAlphabet) {
			buf[i] = codeAlphabet[int(buf[i])%len(codeAlphabet)]
			i++
		}
	}
	for i, c := range buf {
		if i > 0 && i%4 == 0 {
			b.WriteByte('-')
		}
		b.WriteByte(c)
	}
	return b.String()
}

// normalizeCode accepts a code as people type it: any case, with or
// without hyphens and spaces, full-width characters from a Japanese IME.
func normalizeCode(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= '！' && r <= '～' { // full-width ASCII
			r -= '！' - '!'
		}
		switch {
		case r == '-' || r == ' ' || r == '　' || r == 'ー' || r == '－':
			continue
		case r >= 'a' && r <= 'z':
			r -= 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

func hashCode(code string) string {
	sum := sha256.Sum256([]byte("machi-enrollment:" + normalizeCode(code)))
	return hex.EncodeToString(sum[:])
}

// enrollment counts wrong codes per user (and per address, for codes sent
// alone) so that codes cannot be guessed.
type enrollment struct {
	mu    sync.Mutex
	fails map[string][]time.Time
}

// blocked reports whether key has used up its tries; retry is how long
// until the oldest counted failure leaves the window.
func (e *enrollment) blocked(key string, now time.Time, c policy.EnrollmentConfig) (bool, time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	recent := e.prune(key, now, c.FailureWindow.D())
	if len(recent) < c.MaxFailures {
		return false, 0
	}
	return true, recent[0].Add(c.FailureWindow.D()).Sub(now)
}

func (e *enrollment) fail(key string, now time.Time, window time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.fails == nil {
		e.fails = map[string][]time.Time{}
	}
	e.fails[key] = append(e.prune(key, now, window), now)
}

func (e *enrollment) prune(key string, now time.Time, window time.Duration) []time.Time {
	list := e.fails[key]
	i := 0
	for i < len(list) && now.Sub(list[i]) >= window {
		i++
	}
	list = list[i:]
	if len(list) == 0 {
		delete(e.fails, key)
	}
	return list
}

func deviceCodeRequired() *policy.Denial {
	return &policy.Denial{
		RuleID: policy.RuleDeviceCodeRequired,
		JA:     "この端末で利用するには、管理者が発行した端末認証コードが必要です。管理者に発行を依頼してください。",
		EN:     "This device needs an enrollment code issued by an administrator. Please ask your administrator for one.",
	}
}

func deviceCodeInvalid(why string) *policy.Denial {
	ja, en := "端末認証コードが正しくありません。", "The enrollment code is not valid."
	switch why {
	case "expired":
		ja, en = "端末認証コードの有効期限が切れています。", "The enrollment code has expired."
	case "used":
		ja, en = "端末認証コードは使用済みです。", "The enrollment code has already been used."
	}
	return &policy.Denial{RuleID: policy.RuleDeviceCodeInvalid,
		JA: ja + "管理者に新しいコードを依頼してください。", EN: en + " Please ask your administrator for a new one."}
}

func deviceCodeTries(retry time.Duration) *policy.Denial {
	return &policy.Denial{RuleID: policy.RuleDeviceCodeTries, RetryAfter: retry,
		JA: "端末認証コードの入力に続けて失敗したため、しばらく入力できません。",
		EN: "Too many wrong enrollment codes; please wait before trying again."}
}

// useCode checks and spends userID's enrollment code for deviceID.
func (s *Server) useCode(ctx context.Context, userID, code, deviceID string) error {
	now := s.policy.Now()
	cfg := s.policy.Config().Enrollment
	subject := policy.Subject{UserID: userID, DeviceID: deviceID, What: "login"}
	key := "user:" + userID
	if blocked, retry := s.enroll.blocked(key, now, cfg); blocked {
		return s.policy.Deny(ctx, subject, deviceCodeTries(retry))
	}
	hash := hashCode(code)
	_, err := s.store.UseEnrollmentCode(ctx, userID, hash, deviceID, now.UnixMilli())
	if err == nil {
		return nil
	}
	if !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	s.enroll.fail(key, now, cfg.FailureWindow.D())
	why := ""
	if codes, err := s.store.ListEnrollmentCodes(ctx, userID); err == nil {
		for _, c := range codes {
			if c.CodeHash != hash {
				continue
			}
			if c.UsedTS != 0 {
				why = "used"
			} else if c.ExpiresTS <= now.UnixMilli() {
				why = "expired"
			}
		}
	}
	return s.policy.Deny(ctx, subject, deviceCodeInvalid(why))
}

// loginGrant is what a login token (from the SSO sign-in page) stands for.
type loginGrant struct {
	userID   string
	enrolled bool // an enrollment code was spent on the page
	expires  time.Time
}

// loginTokens are short-lived, single-use login tokens, kept in memory: a
// restart within their two minutes means signing in again.
type loginTokens struct {
	mu sync.Mutex
	m  map[string]loginGrant
}

const loginTokenTTL = 2 * time.Minute

func (l *loginTokens) issue(g loginGrant) string {
	tok := "mlt_" + randomToken(24)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]loginGrant{}
	}
	now := time.Now()
	for k, v := range l.m {
		if now.After(v.expires) {
			delete(l.m, k)
		}
	}
	l.m[tok] = g
	return tok
}

func (l *loginTokens) take(tok string) (loginGrant, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	g, ok := l.m[tok]
	delete(l.m, tok)
	if ok && time.Now().After(g.expires) {
		return g, false
	}
	return g, ok
}

// loginWithToken handles m.login.token: a login token from the sign-in
// page, or an enrollment code on its own. It returns the user.
func (s *Server) loginWithToken(ctx context.Context, r *http.Request, token, deviceID string, class policy.DeviceClass) (string, error) {
	if token == "" {
		return "", errMissingParam("token is required")
	}
	if strings.HasPrefix(token, "mlt_") {
		g, ok := s.loginTokens.take(token)
		if !ok {
			return "", errForbidden("the login token is invalid or has expired: sign in again")
		}
		if err := s.loginAllowed(ctx, g.userID); err != nil {
			return "", err
		}
		if !g.enrolled && s.policy.EnrollmentRequired(class) {
			return "", s.policy.Deny(ctx, policy.Subject{UserID: g.userID, DeviceID: deviceID, What: "login"}, deviceCodeRequired())
		}
		return g.userID, nil
	}
	// An enrollment code alone: the code names its user.
	now := s.policy.Now()
	cfg := s.policy.Config().Enrollment
	key := "addr:" + s.clientIP(r)
	subject := policy.Subject{DeviceID: deviceID, What: "login", Target: s.clientIP(r)}
	if blocked, retry := s.enroll.blocked(key, now, cfg); blocked {
		return "", s.policy.Deny(ctx, subject, deviceCodeTries(retry))
	}
	c, err := s.store.EnrollmentCodeByHash(ctx, hashCode(token), now.UnixMilli())
	if errors.Is(err, storage.ErrNotFound) {
		s.enroll.fail(key, now, cfg.FailureWindow.D())
		return "", s.policy.Deny(ctx, subject, deviceCodeInvalid(""))
	} else if err != nil {
		return "", err
	}
	if err := s.loginAllowed(ctx, c.UserID); err != nil {
		return "", err
	}
	if err := s.useCode(ctx, c.UserID, token, deviceID); err != nil {
		return "", err
	}
	return c.UserID, nil
}

// loginAllowed refuses logins of suspended and deactivated accounts.
func (s *Server) loginAllowed(ctx context.Context, userID string) error {
	u, err := s.store.GetUser(ctx, userID)
	if err != nil || u.Deactivated {
		return errForbidden("this account is not active")
	}
	if u.Suspended {
		return errLocked()
	}
	return nil
}
