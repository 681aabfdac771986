package storage

// End-to-end encryption: device and one-time keys, cross-signing, the
// device lists of other servers' users kept here, and server-side key
// backups.

import (
	"context"
)

// OneTimeKey is one uploaded one-time or fallback key.
type OneTimeKey struct {
	KeyID     string // algorithm:id, e.g. signed_curve25519:AAAAHg
	Algorithm string
	JSON      []byte
}

// Keys are the end-to-end encryption keys clients publish (the server only
// stores and hands them out) and the log of device list changes.
type Keys interface {
	PutDeviceKeys(ctx context.Context, userID, deviceID string, keyJSON []byte) error
	// DeviceKeys returns the device keys of the users, by user and device;
	// a user with deviceIDs listed gets only those.
	DeviceKeys(ctx context.Context, want map[string][]string) (map[string]map[string][]byte, error)
	// PutOneTimeKeys stores keys; a key ID already stored is kept as it was.
	PutOneTimeKeys(ctx context.Context, userID, deviceID string, keys []OneTimeKey) error
	OneTimeKeyCounts(ctx context.Context, userID, deviceID string) (map[string]int, error)
	// ClaimKey takes one one-time key of the algorithm (deleting it) or,
	// when none is left, returns the device's fallback key (marking it
	// used). ErrNotFound when the device has neither.
	ClaimKey(ctx context.Context, userID, deviceID, algorithm string) (OneTimeKey, error)
	// PutFallbackKeys replaces the device's fallback key of each algorithm.
	PutFallbackKeys(ctx context.Context, userID, deviceID string, keys []OneTimeKey) error
	UnusedFallbackKeyTypes(ctx context.Context, userID, deviceID string) ([]string, error)

	PutCrossSigningKey(ctx context.Context, userID, keyType string, keyJSON []byte) error
	// CrossSigningKeys returns the users' keys by user and type.
	CrossSigningKeys(ctx context.Context, userIDs []string) (map[string]map[string][]byte, error)

	AddDeviceListChange(ctx context.Context, userID string, pos int64) error
	// DeviceListChanges lists the users whose devices changed in (from, to].
	DeviceListChanges(ctx context.Context, from, to int64) ([]string, error)
	// AddViewerDeviceListChanges records, at pos, device-list news for
	// one local user each.
	AddViewerDeviceListChanges(ctx context.Context, pos int64, changes []ViewerDeviceListChange) error
	// ViewerDeviceListChanges lists viewer's news in (from, to]: users
	// changed and users they stopped sharing rooms with.
	ViewerDeviceListChanges(ctx context.Context, viewer string, from, to int64) (changed, left []string, err error)
	// PrevDeviceListChange is the latest position below before at which
	// userID's devices changed (0 if none): the prev_id of the
	// m.device_list_update sent at before.
	PrevDeviceListChange(ctx context.Context, userID string, before int64) (int64, error)

	// RemoteDeviceLists returns the cached device lists of other servers'
	// users, by user; a user not cached is absent.
	RemoteDeviceLists(ctx context.Context, userIDs []string) (map[string]RemoteDeviceList, error)
	// PutRemoteDeviceList replaces a user's cached list (not stale).
	PutRemoteDeviceList(ctx context.Context, l RemoteDeviceList) error
	// UpdateRemoteDevice applies one m.device_list_update to a cached
	// list: the device replaced (or removed when deleted), the list at
	// streamID. ErrNotFound when the user is not cached.
	UpdateRemoteDevice(ctx context.Context, userID string, streamID int64, d RemoteDevice, deleted bool) error
	// PutRemoteCrossSigningKeys replaces a cached user's master and
	// self-signing keys (nil: kept as it is); nothing if not cached.
	PutRemoteCrossSigningKeys(ctx context.Context, userID string, master, selfSigning []byte) error
	// MarkRemoteDeviceListStale records that a cached list missed an
	// update; nothing if not cached.
	MarkRemoteDeviceListStale(ctx context.Context, userID string) error
	// DeleteRemoteDeviceList forgets a user's cached list.
	DeleteRemoteDeviceList(ctx context.Context, userID string) error
}

// RemoteDeviceList is another server's user's device list as cached here.
type RemoteDeviceList struct {
	UserID      string
	StreamID    int64
	Devices     []RemoteDevice
	Master      []byte // nil if none
	SelfSigning []byte // nil if none
	Stale       bool
}

// RemoteDevice is one device of a RemoteDeviceList.
type RemoteDevice struct {
	DeviceID    string
	DisplayName string
	Keys        []byte // the signed device keys as their server sent them; nil if none
}

// ViewerDeviceListChange is device-list news for one local user (Viewer)
// only: UserID changed in a way only Viewer may see, or (Left) no longer
// shares a room with Viewer.
type ViewerDeviceListChange struct {
	Viewer string
	UserID string
	Left   bool
}

// KeyBackup is one version of a user's server-side room key backup.
type KeyBackup struct {
	Version   string // opaque to clients; decimal, increasing per user
	Algorithm string
	AuthData  []byte // JSON object
	BackupStats
}

// BackupStats is what a client compares to learn whether another client
// changed a backup: how many keys it holds and a tag that changes with them.
type BackupStats struct {
	Count int
	ETag  string
}

// BackupKey is one Megolm session's key in a backup. SessionData is
// encrypted by the client; the other fields decide which copy is kept.
type BackupKey struct {
	RoomID            string
	SessionID         string
	FirstMessageIndex int64
	ForwardedCount    int64
	IsVerified        bool
	SessionData       []byte // JSON object
}

// WrongBackupVersionError is a write to a backup version that is not the
// user's current one.
type WrongBackupVersionError struct{ Current string }

func (e *WrongBackupVersionError) Error() string {
	return "storage: not the current backup version (" + e.Current + ")"
}

// KeyBackups are the users' room key backups. A user's current version is
// the newest not deleted; a deleted version stays deleted, and its number
// is never reused. Versions that do not exist, or were deleted, are
// ErrNotFound.
type KeyBackups interface {
	CreateKeyBackup(ctx context.Context, userID, algorithm string, authData []byte) (version string, err error)
	// KeyBackup returns a version, or the current one when version is "".
	KeyBackup(ctx context.Context, userID, version string) (KeyBackup, error)
	// UpdateKeyBackup replaces a version's auth data.
	UpdateKeyBackup(ctx context.Context, userID, version string, authData []byte) error
	// DeleteKeyBackup deletes a version and its keys; deleting one already
	// deleted is not an error.
	DeleteKeyBackup(ctx context.Context, userID, version string) error
	// PutBackupKeys stores keys in version, which must be the current one
	// (ErrNotFound when the user has none, *WrongBackupVersionError when
	// it is another). A stored key is replaced only by a better one: a
	// verified one over an unverified one, then the lower
	// first_message_index, then the lower forwarded_count.
	PutBackupKeys(ctx context.Context, userID, version string, keys []BackupKey) (BackupStats, error)
	// BackupKeys lists a version's keys: all, one room's (roomID), or one
	// session's (roomID and sessionID).
	BackupKeys(ctx context.Context, userID, version, roomID, sessionID string) ([]BackupKey, error)
	// DeleteBackupKeys deletes keys from a version, selected like BackupKeys.
	DeleteBackupKeys(ctx context.Context, userID, version, roomID, sessionID string) (BackupStats, error)
}
