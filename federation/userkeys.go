package federation

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// keysHandlers answer other servers' questions about this server's users'
// end-to-end encryption keys.
type keysHandlers struct {
	f     *Federation
	local Local
}

// query serves POST /_matrix/federation/v1/user/keys/query.
func (k keysHandlers) query(w http.ResponseWriter, r *http.Request, _ spec.ServerName) {
	var req struct {
		DeviceKeys map[string][]string `json:"device_keys"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.DeviceKeys == nil {
		writeError(w, errMissingParam("device_keys is required"))
		return
	}
	if !allLocal(k, w, req.DeviceKeys) {
		return
	}
	res, err := k.local.LocalKeys(r.Context(), req.DeviceKeys, "")
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// claim serves POST /_matrix/federation/v1/user/keys/claim.
func (k keysHandlers) claim(w http.ResponseWriter, r *http.Request, _ spec.ServerName) {
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.OneTimeKeys == nil {
		writeError(w, errMissingParam("one_time_keys is required"))
		return
	}
	if !allLocal(k, w, req.OneTimeKeys) {
		return
	}
	res, err := k.local.ClaimLocalKeys(r.Context(), req.OneTimeKeys)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"one_time_keys": res})
}

// devices serves GET /_matrix/federation/v1/user/devices/{userId}.
func (k keysHandlers) devices(w http.ResponseWriter, r *http.Request, _ spec.ServerName) {
	userID := vars(r)["userId"]
	if !k.isLocal(userID) {
		writeError(w, errInvalidParam("%s is not a user of this server", userID))
		return
	}
	if _, err := k.f.store.GetUser(r.Context(), userID); err != nil {
		writeError(w, err)
		return
	}
	res, err := k.local.LocalDevices(r.Context(), userID)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// allLocal refuses a question about another server's users: each server
// speaks for its own.
func allLocal[V any](k keysHandlers, w http.ResponseWriter, users map[string]V) bool {
	for u := range users {
		if !k.isLocal(u) {
			writeError(w, errInvalidParam("%s is not a user of this server", u))
			return false
		}
	}
	return true
}

func (k keysHandlers) isLocal(userID string) bool { return ofOrigin(userID, k.f.cfg.ServerName) }

// QueryKeys asks server for its users' keys (user → devices).
func (f *Federation) QueryKeys(ctx context.Context, server string, want map[string][]string) (KeysResult, error) {
	var res KeysResult
	err := f.signedRequest(ctx, http.MethodPost, server, "/_matrix/federation/v1/user/keys/query", map[string]any{"device_keys": want}, &res)
	if res.DeviceKeys == nil {
		res.DeviceKeys = map[string]map[string]json.RawMessage{}
	}
	return res, err
}

// ClaimKeys claims one-time keys of server's users (user → device →
// algorithm).
func (f *Federation) ClaimKeys(ctx context.Context, server string, want map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	var res struct {
		OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
	}
	err := f.signedRequest(ctx, http.MethodPost, server, "/_matrix/federation/v1/user/keys/claim", map[string]any{"one_time_keys": want}, &res)
	return res.OneTimeKeys, err
}

// UserDevices asks userID's server for their device list.
func (f *Federation) UserDevices(ctx context.Context, userID string) (DeviceList, error) {
	uid, err := spec.NewUserID(userID, true)
	if err != nil {
		return DeviceList{}, errInvalidParam("%q is not a user ID", userID)
	}
	var res DeviceList
	err = f.signedRequest(ctx, http.MethodGet, string(uid.Domain()), "/_matrix/federation/v1/user/devices/"+url.PathEscape(userID), nil, &res)
	return res, err
}

// signedRequest sends an X-Matrix-signed request and decodes the answer,
// keeping the JSON as the other server wrote it (keys carry signatures
// that must survive byte for byte).
func (f *Federation) signedRequest(ctx context.Context, method, server, path string, body, out any) error {
	req := fclient.NewFederationRequest(method, f.cfg.ServerName, spec.ServerName(server), path)
	if body != nil {
		if err := req.SetContent(body); err != nil {
			return err
		}
	}
	if err := req.Sign(f.cfg.ServerName, f.cfg.KeyID, f.cfg.Key); err != nil {
		return err
	}
	httpReq, err := req.HTTPRequest()
	if err != nil {
		return err
	}
	if err := f.client.DoRequestAndParseResponse(ctx, httpReq, out); err != nil {
		return remoteError(spec.ServerName(server), err)
	}
	return nil
}
