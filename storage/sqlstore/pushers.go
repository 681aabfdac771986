package sqlstore

import (
	"context"

	"github.com/machi-chat/machi/storage"
)

const pusherCols = `user_id, device_id, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data, created_ts`

func scanPusher(row interface{ Scan(...any) error }) (storage.Pusher, error) {
	var p storage.Pusher
	var data string
	err := row.Scan(&p.UserID, &p.DeviceID, &p.AppID, &p.PushKey, &p.Kind, &p.AppDisplayName, &p.DeviceDisplayName, &p.ProfileTag, &p.Lang, &data, &p.CreatedTS)
	p.Data = []byte(data)
	return p, mapErr(err)
}

// PutPusher implements storage.Pushers.
func (db *DB) PutPusher(ctx context.Context, p storage.Pusher, appendOthers bool) error {
	return db.tx(ctx, func(tx *txn) error {
		if !appendOthers {
			if _, err := tx.ExecContext(ctx, `DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3`, p.AppID, p.PushKey, p.UserID); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO pushers (`+pusherCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
			ON CONFLICT (app_id, pushkey, user_id) DO UPDATE SET device_id = excluded.device_id, kind = excluded.kind,
			app_display_name = excluded.app_display_name, device_display_name = excluded.device_display_name,
			profile_tag = excluded.profile_tag, lang = excluded.lang, data = excluded.data`,
			p.UserID, p.DeviceID, p.AppID, p.PushKey, p.Kind, p.AppDisplayName, p.DeviceDisplayName, p.ProfileTag, p.Lang, string(p.Data), p.CreatedTS)
		return err
	})
}

// DeletePusher implements storage.Pushers.
func (db *DB) DeletePusher(ctx context.Context, userID, appID, pushKey string) error {
	_, err := db.w.ExecContext(ctx, `DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3`, userID, appID, pushKey)
	return mapErr(err)
}

// DeletePushKey implements storage.Pushers.
func (db *DB) DeletePushKey(ctx context.Context, appID, pushKey string) error {
	_, err := db.w.ExecContext(ctx, `DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2`, appID, pushKey)
	return mapErr(err)
}

// UserPushers implements storage.Pushers.
func (db *DB) UserPushers(ctx context.Context, userID string) ([]storage.Pusher, error) {
	return queryList(ctx, db, scanPusher, `SELECT `+pusherCols+` FROM pushers WHERE user_id = $1 ORDER BY app_id, pushkey`, userID)
}
