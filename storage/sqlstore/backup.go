package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/machi-chat/machi/storage"
)

// parseVersion reads a backup version as stored: a positive decimal in its
// canonical form, so "01" does not name version 1.
func parseVersion(v string) (int64, bool) {
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil && n > 0 && strconv.FormatInt(n, 10) == v
}

// CreateKeyBackup implements storage.KeyBackups. Numbers count deleted
// versions too, so a deleted version never comes back.
func (db *DB) CreateKeyBackup(ctx context.Context, userID, algorithm string, authData []byte) (string, error) {
	var version int64
	var err error
	// Two creations at once may pick the same number on PostgreSQL; the
	// primary key refuses one, which then picks the next.
	for range 5 {
		err = db.tx(ctx, func(tx *txn) error {
			if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) + 1 FROM key_backup_versions WHERE user_id = $1`, userID).Scan(&version); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO key_backup_versions (user_id, version, algorithm, auth_data) VALUES ($1, $2, $3, $4)`,
				userID, version, algorithm, string(authData))
			return err
		})
		if !errors.Is(err, storage.ErrConflict) {
			break
		}
	}
	if err != nil {
		return "", fmt.Errorf("create key backup: %w", err)
	}
	return strconv.FormatInt(version, 10), nil
}

const backupCols = `v.version, v.algorithm, v.auth_data, v.etag,
	(SELECT COUNT(*) FROM key_backup_keys k WHERE k.user_id = v.user_id AND k.version = v.version)`

func scanBackup(row interface{ Scan(...any) error }) (storage.KeyBackup, error) {
	var b storage.KeyBackup
	var version, etag int64
	var auth string
	err := row.Scan(&version, &b.Algorithm, &auth, &etag, &b.Count)
	b.Version, b.ETag, b.AuthData = strconv.FormatInt(version, 10), strconv.FormatInt(etag, 10), []byte(auth)
	return b, mapErr(err)
}

// KeyBackup implements storage.KeyBackups.
func (db *DB) KeyBackup(ctx context.Context, userID, version string) (storage.KeyBackup, error) {
	if version == "" {
		return scanBackup(db.r.QueryRowContext(ctx, `SELECT `+backupCols+` FROM key_backup_versions v
			WHERE v.user_id = $1 AND v.deleted = 0 ORDER BY v.version DESC LIMIT 1`, userID))
	}
	n, ok := parseVersion(version)
	if !ok {
		return storage.KeyBackup{}, storage.ErrNotFound
	}
	return scanBackup(db.r.QueryRowContext(ctx, `SELECT `+backupCols+` FROM key_backup_versions v
		WHERE v.user_id = $1 AND v.version = $2 AND v.deleted = 0`, userID, n))
}

// UpdateKeyBackup implements storage.KeyBackups.
func (db *DB) UpdateKeyBackup(ctx context.Context, userID, version string, authData []byte) error {
	n, ok := parseVersion(version)
	if !ok {
		return storage.ErrNotFound
	}
	return db.execOne(ctx, `UPDATE key_backup_versions SET auth_data = $3 WHERE user_id = $1 AND version = $2 AND deleted = 0`, userID, n, string(authData))
}

// DeleteKeyBackup implements storage.KeyBackups.
func (db *DB) DeleteKeyBackup(ctx context.Context, userID, version string) error {
	n, ok := parseVersion(version)
	if !ok {
		return storage.ErrNotFound
	}
	return db.tx(ctx, func(tx *txn) error {
		res, err := tx.ExecContext(ctx, `UPDATE key_backup_versions SET deleted = 1 WHERE user_id = $1 AND version = $2`, userID, n)
		if err != nil {
			return err
		}
		if rows, err := res.RowsAffected(); err != nil {
			return err
		} else if rows == 0 {
			return storage.ErrNotFound
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM key_backup_keys WHERE user_id = $1 AND version = $2`, userID, n)
		return err
	})
}

// currentVersion is the user's current backup version, read in tx.
func currentVersion(ctx context.Context, tx *txn, userID string) (int64, error) {
	var cur int64
	err := tx.QueryRowContext(ctx, `SELECT version FROM key_backup_versions WHERE user_id = $1 AND deleted = 0 ORDER BY version DESC LIMIT 1`, userID).Scan(&cur)
	return cur, mapErr(err)
}

// wrongVersion is the error of a write to version n when cur is current.
func wrongVersion(n, cur int64) error {
	if n == cur {
		return nil
	}
	return &storage.WrongBackupVersionError{Current: strconv.FormatInt(cur, 10)}
}

// putBackupKeysSQL holds the upserts of 1, 2, 4, … maxKeysPerInsert keys.
var putBackupKeysSQL = func() map[int]string {
	m := map[int]string{}
	for n := 1; n <= maxKeysPerInsert; n *= 2 {
		m[n] = putBackupKeys(n)
	}
	return m
}()

// putBackupKeys is the upsert of n keys. Its WHERE is the spec's rule for
// which copy of a session key to keep; an update it skips changes no row,
// so the etag stays.
func putBackupKeys(n int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO key_backup_keys (user_id, version, room_id, session_id, first_message_index, forwarded_count, is_verified, session_data) VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "($1, $2, $%d, $%d, $%d, $%d, $%d, $%d)", 3+6*i, 4+6*i, 5+6*i, 6+6*i, 7+6*i, 8+6*i)
	}
	b.WriteString(`
	ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET
		first_message_index = excluded.first_message_index, forwarded_count = excluded.forwarded_count,
		is_verified = excluded.is_verified, session_data = excluded.session_data
	WHERE excluded.is_verified > key_backup_keys.is_verified
		OR (excluded.is_verified = key_backup_keys.is_verified AND (
			excluded.first_message_index < key_backup_keys.first_message_index
			OR (excluded.first_message_index = key_backup_keys.first_message_index
				AND excluded.forwarded_count < key_backup_keys.forwarded_count)))`)
	return b.String()
}

// betterKey reports whether a is a better copy of a session key than b.
func betterKey(a, b storage.BackupKey) bool {
	if a.IsVerified != b.IsVerified {
		return a.IsVerified
	}
	if a.FirstMessageIndex != b.FirstMessageIndex {
		return a.FirstMessageIndex < b.FirstMessageIndex
	}
	return a.ForwardedCount < b.ForwardedCount
}

// maxKeysPerInsert bounds one INSERT's rows. Batches are split into
// powers of two so that only a few statement texts exist to be prepared,
// and each costs one round trip on PostgreSQL rather than one per key.
const maxKeysPerInsert = 128

// PutBackupKeys implements storage.KeyBackups.
func (db *DB) PutBackupKeys(ctx context.Context, userID, version string, keys []storage.BackupKey) (storage.BackupStats, error) {
	// One statement may not touch a row twice: of two copies of one
	// session key, the better goes in.
	type id struct{ room, session string }
	seen := make(map[id]int, len(keys))
	var unique []storage.BackupKey
	for _, k := range keys {
		if i, ok := seen[id{k.RoomID, k.SessionID}]; ok {
			if betterKey(k, unique[i]) {
				unique[i] = k
			}
			continue
		}
		seen[id{k.RoomID, k.SessionID}] = len(unique)
		unique = append(unique, k)
	}
	var stats storage.BackupStats
	err := db.tx(ctx, func(tx *txn) error {
		cur, err := currentVersion(ctx, tx, userID)
		if err != nil {
			return err
		}
		n, _ := parseVersion(version)
		if err := wrongVersion(n, cur); err != nil {
			return err
		}
		var changed int64
		for rest := unique; len(rest) > 0; {
			size := maxKeysPerInsert
			for size > len(rest) {
				size /= 2
			}
			args := make([]any, 0, 2+6*size)
			args = append(args, userID, n)
			for _, k := range rest[:size] {
				args = append(args, k.RoomID, k.SessionID, k.FirstMessageIndex, k.ForwardedCount, boolInt(k.IsVerified), string(k.SessionData))
			}
			res, err := tx.ExecContext(ctx, putBackupKeysSQL[size], args...)
			if err != nil {
				return err
			}
			rows, err := res.RowsAffected()
			if err != nil {
				return err
			}
			changed += rows
			rest = rest[size:]
		}
		return bumpETag(ctx, tx, userID, n, int(min(changed, 1)), &stats)
	})
	return stats, err
}

// bumpETag moves a version's etag on when its keys changed and reads the
// stats after. On PostgreSQL the UPDATE also waits for a deletion of the
// version running at the same time, and then finds no row: the writes of
// this transaction must not outlive their version, so it fails.
func bumpETag(ctx context.Context, tx *txn, userID string, version int64, changed int, stats *storage.BackupStats) error {
	res, err := tx.ExecContext(ctx, `UPDATE key_backup_versions SET etag = etag + $3 WHERE user_id = $1 AND version = $2 AND deleted = 0`,
		userID, version, min(changed, 1))
	if err != nil {
		return err
	}
	if rows, err := res.RowsAffected(); err != nil {
		return err
	} else if rows == 0 {
		return storage.ErrNotFound
	}
	var etag int64
	if err := tx.QueryRowContext(ctx, `SELECT v.etag, (SELECT COUNT(*) FROM key_backup_keys k WHERE k.user_id = v.user_id AND k.version = v.version)
		FROM key_backup_versions v WHERE v.user_id = $1 AND v.version = $2`, userID, version).Scan(&etag, &stats.Count); err != nil {
		return err
	}
	stats.ETag = strconv.FormatInt(etag, 10)
	return nil
}

// keyFilter is the WHERE of a selection of a version's keys.
func keyFilter(roomID, sessionID string) (string, []any) {
	switch {
	case roomID == "":
		return ``, nil
	case sessionID == "":
		return ` AND room_id = $3`, []any{roomID}
	default:
		return ` AND room_id = $3 AND session_id = $4`, []any{roomID, sessionID}
	}
}

func scanBackupKey(row interface{ Scan(...any) error }) (storage.BackupKey, error) {
	var k storage.BackupKey
	var verified int
	var data string
	err := row.Scan(&k.RoomID, &k.SessionID, &k.FirstMessageIndex, &k.ForwardedCount, &verified, &data)
	k.IsVerified, k.SessionData = verified != 0, []byte(data)
	return k, mapErr(err)
}

// BackupKeys implements storage.KeyBackups.
func (db *DB) BackupKeys(ctx context.Context, userID, version, roomID, sessionID string) ([]storage.BackupKey, error) {
	n, ok := parseVersion(version)
	if !ok {
		return nil, storage.ErrNotFound
	}
	// The version is read first: a version without keys has an empty list,
	// one that does not exist is ErrNotFound.
	if _, err := db.KeyBackup(ctx, userID, version); err != nil {
		return nil, err
	}
	where, args := keyFilter(roomID, sessionID)
	return queryList(ctx, db, scanBackupKey, `SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data
		FROM key_backup_keys WHERE user_id = $1 AND version = $2`+where+` ORDER BY room_id, session_id`,
		append([]any{userID, n}, args...)...)
}

// DeleteBackupKeys implements storage.KeyBackups. Any version not deleted
// may lose keys, the current one or an older one.
func (db *DB) DeleteBackupKeys(ctx context.Context, userID, version, roomID, sessionID string) (storage.BackupStats, error) {
	var stats storage.BackupStats
	n, ok := parseVersion(version)
	if !ok {
		return stats, storage.ErrNotFound
	}
	where, args := keyFilter(roomID, sessionID)
	err := db.tx(ctx, func(tx *txn) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM key_backup_keys WHERE user_id = $1 AND version = $2`+where, append([]any{userID, n}, args...)...)
		if err != nil {
			return err
		}
		rows, err := res.RowsAffected()
		if err != nil {
			return err
		}
		return bumpETag(ctx, tx, userID, n, int(rows), &stats)
	})
	return stats, err
}
