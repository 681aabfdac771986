package sqlstore

import (
	"context"

	"github.com/machi-chat/machi/storage"
)

const upsertMembership = `INSERT INTO memberships (room_id, user_id, membership, event_id, stream_pos, forgotten) VALUES ($1, $2, $3, $4, $5, 0)
	ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership, event_id = excluded.event_id,
	stream_pos = excluded.stream_pos, forgotten = 0`

// PutRemoteInvite implements storage.RemoteInvites.
func (db *DB) PutRemoteInvite(ctx context.Context, inv storage.RemoteInvite) error {
	return db.tx(ctx, func(tx *txn) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO remote_invites (room_id, user_id, event_id, sender, room_version, event_json, invite_state, created_ts)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
			ON CONFLICT (room_id, user_id) DO UPDATE SET event_id = excluded.event_id, sender = excluded.sender, room_version = excluded.room_version,
			event_json = excluded.event_json, invite_state = excluded.invite_state, created_ts = excluded.created_ts`,
			inv.RoomID, inv.UserID, inv.EventID, inv.Sender, inv.RoomVersion, string(inv.Event), string(inv.InviteState), inv.CreatedTS); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, upsertMembership, inv.RoomID, inv.UserID, "invite", inv.EventID, inv.Pos)
		return err
	})
}

// GetRemoteInvite implements storage.RemoteInvites.
func (db *DB) GetRemoteInvite(ctx context.Context, roomID, userID string) (storage.RemoteInvite, error) {
	var inv storage.RemoteInvite
	var ev, state string
	err := db.r.QueryRowContext(ctx, `SELECT i.room_id, i.user_id, i.event_id, i.sender, i.room_version, i.event_json, i.invite_state, i.created_ts,
		COALESCE(m.stream_pos, 0) FROM remote_invites i LEFT JOIN memberships m ON m.room_id = i.room_id AND m.user_id = i.user_id
		WHERE i.room_id = $1 AND i.user_id = $2`, roomID, userID).
		Scan(&inv.RoomID, &inv.UserID, &inv.EventID, &inv.Sender, &inv.RoomVersion, &ev, &state, &inv.CreatedTS, &inv.Pos)
	inv.Event, inv.InviteState = []byte(ev), []byte(state)
	return inv, mapErr(err)
}

// EndRemoteInvite implements storage.RemoteInvites.
func (db *DB) EndRemoteInvite(ctx context.Context, roomID, userID, membership, eventID string, pos int64, leave *storage.RemoteLeave) error {
	return db.tx(ctx, func(tx *txn) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM remote_invites WHERE room_id = $1 AND user_id = $2`, roomID, userID); err != nil {
			return err
		}
		if leave != nil {
			if _, err := tx.ExecContext(ctx, `INSERT INTO remote_leaves (room_id, user_id, event_id, room_version, event_json) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (room_id, user_id) DO UPDATE SET event_id = excluded.event_id, room_version = excluded.room_version, event_json = excluded.event_json`,
				roomID, userID, leave.EventID, leave.RoomVersion, string(leave.Event)); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, upsertMembership, roomID, userID, membership, eventID, pos)
		return err
	})
}

// GetRemoteLeave implements storage.RemoteInvites.
func (db *DB) GetRemoteLeave(ctx context.Context, roomID, userID string) (storage.RemoteLeave, error) {
	var l storage.RemoteLeave
	var ev string
	err := db.r.QueryRowContext(ctx, `SELECT event_id, room_version, event_json FROM remote_leaves WHERE room_id = $1 AND user_id = $2`, roomID, userID).
		Scan(&l.EventID, &l.RoomVersion, &ev)
	l.Event = []byte(ev)
	return l, mapErr(err)
}
