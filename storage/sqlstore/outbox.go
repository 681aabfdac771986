package sqlstore

import (
	"context"

	"github.com/machi-chat/machi/storage"
)

// EnqueueOutbound implements storage.Outbox.
func (db *DB) EnqueueOutbound(ctx context.Context, items []storage.OutboundItem) error {
	return db.tx(ctx, func(tx *txn) error {
		for _, it := range items {
			if _, err := tx.ExecContext(ctx, `INSERT INTO federation_outbox (id, destination, kind, payload, created_ts) VALUES ($1, $2, $3, $4, $5)`,
				it.ID, it.Destination, it.Kind, string(it.Payload), it.CreatedTS); err != nil {
				return err
			}
		}
		return nil
	})
}

// PendingOutbound implements storage.Outbox.
func (db *DB) PendingOutbound(ctx context.Context, destination, kind string, afterID int64, limit int) ([]storage.OutboundItem, error) {
	return queryList(ctx, db, scanOutbound, `SELECT id, destination, kind, payload, created_ts FROM federation_outbox
		WHERE destination = $1 AND kind = $2 AND id > $3 ORDER BY id LIMIT $4`, destination, kind, afterID, limit)
}

func scanOutbound(row interface{ Scan(...any) error }) (storage.OutboundItem, error) {
	var it storage.OutboundItem
	var payload string
	err := row.Scan(&it.ID, &it.Destination, &it.Kind, &payload, &it.CreatedTS)
	it.Payload = []byte(payload)
	return it, mapErr(err)
}

// DeleteOutbound implements storage.Outbox.
func (db *DB) DeleteOutbound(ctx context.Context, destination string, ids []int64) error {
	return db.tx(ctx, func(tx *txn) error {
		for _, id := range ids {
			if _, err := tx.ExecContext(ctx, `DELETE FROM federation_outbox WHERE destination = $1 AND id = $2`, destination, id); err != nil {
				return err
			}
		}
		return nil
	})
}

// OutboundDestinations implements storage.Outbox.
func (db *DB) OutboundDestinations(ctx context.Context) ([]string, error) {
	return queryList(ctx, db, func(row interface{ Scan(...any) error }) (string, error) {
		var d string
		return d, mapErr(row.Scan(&d))
	}, `SELECT DISTINCT destination FROM federation_outbox ORDER BY destination`)
}

// MaxOutboundID implements storage.Outbox.
func (db *DB) MaxOutboundID(ctx context.Context) (int64, error) {
	var id int64
	err := db.w.QueryRowContext(ctx, `SELECT COALESCE(MAX(id), 0) FROM federation_outbox`).Scan(&id)
	return id, mapErr(err)
}
