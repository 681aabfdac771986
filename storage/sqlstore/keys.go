package sqlstore

import (
	"context"
	"errors"

	"github.com/machi-chat/machi/storage"
)

// PutDeviceKeys implements storage.Keys.
func (db *DB) PutDeviceKeys(ctx context.Context, userID, deviceID string, keyJSON []byte) error {
	_, err := db.w.ExecContext(ctx, `INSERT INTO device_keys (user_id, device_id, key_json) VALUES ($1, $2, $3)
		ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json`, userID, deviceID, string(keyJSON))
	return mapErr(err)
}

// DeviceKeys implements storage.Keys.
func (db *DB) DeviceKeys(ctx context.Context, want map[string][]string) (map[string]map[string][]byte, error) {
	out := map[string]map[string][]byte{}
	if len(want) == 0 {
		return out, nil
	}
	users := make([]string, 0, len(want))
	for u := range want {
		users = append(users, u)
	}
	rows, err := db.r.QueryContext(ctx, `SELECT user_id, device_id, key_json FROM device_keys WHERE user_id IN (`+placeholders(1, len(users))+`)`, stringArgs(users)...)
	if err != nil {
		return nil, mapErr(err)
	}
	defer rows.Close()
	for rows.Next() {
		var u, d, js string
		if err := rows.Scan(&u, &d, &js); err != nil {
			return nil, mapErr(err)
		}
		if only := want[u]; len(only) > 0 && !contains(only, d) {
			continue
		}
		if out[u] == nil {
			out[u] = map[string][]byte{}
		}
		out[u][d] = []byte(js)
	}
	return out, mapErr(rows.Err())
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// PutOneTimeKeys implements storage.Keys.
func (db *DB) PutOneTimeKeys(ctx context.Context, userID, deviceID string, keys []storage.OneTimeKey) error {
	return db.tx(ctx, func(tx *txn) error {
		for _, k := range keys {
			if _, err := tx.ExecContext(ctx, `INSERT INTO one_time_keys (user_id, device_id, key_id, algorithm, key_json)
				VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`, userID, deviceID, k.KeyID, k.Algorithm, string(k.JSON)); err != nil {
				return err
			}
		}
		return nil
	})
}

// OneTimeKeyCounts implements storage.Keys.
func (db *DB) OneTimeKeyCounts(ctx context.Context, userID, deviceID string) (map[string]int, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT algorithm, COUNT(*) FROM one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm`, userID, deviceID)
	if err != nil {
		return nil, mapErr(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var alg string
		var n int
		if err := rows.Scan(&alg, &n); err != nil {
			return nil, mapErr(err)
		}
		out[alg] = n
	}
	return out, mapErr(rows.Err())
}

// ClaimKey implements storage.Keys. The DELETE … RETURNING makes a claim
// atomic: two claimers never get the same key.
func (db *DB) ClaimKey(ctx context.Context, userID, deviceID, algorithm string) (storage.OneTimeKey, error) {
	k := storage.OneTimeKey{Algorithm: algorithm}
	err := db.tx(ctx, func(tx *txn) error {
		var js string
		err := tx.QueryRowContext(ctx, `DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND key_id = (
			SELECT key_id FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 ORDER BY key_id LIMIT 1)
			RETURNING key_id, key_json`, userID, deviceID, algorithm).Scan(&k.KeyID, &js)
		if err == nil {
			k.JSON = []byte(js)
			return nil
		}
		if !errors.Is(mapErr(err), storage.ErrNotFound) {
			return err
		}
		if err := tx.QueryRowContext(ctx, `UPDATE fallback_keys SET used = 1 WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
			RETURNING key_id, key_json`, userID, deviceID, algorithm).Scan(&k.KeyID, &js); err != nil {
			return err
		}
		k.JSON = []byte(js)
		return nil
	})
	return k, err
}

// PutFallbackKeys implements storage.Keys.
func (db *DB) PutFallbackKeys(ctx context.Context, userID, deviceID string, keys []storage.OneTimeKey) error {
	return db.tx(ctx, func(tx *txn) error {
		for _, k := range keys {
			if _, err := tx.ExecContext(ctx, `INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)
				VALUES ($1, $2, $3, $4, $5, 0) ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET
				key_id = excluded.key_id, key_json = excluded.key_json,
				used = CASE WHEN fallback_keys.key_id = excluded.key_id THEN fallback_keys.used ELSE 0 END`,
				userID, deviceID, k.Algorithm, k.KeyID, string(k.JSON)); err != nil {
				return err
			}
		}
		return nil
	})
}

// UnusedFallbackKeyTypes implements storage.Keys.
func (db *DB) UnusedFallbackKeyTypes(ctx context.Context, userID, deviceID string) ([]string, error) {
	return queryList(ctx, db, scanString, `SELECT algorithm FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND used = 0 ORDER BY algorithm`, userID, deviceID)
}

// PutCrossSigningKey implements storage.Keys.
func (db *DB) PutCrossSigningKey(ctx context.Context, userID, keyType string, keyJSON []byte) error {
	_, err := db.w.ExecContext(ctx, `INSERT INTO cross_signing_keys (user_id, key_type, key_json) VALUES ($1, $2, $3)
		ON CONFLICT (user_id, key_type) DO UPDATE SET key_json = excluded.key_json`, userID, keyType, string(keyJSON))
	return mapErr(err)
}

// CrossSigningKeys implements storage.Keys.
func (db *DB) CrossSigningKeys(ctx context.Context, userIDs []string) (map[string]map[string][]byte, error) {
	out := map[string]map[string][]byte{}
	if len(userIDs) == 0 {
		return out, nil
	}
	rows, err := db.r.QueryContext(ctx, `SELECT user_id, key_type, key_json FROM cross_signing_keys WHERE user_id IN (`+placeholders(1, len(userIDs))+`)`, stringArgs(userIDs)...)
	if err != nil {
		return nil, mapErr(err)
	}
	defer rows.Close()
	for rows.Next() {
		var u, typ, js string
		if err := rows.Scan(&u, &typ, &js); err != nil {
			return nil, mapErr(err)
		}
		if out[u] == nil {
			out[u] = map[string][]byte{}
		}
		out[u][typ] = []byte(js)
	}
	return out, mapErr(rows.Err())
}

// AddDeviceListChange implements storage.Keys.
func (db *DB) AddDeviceListChange(ctx context.Context, userID string, pos int64) error {
	_, err := db.w.ExecContext(ctx, `INSERT INTO device_list_changes (user_id, stream_pos) VALUES ($1, $2) ON CONFLICT DO NOTHING`, userID, pos)
	return mapErr(err)
}

// DeviceListChanges implements storage.Keys.
func (db *DB) DeviceListChanges(ctx context.Context, from, to int64) ([]string, error) {
	return queryList(ctx, db, scanString, `SELECT DISTINCT user_id FROM device_list_changes WHERE stream_pos > $1 AND stream_pos <= $2 ORDER BY user_id`, from, to)
}

// AddViewerDeviceListChanges implements storage.Keys.
func (db *DB) AddViewerDeviceListChanges(ctx context.Context, pos int64, changes []storage.ViewerDeviceListChange) error {
	if len(changes) == 0 {
		return nil
	}
	return db.tx(ctx, func(tx *txn) error {
		for _, c := range changes {
			if _, err := tx.ExecContext(ctx, `INSERT INTO device_list_viewer_changes (viewer, user_id, stream_pos, left_rooms) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`,
				c.Viewer, c.UserID, pos, boolInt(c.Left)); err != nil {
				return err
			}
		}
		return nil
	})
}

// ViewerDeviceListChanges implements storage.Keys. A user both changed
// and left in the range is listed as in the latest row.
func (db *DB) ViewerDeviceListChanges(ctx context.Context, viewer string, from, to int64) (changed, left []string, err error) {
	rows, err := db.r.QueryContext(ctx, `SELECT user_id, left_rooms FROM device_list_viewer_changes WHERE viewer = $1 AND stream_pos > $2 AND stream_pos <= $3 ORDER BY stream_pos`, viewer, from, to)
	if err != nil {
		return nil, nil, mapErr(err)
	}
	defer rows.Close()
	last := map[string]bool{}
	var order []string
	for rows.Next() {
		var u string
		var l int
		if err := rows.Scan(&u, &l); err != nil {
			return nil, nil, mapErr(err)
		}
		if _, ok := last[u]; !ok {
			order = append(order, u)
		}
		last[u] = l != 0
	}
	if err := rows.Err(); err != nil {
		return nil, nil, mapErr(err)
	}
	changed, left = []string{}, []string{}
	for _, u := range order {
		if last[u] {
			left = append(left, u)
		} else {
			changed = append(changed, u)
		}
	}
	return changed, left, nil
}
