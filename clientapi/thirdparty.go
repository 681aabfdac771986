package clientapi

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net/http"
	"strconv"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// machi runs no bridges (application services), so it knows no
// third-party protocols: the lookups below answer what the spec says for
// a protocol, location or user that is not there.

// handleThirdPartyProtocols serves GET /_matrix/client/v3/thirdparty/protocols.
func (s *Server) handleThirdPartyProtocols(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, 200, map[string]any{})
}

// handleThirdPartyProtocol serves GET
// /_matrix/client/v3/thirdparty/protocol/{protocol},
// /thirdparty/location/{protocol} and /thirdparty/user/{protocol}.
func (s *Server) handleThirdPartyProtocol(w http.ResponseWriter, r *http.Request) {
	writeError(w, errNotFound("unknown third-party protocol %q: this server has no bridges", vars(r)["protocol"]))
}

// handleThirdPartyLocation serves GET /_matrix/client/v3/thirdparty/location?alias=:
// a known alias has no third-party locations; an unknown one is 404.
func (s *Server) handleThirdPartyLocation(w http.ResponseWriter, r *http.Request) {
	alias := r.URL.Query().Get("alias")
	if alias == "" {
		writeError(w, errMissingParam("the alias query parameter is required"))
		return
	}
	if _, err := s.store.GetAlias(r.Context(), alias); err != nil {
		if isNotFound(err) {
			err = errNotFound("room alias %s not found", alias)
		}
		writeError(w, err)
		return
	}
	writeJSON(w, 200, []any{})
}

// handleThirdPartyUser serves GET /_matrix/client/v3/thirdparty/user?userid=:
// a known user has no third-party identities; an unknown one is 404.
func (s *Server) handleThirdPartyUser(w http.ResponseWriter, r *http.Request) {
	userID := r.URL.Query().Get("userid")
	if userID == "" {
		writeError(w, errMissingParam("the userid query parameter is required"))
		return
	}
	if _, err := spec.NewUserID(userID, true); err != nil {
		writeError(w, errInvalidParam("invalid user ID %q", userID))
		return
	}
	if !s.rooms.IsLocal(userID) {
		writeError(w, errNotFound("user %s not found", userID))
		return
	}
	if u, err := s.store.GetUser(r.Context(), userID); err != nil || u.Deactivated {
		if err == nil || isNotFound(err) {
			err = errNotFound("user %s not found", userID)
		}
		writeError(w, err)
		return
	}
	writeJSON(w, 200, []any{})
}

// handleTURNServer serves GET /_matrix/client/v3/voip/turnServer: the
// configured TURN URIs with static credentials, or with credentials made
// for this user the way coturn's REST API (use-auth-secret) checks them:
// username "<expiry unix seconds>:<user ID>", password
// base64(HMAC-SHA1(secret, username)). No TURN configured: {}.
func (s *Server) handleTURNServer(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	t := s.cfg.TURN
	if len(t.URIs) == 0 {
		writeJSON(w, 200, map[string]any{})
		return
	}
	ttl := t.TTL.D()
	user, pass := t.Username, t.Password
	if t.SharedSecret != "" {
		user, pass = turnCredentials(t.SharedSecret, dev.UserID, time.Now().Add(ttl))
	}
	writeJSON(w, 200, map[string]any{"username": user, "password": pass, "uris": t.URIs, "ttl": int64(ttl / time.Second)})
}

// turnCredentials are coturn REST API credentials for userID valid until
// expiry.
func turnCredentials(secret, userID string, expiry time.Time) (user, pass string) {
	user = strconv.FormatInt(expiry.Unix(), 10) + ":" + userID
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(user))
	return user, base64.StdEncoding.EncodeToString(mac.Sum(nil))
}
