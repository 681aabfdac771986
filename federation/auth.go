package federation

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// maxRequestBytes bounds an authenticated request's body; a transaction
// (50 PDUs of up to 64 KiB and 100 EDUs) may be larger.
const (
	maxRequestBytes = 1 << 20
	maxTxnBytes     = 8 << 20
)

// signedRequest is what an X-Matrix signature covers (spec: "Request
// Authentication").
type signedRequest struct {
	Method      string                                                 `json:"method"`
	URI         string                                                 `json:"uri"`
	Origin      spec.ServerName                                        `json:"origin"`
	Destination spec.ServerName                                        `json:"destination"`
	Content     json.RawMessage                                        `json:"content,omitempty"`
	Signatures  map[spec.ServerName]map[gomatrixserverlib.KeyID]string `json:"signatures"`
}

// authed wraps a handler of requests other servers sign: the origin must
// be on the allow-list (checked before its keys are fetched, so a server
// off the list is never contacted), the request must be for this server,
// and its signature must verify against the origin's keys.
func (f *Federation) authed(h func(w http.ResponseWriter, r *http.Request, origin spec.ServerName)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req := signedRequest{Method: r.Method, URI: r.URL.RequestURI()}
		for _, header := range r.Header.Values("Authorization") {
			scheme, origin, dest, keyID, sig := fclient.ParseAuthorization(header)
			if scheme != "X-Matrix" || origin == "" || keyID == "" || sig == "" {
				continue
			}
			if req.Origin != "" && origin != req.Origin {
				writeError(w, errUnauthorized("X-Matrix headers name more than one origin"))
				return
			}
			req.Origin, req.Destination = origin, dest
			if req.Signatures == nil {
				req.Signatures = map[spec.ServerName]map[gomatrixserverlib.KeyID]string{origin: {}}
			}
			req.Signatures[origin][keyID] = sig
		}
		if req.Origin == "" {
			writeError(w, errUnauthorized("missing Authorization: X-Matrix header"))
			return
		}
		if _, _, ok := spec.ParseAndValidateServerName(req.Origin); !ok {
			// A malformed header is a bad request (a port must be a
			// number: "localhost:http" is no server name).
			writeError(w, errInvalidParam("origin %q in the X-Matrix header is not a server name", req.Origin))
			return
		}
		if d := f.allowed(r.Context(), string(req.Origin)); d != nil {
			writeError(w, d)
			return
		}
		if req.Destination == "" {
			req.Destination = f.cfg.ServerName
		} else if req.Destination != f.cfg.ServerName {
			writeError(w, errUnauthorized("this server is %s, not %s", f.cfg.ServerName, req.Destination))
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxTxnBytes))
		if err != nil {
			writeError(w, err)
			return
		}
		if len(body) > 0 {
			if !json.Valid(body) {
				writeError(w, errNotJSON("the request body is not JSON"))
				return
			}
			req.Content = body
		}
		msg, err := json.Marshal(req)
		if err != nil {
			writeError(w, err)
			return
		}
		if err := f.verifySigned(r.Context(), req.Origin, msg); err != nil {
			writeError(w, err)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		f.sender.contacted(string(req.Origin))
		h(w, r, req.Origin)
	})
}
