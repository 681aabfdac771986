// Package clientapi serves the Matrix client-server API
// (/_matrix/client/{r0,v3,v1}) and the Synapse-compatible admin registration
// endpoint. Handlers are thin: parse, authenticate, one call into rooms,
// storage or the sync engine, then map the error to a Matrix error.
package clientapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/machi-chat/machi/federation"
	"github.com/machi-chat/machi/internal/config"
	"github.com/machi-chat/machi/internal/recent"
	"github.com/machi-chat/machi/media"
	"github.com/machi-chat/machi/policy"
	"github.com/machi-chat/machi/rooms"
	"github.com/machi-chat/machi/search"
	"github.com/machi-chat/machi/storage"
)

// maxBodyBytes bounds JSON request bodies (media uploads have their own limit).
const maxBodyBytes = 1 << 20

// Server is the client-server API.
type Server struct {
	cfg     *config.Config
	store   storage.Store
	rooms   *rooms.Service
	log     *slog.Logger
	limiter *rateLimiter
	typing  *Typing
	// presence is nil when presence is disabled.
	presence *Presence
	media    *media.Repo
	search   *search.Index
	policy   *policy.Engine
	audit    *AuditLog
	remote   Remote
	nonces   nonces

	enroll        enrollment
	loginTokens   loginTokens
	uiaSessions   uiaSessions
	registrations regSessions
	ignores       ignoreLists // m.ignored_user_list, per user
	notices       *notices
	push          *pusher
	eval          *evaluator

	toDeviceTxns *recent.Set // to-device transaction IDs
	receipts     receiptCache
	unread       unreadCache
	latest       *latest
	lazy         *lazyMembers // member events lazy-loading syncs sent (lazymembers.go)
	keyCounts    keyCounts
	keysMu       sync.Mutex // merging other servers' answers
	devLists     *deviceListTracker
	remoteLists  remoteDeviceLists // other servers' users' device lists (remotedevices.go)
	tagMu        sync.Mutex        // serialises read-modify-write of m.tag

	tokMu  sync.RWMutex
	tokens map[string]*Device // by token hash

	touches chan touch // last-seen updates, written in the background
	stopped chan struct{}

	presenceStop, presenceDone chan struct{}
}

// touch is a device seen at an address.
type touch struct {
	userID, deviceID, ip string
	at                   int64
}

// Device is an authenticated request's device.
type Device struct {
	UserID    string
	DeviceID  string
	IsAdmin   bool
	Class     policy.DeviceClass
	tokenHash string
	checked   time.Time // when the database last confirmed the token
	seen      atomic.Pointer[touch]
}

// key is the device's identity for transaction IDs and to-device.
func (d *Device) key() string { return d.UserID + "|" + d.DeviceID }

// actor is the device as policy sees it.
func (d *Device) actor() policy.Actor {
	return policy.Actor{Origin: policy.OriginClient, DeviceID: d.DeviceID, Class: d.Class}
}

// Remote is what the client API asks other servers (package federation);
// nil when federation is off.
type Remote interface {
	// Profile is a remote user's profile (field "" for all of it).
	Profile(ctx context.Context, userID, field string) (displayName, avatarURL string, err error)
	// QueryKeys asks server for its users' keys (user → devices).
	QueryKeys(ctx context.Context, server string, want map[string][]string) (federation.KeysResult, error)
	// ClaimKeys claims one-time keys of server's users (user → device →
	// algorithm).
	ClaimKeys(ctx context.Context, server string, want map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error)
	// SendToDevice queues to-device messages for other servers' users
	// (server → user → device → content); durable on return.
	SendToDevice(ctx context.Context, sender, eventType, messageID string, byServer map[string]map[string]map[string]json.RawMessage) error
	// JoinRoom joins a local user to a room this server is not in,
	// through one of servers.
	JoinRoom(ctx context.Context, userID, roomID string, servers []string, content map[string]any) error
	// Invite invites another server's user into a room here.
	Invite(ctx context.Context, actor policy.Actor, roomID, sender, invitee string, content json.RawMessage) error
	// InviteServers are the servers to join a room on another server
	// that userID was invited to (nil if not invited).
	InviteServers(ctx context.Context, userID, roomID string) []string
	// RejectInvite refuses userID's invite to a room on another server.
	RejectInvite(ctx context.Context, userID, roomID string) error
	// SendTyping and SendReceipt tell the room's other servers.
	SendTyping(ctx context.Context, roomID, userID string, typing bool, timeout time.Duration) error
	SendReceipt(ctx context.Context, roomID, userID, eventID, threadID string, ts int64) error
	// Backfill fetches up to limit events of history before the events
	// named from a server in the room; it returns how many were stored.
	Backfill(ctx context.Context, roomID string, before []string, limit int) (int, error)
	// QueryAlias asks another server which room its alias names.
	QueryAlias(ctx context.Context, alias string) (roomID string, servers []string, err error)
	// SendDeviceListUpdate tells the servers sharing a room with a local
	// user that one of their devices changed, at streamID (prev: the
	// user's update before it, 0 if none).
	SendDeviceListUpdate(ctx context.Context, userID, deviceID string, streamID, prev int64) error
	// SendSigningKeyUpdate tells them of the user's master and
	// self-signing keys.
	SendSigningKeyUpdate(ctx context.Context, userID string) error
	// UserDevices asks a remote user's server for their device list.
	UserDevices(ctx context.Context, userID string) (federation.DeviceList, error)
	// DownloadMedia fetches another server's media.
	DownloadMedia(ctx context.Context, server, mediaID string) (contentType, filename string, body io.ReadCloser, err error)
	// SendPresence tells the servers sharing a room with a local user of
	// their presence (content as m.presence carries it).
	SendPresence(ctx context.Context, userID string, content map[string]any) error
	// SendPresenceTo gives server the presence of local users (for a
	// server that has just joined a room with them).
	SendPresenceTo(ctx context.Context, server string, contents []map[string]any) error
	// PublicRooms asks server for its room directory (body: the POST
	// /publicRooms request).
	PublicRooms(ctx context.Context, server string, body json.RawMessage) (json.RawMessage, error)
}

// Deps are the services the client API runs on.
type Deps struct {
	Store  storage.Store
	Rooms  *rooms.Service
	Media  *media.Repo
	Search *search.Index // nil: no /search
	Policy *policy.Engine
	Audit  *AuditLog
	Log    *slog.Logger
	Remote Remote
}

// New returns the client API over the given services.
func New(cfg *config.Config, d Deps) *Server {
	s := &Server{
		cfg:          cfg,
		store:        d.Store,
		rooms:        d.Rooms,
		media:        d.Media,
		search:       d.Search,
		policy:       d.Policy,
		audit:        d.Audit,
		remote:       d.Remote,
		log:          d.Log,
		limiter:      newRateLimiter(cfg.RateLimits),
		typing:       NewTyping(d.Rooms.Notifier()),
		tokens:       map[string]*Device{},
		toDeviceTxns: recent.New(10000),
		latest:       newLatest(d.Rooms.Stream().Current()),
		lazy:         newLazyMembers(),
		touches:      make(chan touch, 256),
		stopped:      make(chan struct{}),
	}
	s.notices = newNotices(s)
	s.push = newPusher(s)
	s.eval = newEvaluator(s)
	d.Rooms.SetEvaluator(s.eval)
	s.wakePeekersOnCommit()
	s.remoteLists.init()
	s.devLists = newDeviceListTracker(s)
	go s.writeTouches()
	if cfg.Presence.Enabled {
		s.presence = NewPresence(time.Now)
		s.presenceStop, s.presenceDone = make(chan struct{}), make(chan struct{})
		go s.sweepPresence()
	}
	s.presenceForJoiningServers()
	return s
}

// Close stops the background writers; call it before closing the store.
func (s *Server) Close() {
	close(s.touches)
	<-s.stopped
	s.eval.close()
	s.push.close()
	s.devLists.close()
	s.remoteLists.close()
	if s.presenceStop != nil {
		close(s.presenceStop)
		<-s.presenceDone
	}
}

// writeTouches records devices' last-seen time and address.
func (s *Server) writeTouches() {
	defer close(s.stopped)
	for t := range s.touches {
		if err := s.store.TouchDevice(context.Background(), t.userID, t.deviceID, t.ip, t.at); err != nil && !isNotFound(err) {
			s.log.Warn("record device last seen", "user", t.userID, "device", t.deviceID, "err", err)
		}
	}
}

// seeDevice notes that dev made a request from ip: at most once a minute,
// or when the address changes, and never blocking the request.
func (s *Server) seeDevice(dev *Device, ip string) {
	now := time.Now().UnixMilli()
	if last := dev.seen.Load(); last != nil && last.ip == ip && now-last.at < 60_000 {
		return
	}
	t := &touch{userID: dev.UserID, deviceID: dev.DeviceID, ip: ip, at: now}
	dev.seen.Store(t)
	select {
	case s.touches <- *t:
	default: // the writer is behind: last-seen is approximate anyway
	}
}

type ctxKey int

const deviceKey ctxKey = 0

// DeviceFrom returns the authenticated device of a request (nil if none).
func DeviceFrom(ctx context.Context) *Device {
	d, _ := ctx.Value(deviceKey).(*Device)
	return d
}

// Handler builds the HTTP handler with every route.
func (s *Server) Handler() http.Handler {
	r := mux.NewRouter().UseEncodedPath()
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, newErr(http.StatusNotFound, "M_UNRECOGNIZED", "unrecognized request"))
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, newErr(http.StatusMethodNotAllowed, "M_UNRECOGNIZED", "method not allowed"))
	})
	s.routes(r)
	s.relationRoutes(r)
	s.mediaRoutes(r)
	s.adminRoutes(r, s.requireAdmin)
	return s.middleware(r)
}

// handle registers a client route under both /r0 and /v3, and under any
// other prefixes given (such as /_matrix/client/unstable).
func (s *Server) handle(r *mux.Router, method, path string, auth bool, h http.HandlerFunc, also ...string) {
	var hh http.Handler = h
	if auth {
		hh = s.requireAuth(h)
	}
	for _, prefix := range append([]string{"/_matrix/client/v3", "/_matrix/client/r0"}, also...) {
		r.Handle(prefix+path, hh).Methods(method)
	}
}

// middleware adds CORS (Element Web runs on another origin), request size
// limits, panic recovery and metrics.
func (s *Server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization")
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusOK)
			return
		}
		// Uploads have their own limit (media.max_upload_bytes).
		if !strings.HasPrefix(r.URL.Path, "/_matrix/media/") && !strings.HasPrefix(r.URL.Path, "/_matrix/client/v1/media/") {
			r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
		}
		start := time.Now()
		defer func() {
			if p := recover(); p != nil {
				s.log.Error("panic in handler", "path", r.URL.Path, "panic", p, "stack", string(debug.Stack()))
				writeError(w, newErr(http.StatusInternalServerError, "M_UNKNOWN", "internal error"))
			}
			requestSeconds.WithLabelValues(r.Method).Observe(time.Since(start).Seconds())
		}()
		next.ServeHTTP(w, r)
	})
}

var requestSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
	Namespace: "machi", Name: "client_request_seconds",
	Help:    "Client API request latency (long-polls included).",
	Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18),
}, []string{"method"})

// Collectors are the package's Prometheus metrics.
func Collectors() []prometheus.Collector { return []prometheus.Collector{requestSeconds} }

// requireAuth authenticates the access token (Authorization: Bearer, or the
// access_token query parameter).
func (s *Server) requireAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := ""
		if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
			tok = strings.TrimSpace(h[len("Bearer "):])
		} else if q := r.URL.Query().Get("access_token"); q != "" {
			tok = q
		}
		if tok == "" {
			writeError(w, newErr(http.StatusUnauthorized, "M_MISSING_TOKEN", "missing access token"))
			return
		}
		dev, err := s.authenticate(r.Context(), tok)
		if err != nil {
			writeError(w, err)
			return
		}
		s.seeDevice(dev, s.clientIP(r))
		if r.Method != http.MethodGet {
			s.noteActivity(r.Context(), dev.UserID)
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), deviceKey, dev)))
	})
}

func hashToken(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

// tokenRecheck bounds how long a cached token is trusted without reading
// the database again: changes this process makes drop the cache entry at
// once; changes made by another process (machi admin) take effect within
// this time.
const tokenRecheck = 10 * time.Second

// authenticate finds the device of a token, from memory when it can.
func (s *Server) authenticate(ctx context.Context, tok string) (*Device, error) {
	h := hashToken(tok)
	s.tokMu.RLock()
	dev, ok := s.tokens[h]
	s.tokMu.RUnlock()
	if ok && time.Since(dev.checked) < tokenRecheck {
		return dev, nil
	}
	d, err := s.store.DeviceByTokenHash(ctx, h)
	if err != nil {
		if isNotFound(err) {
			s.forgetTokens(h)
			return nil, newErr(http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "unknown or revoked access token")
		}
		return nil, err
	}
	u, err := s.store.GetUser(ctx, d.UserID)
	if err != nil || u.Deactivated {
		s.forgetTokens(h)
		return nil, newErr(http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "unknown or revoked access token")
	}
	if u.Suspended {
		s.forgetTokens(h)
		return nil, errLocked()
	}
	dev = &Device{UserID: d.UserID, DeviceID: d.DeviceID, IsAdmin: u.IsAdmin, Class: policy.DeviceClass(d.Class), tokenHash: h, checked: time.Now()}
	s.tokMu.Lock()
	s.tokens[h] = dev
	s.tokMu.Unlock()
	return dev, nil
}

// forgetTokens drops cached tokens so they stop working at once.
func (s *Server) forgetTokens(hashes ...string) {
	s.tokMu.Lock()
	defer s.tokMu.Unlock()
	for _, h := range hashes {
		delete(s.tokens, h)
	}
}

// forgetUserTokens drops every cached token of a user.
func (s *Server) forgetUserTokens(userID string) {
	s.tokMu.Lock()
	defer s.tokMu.Unlock()
	for h, d := range s.tokens {
		if d.UserID == userID {
			delete(s.tokens, h)
		}
	}
}

// InvalidateUser makes a user's cached tokens and flags be re-read: for the
// admin CLI and API after they change an account.
func (s *Server) InvalidateUser(userID string) { s.forgetUserTokens(userID) }

// errLocked is the error of a suspended account (spec: account locking):
// clients keep the session and tell the user to contact an admin.
func errLocked() *Error {
	e := newErr(http.StatusUnauthorized, "M_USER_LOCKED", "this account is suspended: ask an administrator (このアカウントは利用停止中です。管理者に連絡してください。)")
	e.Extra = map[string]any{"soft_logout": true}
	return e
}

// clientIP is the address a request came from (through trusted proxies),
// for rate limits, device classes and last-seen addresses.
func (s *Server) clientIP(r *http.Request) string {
	a := s.policy.ClientAddr(r.RemoteAddr, r.Header.Get("X-Forwarded-For"))
	if !a.IsValid() {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			return r.RemoteAddr
		}
		return host
	}
	return a.String()
}

// deviceClass is the class of a device logging in with request r.
func (s *Server) deviceClass(r *http.Request) policy.DeviceClass {
	return s.policy.Class(s.policy.ClientAddr(r.RemoteAddr, r.Header.Get("X-Forwarded-For")))
}

// vars returns the path variables, unescaped (the router matches encoded
// paths so state keys and IDs may contain '/').
func vars(r *http.Request) map[string]string {
	v := mux.Vars(r)
	for k, val := range v {
		if u, err := pathUnescape(val); err == nil {
			v[k] = u
		}
	}
	return v
}
