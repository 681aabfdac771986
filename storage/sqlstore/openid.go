package sqlstore

import (
	"context"
	"fmt"
)

// PutOpenIDToken implements storage.OpenIDTokens.
func (db *DB) PutOpenIDToken(ctx context.Context, tokenHash, userID string, expiresTS, nowTS int64) error {
	return db.tx(ctx, func(tx *txn) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM openid_tokens WHERE expires_ts < $1`, nowTS); err != nil {
			return fmt.Errorf("delete expired openid tokens: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)`,
			tokenHash, userID, expiresTS); err != nil {
			return fmt.Errorf("store openid token: %w", mapErr(err))
		}
		return nil
	})
}

// OpenIDTokenUser implements storage.OpenIDTokens.
func (db *DB) OpenIDTokenUser(ctx context.Context, tokenHash string, nowTS int64) (string, error) {
	var userID string
	err := db.r.QueryRowContext(ctx, `SELECT user_id FROM openid_tokens WHERE token_hash = $1 AND expires_ts > $2`, tokenHash, nowTS).Scan(&userID)
	return userID, mapErr(err)
}
