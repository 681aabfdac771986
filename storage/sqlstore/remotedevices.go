package sqlstore

import (
	"context"

	"github.com/machi-chat/machi/storage"
)

// PrevDeviceListChange implements storage.Keys.
func (db *DB) PrevDeviceListChange(ctx context.Context, userID string, before int64) (int64, error) {
	var pos int64
	err := db.r.QueryRowContext(ctx, `SELECT COALESCE(MAX(stream_pos), 0) FROM device_list_changes WHERE user_id = $1 AND stream_pos < $2`, userID, before).Scan(&pos)
	return pos, mapErr(err)
}

// RemoteDeviceLists implements storage.Keys.
func (db *DB) RemoteDeviceLists(ctx context.Context, userIDs []string) (map[string]storage.RemoteDeviceList, error) {
	out := map[string]storage.RemoteDeviceList{}
	if len(userIDs) == 0 {
		return out, nil
	}
	in := placeholders(1, len(userIDs))
	rows, err := db.r.QueryContext(ctx, `SELECT user_id, stream_id, master_key, self_signing_key, stale FROM remote_device_lists WHERE user_id IN (`+in+`)`, stringArgs(userIDs)...)
	if err != nil {
		return nil, mapErr(err)
	}
	defer rows.Close()
	for rows.Next() {
		var l storage.RemoteDeviceList
		var master, self string
		var stale int
		if err := rows.Scan(&l.UserID, &l.StreamID, &master, &self, &stale); err != nil {
			return nil, mapErr(err)
		}
		l.Master, l.SelfSigning, l.Stale = nonEmpty(master), nonEmpty(self), stale != 0
		l.Devices = []storage.RemoteDevice{}
		out[l.UserID] = l
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr(err)
	}
	rows.Close()
	drows, err := db.r.QueryContext(ctx, `SELECT user_id, device_id, display_name, key_json FROM remote_devices WHERE user_id IN (`+in+`) ORDER BY user_id, device_id`, stringArgs(userIDs)...)
	if err != nil {
		return nil, mapErr(err)
	}
	defer drows.Close()
	for drows.Next() {
		var u, keys string
		var d storage.RemoteDevice
		if err := drows.Scan(&u, &d.DeviceID, &d.DisplayName, &keys); err != nil {
			return nil, mapErr(err)
		}
		l, ok := out[u]
		if !ok {
			continue // a device row of a list deleted meanwhile
		}
		d.Keys = nonEmpty(keys)
		l.Devices = append(l.Devices, d)
		out[u] = l
	}
	return out, mapErr(drows.Err())
}

func nonEmpty(s string) []byte {
	if s == "" {
		return nil
	}
	return []byte(s)
}

// PutRemoteDeviceList implements storage.Keys.
func (db *DB) PutRemoteDeviceList(ctx context.Context, l storage.RemoteDeviceList) error {
	return db.tx(ctx, func(tx *txn) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM remote_devices WHERE user_id = $1`, l.UserID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO remote_device_lists (user_id, stream_id, master_key, self_signing_key, stale) VALUES ($1, $2, $3, $4, 0)
			ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id, master_key = excluded.master_key,
			self_signing_key = excluded.self_signing_key, stale = 0`, l.UserID, l.StreamID, string(l.Master), string(l.SelfSigning)); err != nil {
			return err
		}
		for _, d := range l.Devices {
			if _, err := tx.ExecContext(ctx, `INSERT INTO remote_devices (user_id, device_id, display_name, key_json) VALUES ($1, $2, $3, $4)
				ON CONFLICT (user_id, device_id) DO UPDATE SET display_name = excluded.display_name, key_json = excluded.key_json`,
				l.UserID, d.DeviceID, d.DisplayName, string(d.Keys)); err != nil {
				return err
			}
		}
		return nil
	})
}

// UpdateRemoteDevice implements storage.Keys.
func (db *DB) UpdateRemoteDevice(ctx context.Context, userID string, streamID int64, d storage.RemoteDevice, deleted bool) error {
	return db.tx(ctx, func(tx *txn) error {
		res, err := tx.ExecContext(ctx, `UPDATE remote_device_lists SET stream_id = $2 WHERE user_id = $1`, userID, streamID)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return storage.ErrNotFound
		}
		if deleted {
			_, err = tx.ExecContext(ctx, `DELETE FROM remote_devices WHERE user_id = $1 AND device_id = $2`, userID, d.DeviceID)
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO remote_devices (user_id, device_id, display_name, key_json) VALUES ($1, $2, $3, $4)
			ON CONFLICT (user_id, device_id) DO UPDATE SET display_name = excluded.display_name, key_json = excluded.key_json`,
			userID, d.DeviceID, d.DisplayName, string(d.Keys))
		return err
	})
}

// PutRemoteCrossSigningKeys implements storage.Keys.
func (db *DB) PutRemoteCrossSigningKeys(ctx context.Context, userID string, master, selfSigning []byte) error {
	if master != nil {
		if _, err := db.w.ExecContext(ctx, `UPDATE remote_device_lists SET master_key = $2 WHERE user_id = $1`, userID, string(master)); err != nil {
			return mapErr(err)
		}
	}
	if selfSigning != nil {
		if _, err := db.w.ExecContext(ctx, `UPDATE remote_device_lists SET self_signing_key = $2 WHERE user_id = $1`, userID, string(selfSigning)); err != nil {
			return mapErr(err)
		}
	}
	return nil
}

// MarkRemoteDeviceListStale implements storage.Keys.
func (db *DB) MarkRemoteDeviceListStale(ctx context.Context, userID string) error {
	_, err := db.w.ExecContext(ctx, `UPDATE remote_device_lists SET stale = 1 WHERE user_id = $1`, userID)
	return mapErr(err)
}

// DeleteRemoteDeviceList implements storage.Keys.
func (db *DB) DeleteRemoteDeviceList(ctx context.Context, userID string) error {
	return db.tx(ctx, func(tx *txn) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM remote_devices WHERE user_id = $1`, userID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM remote_device_lists WHERE user_id = $1`, userID)
		return err
	})
}
