package clientapi

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/machi-chat/machi/storage"
)

// End-to-end encryption, server side: machi stores and hands out the keys
// clients publish, and tells each user's contacts when their devices
// change. Clients sign and verify; the server never sees plaintext.

// keyCounts caches each device's one-time key counts and unused fallback
// key types for /sync, which otherwise would query them on every wake-up.
type keyCounts struct {
	mu sync.Mutex
	m  map[string]deviceKeyCounts // "user|device"
}

type deviceKeyCounts struct {
	otk      map[string]int
	fallback []string
}

func (k *keyCounts) get(dev string) (deviceKeyCounts, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	c, ok := k.m[dev]
	return c, ok
}

func (k *keyCounts) put(dev string, c deviceKeyCounts) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil {
		k.m = map[string]deviceKeyCounts{}
	}
	k.m[dev] = c
}

func (k *keyCounts) forget(dev string) {
	k.mu.Lock()
	delete(k.m, dev)
	k.mu.Unlock()
}

// deviceKeyCounts returns a device's counts, from the cache when it can.
func (s *Server) deviceKeyCounts(ctx context.Context, userID, deviceID string) (deviceKeyCounts, error) {
	key := userID + "|" + deviceID
	if c, ok := s.keyCounts.get(key); ok {
		return c, nil
	}
	otk, err := s.store.OneTimeKeyCounts(ctx, userID, deviceID)
	if err != nil {
		return deviceKeyCounts{}, err
	}
	fb, err := s.store.UnusedFallbackKeyTypes(ctx, userID, deviceID)
	if err != nil {
		return deviceKeyCounts{}, err
	}
	c := deviceKeyCounts{otk: otk, fallback: append([]string{}, fb...)}
	s.keyCounts.put(key, c)
	return c, nil
}

// deviceListChanged records that userID's devices or keys changed and wakes
// the syncs of everyone who shares a room with them, and their own. For a
// local user, deviceIDs are the devices that changed, each told to other
// servers in an m.device_list_update at a stream position of its own
// (stream IDs are unique per user); none means the cross-signing keys
// changed (m.signing_key_update).
func (s *Server) deviceListChanged(ctx context.Context, userID string, deviceIDs ...string) error {
	positions := make([]int64, 0, max(1, len(deviceIDs)))
	for range max(1, len(deviceIDs)) {
		pos := s.rooms.Stream().Allocate()
		err := s.store.AddDeviceListChange(ctx, userID, pos)
		if err == nil {
			s.latest.putDeviceList(pos)
		}
		s.rooms.Stream().Complete(pos)
		if err != nil {
			return err
		}
		positions = append(positions, pos)
	}
	s.rooms.Notifier().Wake(s.contacts(ctx, userID)...)
	if s.remote == nil || !s.rooms.IsLocal(userID) {
		return nil
	}
	if len(deviceIDs) == 0 {
		if err := s.remote.SendSigningKeyUpdate(ctx, userID); err != nil {
			s.log.Warn("signing key update for other servers", "user", userID, "err", err)
		}
		return nil
	}
	for i, d := range deviceIDs {
		prev, err := s.store.PrevDeviceListChange(ctx, userID, positions[i])
		if err == nil {
			err = s.remote.SendDeviceListUpdate(ctx, userID, d, positions[i], prev)
		}
		if err != nil {
			s.log.Warn("device list update for other servers", "user", userID, "device", d, "err", err)
		}
	}
	return nil
}

// contacts are the user and everyone joined to or invited to a room the
// user is joined to or invited to.
func (s *Server) contacts(ctx context.Context, userID string) []string {
	out := []string{userID}
	ms, err := s.rooms.UserRooms(ctx, userID)
	if err != nil {
		return out
	}
	seen := map[string]bool{userID: true}
	for roomID, m := range ms {
		if !sharing(m.Membership) {
			continue
		}
		members, err := s.store.RoomMemberships(ctx, roomID)
		if err != nil {
			continue
		}
		for _, mm := range members {
			if sharing(mm.Membership) && !seen[mm.UserID] {
				seen[mm.UserID] = true
				out = append(out, mm.UserID)
			}
		}
	}
	return out
}

// devicesRemoved is what follows any removal of devices: their tokens stop
// working and the user's contacts learn that the device list changed.
func (s *Server) devicesRemoved(ctx context.Context, userID string, deleted []string) {
	if len(deleted) == 0 {
		return
	}
	for _, d := range deleted {
		s.keyCounts.forget(userID + "|" + d)
	}
	s.push.forget(userID) // a device's pushers went with it
	if err := s.deviceListChanged(ctx, userID, deleted...); err != nil {
		s.log.Error("record device list change", "user", userID, "err", err)
	}
}

// handleKeysUpload serves POST /keys/upload.
func (s *Server) handleKeysUpload(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	var req struct {
		DeviceKeys   json.RawMessage            `json:"device_keys"`
		OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys"`
		FallbackKeys map[string]json.RawMessage `json:"fallback_keys"`
		Unstable     map[string]json.RawMessage `json:"org.matrix.msc2732.fallback_keys"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	ctx := r.Context()
	if len(req.DeviceKeys) > 0 && string(req.DeviceKeys) != "null" {
		var dk struct {
			UserID     string                       `json:"user_id"`
			DeviceID   string                       `json:"device_id"`
			Algorithms []string                     `json:"algorithms"`
			Keys       map[string]string            `json:"keys"`
			Signatures map[string]map[string]string `json:"signatures"`
		}
		if err := json.Unmarshal(req.DeviceKeys, &dk); err != nil || !rawObject(req.DeviceKeys) {
			writeError(w, errBadJSON("device_keys must be an object with user_id, device_id, algorithms and keys"))
			return
		}
		if dk.UserID != dev.UserID || dk.DeviceID != dev.DeviceID {
			writeError(w, errInvalidParam("device_keys are for %s %s, not this device", dk.UserID, dk.DeviceID))
			return
		}
		if len(dk.Keys) == 0 || len(dk.Algorithms) == 0 || dk.Signatures == nil {
			// Keys missing from a JSON body: M_BAD_JSON, as the spec's
			// error codes have it ("missing required keys"). signatures
			// must be there but may be empty: checking them is the
			// clients' business (they do, before they trust a device).
			writeError(w, errBadJSON("device_keys needs algorithms, keys and signatures"))
			return
		}
		old, err := s.store.DeviceKeys(ctx, map[string][]string{dev.UserID: {dev.DeviceID}})
		if err != nil {
			writeError(w, err)
			return
		}
		prev := old[dev.UserID][dev.DeviceID]
		if prev == nil || !jsonEqual(prev, req.DeviceKeys) {
			if err := s.store.PutDeviceKeys(ctx, dev.UserID, dev.DeviceID, req.DeviceKeys); err != nil {
				writeError(w, err)
				return
			}
			if err := s.deviceListChanged(ctx, dev.UserID, dev.DeviceID); err != nil {
				writeError(w, err)
				return
			}
		}
	}
	otks, err := parseKeyMap(req.OneTimeKeys)
	if err != nil {
		writeError(w, err)
		return
	}
	if len(otks) > 0 {
		if err := s.store.PutOneTimeKeys(ctx, dev.UserID, dev.DeviceID, otks); err != nil {
			writeError(w, err)
			return
		}
	}
	if req.FallbackKeys == nil {
		req.FallbackKeys = req.Unstable
	}
	fbs, err := parseKeyMap(req.FallbackKeys)
	if err != nil {
		writeError(w, err)
		return
	}
	if len(fbs) > 0 {
		if err := s.store.PutFallbackKeys(ctx, dev.UserID, dev.DeviceID, fbs); err != nil {
			writeError(w, err)
			return
		}
	}
	s.keyCounts.forget(dev.key())
	counts, err := s.deviceKeyCounts(ctx, dev.UserID, dev.DeviceID)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"one_time_key_counts": counts.otk})
}

// parseKeyMap reads {"algorithm:id": key, …}.
func parseKeyMap(m map[string]json.RawMessage) ([]storage.OneTimeKey, error) {
	out := make([]storage.OneTimeKey, 0, len(m))
	for id, raw := range m {
		alg, _, ok := strings.Cut(id, ":")
		if !ok || alg == "" || len(id) > 255 {
			return nil, errInvalidParam("key ID %q must be <algorithm>:<id>", id)
		}
		if !validKey(raw) {
			return nil, errBadJSON("key %q must be a string, or an object with a key and its signatures", id)
		}
		out = append(out, storage.OneTimeKey{KeyID: id, Algorithm: alg, JSON: raw})
	}
	slices.SortFunc(out, func(a, b storage.OneTimeKey) int { return strings.Compare(a.KeyID, b.KeyID) })
	return out, nil
}

// validKey reports whether raw is a key as the spec shapes one: a bare
// string (curve25519) or a signed key object. Anything else would reach
// other users' clients as garbage.
func validKey(raw json.RawMessage) bool {
	var str string
	if json.Unmarshal(raw, &str) == nil {
		return str != ""
	}
	var k struct {
		Key        string                       `json:"key"`
		Signatures map[string]map[string]string `json:"signatures"`
	}
	return rawObject(raw) && json.Unmarshal(raw, &k) == nil && k.Key != "" && len(k.Signatures) > 0
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	ja, _ := json.Marshal(x)
	jb, _ := json.Marshal(y)
	return string(ja) == string(jb)
}

// isLocal reports whether a user ID belongs to this server.
func (s *Server) isLocal(userID string) bool {
	_, server, ok := strings.Cut(userID, ":")
	return ok && strings.HasPrefix(userID, "@") && server == s.cfg.ServerName
}

// handleKeysQuery serves POST /keys/query: local users' keys from the
// database, other servers' users' keys from the cache of those a local
// user shares a room with or from their servers (each asked once, in
// parallel, within the request's timeout; remotedevices.go).
func (s *Server) handleKeysQuery(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	var req struct {
		DeviceKeys map[string][]string `json:"device_keys"`
		Timeout    *int64              `json:"timeout"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.DeviceKeys == nil {
		writeError(w, errMissingParam("device_keys is required"))
		return
	}
	ctx := r.Context()
	local, remote := map[string][]string{}, map[string]map[string][]string{}
	for u, devices := range req.DeviceKeys {
		if s.isLocal(u) {
			local[u] = devices
		} else if _, server, ok := strings.Cut(u, ":"); ok && strings.HasPrefix(u, "@") {
			if remote[server] == nil {
				remote[server] = map[string][]string{}
			}
			remote[server][u] = devices
		}
	}
	res, err := s.LocalKeys(ctx, local, dev.UserID)
	if err != nil {
		writeError(w, err)
		return
	}
	for u := range req.DeviceKeys {
		if res.DeviceKeys[u] == nil {
			res.DeviceKeys[u] = map[string]json.RawMessage{}
		}
	}
	failures := s.remoteKeys(ctx, remoteTimeout(req.Timeout), remote, &res)
	writeJSON(w, http.StatusOK, map[string]any{"device_keys": res.DeviceKeys, "master_keys": res.MasterKeys,
		"self_signing_keys": res.SelfSigningKeys, "user_signing_keys": res.UserSigningKeys, "failures": failures})
}

// withDisplayName gives a device key its unsigned object, with
// device_display_name when the device has a name.
func withDisplayName(js []byte, name string) json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal(js, &m) != nil {
		return js
	}
	unsigned := map[string]json.RawMessage{}
	raw, had := m["unsigned"]
	if had && json.Unmarshal(raw, &unsigned) != nil {
		return js
	}
	if name == "" && had && unsigned != nil {
		return js // an unsigned object already, nothing to add
	}
	if unsigned == nil {
		unsigned = map[string]json.RawMessage{} // "unsigned": null
	}
	if name != "" {
		unsigned["device_display_name"], _ = json.Marshal(name)
	}
	m["unsigned"], _ = json.Marshal(unsigned)
	b, _ := json.Marshal(m)
	return b
}

// handleKeysClaim serves POST /keys/claim: one key per device asked for,
// from the database for local users and from their servers for others.
func (s *Server) handleKeysClaim(w http.ResponseWriter, r *http.Request) {
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
		Timeout     *int64                       `json:"timeout"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.OneTimeKeys == nil {
		writeError(w, errMissingParam("one_time_keys is required"))
		return
	}
	local, remote := map[string]map[string]string{}, map[string]map[string]map[string]string{}
	for u, devices := range req.OneTimeKeys {
		if s.isLocal(u) {
			local[u] = devices
		} else if _, server, ok := strings.Cut(u, ":"); ok && strings.HasPrefix(u, "@") {
			if remote[server] == nil {
				remote[server] = map[string]map[string]string{}
			}
			remote[server][u] = devices
		}
	}
	out, err := s.ClaimLocalKeys(r.Context(), local)
	if err != nil {
		writeError(w, err)
		return
	}
	failures := s.askServers(r.Context(), remoteTimeout(req.Timeout), sortedKeys(remote), func(ctx context.Context, server string) error {
		got, err := s.remote.ClaimKeys(ctx, server, remote[server])
		if err != nil {
			return err
		}
		s.keysMu.Lock()
		defer s.keysMu.Unlock()
		for u := range remote[server] {
			if got[u] != nil {
				out[u] = got[u]
			}
		}
		return nil
	})
	writeJSON(w, http.StatusOK, map[string]any{"one_time_keys": out, "failures": failures})
}

// handleKeysChanges serves GET /keys/changes?from=&to=.
func (s *Server) handleKeysChanges(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	from, err := parseSyncToken(r.URL.Query().Get("from"))
	if err != nil {
		writeError(w, errInvalidParam("from is not a sync token"))
		return
	}
	to := syncToken{pos: s.rooms.Stream().Current()}
	if v := r.URL.Query().Get("to"); v != "" {
		if to, err = parseSyncToken(v); err != nil {
			writeError(w, errInvalidParam("to is not a sync token"))
			return
		}
	}
	changed, left, err := s.deviceLists(r.Context(), dev.UserID, from.pos, min(to.pos, s.rooms.Stream().Current()))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"changed": changed, "left": left})
}

// visibleDeviceChanges lists the users whose device lists changed in
// (from, to] that userID shares a room with, joined or invited (or
// userID).
func (s *Server) visibleDeviceChanges(ctx context.Context, userID string, from, to int64) ([]string, error) {
	if !s.latest.deviceListAfter(from) || to <= from {
		return []string{}, nil
	}
	changed, err := s.store.DeviceListChanges(ctx, from, to)
	if err != nil {
		return nil, err
	}
	out := []string{}
	if len(changed) == 0 {
		return out, nil
	}
	mine, err := s.rooms.UserRooms(ctx, userID)
	if err != nil {
		return nil, err
	}
	for _, u := range changed {
		if u == userID {
			out = append(out, u)
			continue
		}
		theirs, err := s.rooms.UserRooms(ctx, u)
		if err != nil {
			return nil, err
		}
		for roomID, m := range theirs {
			if mm, ok := mine[roomID]; ok && sharing(m.Membership) && sharing(mm.Membership) {
				out = append(out, u)
				break
			}
		}
	}
	return out, nil
}

// handleDeviceSigningUpload serves POST /_matrix/client/v3/keys/device_signing/upload.
// UIA is needed only to replace keys (spec v1.11): a first upload needs
// none, and an upload of the keys already stored changes nothing and needs
// none either, which makes a retry after a lost response idempotent.
func (s *Server) handleDeviceSigningUpload(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	var req struct {
		Master      json.RawMessage `json:"master_key"`
		SelfSigning json.RawMessage `json:"self_signing_key"`
		UserSigning json.RawMessage `json:"user_signing_key"`
		Auth        *uiaAuth        `json:"auth"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	ctx := r.Context()
	keys := map[string]json.RawMessage{}
	for typ, raw := range map[string]json.RawMessage{"master": req.Master, "self_signing": req.SelfSigning, "user_signing": req.UserSigning} {
		if len(raw) == 0 || string(raw) == "null" {
			continue
		}
		if err := s.checkCrossSigningKey(dev, typ, raw); err != nil {
			writeError(w, err)
			return
		}
		keys[typ] = raw
	}
	existing, err := s.store.CrossSigningKeys(ctx, []string{dev.UserID})
	if err != nil {
		writeError(w, err)
		return
	}
	stored := existing[dev.UserID]
	for typ, raw := range keys {
		if stored[typ] != nil && sameCrossSigningKey(stored[typ], raw) {
			delete(keys, typ) // kept as stored, with the signatures merged into it since
		}
	}
	if len(keys) == 0 {
		writeJSON(w, http.StatusOK, map[string]any{})
		return
	}
	if stored["master"] == nil && keys["master"] == nil {
		writeError(w, errMissingParam("upload a master key first: the other cross-signing keys are signed by it"))
		return
	}
	if stored["master"] != nil && !s.uia(w, r, dev, "keys/device_signing/upload", req.Auth) {
		return
	}
	for typ, raw := range keys {
		if err := s.store.PutCrossSigningKey(ctx, dev.UserID, typ, raw); err != nil {
			writeError(w, err)
			return
		}
	}
	if _, private := keys["user_signing"]; private && len(keys) == 1 {
		// Only the user sees their user-signing key: news for them alone,
		// and nothing for other servers (m.signing_key_update carries the
		// master and self-signing keys).
		err = s.viewerDeviceListChanges(ctx, []storage.ViewerDeviceListChange{{Viewer: dev.UserID, UserID: dev.UserID}}, []string{dev.UserID})
	} else {
		err = s.deviceListChanged(ctx, dev.UserID)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{})
}

// checkCrossSigningKey checks that raw is one of dev's user's
// cross-signing keys of type typ.
func (s *Server) checkCrossSigningKey(dev *Device, typ string, raw json.RawMessage) error {
	var k struct {
		UserID string            `json:"user_id"`
		Usage  []string          `json:"usage"`
		Keys   map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(raw, &k); err != nil || !rawObject(raw) {
		return errBadJSON("%s_key must be a cross-signing key object", typ)
	}
	if k.UserID != dev.UserID || len(k.Keys) != 1 || !slices.Contains(k.Usage, typ) {
		return errInvalidParam("%s_key must be this user's, with one key and usage %q", typ, typ)
	}
	return nil
}

// sameCrossSigningKey reports whether two cross-signing keys are the same
// key for the same use, whatever signatures each carries.
func sameCrossSigningKey(a, b []byte) bool {
	strip := func(js []byte) []byte {
		var m map[string]json.RawMessage
		if json.Unmarshal(js, &m) != nil {
			return nil
		}
		delete(m, "signatures")
		out, _ := json.Marshal(m)
		return out
	}
	x, y := strip(a), strip(b)
	return x != nil && y != nil && jsonEqual(x, y)
}

// handleSignaturesUpload serves POST /keys/signatures/upload: signatures of
// one's own devices and keys, and of others' master keys, merged into the
// stored keys.
func (s *Server) handleSignaturesUpload(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	var req map[string]map[string]json.RawMessage
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	ctx := r.Context()
	failures := map[string]map[string]any{}
	fail := func(u, k, msg string) {
		if failures[u] == nil {
			failures[u] = map[string]any{}
		}
		failures[u][k] = map[string]string{"errcode": "M_INVALID_SIGNATURE", "error": msg}
	}
	changed := map[string][]string{}  // user → devices signed
	crossSigned := map[string]bool{}  // user → cross-signing keys signed
	signedOthers := map[string]bool{} // others' master keys signed: news for the signer alone
	for u, objs := range req {
		if !s.isLocal(u) {
			continue
		}
		devKeys, err := s.store.DeviceKeys(ctx, map[string][]string{u: nil})
		if err != nil {
			writeError(w, err)
			return
		}
		cs, err := s.store.CrossSigningKeys(ctx, []string{u})
		if err != nil {
			writeError(w, err)
			return
		}
		for keyID, signed := range objs {
			var sigs struct {
				Signatures map[string]map[string]string `json:"signatures"`
			}
			if json.Unmarshal(signed, &sigs) != nil || len(sigs.Signatures[dev.UserID]) == 0 {
				fail(u, keyID, "no signatures by you")
				continue
			}
			if u != dev.UserID {
				// Someone else's key: only their master key, signed by our user-signing key.
				if master := cs[u]["master"]; master != nil && keyIDOf(master) == keyID {
					if err := s.mergeSignatures(ctx, u, "master", master, sigs.Signatures); err != nil {
						writeError(w, err)
						return
					}
					signedOthers[u] = true
				} else {
					fail(u, keyID, "unknown key")
				}
				continue
			}
			if stored := devKeys[u][keyID]; stored != nil {
				merged, err := mergeSigs(stored, sigs.Signatures)
				if err == nil {
					err = s.store.PutDeviceKeys(ctx, u, keyID, merged)
				}
				if err != nil {
					writeError(w, err)
					return
				}
				if !slices.Contains(changed[u], keyID) {
					changed[u] = append(changed[u], keyID)
				}
				continue
			}
			found := false
			for typ, k := range cs[u] {
				if keyIDOf(k) == keyID {
					if err := s.mergeSignatures(ctx, u, typ, k, sigs.Signatures); err != nil {
						writeError(w, err)
						return
					}
					crossSigned[u], found = true, true
				}
			}
			if !found {
				fail(u, keyID, "unknown key")
			}
		}
	}
	for u, devices := range changed {
		if err := s.deviceListChanged(ctx, u, devices...); err != nil {
			writeError(w, err)
			return
		}
	}
	for u := range crossSigned {
		if err := s.deviceListChanged(ctx, u); err != nil {
			writeError(w, err)
			return
		}
	}
	if len(signedOthers) > 0 {
		var news []storage.ViewerDeviceListChange
		for _, u := range sortedKeys(signedOthers) {
			news = append(news, storage.ViewerDeviceListChange{Viewer: dev.UserID, UserID: u})
		}
		if err := s.viewerDeviceListChanges(ctx, news, []string{dev.UserID}); err != nil {
			writeError(w, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"failures": failures})
}

// keyIDOf is the public key of a cross-signing key (the part after
// "ed25519:" of its one key ID).
func keyIDOf(js []byte) string {
	var k struct {
		Keys map[string]string `json:"keys"`
	}
	_ = json.Unmarshal(js, &k)
	for id := range k.Keys {
		_, pub, _ := strings.Cut(id, ":")
		return pub
	}
	return ""
}

func (s *Server) mergeSignatures(ctx context.Context, userID, typ string, stored []byte, sigs map[string]map[string]string) error {
	merged, err := mergeSigs(stored, sigs)
	if err != nil {
		return err
	}
	return s.store.PutCrossSigningKey(ctx, userID, typ, merged)
}

// mergeSigs adds signatures to a signed JSON object.
func mergeSigs(stored []byte, sigs map[string]map[string]string) ([]byte, error) {
	var m map[string]any
	if err := json.Unmarshal(stored, &m); err != nil {
		return nil, err
	}
	all, _ := m["signatures"].(map[string]any)
	if all == nil {
		all = map[string]any{}
	}
	for signer, byKey := range sigs {
		cur, _ := all[signer].(map[string]any)
		if cur == nil {
			cur = map[string]any{}
		}
		for k, v := range byKey {
			cur[k] = v
		}
		all[signer] = cur
	}
	m["signatures"] = all
	return json.Marshal(m)
}
