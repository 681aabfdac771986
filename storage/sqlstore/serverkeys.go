package sqlstore

import (
	"context"
	"encoding/base64"

	"github.com/machi-chat/machi/storage"
)

// PutServerKeys implements storage.ServerKeys.
func (db *DB) PutServerKeys(ctx context.Context, keys []storage.ServerKey) error {
	return db.tx(ctx, func(tx *txn) error {
		for _, k := range keys {
			_, err := tx.ExecContext(ctx, `INSERT INTO server_keys (server_name, key_id, public_key, valid_until_ts, expired_ts, fetched_ts, response)
				VALUES ($1, $2, $3, $4, $5, $6, $7)
				ON CONFLICT (server_name, key_id) DO UPDATE SET public_key = excluded.public_key, valid_until_ts = excluded.valid_until_ts,
				expired_ts = excluded.expired_ts, fetched_ts = excluded.fetched_ts, response = excluded.response`,
				k.ServerName, k.KeyID, base64.RawStdEncoding.EncodeToString(k.PublicKey), k.ValidUntilTS, k.ExpiredTS, k.FetchedTS, string(k.Response))
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// GetServerKeys implements storage.ServerKeys.
func (db *DB) GetServerKeys(ctx context.Context, serverNames []string) (map[string][]storage.ServerKey, error) {
	out := map[string][]storage.ServerKey{}
	for _, name := range serverNames {
		keys, err := queryList(ctx, db, scanServerKey, `SELECT server_name, key_id, public_key, valid_until_ts, expired_ts, fetched_ts, response
			FROM server_keys WHERE server_name = $1 ORDER BY key_id`, name)
		if err != nil {
			return nil, err
		}
		if len(keys) > 0 {
			out[name] = keys
		}
	}
	return out, nil
}

func scanServerKey(row interface{ Scan(...any) error }) (storage.ServerKey, error) {
	var k storage.ServerKey
	var pub, resp string
	if err := row.Scan(&k.ServerName, &k.KeyID, &pub, &k.ValidUntilTS, &k.ExpiredTS, &k.FetchedTS, &resp); err != nil {
		return k, mapErr(err)
	}
	var err error
	k.PublicKey, err = base64.RawStdEncoding.DecodeString(pub)
	k.Response = []byte(resp)
	return k, err
}
