package sqlstore

import (
	"context"

	"github.com/machi-chat/machi/storage"
)

// PutPresence implements storage.Presence.
func (db *DB) PutPresence(ctx context.Context, p storage.PresenceState) error {
	_, err := db.w.ExecContext(ctx, `INSERT INTO presence (user_id, presence, status_msg, last_active_ts) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id) DO UPDATE SET presence = excluded.presence, status_msg = excluded.status_msg, last_active_ts = excluded.last_active_ts`,
		p.UserID, p.Presence, p.StatusMsg, p.LastActiveTS)
	return mapErr(err)
}

// AllPresence implements storage.Presence.
func (db *DB) AllPresence(ctx context.Context) ([]storage.PresenceState, error) {
	return queryList(ctx, db, func(row interface{ Scan(...any) error }) (storage.PresenceState, error) {
		var p storage.PresenceState
		err := row.Scan(&p.UserID, &p.Presence, &p.StatusMsg, &p.LastActiveTS)
		return p, mapErr(err)
	}, `SELECT user_id, presence, status_msg, last_active_ts FROM presence ORDER BY user_id`)
}
