package clientapi

import (
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/machi-chat/machi/storage"
)

// Server-side room key backups (spec: "Server-side key backups"): a client
// encrypts its Megolm session keys to a backup public key and stores them
// here, so another device of the user can restore them with the private
// key. The server sees only the metadata that decides which copy of a key
// is better.

// megolmBackupAlgorithm is the one backup algorithm the spec defines.
const megolmBackupAlgorithm = "m.megolm_backup.v1.curve25519-aes-sha2"

// backupVersionBody is the body of POST and PUT /room_keys/version.
type backupVersionBody struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Version   *string         `json:"version"`
}

// check validates the algorithm and auth_data.
func (b *backupVersionBody) check() error {
	if b.Algorithm == "" {
		return errMissingParam("algorithm is required")
	}
	if b.Algorithm != megolmBackupAlgorithm {
		return errInvalidParam("unsupported backup algorithm %q: use %s", b.Algorithm, megolmBackupAlgorithm)
	}
	if len(b.AuthData) == 0 || string(b.AuthData) == "null" {
		return errMissingParam("auth_data is required")
	}
	var auth struct {
		PublicKey  *string                      `json:"public_key"`
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if !rawObject(b.AuthData) || json.Unmarshal(b.AuthData, &auth) != nil {
		return errBadJSON("auth_data must be an object with a public_key string and signatures")
	}
	if auth.PublicKey == nil || *auth.PublicKey == "" {
		return errMissingParam("auth_data.public_key is required")
	}
	return nil
}

// backupError maps the storage errors of a backup request: a version that
// does not exist (or was deleted) is M_NOT_FOUND, a write to a version
// that is not the current one M_WRONG_ROOM_KEYS_VERSION.
func backupError(err error) error {
	var wv *storage.WrongBackupVersionError
	switch {
	case errors.As(err, &wv):
		e := newErr(http.StatusForbidden, "M_WRONG_ROOM_KEYS_VERSION", "that is not the current backup version")
		e.Extra = map[string]any{"current_version": wv.Current}
		return e
	case errors.Is(err, storage.ErrNotFound):
		return errNotFound("unknown backup version")
	}
	return err
}

func backupVersionJSON(b storage.KeyBackup) map[string]any {
	return map[string]any{"algorithm": b.Algorithm, "auth_data": json.RawMessage(b.AuthData),
		"count": b.Count, "etag": b.ETag, "version": b.Version}
}

func statsJSON(s storage.BackupStats) map[string]any {
	return map[string]any{"count": s.Count, "etag": s.ETag}
}

// handleCreateBackupVersion serves POST /_matrix/client/v3/room_keys/version.
// Not idempotent: each call makes a new version, which becomes the current one.
func (s *Server) handleCreateBackupVersion(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	var req backupVersionBody
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if err := req.check(); err != nil {
		writeError(w, err)
		return
	}
	version, err := s.store.CreateKeyBackup(r.Context(), dev.UserID, req.Algorithm, req.AuthData)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"version": version})
}

// handleGetBackupVersion serves GET /_matrix/client/v3/room_keys/version
// (the current version) and GET /_matrix/client/v3/room_keys/version/{version}.
func (s *Server) handleGetBackupVersion(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	version, named := vars(r)["version"]
	b, err := s.store.KeyBackup(r.Context(), dev.UserID, version)
	if err != nil {
		if !named && errors.Is(err, storage.ErrNotFound) {
			err = errNotFound("no current backup version")
		}
		writeError(w, backupError(err))
		return
	}
	writeJSON(w, http.StatusOK, backupVersionJSON(b))
}

// handlePutBackupVersion serves PUT /_matrix/client/v3/room_keys/version/{version}:
// only auth_data changes; the algorithm must be the version's. Idempotent.
func (s *Server) handlePutBackupVersion(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	version := vars(r)["version"]
	var req backupVersionBody
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.Version != nil && *req.Version != version {
		writeError(w, errInvalidParam("the version in the body (%s) is not the one in the path (%s)", *req.Version, version))
		return
	}
	b, err := s.store.KeyBackup(r.Context(), dev.UserID, version)
	if err != nil {
		writeError(w, backupError(err))
		return
	}
	if req.Algorithm == "" {
		writeError(w, errMissingParam("algorithm is required"))
		return
	}
	// A version's algorithm never changes, so this check cannot race.
	if req.Algorithm != b.Algorithm {
		writeError(w, errInvalidParam("the algorithm does not match the backup's (%s)", b.Algorithm))
		return
	}
	if err := req.check(); err != nil {
		writeError(w, err)
		return
	}
	if err := s.store.UpdateKeyBackup(r.Context(), dev.UserID, version, req.AuthData); err != nil {
		writeError(w, backupError(err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{})
}

// handleDeleteBackupVersion serves DELETE /_matrix/client/v3/room_keys/version/{version}:
// the version and its keys. Idempotent: deleting a deleted version succeeds.
func (s *Server) handleDeleteBackupVersion(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	if err := s.store.DeleteKeyBackup(r.Context(), dev.UserID, vars(r)["version"]); err != nil {
		writeError(w, backupError(err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{})
}

// backupKeyJSON is KeyBackupData on the wire.
type backupKeyJSON struct {
	FirstMessageIndex *int64          `json:"first_message_index"`
	ForwardedCount    *int64          `json:"forwarded_count"`
	IsVerified        *bool           `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

type roomBackupJSON struct {
	Sessions map[string]backupKeyJSON `json:"sessions"`
}

// toKey checks one uploaded key of roomID's session.
func (k backupKeyJSON) toKey(roomID, sessionID string) (storage.BackupKey, error) {
	where := "session " + sessionID + " of " + roomID
	switch {
	case !strings.HasPrefix(roomID, "!") || len(roomID) > 255:
		return storage.BackupKey{}, errInvalidParam("%q is not a room ID", roomID)
	case sessionID == "" || len(sessionID) > 255:
		return storage.BackupKey{}, errInvalidParam("%q is not a session ID", sessionID)
	case k.FirstMessageIndex == nil || k.ForwardedCount == nil || k.IsVerified == nil || len(k.SessionData) == 0:
		return storage.BackupKey{}, errMissingParam("%s: first_message_index, forwarded_count, is_verified and session_data are required", where)
	case *k.FirstMessageIndex < 0 || *k.ForwardedCount < 0:
		return storage.BackupKey{}, errInvalidParam("%s: first_message_index and forwarded_count cannot be negative", where)
	case !rawObject(k.SessionData):
		return storage.BackupKey{}, errBadJSON("%s: session_data must be an object", where)
	}
	return storage.BackupKey{RoomID: roomID, SessionID: sessionID, FirstMessageIndex: *k.FirstMessageIndex,
		ForwardedCount: *k.ForwardedCount, IsVerified: *k.IsVerified, SessionData: k.SessionData}, nil
}

func fromKey(k storage.BackupKey) backupKeyJSON {
	return backupKeyJSON{FirstMessageIndex: &k.FirstMessageIndex, ForwardedCount: &k.ForwardedCount,
		IsVerified: &k.IsVerified, SessionData: k.SessionData}
}

// backupVersionParam is the version query parameter the key routes need.
func backupVersionParam(r *http.Request) (string, error) {
	v := r.URL.Query().Get("version")
	if v == "" {
		return "", errMissingParam("the version query parameter is required")
	}
	return v, nil
}

// parseBackupKeys reads the body of a PUT on /room_keys/keys[/{roomId}[/{sessionId}]].
func parseBackupKeys(r *http.Request, roomID, sessionID string) ([]storage.BackupKey, error) {
	rooms := map[string]roomBackupJSON{}
	switch {
	case sessionID != "":
		var k backupKeyJSON
		if err := readJSON(r, &k); err != nil {
			return nil, err
		}
		rooms[roomID] = roomBackupJSON{Sessions: map[string]backupKeyJSON{sessionID: k}}
	case roomID != "":
		var room roomBackupJSON
		if err := readJSON(r, &room); err != nil {
			return nil, err
		}
		if room.Sessions == nil {
			return nil, errMissingParam("sessions is required")
		}
		rooms[roomID] = room
	default:
		var req struct {
			Rooms map[string]roomBackupJSON `json:"rooms"`
		}
		if err := readJSON(r, &req); err != nil {
			return nil, err
		}
		if req.Rooms == nil {
			return nil, errMissingParam("rooms is required")
		}
		rooms = req.Rooms
	}
	var keys []storage.BackupKey
	for _, roomID := range slices.Sorted(maps.Keys(rooms)) {
		if rooms[roomID].Sessions == nil {
			return nil, errMissingParam("rooms.%s.sessions is required", roomID)
		}
		for _, sessionID := range slices.Sorted(maps.Keys(rooms[roomID].Sessions)) {
			k, err := rooms[roomID].Sessions[sessionID].toKey(roomID, sessionID)
			if err != nil {
				return nil, err
			}
			keys = append(keys, k)
		}
	}
	return keys, nil
}

// handlePutBackupKeys serves PUT /_matrix/client/v3/room_keys/keys,
// /room_keys/keys/{roomId} and /room_keys/keys/{roomId}/{sessionId}.
// Idempotent: a key is replaced only by a better one.
func (s *Server) handlePutBackupKeys(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	version, err := backupVersionParam(r)
	if err != nil {
		writeError(w, err)
		return
	}
	v := vars(r)
	keys, err := parseBackupKeys(r, v["roomId"], v["sessionId"])
	if err != nil {
		writeError(w, err)
		return
	}
	stats, err := s.store.PutBackupKeys(r.Context(), dev.UserID, version, keys)
	if err != nil {
		writeError(w, backupError(err))
		return
	}
	writeJSON(w, http.StatusOK, statsJSON(stats))
}

// handleGetBackupKeys serves GET /_matrix/client/v3/room_keys/keys,
// /room_keys/keys/{roomId} and /room_keys/keys/{roomId}/{sessionId}.
func (s *Server) handleGetBackupKeys(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	version, err := backupVersionParam(r)
	if err != nil {
		writeError(w, err)
		return
	}
	v := vars(r)
	roomID, sessionID := v["roomId"], v["sessionId"]
	keys, err := s.store.BackupKeys(r.Context(), dev.UserID, version, roomID, sessionID)
	if err != nil {
		writeError(w, backupError(err))
		return
	}
	rooms := map[string]roomBackupJSON{}
	for _, k := range keys {
		if rooms[k.RoomID].Sessions == nil {
			rooms[k.RoomID] = roomBackupJSON{Sessions: map[string]backupKeyJSON{}}
		}
		rooms[k.RoomID].Sessions[k.SessionID] = fromKey(k)
	}
	switch {
	case sessionID != "":
		if len(keys) == 0 {
			writeError(w, errNotFound("no key for that session in this backup"))
			return
		}
		writeJSON(w, http.StatusOK, fromKey(keys[0]))
	case roomID != "":
		room := rooms[roomID]
		if room.Sessions == nil {
			room.Sessions = map[string]backupKeyJSON{}
		}
		writeJSON(w, http.StatusOK, room)
	default:
		writeJSON(w, http.StatusOK, map[string]any{"rooms": rooms})
	}
}

// handleDeleteBackupKeys serves DELETE /_matrix/client/v3/room_keys/keys,
// /room_keys/keys/{roomId} and /room_keys/keys/{roomId}/{sessionId}, in
// any version not deleted. Idempotent.
func (s *Server) handleDeleteBackupKeys(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	version, err := backupVersionParam(r)
	if err != nil {
		writeError(w, err)
		return
	}
	v := vars(r)
	stats, err := s.store.DeleteBackupKeys(r.Context(), dev.UserID, version, v["roomId"], v["sessionId"])
	if err != nil {
		writeError(w, backupError(err))
		return
	}
	writeJSON(w, http.StatusOK, statsJSON(stats))
}
