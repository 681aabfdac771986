package clientapi

import (
	"net/http"

	"github.com/machi-chat/machi/federation"
)

// openID issues and checks OpenID tokens (federation.OpenID: the same
// tokens the federation listener's /openid/userinfo answers for).
func (s *Server) openID() federation.OpenID {
	return federation.OpenID{Tokens: s.store, Now: s.policy.Now}
}

// handleOpenIDRequestToken serves POST
// /_matrix/client/v3/user/{userId}/openid/request_token: a token the user
// hands a widget or an integration manager, which exchanges it at
// /_matrix/federation/v1/openid/userinfo for the user's ID. Users ask for
// themselves only.
func (s *Server) handleOpenIDRequestToken(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	if vars(r)["userId"] != dev.UserID {
		writeError(w, errForbidden("you can only request OpenID tokens for yourself"))
		return
	}
	if _, err := readObject(r); err != nil {
		writeError(w, err)
		return
	}
	if err := s.limiter.allow(dev.UserID); err != nil {
		writeError(w, err)
		return
	}
	tok, expiresIn, err := s.openID().Issue(r.Context(), dev.UserID)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"access_token": tok, "token_type": "Bearer",
		"matrix_server_name": s.cfg.ServerName, "expires_in": int(expiresIn.Seconds())})
}
