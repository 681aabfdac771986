// Package federation serves and speaks the Matrix server-server API: the
// federation listener (HTTPS), this server's signing keys and the key
// notary, X-Matrix request signatures in both directions, and the queries
// other servers make. The policy's federation allow-list guards both
// directions: a server off it is refused on the way in and never contacted
// on the way out.
//
//	other server ──HTTPS──▶ Handler ─▶ authenticate (allow-list, X-Matrix,
//	                                   key ring) ─▶ query handlers
//	clientapi ─▶ Federation.QueryProfile… ─▶ fclient (signs) ─▶ transport
//	                                   (allow-list, peers/discovery, TLS)
package federation

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/internal/config"
	"github.com/machi-chat/machi/internal/recent"
	"github.com/machi-chat/machi/policy"
	"github.com/machi-chat/machi/rooms"
	"github.com/machi-chat/machi/storage"
)

// Config is what federation needs to know about this server.
type Config struct {
	ServerName spec.ServerName
	KeyID      gomatrixserverlib.KeyID
	Key        ed25519.PrivateKey
	Federation config.Federation
	// Version is machi's version, for /_matrix/federation/v1/version.
	Version string
	// Now is the clock (tests move it); nil means time.Now.
	Now func() time.Time
}

// Store is what federation reads and writes.
type Store interface {
	storage.ServerKeys
	storage.Outbox
	storage.RemoteInvites
	storage.OpenIDTokens
	GetUser(ctx context.Context, userID string) (storage.User, error)
	GetAlias(ctx context.Context, alias string) (string, error)
	ListDevices(ctx context.Context, userID string) ([]storage.Device, error)
	GetDevice(ctx context.Context, userID, deviceID string) (storage.Device, error)
	DeviceKeys(ctx context.Context, want map[string][]string) (map[string]map[string][]byte, error)
	CrossSigningKeys(ctx context.Context, userIDs []string) (map[string]map[string][]byte, error)
}

// Federation is the server-server API, both directions.
type Federation struct {
	cfg     Config
	public  ed25519.PublicKey
	store   Store
	rooms   *rooms.Service
	policy  *policy.Engine
	log     *slog.Logger
	now     func() time.Time
	own     *ownKeys
	tr      *transport
	client  fclient.FederationClient
	keyRing *gomatrixserverlib.KeyRing
	sender  *sender
	txns    *recent.Set
}

// New sets federation up; caBundle is the resolved path of the extra CAs.
func New(ctx context.Context, cfg Config, caBundle string, store Store, rs *rooms.Service, pol *policy.Engine, log *slog.Logger) (*Federation, error) {
	f := &Federation{cfg: cfg, public: cfg.Key.Public().(ed25519.PublicKey), store: store, rooms: rs, policy: pol, log: log, now: cfg.Now}
	if f.now == nil {
		f.now = time.Now
	}
	f.own = &ownKeys{f: f}
	tr, err := newTransport(cfg.Federation.Peers, cfg.Federation.Discovery, caBundle, f.allowed)
	if err != nil {
		return nil, err
	}
	f.tr = tr
	f.client = fclient.NewFederationClient(
		[]*fclient.SigningIdentity{{ServerName: cfg.ServerName, KeyID: cfg.KeyID, PrivateKey: cfg.Key}},
		fclient.WithTransport(tr), fclient.WithTimeout(30*time.Second), fclient.WithUserAgent("machi/"+cfg.Version))
	f.keyRing = &gomatrixserverlib.KeyRing{KeyDatabase: keyDB{f}, KeyFetchers: []gomatrixserverlib.KeyFetcher{keyFetcher{f}}}
	f.txns = recent.New(4096)
	if f.sender, err = newSender(ctx, f); err != nil {
		return nil, err
	}
	rs.OnOutbox(func(dests []string) {
		for _, d := range dests {
			f.sender.poke(d)
		}
	})
	return f, nil
}

// Close stops the senders (what they had not delivered stays queued) and
// lets go of idle connections to other servers.
func (f *Federation) Close() {
	f.sender.close()
	f.tr.close()
}

// allowed is the allow-list, with this server always allowed to itself.
func (f *Federation) allowed(ctx context.Context, server string) *policy.Denial {
	if spec.ServerName(server) == f.cfg.ServerName {
		return nil
	}
	return f.policy.AllowServer(ctx, server)
}

// Local is what other servers may ask of this server's users, answered
// by the client API's own code (so both APIs give the same answers).
type Local interface {
	LocalKeys(ctx context.Context, want map[string][]string, requester string) (KeysResult, error)
	ClaimLocalKeys(ctx context.Context, want map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error)
	LocalDevices(ctx context.Context, userID string) (DeviceList, error)
	// DeliverToDevice hands to-device messages (user → device, "*" for
	// all) to local devices.
	DeliverToDevice(ctx context.Context, sender, eventType string, messages map[string]map[string]json.RawMessage) error
	// ApplyTyping and ApplyReceipt show another server's user's typing
	// and read receipt in a room both servers are in.
	ApplyTyping(ctx context.Context, roomID, userID string, typing bool, timeout time.Duration) error
	ApplyReceipt(ctx context.Context, roomID, userID, eventID, threadID string, ts int64) error
	// RemoteDeviceListUpdate applies another server's m.device_list_update
	// for one of its users.
	RemoteDeviceListUpdate(ctx context.Context, u DeviceListUpdate) error
	// RemoteSigningKeyUpdate applies another server's m.signing_key_update
	// (a key nil when the EDU left it out).
	RemoteSigningKeyUpdate(ctx context.Context, userID string, master, selfSigning json.RawMessage) error
	// ApplyRemotePresence shows another server's user's presence.
	ApplyRemotePresence(ctx context.Context, userID, presence, statusMsg string, lastActiveAgo int64, active bool)
	// OpenMedia opens a local file of the media repository.
	OpenMedia(ctx context.Context, mediaID string) (storage.MediaItem, io.ReadCloser, error)
	// PublicRooms is a page of this server's room directory (body: the
	// POST /publicRooms request), as the client API answers it.
	PublicRooms(ctx context.Context, body json.RawMessage) (json.RawMessage, error)
}

// Handler serves the federation listener's routes.
func (f *Federation) Handler(local Local) http.Handler {
	r := mux.NewRouter().UseEncodedPath()
	r.HandleFunc("/_matrix/key/v2/server", f.handleServerKeys).Methods(http.MethodGet)
	r.HandleFunc("/_matrix/key/v2/server/{keyId}", f.handleServerKeys).Methods(http.MethodGet) // deprecated form
	r.HandleFunc("/_matrix/key/v2/query", f.handleKeyQuery).Methods(http.MethodPost)
	r.HandleFunc("/_matrix/key/v2/query/{serverName}", f.handleKeyQuery).Methods(http.MethodGet)
	r.HandleFunc("/_matrix/key/v2/query/{serverName}/{keyId}", f.handleKeyQuery).Methods(http.MethodGet) // deprecated form
	r.HandleFunc("/_matrix/federation/v1/version", f.handleVersion).Methods(http.MethodGet)
	r.HandleFunc("/_matrix/federation/v1/openid/userinfo", OpenID{Tokens: f.store, Now: f.now}.ServeUserInfo).Methods(http.MethodGet)
	r.Handle("/_matrix/federation/v1/query/profile", f.authed(f.handleQueryProfile)).Methods(http.MethodGet)
	r.Handle("/_matrix/federation/v1/query/directory", f.authed(f.handleQueryDirectory)).Methods(http.MethodGet)
	r.Handle("/_matrix/federation/v1/publicRooms", f.authed(publicRoomsHandler(local))).Methods(http.MethodGet, http.MethodPost)
	k := keysHandlers{f: f, local: local}
	r.Handle("/_matrix/federation/v1/user/keys/query", f.authed(k.query)).Methods(http.MethodPost)
	r.Handle("/_matrix/federation/v1/user/keys/claim", f.authed(k.claim)).Methods(http.MethodPost)
	r.Handle("/_matrix/federation/v1/user/devices/{userId}", f.authed(k.devices)).Methods(http.MethodGet)
	r.Handle("/_matrix/federation/v1/send/{txnId}", f.authed(txnHandler{f: f, local: local}.send)).Methods(http.MethodPut)
	r.Handle("/_matrix/federation/v1/make_join/{roomId}/{userId}", f.authed(f.roomACL(f.handleMakeJoin))).Methods(http.MethodGet)
	r.Handle("/_matrix/federation/v2/send_join/{roomId}/{eventId}", f.authed(f.roomACL(f.handleSendJoin))).Methods(http.MethodPut)
	r.Handle("/_matrix/federation/v1/send_join/{roomId}/{eventId}", f.authed(f.roomACL(v1Answer(f.handleSendJoin)))).Methods(http.MethodPut)
	r.Handle("/_matrix/federation/v1/get_missing_events/{roomId}", f.authed(f.roomACL(f.handleMissingEvents))).Methods(http.MethodPost)
	r.Handle("/_matrix/federation/v1/event/{eventId}", f.authed(f.handleEvent)).Methods(http.MethodGet)
	r.Handle("/_matrix/federation/v1/backfill/{roomId}", f.authed(f.roomACL(f.handleBackfill))).Methods(http.MethodGet)
	r.Handle("/_matrix/federation/v1/state/{roomId}", f.authed(f.roomACL(f.handleState(false)))).Methods(http.MethodGet)
	r.Handle("/_matrix/federation/v1/state_ids/{roomId}", f.authed(f.roomACL(f.handleState(true)))).Methods(http.MethodGet)
	r.Handle("/_matrix/federation/v1/event_auth/{roomId}/{eventId}", f.authed(f.roomACL(f.handleEventAuth))).Methods(http.MethodGet)
	r.Handle("/_matrix/federation/v1/media/download/{mediaId}", f.authed(f.handleMediaDownload(local))).Methods(http.MethodGet)
	r.Handle("/_matrix/federation/v2/invite/{roomId}/{eventId}", f.authed(f.roomACL(f.handleInvite))).Methods(http.MethodPut)
	r.Handle("/_matrix/federation/v1/invite/{roomId}/{eventId}", f.authed(f.roomACL(v1Answer(f.handleInviteV1)))).Methods(http.MethodPut)
	r.Handle("/_matrix/federation/v1/make_leave/{roomId}/{userId}", f.authed(f.roomACL(f.handleMakeLeave))).Methods(http.MethodGet)
	r.Handle("/_matrix/federation/v2/send_leave/{roomId}/{eventId}", f.authed(f.roomACL(f.handleSendLeave))).Methods(http.MethodPut)
	r.Handle("/_matrix/federation/v1/send_leave/{roomId}/{eventId}", f.authed(f.roomACL(v1Answer(f.handleSendLeave)))).Methods(http.MethodPut)
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, newErr(http.StatusNotFound, "M_UNRECOGNIZED", "unrecognized federation request"))
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, newErr(http.StatusMethodNotAllowed, "M_UNRECOGNIZED", "method not allowed here"))
	})
	return r
}

// handleVersion serves GET /_matrix/federation/v1/version.
func (f *Federation) handleVersion(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"server": map[string]string{"name": "machi", "version": f.cfg.Version}})
}

// handleQueryProfile serves GET /_matrix/federation/v1/query/profile
// ?user_id=&field=: a local user's display name and avatar.
func (f *Federation) handleQueryProfile(w http.ResponseWriter, r *http.Request, _ spec.ServerName) {
	q := r.URL.Query()
	userID, field := q.Get("user_id"), q.Get("field")
	uid, err := spec.NewUserID(userID, true)
	switch {
	case userID == "":
		writeError(w, errMissingParam("user_id is required"))
		return
	case err != nil:
		writeError(w, errInvalidParam("user_id %q is not a user ID", userID))
		return
	case uid.Domain() != f.cfg.ServerName:
		writeError(w, errInvalidParam("%s is not a user of this server", userID))
		return
	case field != "" && field != "displayname" && field != "avatar_url":
		writeError(w, errInvalidParam("field must be displayname or avatar_url"))
		return
	}
	u, err := f.store.GetUser(r.Context(), userID)
	if errors.Is(err, storage.ErrNotFound) || err == nil && u.Deactivated {
		writeError(w, errNotFound("no profile for %s", userID))
		return
	} else if err != nil {
		writeError(w, err)
		return
	}
	out := map[string]string{}
	if u.DisplayName != "" && field != "avatar_url" {
		out["displayname"] = u.DisplayName
	}
	if u.AvatarURL != "" && field != "displayname" {
		out["avatar_url"] = u.AvatarURL
	}
	writeJSON(w, http.StatusOK, out)
}

// Profile asks userID's server for their profile (field "" for all).
func (f *Federation) Profile(ctx context.Context, userID, field string) (displayName, avatarURL string, err error) {
	uid, err := spec.NewUserID(userID, true)
	if err != nil {
		return "", "", fmt.Errorf("query profile: %w", err)
	}
	res, err := f.client.LookupProfile(ctx, f.cfg.ServerName, uid.Domain(), userID, field)
	if err != nil {
		return "", "", remoteError(uid.Domain(), err)
	}
	return res.DisplayName, res.AvatarURL, nil
}

// RemoteError is what another server answered, or why it could not be
// asked; clientapi turns it into the client's Matrix error.
type RemoteError struct {
	Server string
	Status int    // the remote answer's HTTP status; 0 if none came
	Code   string // its errcode
	Msg    string
	// Extra are the answer's other fields (such as room_version with
	// M_INCOMPATIBLE_ROOM_VERSION).
	Extra map[string]any
	// Pass marks a refusal the client should get as it came (status,
	// errcode, Extra): the other server's answer to what the client asked
	// (a make_join of a join), not to something this server did.
	Pass bool
}

// PassThrough reports whether the client gets the answer as it came.
func (e *RemoteError) PassThrough() bool { return e.Pass }

func (e *RemoteError) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("%s could not be reached: %s", e.Server, e.Msg)
	}
	return fmt.Sprintf("%s answered %d %s: %s", e.Server, e.Status, e.Code, e.Msg)
}

// RemoteAnswer is the remote answer's status, errcode and message (status
// 0 when none came), for the client API's error mapping.
func (e *RemoteError) RemoteAnswer() (status int, code, msg string) { return e.Status, e.Code, e.Msg }

// RemoteExtra are the remote answer's fields besides errcode and error.
func (e *RemoteError) RemoteExtra() map[string]any { return e.Extra }

// remoteError maps a federation client error: a policy denial stays one.
func remoteError(server spec.ServerName, err error) error {
	var denial *policy.Denial
	if errors.As(err, &denial) {
		return denial
	}
	var httpErr gomatrix.HTTPError
	if errors.As(err, &httpErr) {
		e := &RemoteError{Server: string(server), Status: httpErr.Code, Msg: httpErr.Message}
		var resp gomatrix.RespError
		if errors.As(httpErr.WrappedError, &resp) {
			e.Code, e.Msg = resp.ErrCode, resp.Err
		}
		var fields map[string]any
		if json.Unmarshal(httpErr.Contents, &fields) == nil {
			delete(fields, "errcode")
			delete(fields, "error")
			if len(fields) > 0 {
				e.Extra = fields
			}
		}
		return e
	}
	return &RemoteError{Server: string(server), Msg: err.Error()}
}

// handleQueryDirectory serves GET /_matrix/federation/v1/query/directory
// ?room_alias=: the room a local alias names, and the servers in it.
func (f *Federation) handleQueryDirectory(w http.ResponseWriter, r *http.Request, _ spec.ServerName) {
	alias := r.URL.Query().Get("room_alias")
	if alias == "" {
		writeError(w, errMissingParam("room_alias is required"))
		return
	}
	if !strings.HasPrefix(alias, "#") || !strings.HasSuffix(alias, ":"+string(f.cfg.ServerName)) {
		writeError(w, errInvalidParam("%q is not an alias of this server", alias))
		return
	}
	roomID, err := f.store.GetAlias(r.Context(), alias)
	if errors.Is(err, storage.ErrNotFound) {
		writeError(w, errNotFound("no room alias %s", alias))
		return
	} else if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"room_id": roomID,
		"servers": append([]string{string(f.cfg.ServerName)}, f.rooms.Servers(r.Context(), roomID)...)})
}

// QueryAlias asks the alias's server which room it names and which servers
// are in it.
func (f *Federation) QueryAlias(ctx context.Context, alias string) (roomID string, servers []string, err error) {
	_, server, ok := strings.Cut(alias, ":")
	if !ok || !strings.HasPrefix(alias, "#") {
		return "", nil, errInvalidParam("%q is not a room alias", alias)
	}
	var res struct {
		RoomID  string   `json:"room_id"`
		Servers []string `json:"servers"`
	}
	if err := f.signedRequest(ctx, http.MethodGet, server, "/_matrix/federation/v1/query/directory?room_alias="+url.QueryEscape(alias), nil, &res); err != nil {
		return "", nil, err
	}
	if res.RoomID == "" {
		return "", nil, &RemoteError{Server: server, Status: http.StatusBadGateway, Msg: "answered without a room ID"}
	}
	return res.RoomID, res.Servers, nil
}
