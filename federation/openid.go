package federation

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"time"

	"github.com/machi-chat/machi/storage"
)

// OpenIDTokenLifetime is how long an OpenID token is good for: long
// enough for a widget or integration manager to check it once.
const OpenIDTokenLifetime = time.Hour

// OpenID issues the tokens a user hands a widget or an integration
// manager to prove who they are (client API's
// /user/{userId}/openid/request_token), and exchanges them for the user's
// ID (/_matrix/federation/v1/openid/userinfo, which machi serves on both
// listeners: an integration manager may reach either). Tokens are stored
// as their SHA-256, so they survive a restart and a database dump does not
// give them away.
type OpenID struct {
	Tokens storage.OpenIDTokens
	Now    func() time.Time // nil: time.Now
}

func (o OpenID) now() time.Time {
	if o.Now == nil {
		return time.Now()
	}
	return o.Now()
}

func openIDHash(tok string) string {
	sum := sha256.Sum256([]byte("machi-openid:" + tok))
	return hex.EncodeToString(sum[:])
}

// Issue makes a new token for userID (a local user the caller has
// authenticated) and returns it with its lifetime.
func (o OpenID) Issue(ctx context.Context, userID string) (token string, expiresIn time.Duration, err error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", 0, err
	}
	token = "moi_" + base64.RawURLEncoding.EncodeToString(b)
	now := o.now()
	if err := o.Tokens.PutOpenIDToken(ctx, openIDHash(token), userID, now.Add(OpenIDTokenLifetime).UnixMilli(), now.UnixMilli()); err != nil {
		return "", 0, err
	}
	return token, OpenIDTokenLifetime, nil
}

// ServeUserInfo serves GET /_matrix/federation/v1/openid/userinfo
// ?access_token=: the user ID the token was issued to, or 401
// M_UNKNOWN_TOKEN for a missing, unknown or expired token.
func (o OpenID) ServeUserInfo(w http.ResponseWriter, r *http.Request) {
	tok := r.URL.Query().Get("access_token")
	if tok == "" {
		writeError(w, newErr(http.StatusUnauthorized, "M_MISSING_TOKEN", "access_token is required"))
		return
	}
	userID, err := o.Tokens.OpenIDTokenUser(r.Context(), openIDHash(tok), o.now().UnixMilli())
	if errors.Is(err, storage.ErrNotFound) {
		writeError(w, newErr(http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "OpenID token unknown or expired"))
		return
	} else if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"sub": userID})
}
