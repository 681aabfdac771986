// Package storage defines what machi keeps in its database, as interfaces
// written for the code that calls them, and the few errors a caller can act
// on. storage/sqlstore implements all of it once, for SQLite and PostgreSQL.
//
// Stream positions: every change a client learns about through /sync (an
// event, account data, a receipt, a to-device message) carries one position
// from a single, server-wide sequence. The caller allocates positions (see
// package rooms) and storage persists them.
package storage

import (
	"context"
	"errors"
)

// Errors a caller can act on. Drivers' errors are mapped to these.
var (
	ErrNotFound = errors.New("storage: not found")
	ErrConflict = errors.New("storage: already exists")
)

// Store is everything machi persists.
type Store interface {
	Accounts
	Rooms
	Relations
	Streams
	Media
	Policy
	Keys
	Pushers
	ServerKeys
	Outbox
	RemoteInvites
	KeyBackups
	Reports
	Notifications
	Presence
	OpenIDTokens
	// MaxStreamPos is the highest stream position persisted anywhere.
	MaxStreamPos(ctx context.Context) (int64, error)
	// MinEventPos is the lowest stream position of a stored event (0 if
	// none is below 0): outliers, events known but not part of a timeline
	// (another server's room state at a join), take positions below 0.
	MinEventPos(ctx context.Context) (int64, error)
	// MaxStateGroup is the highest state group ID persisted.
	MaxStateGroup(ctx context.Context) (int64, error)
	Close() error
}

// User is a local account.
type User struct {
	UserID       string
	PasswordHash string
	IsAdmin      bool
	Deactivated  bool
	// Suspended accounts can neither log in nor use their tokens, until an
	// admin lifts the suspension.
	Suspended   bool
	DisplayName string
	AvatarURL   string
	CreatedTS   int64
}

// Device is a logged-in session: one device, one access token.
type Device struct {
	UserID      string
	DeviceID    string
	DisplayName string
	// TokenHash is the SHA-256 of the access token, hex. The token itself
	// is never stored.
	TokenHash  string
	LastSeenTS int64
	LastSeenIP string
	CreatedTS  int64
	// Class is "office" or "mobile": where the device logged in from.
	Class string
}

// Accounts are users, their devices and what belongs to a user alone.
type Accounts interface {
	CreateUser(ctx context.Context, u User) error
	GetUser(ctx context.Context, userID string) (User, error)
	ListUsers(ctx context.Context) ([]User, error)
	SetPasswordHash(ctx context.Context, userID, hash string) error
	SetAdmin(ctx context.Context, userID string, admin bool) error
	SetSuspended(ctx context.Context, userID string, suspended bool) error
	// DeactivateUser marks the account deactivated, clears its password,
	// profile and presence and removes every device, encryption key, key
	// backup, pusher and notification, in one transaction.
	DeactivateUser(ctx context.Context, userID string) error
	SetDisplayName(ctx context.Context, userID, name string) error
	SetAvatarURL(ctx context.Context, userID, url string) error

	// PutDevice creates the device or, if it exists, gives it a new token.
	PutDevice(ctx context.Context, d Device) error
	DeviceByTokenHash(ctx context.Context, hash string) (Device, error)
	GetDevice(ctx context.Context, userID, deviceID string) (Device, error)
	ListDevices(ctx context.Context, userID string) ([]Device, error)
	SetDeviceName(ctx context.Context, userID, deviceID, name string) error
	TouchDevice(ctx context.Context, userID, deviceID, ip string, ts int64) error
	// DeleteDevices removes the given devices and their encryption keys;
	// with none given, every device of the user except keep (which may be
	// "").
	DeleteDevices(ctx context.Context, userID string, deviceIDs []string, keep string) (deleted []string, err error)

	CreateFilter(ctx context.Context, userID string, filterJSON []byte) (string, error)
	GetFilter(ctx context.Context, userID, filterID string) ([]byte, error)
}

// Room is a room's row: its version and where its head is.
type Room struct {
	RoomID    string
	Version   string
	Creator   string
	CreatedTS int64
	// Latest are the forward extremities: the next event's prev_events.
	Latest     []string
	Depth      int64
	StateGroup int64 // current state (after the latest events)
	Published  bool
	// RejoinedPos is the position of this server's latest join through
	// another server to the room after it had left it (0: none), where
	// the room's state here was replaced by the one that server gave.
	RejoinedPos int64
}

// Event is a persisted PDU.
type Event struct {
	Pos        int64 // stream position
	EventID    string
	RoomID     string
	Type       string
	StateKey   *string
	Sender     string
	Depth      int64
	StateGroup int64 // room state before this event
	JSON       []byte
	RedactedBy string
	// TxnDevice and TxnID are set when a local client sent it with a txn ID.
	TxnDevice string
	TxnID     string
	// OriginTS is the event's origin_server_ts.
	OriginTS int64
	// Outlier events are in no timeline (stored below position 0 for the
	// room state they carry).
	Outlier bool
}

// StateEntry names the event that holds one piece of room state.
type StateEntry struct {
	Type     string
	StateKey string
	EventID  string
}

// StateGroup is a set of room state, stored as a delta on Prev (or whole,
// when Prev is 0).
type StateGroup struct {
	ID      int64
	RoomID  string
	Prev    int64
	Depth   int // length of the delta chain down to a whole group
	Entries []StateEntry
}

// Membership is one user's current membership of one room.
type Membership struct {
	RoomID     string
	UserID     string
	Membership string // join, invite, leave, ban, knock
	EventID    string
	Pos        int64
	Forgotten  bool
}

// EventCommit is one event and everything that changes with it.
type EventCommit struct {
	Event Event
	// NewRoom is set for a room's create event.
	NewRoom *Room
	// Head is the room's head after this event.
	Latest     []string
	Depth      int64
	StateGroup int64
	// NewGroup is set when the event changed the room state.
	NewGroup *StateGroup
	// Membership is set for m.room.member events.
	Membership *Membership
	// Redacts is the ID of the event this redaction redacts, when allowed,
	// and RedactedJSON that event's JSON with its content stripped.
	Redacts      string
	RedactedJSON []byte
	// ExtraGroups are state groups to store before the event: the state
	// before it, or the room's current state, where branches met.
	ExtraGroups []*StateGroup
	// CurrentState, when set, are entries of the room's current state that
	// changed besides the event's own (state resolution between branches).
	CurrentState []StateEntry
	// Rejoined marks the join of a room this server had left, made
	// through another server: the room's current state is replaced by
	// CurrentState (entries not in it are dropped) and the room's
	// RejoinedPos becomes the event's position.
	Rejoined bool
	// Outbox are what other servers must be sent of this event, committed
	// with it so that an acknowledged event always reaches them.
	Outbox []OutboundItem
	// Relation is set when the event's content carries m.relates_to.
	Relation *Relation
}

// Relation is one event's relationship to a parent event (content
// "m.relates_to" with a rel_type).
type Relation struct {
	EventID  string
	RoomID   string
	Parent   string
	RelType  string
	Sender   string
	Type     string
	Key      string // m.annotation's key
	OriginTS int64
	Pos      int64
}

// RelationQuery selects the children of parents in one room with
// From < Pos <= To; RelType and Type "" match any.
type RelationQuery struct {
	RoomID    string
	Parents   []string
	RelType   string
	Type      string
	From, To  int64
	Limit     int
	Backwards bool // newest first
}

// ThreadSummary is what a thread root's m.thread aggregation needs.
type ThreadSummary struct {
	Root         string
	Count        int
	Latest       string // the newest event in the thread
	LatestPos    int64
	Participated bool // the user sent an event in the thread (not the root)
}

// ThreadQuery selects a room's thread roots by their latest event, newest
// first: those whose latest event (at or before UpTo) is before Before.
// With UserID set, only threads the user took part in (root or reply).
type ThreadQuery struct {
	RoomID string
	UserID string
	Before int64
	UpTo   int64
	Limit  int
}

// Relations are the relationships between events.
type Relations interface {
	// RelatedEvents lists the child events q selects, oldest first, or
	// newest first when q.Backwards.
	RelatedEvents(ctx context.Context, q RelationQuery) ([]Event, error)
	// RelationsTo lists the relations of relType to the parents from
	// events of the room with Pos <= upTo, oldest first, at most limit.
	// (An event of another room may name any event ID as its parent.)
	RelationsTo(ctx context.Context, roomID string, parents []string, relType string, upTo int64, limit int) ([]Relation, error)
	// ThreadSummaries summarises the threads rooted at roots, from the
	// room's events, as seen by userID up to upTo; roots without replies
	// are left out.
	ThreadSummaries(ctx context.Context, roomID string, roots []string, userID string, upTo int64) ([]ThreadSummary, error)
	// ThreadRoots lists thread roots as q selects.
	ThreadRoots(ctx context.Context, q ThreadQuery) ([]ThreadSummary, error)
	// RelatedParents returns those of parents that have a child in the
	// room, at or before upTo, with a rel_type in relTypes and a sender in
	// senders (nil matches any).
	RelatedParents(ctx context.Context, roomID string, parents, relTypes, senders []string, upTo int64) ([]string, error)
	// HasRelation reports whether parent has a child of relType in the room.
	HasRelation(ctx context.Context, roomID, parent, relType string) (bool, error)
	// Relation returns the event's relation, ErrNotFound if it has none.
	Relation(ctx context.Context, eventID string) (Relation, error)
	// HasAnnotation reports whether sender has an unredacted annotation of
	// type typ with key on parent in the room.
	HasAnnotation(ctx context.Context, roomID, parent, sender, typ, key string) (bool, error)
}

// Rooms is the event graph and room state.
type Rooms interface {
	// CommitEvents persists events, in order, in one transaction.
	CommitEvents(ctx context.Context, commits []EventCommit) error
	GetRoom(ctx context.Context, roomID string) (Room, error)
	GetEvents(ctx context.Context, eventIDs []string) ([]Event, error)
	GetStateGroup(ctx context.Context, id int64) (StateGroup, error)
	// CurrentState is the room's current state.
	CurrentState(ctx context.Context, roomID string) ([]StateEntry, error)
	// RoomEvents returns up to limit timeline events of the room with
	// from < pos <= to, oldest first, or newest first when backwards.
	RoomEvents(ctx context.Context, roomID string, from, to int64, limit int, backwards bool) ([]Event, error)
	// EventsAtTS returns up to limit timeline events (not outliers) of the
	// room by origin_server_ts: forwards, those at or after ts, earliest
	// first; backwards, those at or before ts, latest first.
	EventsAtTS(ctx context.Context, roomID string, ts int64, forward bool, limit int) ([]Event, error)
	// EventsAfter returns up to limit timeline events (not outliers) of
	// the given types, in every room, with from < pos <= to, oldest first
	// (the search index catches up with it).
	EventsAfter(ctx context.Context, from, to int64, types []string, limit int) ([]Event, error)
	// PutBackfill stores history fetched from another server: events
	// already stored as outliers join the timeline at their new position.
	PutBackfill(ctx context.Context, events []Event) error
	// EventByTxn finds the event a device sent with a transaction ID.
	EventByTxn(ctx context.Context, userID, deviceID, txnID string) (string, error)
	// UserMemberships lists every room the user has a membership in.
	UserMemberships(ctx context.Context, userID string) ([]Membership, error)
	// RoomMemberships lists the memberships of a room.
	RoomMemberships(ctx context.Context, roomID string) ([]Membership, error)
	ForgetRoom(ctx context.Context, userID, roomID string) error

	PutAlias(ctx context.Context, alias, roomID, creator string) error
	GetAlias(ctx context.Context, alias string) (string, error)
	DeleteAlias(ctx context.Context, alias string) error
	RoomAliases(ctx context.Context, roomID string) ([]string, error)
	SetPublished(ctx context.Context, roomID string, published bool) error
	PublishedRooms(ctx context.Context) ([]string, error)
	// ReplaceRoom moves the old room's local aliases and its directory
	// listing to the new room (a room upgrade), in one transaction.
	ReplaceRoom(ctx context.Context, oldRoomID, newRoomID string) error
}

// AccountData is one piece of a user's account data; RoomID is "" for
// global account data.
type AccountData struct {
	UserID  string
	RoomID  string
	Type    string
	Content []byte
	Pos     int64
}

// Receipt is one user's receipt of one type in one room.
type Receipt struct {
	RoomID   string
	UserID   string
	Type     string // m.read, m.read.private
	ThreadID string
	EventID  string
	TS       int64
	Pos      int64
}

// ToDevice is a message for one device.
type ToDevice struct {
	Pos      int64
	UserID   string
	DeviceID string
	Sender   string
	Type     string
	Content  []byte
}

// Streams are the non-event things /sync delivers.
type Streams interface {
	PutAccountData(ctx context.Context, d AccountData) error
	GetAccountData(ctx context.Context, userID, roomID, typ string) ([]byte, error)
	// AccountDataSince lists the user's account data changed in (from, to].
	AccountDataSince(ctx context.Context, userID string, from, to int64) ([]AccountData, error)

	PutReceipt(ctx context.Context, r Receipt) error
	// ReceiptsSince lists receipts in the rooms changed in (from, to].
	ReceiptsSince(ctx context.Context, roomIDs []string, from, to int64) ([]Receipt, error)
	// UserReceipts lists every receipt the user has sent.
	UserReceipts(ctx context.Context, userID string) ([]Receipt, error)

	PutToDevice(ctx context.Context, msgs []ToDevice) error
	// ToDeviceSince lists messages for the device in (from, to], oldest first.
	ToDeviceSince(ctx context.Context, userID, deviceID string, from, to int64, limit int) ([]ToDevice, error)
	// DeleteToDevice drops the device's messages up to and including pos:
	// the client has acknowledged them by syncing past it.
	DeleteToDevice(ctx context.Context, userID, deviceID string, upTo int64) error
}

// MediaItem is an uploaded file's metadata; the bytes are on disk.
type MediaItem struct {
	MediaID     string
	ContentType string
	Size        int64
	Filename    string
	SHA256      string
	Uploader    string
	CreatedTS   int64
}

// Media is the media repository's metadata.
type Media interface {
	PutMedia(ctx context.Context, m MediaItem) error
	GetMedia(ctx context.Context, mediaID string) (MediaItem, error)
	// PutRemoteMedia records that localID holds another server's media;
	// if another copy was recorded first, it returns that one's ID.
	PutRemoteMedia(ctx context.Context, server, mediaID, localID string) (string, error)
	// GetRemoteMedia is the local copy of another server's media.
	GetRemoteMedia(ctx context.Context, server, mediaID string) (string, error)
}

// EnrollmentCode is a one-time code that admits one mobile device of a
// user. Only its hash is stored.
type EnrollmentCode struct {
	CodeID     string // public handle, shown to admins
	UserID     string
	CodeHash   string
	CreatedBy  string
	CreatedTS  int64
	ExpiresTS  int64
	UsedTS     int64 // 0 while unused
	UsedDevice string
}

// AuditEntry is one line of the audit log.
type AuditEntry struct {
	ID       int64
	TS       int64
	Actor    string // user ID, or "cli" for the admin socket
	DeviceID string
	Action   string // e.g. policy.denied, device.revoke
	Rule     string // for policy denials
	Target   string // the user, room or server acted on
	Detail   string // JSON object
}

// AuditQuery selects audit entries; zero fields match everything.
type AuditQuery struct {
	Since, Until int64 // TS range, inclusive; Until 0 means no end
	Actor        string
	Action       string
	Rule         string
	Target       string
	AfterID      int64 // for paging: entries with ID > AfterID
	Limit        int
}

// Emergency lifts the working-hours block for the whole server (no rooms)
// or for the rooms named, until EndsTS.
type Emergency struct {
	ID        string
	RoomIDs   []string
	Reason    string
	StartsTS  int64
	EndsTS    int64
	CreatedBy string
}

// Exemption frees one user from the working-hours block.
type Exemption struct {
	UserID    string
	Reason    string
	CreatedBy string
	CreatedTS int64
}

// Broadcast is a notice sent to every staff member or to a group.
type Broadcast struct {
	ID         string
	Sender     string
	Group      string // "" for everyone
	Body       string
	CreatedTS  int64
	Recipients int
}

// BroadcastDelivery is one recipient's copy of a broadcast.
type BroadcastDelivery struct {
	BroadcastID string
	UserID      string
	RoomID      string
	EventID     string
	Pos         int64
}

// BroadcastCounts says how far a broadcast got.
type BroadcastCounts struct {
	Delivered int // stored in the recipient's notice room
	Joined    int // the recipient has joined the notice room
	Read      int // the recipient sent a read receipt at or after it
}

// Policy is what the city's policy and its admins keep.
type Policy interface {
	PutEnrollmentCode(ctx context.Context, c EnrollmentCode) error
	// UseEnrollmentCode marks the user's unused, unexpired code with that
	// hash used by deviceID, at now, and returns it; ErrNotFound if there is
	// no such code.
	UseEnrollmentCode(ctx context.Context, userID, codeHash, deviceID string, now int64) (EnrollmentCode, error)
	// EnrollmentCodeByHash finds an unused, unexpired code by its hash
	// alone (for m.login.token with a code).
	EnrollmentCodeByHash(ctx context.Context, codeHash string, now int64) (EnrollmentCode, error)
	ListEnrollmentCodes(ctx context.Context, userID string) ([]EnrollmentCode, error)
	DeleteEnrollmentCode(ctx context.Context, userID, codeID string) error

	AppendAudit(ctx context.Context, e AuditEntry) error
	QueryAudit(ctx context.Context, q AuditQuery) ([]AuditEntry, error)

	PutEmergency(ctx context.Context, e Emergency) error
	// EndEmergency sets the emergency's end to now if it is later.
	EndEmergency(ctx context.Context, id string, now int64) error
	// Emergencies lists the emergencies that have not ended at now.
	Emergencies(ctx context.Context, now int64) ([]Emergency, error)

	PutExemption(ctx context.Context, e Exemption) error
	DeleteExemption(ctx context.Context, userID string) error
	Exemptions(ctx context.Context) ([]Exemption, error)

	PutSetting(ctx context.Context, name string, value []byte, ts int64) error
	GetSetting(ctx context.Context, name string) ([]byte, error)
	DeleteSetting(ctx context.Context, name string) error

	SetUserGroups(ctx context.Context, userID string, groups []string) error
	UserGroups(ctx context.Context, userID string) ([]string, error)
	GroupMembers(ctx context.Context, group string) ([]string, error)

	GetNoticeRoom(ctx context.Context, userID string) (string, error)
	PutNoticeRoom(ctx context.Context, userID, roomID string) error

	PutBroadcast(ctx context.Context, b Broadcast) error
	PutBroadcastDelivery(ctx context.Context, d BroadcastDelivery) error
	GetBroadcast(ctx context.Context, id string) (Broadcast, error)
	ListBroadcasts(ctx context.Context, limit int) ([]Broadcast, error)
	BroadcastCounts(ctx context.Context, id string) (BroadcastCounts, error)
}

// Pusher is where a user's push notifications go.
type Pusher struct {
	UserID            string
	DeviceID          string // the device that registered it
	AppID             string
	PushKey           string
	Kind              string // "http"
	AppDisplayName    string
	DeviceDisplayName string
	ProfileTag        string
	Lang              string
	Data              []byte // JSON object; for http, "url" is the gateway
	CreatedTS         int64
}

// Pushers are the users' pushers. A device's pushers go with the device.
type Pushers interface {
	// PutPusher creates or replaces the user's pusher (app ID, push key);
	// unless appendOthers, it first removes other users' pushers with the
	// same app ID and push key.
	PutPusher(ctx context.Context, p Pusher, appendOthers bool) error
	DeletePusher(ctx context.Context, userID, appID, pushKey string) error
	// DeletePushKey removes every user's pusher with the app ID and key
	// (the gateway rejected it).
	DeletePushKey(ctx context.Context, appID, pushKey string) error
	UserPushers(ctx context.Context, userID string) ([]Pusher, error)
}

// ServerKey is another server's signing key.
type ServerKey struct {
	ServerName string
	KeyID      string // e.g. ed25519:a_AbCd
	PublicKey  []byte
	// ValidUntilTS is how long the server said the key is good for; an old
	// key has ExpiredTS instead (when the server stopped using it).
	ValidUntilTS int64
	ExpiredTS    int64
	FetchedTS    int64
	// Response is the server's signed key response that carried the key.
	Response []byte
}

// ServerKeys are the signing keys of other servers, cached.
type ServerKeys interface {
	// PutServerKeys stores keys, replacing what was stored for the same
	// server and key ID.
	PutServerKeys(ctx context.Context, keys []ServerKey) error
	// GetServerKeys returns the stored keys of the servers, by server name.
	GetServerKeys(ctx context.Context, serverNames []string) (map[string][]ServerKey, error)
}

// OutboundItem is one PDU or EDU owed to another server.
type OutboundItem struct {
	ID          int64 // ascending in the order items were queued
	Destination string
	Kind        string // "pdu" or "edu"
	Payload     []byte // the PDU or EDU JSON
	CreatedTS   int64
}

// Outbox is the persisted queue of what other servers are owed.
type Outbox interface {
	// EnqueueOutbound stores items; it returns once they are durable.
	EnqueueOutbound(ctx context.Context, items []OutboundItem) error
	// PendingOutbound lists up to limit items of kind for destination
	// with ID > afterID, oldest first.
	PendingOutbound(ctx context.Context, destination, kind string, afterID int64, limit int) ([]OutboundItem, error)
	// DeleteOutbound removes the destination's items with the given IDs
	// (they were delivered).
	DeleteOutbound(ctx context.Context, destination string, ids []int64) error
	// OutboundDestinations lists the destinations with items queued.
	OutboundDestinations(ctx context.Context) ([]string, error)
	// MaxOutboundID is the highest item ID stored (0 if none).
	MaxOutboundID(ctx context.Context) (int64, error)
}

// RemoteInvite is a local user's invite to a room on another server that
// this server is not in.
type RemoteInvite struct {
	RoomID      string
	UserID      string
	EventID     string
	Sender      string
	RoomVersion string
	Event       []byte // the invite event, signed by both servers
	InviteState []byte // JSON array of stripped state events
	Pos         int64  // stream position of the invite membership
	CreatedTS   int64
}

// RemoteInvites are invites to rooms on other servers.
type RemoteInvites interface {
	// PutRemoteInvite stores the invite and the user's invite membership.
	PutRemoteInvite(ctx context.Context, inv RemoteInvite) error
	GetRemoteInvite(ctx context.Context, roomID, userID string) (RemoteInvite, error)
	// EndRemoteInvite records the user's answer (leave: a rejection) as
	// their membership, at pos; leave, when not nil, is the leave event,
	// kept for GetRemoteLeave.
	EndRemoteInvite(ctx context.Context, roomID, userID, membership, eventID string, pos int64, leave *RemoteLeave) error
	// GetRemoteLeave is the kept leave of the user's refused invite.
	GetRemoteLeave(ctx context.Context, roomID, userID string) (RemoteLeave, error)
}

// RemoteLeave is the leave event that refused an invite to a room on
// another server.
type RemoteLeave struct {
	EventID     string
	RoomVersion string
	Event       []byte
}

// Report is a user's report of a room, or of one event in it, for the
// city's admins.
type Report struct {
	ID       int64
	TS       int64
	Reporter string
	RoomID   string
	EventID  string // "" for a report of the room
	Reason   string
	// EventJSON is the reported event as the reporter saw it.
	EventJSON []byte
}

// ReportQuery selects reports; zero fields match everything.
type ReportQuery struct {
	RoomID  string
	AfterID int64 // for paging: reports with ID > AfterID
	Limit   int
}

// Reports are the users' reports of rooms and events.
type Reports interface {
	// PutReport stores the report and its audit log entry in one
	// transaction, and returns the report's ID.
	PutReport(ctx context.Context, r Report, audit AuditEntry) (int64, error)
	// ListReports lists reports, oldest first.
	ListReports(ctx context.Context, q ReportQuery) ([]Report, error)
}

// OpenIDTokens are the short-lived tokens users hand to widgets and
// integration managers, which exchange them for the user's ID.
type OpenIDTokens interface {
	// PutOpenIDToken stores a token (as its hash) for userID until
	// expiresTS, and deletes the tokens that expired before nowTS.
	PutOpenIDToken(ctx context.Context, tokenHash, userID string, expiresTS, nowTS int64) error
	// OpenIDTokenUser is the user of a token not expired at nowTS
	// (ErrNotFound for an unknown or expired one).
	OpenIDTokenUser(ctx context.Context, tokenHash string, nowTS int64) (string, error)
}

// Notification is one event whose push rule actions notify one user.
type Notification struct {
	UserID    string
	RoomID    string
	EventID   string
	Pos       int64  // the event's stream position
	ThreadID  string // the thread root's event ID, or "main"
	Notify    bool
	Highlight bool
	Actions   []byte // JSON array, as the rule gave them
	TS        int64  // when the event was committed, ms
}

// NotificationQuery pages through a user's notifications, newest first.
type NotificationQuery struct {
	UserID string
	Before int64 // only Pos < Before; 0 for no bound
	Limit  int
	// OnlyHighlight keeps the highlighting ones.
	OnlyHighlight bool
}

// Notifications are the users' notifications.
type Notifications interface {
	// PutNotifications stores notifications, in one transaction; one
	// already stored for the same user and event (position) is kept as
	// it was.
	PutNotifications(ctx context.Context, ns []Notification) error
	// UserNotifications lists every notification of the user, oldest first.
	UserNotifications(ctx context.Context, userID string) ([]Notification, error)
	ListNotifications(ctx context.Context, q NotificationQuery) ([]Notification, error)
	// PruneNotifications deletes notifications with TS < readBefore that
	// the user has read (a read receipt, unthreaded or of their thread, at
	// or after the event), and every one with TS < anyBefore.
	PruneNotifications(ctx context.Context, readBefore, anyBefore int64) (int64, error)
}

// PresenceState is the presence a user last set by hand.
type PresenceState struct {
	UserID       string
	Presence     string // online, unavailable, offline
	StatusMsg    string
	LastActiveTS int64
}

// Presence keeps what users set by hand (online status itself lives in
// memory), so a restart does not forget a status message.
type Presence interface {
	// PutPresence creates or replaces the user's presence.
	PutPresence(ctx context.Context, p PresenceState) error
	// AllPresence lists every stored presence (read once at start).
	AllPresence(ctx context.Context) ([]PresenceState, error)
}
