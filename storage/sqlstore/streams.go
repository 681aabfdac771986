package sqlstore

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/machi-chat/machi/storage"
)

// PutAccountData implements storage.Streams.
func (db *DB) PutAccountData(ctx context.Context, d storage.AccountData) error {
	_, err := db.w.ExecContext(ctx, `INSERT INTO account_data (user_id, room_id, type, content, stream_pos) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = excluded.content, stream_pos = excluded.stream_pos`,
		d.UserID, d.RoomID, d.Type, string(d.Content), d.Pos)
	if err != nil {
		return fmt.Errorf("put account data: %w", mapErr(err))
	}
	return nil
}

// GetAccountData implements storage.Streams.
func (db *DB) GetAccountData(ctx context.Context, userID, roomID, typ string) ([]byte, error) {
	var content string
	err := db.r.QueryRowContext(ctx, `SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3`, userID, roomID, typ).Scan(&content)
	return []byte(content), mapErr(err)
}

// AccountDataSince implements storage.Streams.
func (db *DB) AccountDataSince(ctx context.Context, userID string, from, to int64) ([]storage.AccountData, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT room_id, type, content, stream_pos FROM account_data
		WHERE user_id = $1 AND stream_pos > $2 AND stream_pos <= $3 ORDER BY stream_pos`, userID, from, to)
	if err != nil {
		return nil, mapErr(err)
	}
	defer rows.Close()
	var out []storage.AccountData
	for rows.Next() {
		d := storage.AccountData{UserID: userID}
		var content string
		if err := rows.Scan(&d.RoomID, &d.Type, &content, &d.Pos); err != nil {
			return nil, mapErr(err)
		}
		d.Content = []byte(content)
		out = append(out, d)
	}
	return out, mapErr(rows.Err())
}

// PutReceipt implements storage.Streams.
func (db *DB) PutReceipt(ctx context.Context, r storage.Receipt) error {
	_, err := db.w.ExecContext(ctx, `INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, ts, stream_pos) VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (room_id, user_id, receipt_type, thread_id) DO UPDATE SET event_id = excluded.event_id, ts = excluded.ts, stream_pos = excluded.stream_pos`,
		r.RoomID, r.UserID, r.Type, r.ThreadID, r.EventID, r.TS, r.Pos)
	if err != nil {
		return fmt.Errorf("put receipt: %w", mapErr(err))
	}
	return nil
}

// ReceiptsSince implements storage.Streams.
func (db *DB) ReceiptsSince(ctx context.Context, roomIDs []string, from, to int64) ([]storage.Receipt, error) {
	var out []storage.Receipt
	for len(roomIDs) > 0 {
		n := min(len(roomIDs), 500)
		args := append([]any{from, to}, stringArgs(roomIDs[:n])...)
		rows, err := db.r.QueryContext(ctx, `SELECT room_id, user_id, receipt_type, thread_id, event_id, ts, stream_pos FROM receipts
			WHERE stream_pos > $1 AND stream_pos <= $2 AND room_id IN (`+placeholders(3, n)+`) ORDER BY stream_pos`, args...)
		if err != nil {
			return nil, mapErr(err)
		}
		rs, err := scanReceipts(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, rs...)
		roomIDs = roomIDs[n:]
	}
	return out, nil
}

// UserReceipts implements storage.Streams.
func (db *DB) UserReceipts(ctx context.Context, userID string) ([]storage.Receipt, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT room_id, user_id, receipt_type, thread_id, event_id, ts, stream_pos FROM receipts
		WHERE user_id = $1 ORDER BY stream_pos`, userID)
	if err != nil {
		return nil, mapErr(err)
	}
	return scanReceipts(rows)
}

func scanReceipts(rows *sql.Rows) ([]storage.Receipt, error) {
	defer rows.Close()
	var out []storage.Receipt
	for rows.Next() {
		var r storage.Receipt
		if err := rows.Scan(&r.RoomID, &r.UserID, &r.Type, &r.ThreadID, &r.EventID, &r.TS, &r.Pos); err != nil {
			return nil, mapErr(err)
		}
		out = append(out, r)
	}
	return out, mapErr(rows.Err())
}

// PutToDevice implements storage.Streams.
func (db *DB) PutToDevice(ctx context.Context, msgs []storage.ToDevice) error {
	return db.tx(ctx, func(tx *txn) error {
		for _, m := range msgs {
			if _, err := tx.ExecContext(ctx, `INSERT INTO to_device (stream_pos, user_id, device_id, sender, type, content) VALUES ($1, $2, $3, $4, $5, $6)`,
				m.Pos, m.UserID, m.DeviceID, m.Sender, m.Type, string(m.Content)); err != nil {
				return fmt.Errorf("put to-device: %w", err)
			}
		}
		return nil
	})
}

// ToDeviceSince implements storage.Streams.
func (db *DB) ToDeviceSince(ctx context.Context, userID, deviceID string, from, to int64, limit int) ([]storage.ToDevice, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT stream_pos, sender, type, content FROM to_device
		WHERE user_id = $1 AND device_id = $2 AND stream_pos > $3 AND stream_pos <= $4 ORDER BY stream_pos LIMIT $5`, userID, deviceID, from, to, limit)
	if err != nil {
		return nil, mapErr(err)
	}
	defer rows.Close()
	var out []storage.ToDevice
	for rows.Next() {
		m := storage.ToDevice{UserID: userID, DeviceID: deviceID}
		var content string
		if err := rows.Scan(&m.Pos, &m.Sender, &m.Type, &content); err != nil {
			return nil, mapErr(err)
		}
		m.Content = []byte(content)
		out = append(out, m)
	}
	return out, mapErr(rows.Err())
}

// DeleteToDevice implements storage.Streams.
func (db *DB) DeleteToDevice(ctx context.Context, userID, deviceID string, upTo int64) error {
	return db.tx(ctx, func(tx *txn) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM to_device WHERE user_id = $1 AND device_id = $2 AND stream_pos <= $3`, userID, deviceID, upTo); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO stream_high (id, pos) VALUES (1, $1)
			ON CONFLICT (id) DO UPDATE SET pos = CASE WHEN excluded.pos > stream_high.pos THEN excluded.pos ELSE stream_high.pos END`, upTo)
		return err
	})
}

// PutMedia implements storage.Media.
func (db *DB) PutMedia(ctx context.Context, m storage.MediaItem) error {
	_, err := db.w.ExecContext(ctx, `INSERT INTO media (media_id, content_type, size, filename, sha256, uploader, created_ts) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		m.MediaID, m.ContentType, m.Size, m.Filename, m.SHA256, m.Uploader, m.CreatedTS)
	if err != nil {
		return fmt.Errorf("put media: %w", mapErr(err))
	}
	return nil
}

// GetMedia implements storage.Media.
func (db *DB) GetMedia(ctx context.Context, mediaID string) (storage.MediaItem, error) {
	m := storage.MediaItem{MediaID: mediaID}
	err := db.r.QueryRowContext(ctx, `SELECT content_type, size, filename, sha256, uploader, created_ts FROM media WHERE media_id = $1`, mediaID).
		Scan(&m.ContentType, &m.Size, &m.Filename, &m.SHA256, &m.Uploader, &m.CreatedTS)
	return m, mapErr(err)
}

// PutRemoteMedia implements storage.Media.
func (db *DB) PutRemoteMedia(ctx context.Context, server, mediaID, localID string) (string, error) {
	if _, err := db.w.ExecContext(ctx, `INSERT INTO remote_media (server_name, media_id, local_id) VALUES ($1, $2, $3)
		ON CONFLICT (server_name, media_id) DO NOTHING`, server, mediaID, localID); err != nil {
		return "", mapErr(err)
	}
	return db.GetRemoteMedia(ctx, server, mediaID)
}

// GetRemoteMedia implements storage.Media.
func (db *DB) GetRemoteMedia(ctx context.Context, server, mediaID string) (string, error) {
	var id string
	err := db.w.QueryRowContext(ctx, `SELECT local_id FROM remote_media WHERE server_name = $1 AND media_id = $2`, server, mediaID).Scan(&id)
	return id, mapErr(err)
}
