package sqlstore

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/machi-chat/machi/storage"
)

const userCols = `user_id, password_hash, is_admin, deactivated, displayname, avatar_url, created_ts, suspended`

func scanUser(row interface{ Scan(...any) error }) (storage.User, error) {
	var u storage.User
	var admin, deact, susp int
	err := row.Scan(&u.UserID, &u.PasswordHash, &admin, &deact, &u.DisplayName, &u.AvatarURL, &u.CreatedTS, &susp)
	u.IsAdmin, u.Deactivated, u.Suspended = admin != 0, deact != 0, susp != 0
	return u, mapErr(err)
}

// CreateUser implements storage.Accounts.
func (db *DB) CreateUser(ctx context.Context, u storage.User) error {
	_, err := db.w.ExecContext(ctx, `INSERT INTO users (`+userCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		u.UserID, u.PasswordHash, boolInt(u.IsAdmin), boolInt(u.Deactivated), u.DisplayName, u.AvatarURL, u.CreatedTS, boolInt(u.Suspended))
	if err != nil {
		return fmt.Errorf("create user: %w", mapErr(err))
	}
	return nil
}

// GetUser implements storage.Accounts.
func (db *DB) GetUser(ctx context.Context, userID string) (storage.User, error) {
	return scanUser(db.r.QueryRowContext(ctx, `SELECT `+userCols+` FROM users WHERE user_id = $1`, userID))
}

// ListUsers implements storage.Accounts.
func (db *DB) ListUsers(ctx context.Context) ([]storage.User, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT `+userCols+` FROM users ORDER BY user_id`)
	if err != nil {
		return nil, mapErr(err)
	}
	defer rows.Close()
	var out []storage.User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, mapErr(rows.Err())
}

// execOne runs a statement that must change exactly one row.
func (db *DB) execOne(ctx context.Context, query string, args ...any) error {
	res, err := db.w.ExecContext(ctx, query, args...)
	if err != nil {
		return mapErr(err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return mapErr(err)
	} else if n == 0 {
		return storage.ErrNotFound
	}
	return nil
}

// SetPasswordHash implements storage.Accounts.
func (db *DB) SetPasswordHash(ctx context.Context, userID, hash string) error {
	return db.execOne(ctx, `UPDATE users SET password_hash = $2 WHERE user_id = $1`, userID, hash)
}

// SetAdmin implements storage.Accounts.
func (db *DB) SetAdmin(ctx context.Context, userID string, admin bool) error {
	return db.execOne(ctx, `UPDATE users SET is_admin = $2 WHERE user_id = $1`, userID, boolInt(admin))
}

// SetSuspended implements storage.Accounts.
func (db *DB) SetSuspended(ctx context.Context, userID string, suspended bool) error {
	return db.execOne(ctx, `UPDATE users SET suspended = $2 WHERE user_id = $1`, userID, boolInt(suspended))
}

// DeactivateUser implements storage.Accounts.
func (db *DB) DeactivateUser(ctx context.Context, userID string) error {
	return db.tx(ctx, func(tx *txn) error {
		res, err := tx.ExecContext(ctx, `UPDATE users SET deactivated = 1, password_hash = '', displayname = '', avatar_url = '' WHERE user_id = $1`, userID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return storage.ErrNotFound
		}
		for _, table := range []string{"devices", "device_keys", "one_time_keys", "fallback_keys", "cross_signing_keys", "pushers", "key_backup_keys", "notifications", "presence"} {
			if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE user_id = $1`, userID); err != nil {
				return err
			}
		}
		_, err = tx.ExecContext(ctx, `UPDATE key_backup_versions SET deleted = 1 WHERE user_id = $1`, userID)
		return err
	})
}

// SetDisplayName implements storage.Accounts.
func (db *DB) SetDisplayName(ctx context.Context, userID, name string) error {
	return db.execOne(ctx, `UPDATE users SET displayname = $2 WHERE user_id = $1`, userID, name)
}

// SetAvatarURL implements storage.Accounts.
func (db *DB) SetAvatarURL(ctx context.Context, userID, url string) error {
	return db.execOne(ctx, `UPDATE users SET avatar_url = $2 WHERE user_id = $1`, userID, url)
}

const deviceCols = `user_id, device_id, display_name, token_hash, last_seen_ts, last_seen_ip, created_ts, device_class`

func scanDevice(row interface{ Scan(...any) error }) (storage.Device, error) {
	var d storage.Device
	err := row.Scan(&d.UserID, &d.DeviceID, &d.DisplayName, &d.TokenHash, &d.LastSeenTS, &d.LastSeenIP, &d.CreatedTS, &d.Class)
	return d, mapErr(err)
}

// PutDevice implements storage.Accounts.
func (db *DB) PutDevice(ctx context.Context, d storage.Device) error {
	_, err := db.w.ExecContext(ctx, `INSERT INTO devices (`+deviceCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (user_id, device_id) DO UPDATE SET token_hash = excluded.token_hash, device_class = excluded.device_class,
		display_name = CASE WHEN excluded.display_name = '' THEN devices.display_name ELSE excluded.display_name END,
		last_seen_ts = excluded.last_seen_ts, last_seen_ip = excluded.last_seen_ip`,
		d.UserID, d.DeviceID, d.DisplayName, d.TokenHash, d.LastSeenTS, d.LastSeenIP, d.CreatedTS, orDefault(d.Class, "office"))
	if err != nil {
		return fmt.Errorf("put device: %w", mapErr(err))
	}
	return nil
}

// DeviceByTokenHash implements storage.Accounts.
func (db *DB) DeviceByTokenHash(ctx context.Context, hash string) (storage.Device, error) {
	return scanDevice(db.r.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE token_hash = $1`, hash))
}

// GetDevice implements storage.Accounts.
func (db *DB) GetDevice(ctx context.Context, userID, deviceID string) (storage.Device, error) {
	return scanDevice(db.r.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE user_id = $1 AND device_id = $2`, userID, deviceID))
}

// ListDevices implements storage.Accounts.
func (db *DB) ListDevices(ctx context.Context, userID string) ([]storage.Device, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE user_id = $1 ORDER BY device_id`, userID)
	if err != nil {
		return nil, mapErr(err)
	}
	defer rows.Close()
	var out []storage.Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, mapErr(rows.Err())
}

// SetDeviceName implements storage.Accounts.
func (db *DB) SetDeviceName(ctx context.Context, userID, deviceID, name string) error {
	return db.execOne(ctx, `UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2`, userID, deviceID, name)
}

// TouchDevice implements storage.Accounts.
func (db *DB) TouchDevice(ctx context.Context, userID, deviceID, ip string, ts int64) error {
	_, err := db.w.ExecContext(ctx, `UPDATE devices SET last_seen_ts = $3, last_seen_ip = $4 WHERE user_id = $1 AND device_id = $2`, userID, deviceID, ts, ip)
	return mapErr(err)
}

// DeleteDevices implements storage.Accounts.
func (db *DB) DeleteDevices(ctx context.Context, userID string, deviceIDs []string, keep string) ([]string, error) {
	var deleted []string
	err := db.tx(ctx, func(tx *txn) error {
		query := `DELETE FROM devices WHERE user_id = $1 AND device_id <> $2`
		args := []any{userID, keep}
		if len(deviceIDs) > 0 {
			ph := make([]string, len(deviceIDs))
			for i, id := range deviceIDs {
				ph[i] = "$" + strconv.Itoa(i+3)
				args = append(args, id)
			}
			query += ` AND device_id IN (` + strings.Join(ph, ",") + `)`
		}
		rows, err := tx.QueryContext(ctx, query+` RETURNING device_id`, args...)
		if err != nil {
			return err
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			deleted = append(deleted, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		// A device's encryption keys go with it.
		for _, id := range deleted {
			for _, table := range []string{"device_keys", "one_time_keys", "fallback_keys", "pushers"} {
				if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE user_id = $1 AND device_id = $2`, userID, id); err != nil {
					return err
				}
			}
		}
		return nil
	})
	return deleted, err
}

// CreateFilter implements storage.Accounts.
func (db *DB) CreateFilter(ctx context.Context, userID string, filterJSON []byte) (string, error) {
	var id int64
	err := db.tx(ctx, func(tx *txn) error {
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(filter_id), -1) + 1 FROM filters WHERE user_id = $1`, userID).Scan(&id); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO filters (user_id, filter_id, filter_json) VALUES ($1, $2, $3)`, userID, id, string(filterJSON))
		return err
	})
	if err != nil {
		return "", fmt.Errorf("create filter: %w", err)
	}
	return strconv.FormatInt(id, 10), nil
}

// GetFilter implements storage.Accounts.
func (db *DB) GetFilter(ctx context.Context, userID, filterID string) ([]byte, error) {
	id, err := strconv.ParseInt(filterID, 10, 64)
	if err != nil {
		return nil, storage.ErrNotFound
	}
	var js string
	err = db.r.QueryRowContext(ctx, `SELECT filter_json FROM filters WHERE user_id = $1 AND filter_id = $2`, userID, id).Scan(&js)
	return []byte(js), mapErr(err)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
