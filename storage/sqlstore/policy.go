package sqlstore

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/machi-chat/machi/storage"
)

const codeCols = `code_id, user_id, code_hash, created_by, created_ts, expires_ts, used_ts, used_device`

func scanCode(row interface{ Scan(...any) error }) (storage.EnrollmentCode, error) {
	var c storage.EnrollmentCode
	err := row.Scan(&c.CodeID, &c.UserID, &c.CodeHash, &c.CreatedBy, &c.CreatedTS, &c.ExpiresTS, &c.UsedTS, &c.UsedDevice)
	return c, mapErr(err)
}

// PutEnrollmentCode implements storage.Policy.
func (db *DB) PutEnrollmentCode(ctx context.Context, c storage.EnrollmentCode) error {
	_, err := db.w.ExecContext(ctx, `INSERT INTO enrollment_codes (`+codeCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		c.CodeID, c.UserID, c.CodeHash, c.CreatedBy, c.CreatedTS, c.ExpiresTS, c.UsedTS, c.UsedDevice)
	return mapErr(err)
}

// UseEnrollmentCode implements storage.Policy. The update's WHERE clause
// makes using a code atomic: of two logins racing with one code, one wins.
func (db *DB) UseEnrollmentCode(ctx context.Context, userID, codeHash, deviceID string, now int64) (storage.EnrollmentCode, error) {
	var c storage.EnrollmentCode
	err := db.tx(ctx, func(tx *txn) error {
		res, err := tx.ExecContext(ctx, `UPDATE enrollment_codes SET used_ts = $4, used_device = $3
			WHERE user_id = $1 AND code_hash = $2 AND used_ts = 0 AND expires_ts > $4`, userID, codeHash, deviceID, now)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return storage.ErrNotFound
		}
		c, err = scanCode(tx.QueryRowContext(ctx, `SELECT `+codeCols+` FROM enrollment_codes WHERE code_hash = $1`, codeHash))
		return err
	})
	return c, err
}

// EnrollmentCodeByHash implements storage.Policy.
func (db *DB) EnrollmentCodeByHash(ctx context.Context, codeHash string, now int64) (storage.EnrollmentCode, error) {
	return scanCode(db.r.QueryRowContext(ctx, `SELECT `+codeCols+` FROM enrollment_codes
		WHERE code_hash = $1 AND used_ts = 0 AND expires_ts > $2`, codeHash, now))
}

// ListEnrollmentCodes implements storage.Policy.
func (db *DB) ListEnrollmentCodes(ctx context.Context, userID string) ([]storage.EnrollmentCode, error) {
	return queryList(ctx, db, scanCode, `SELECT `+codeCols+` FROM enrollment_codes WHERE user_id = $1 ORDER BY created_ts, code_id`, userID)
}

// DeleteEnrollmentCode implements storage.Policy.
func (db *DB) DeleteEnrollmentCode(ctx context.Context, userID, codeID string) error {
	return db.execOne(ctx, `DELETE FROM enrollment_codes WHERE user_id = $1 AND code_id = $2`, userID, codeID)
}

// queryList runs a query and scans every row.
func queryList[T any](ctx context.Context, db *DB, scan func(interface{ Scan(...any) error }) (T, error), query string, args ...any) ([]T, error) {
	rows, err := db.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, mapErr(err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, mapErr(rows.Err())
}

const auditCols = `id, ts, actor, device_id, action, rule, target, detail`

func scanAudit(row interface{ Scan(...any) error }) (storage.AuditEntry, error) {
	var e storage.AuditEntry
	err := row.Scan(&e.ID, &e.TS, &e.Actor, &e.DeviceID, &e.Action, &e.Rule, &e.Target, &e.Detail)
	return e, mapErr(err)
}

// AppendAudit implements storage.Policy.
func (db *DB) AppendAudit(ctx context.Context, e storage.AuditEntry) error {
	if e.Detail == "" {
		e.Detail = "{}"
	}
	_, err := db.w.ExecContext(ctx, `INSERT INTO audit_log (ts, actor, device_id, action, rule, target, detail)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, e.TS, e.Actor, e.DeviceID, e.Action, e.Rule, e.Target, e.Detail)
	return mapErr(err)
}

// QueryAudit implements storage.Policy: oldest first.
func (db *DB) QueryAudit(ctx context.Context, q storage.AuditQuery) ([]storage.AuditEntry, error) {
	var where []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	add("ts >= $%d", q.Since)
	if q.Until > 0 {
		add("ts <= $%d", q.Until)
	}
	if q.AfterID > 0 {
		add("id > $%d", q.AfterID)
	}
	for _, f := range []struct{ col, v string }{{"actor", q.Actor}, {"action", q.Action}, {"rule", q.Rule}, {"target", q.Target}} {
		if f.v != "" {
			add(f.col+" = $%d", f.v)
		}
	}
	limit := q.Limit
	if limit <= 0 || limit > 10000 {
		limit = 10000
	}
	query := `SELECT ` + auditCols + ` FROM audit_log WHERE ` + strings.Join(where, " AND ") + fmt.Sprintf(` ORDER BY id LIMIT %d`, limit)
	return queryList(ctx, db, scanAudit, query, args...)
}

func scanEmergency(row interface{ Scan(...any) error }) (storage.Emergency, error) {
	var e storage.Emergency
	var rooms string
	if err := row.Scan(&e.ID, &rooms, &e.Reason, &e.StartsTS, &e.EndsTS, &e.CreatedBy); err != nil {
		return e, mapErr(err)
	}
	if err := json.Unmarshal([]byte(rooms), &e.RoomIDs); err != nil {
		return e, fmt.Errorf("emergency %s: rooms: %w", e.ID, err)
	}
	return e, nil
}

// PutEmergency implements storage.Policy.
func (db *DB) PutEmergency(ctx context.Context, e storage.Emergency) error {
	rooms, _ := json.Marshal(append([]string{}, e.RoomIDs...))
	_, err := db.w.ExecContext(ctx, `INSERT INTO emergencies (id, rooms, reason, starts_ts, ends_ts, created_by) VALUES ($1, $2, $3, $4, $5, $6)`,
		e.ID, string(rooms), e.Reason, e.StartsTS, e.EndsTS, e.CreatedBy)
	return mapErr(err)
}

// EndEmergency implements storage.Policy.
func (db *DB) EndEmergency(ctx context.Context, id string, now int64) error {
	return db.execOne(ctx, `UPDATE emergencies SET ends_ts = CASE WHEN ends_ts > $2 THEN $2 ELSE ends_ts END WHERE id = $1`, id, now)
}

// Emergencies implements storage.Policy.
func (db *DB) Emergencies(ctx context.Context, now int64) ([]storage.Emergency, error) {
	return queryList(ctx, db, scanEmergency, `SELECT id, rooms, reason, starts_ts, ends_ts, created_by FROM emergencies WHERE ends_ts > $1 ORDER BY starts_ts, id`, now)
}

// PutExemption implements storage.Policy.
func (db *DB) PutExemption(ctx context.Context, e storage.Exemption) error {
	_, err := db.w.ExecContext(ctx, `INSERT INTO exemptions (user_id, reason, created_by, created_ts) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id) DO UPDATE SET reason = excluded.reason, created_by = excluded.created_by, created_ts = excluded.created_ts`,
		e.UserID, e.Reason, e.CreatedBy, e.CreatedTS)
	return mapErr(err)
}

// DeleteExemption implements storage.Policy.
func (db *DB) DeleteExemption(ctx context.Context, userID string) error {
	return db.execOne(ctx, `DELETE FROM exemptions WHERE user_id = $1`, userID)
}

// Exemptions implements storage.Policy.
func (db *DB) Exemptions(ctx context.Context) ([]storage.Exemption, error) {
	return queryList(ctx, db, func(row interface{ Scan(...any) error }) (storage.Exemption, error) {
		var e storage.Exemption
		return e, mapErr(row.Scan(&e.UserID, &e.Reason, &e.CreatedBy, &e.CreatedTS))
	}, `SELECT user_id, reason, created_by, created_ts FROM exemptions ORDER BY user_id`)
}

// PutSetting implements storage.Policy.
func (db *DB) PutSetting(ctx context.Context, name string, value []byte, ts int64) error {
	_, err := db.w.ExecContext(ctx, `INSERT INTO settings (name, value, updated_ts) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_ts = excluded.updated_ts`, name, string(value), ts)
	return mapErr(err)
}

// GetSetting implements storage.Policy.
func (db *DB) GetSetting(ctx context.Context, name string) ([]byte, error) {
	var v string
	if err := db.r.QueryRowContext(ctx, `SELECT value FROM settings WHERE name = $1`, name).Scan(&v); err != nil {
		return nil, mapErr(err)
	}
	return []byte(v), nil
}

// DeleteSetting implements storage.Policy.
func (db *DB) DeleteSetting(ctx context.Context, name string) error {
	_, err := db.w.ExecContext(ctx, `DELETE FROM settings WHERE name = $1`, name)
	return mapErr(err)
}

// SetUserGroups implements storage.Policy: the user's groups become
// exactly groups.
func (db *DB) SetUserGroups(ctx context.Context, userID string, groups []string) error {
	return db.tx(ctx, func(tx *txn) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM user_groups WHERE user_id = $1`, userID); err != nil {
			return err
		}
		for _, g := range groups {
			if _, err := tx.ExecContext(ctx, `INSERT INTO user_groups (user_id, group_name) VALUES ($1, $2) ON CONFLICT DO NOTHING`, userID, g); err != nil {
				return err
			}
		}
		return nil
	})
}

func scanString(row interface{ Scan(...any) error }) (string, error) {
	var s string
	return s, mapErr(row.Scan(&s))
}

// UserGroups implements storage.Policy.
func (db *DB) UserGroups(ctx context.Context, userID string) ([]string, error) {
	return queryList(ctx, db, scanString, `SELECT group_name FROM user_groups WHERE user_id = $1 ORDER BY group_name`, userID)
}

// GroupMembers implements storage.Policy.
func (db *DB) GroupMembers(ctx context.Context, group string) ([]string, error) {
	return queryList(ctx, db, scanString, `SELECT user_id FROM user_groups WHERE group_name = $1 ORDER BY user_id`, group)
}

// GetNoticeRoom implements storage.Policy.
func (db *DB) GetNoticeRoom(ctx context.Context, userID string) (string, error) {
	return scanString(db.r.QueryRowContext(ctx, `SELECT room_id FROM notice_rooms WHERE user_id = $1`, userID))
}

// PutNoticeRoom implements storage.Policy.
func (db *DB) PutNoticeRoom(ctx context.Context, userID, roomID string) error {
	_, err := db.w.ExecContext(ctx, `INSERT INTO notice_rooms (user_id, room_id) VALUES ($1, $2)
		ON CONFLICT (user_id) DO UPDATE SET room_id = excluded.room_id`, userID, roomID)
	return mapErr(err)
}

const broadcastCols = `id, sender, target_group, body, created_ts, recipients`

func scanBroadcast(row interface{ Scan(...any) error }) (storage.Broadcast, error) {
	var b storage.Broadcast
	return b, mapErr(row.Scan(&b.ID, &b.Sender, &b.Group, &b.Body, &b.CreatedTS, &b.Recipients))
}

// PutBroadcast implements storage.Policy.
func (db *DB) PutBroadcast(ctx context.Context, b storage.Broadcast) error {
	_, err := db.w.ExecContext(ctx, `INSERT INTO broadcasts (`+broadcastCols+`) VALUES ($1, $2, $3, $4, $5, $6)`,
		b.ID, b.Sender, b.Group, b.Body, b.CreatedTS, b.Recipients)
	return mapErr(err)
}

// PutBroadcastDelivery implements storage.Policy.
func (db *DB) PutBroadcastDelivery(ctx context.Context, d storage.BroadcastDelivery) error {
	_, err := db.w.ExecContext(ctx, `INSERT INTO broadcast_deliveries (broadcast_id, user_id, room_id, event_id, stream_pos)
		VALUES ($1, $2, $3, $4, $5)`, d.BroadcastID, d.UserID, d.RoomID, d.EventID, d.Pos)
	return mapErr(err)
}

// GetBroadcast implements storage.Policy.
func (db *DB) GetBroadcast(ctx context.Context, id string) (storage.Broadcast, error) {
	return scanBroadcast(db.r.QueryRowContext(ctx, `SELECT `+broadcastCols+` FROM broadcasts WHERE id = $1`, id))
}

// ListBroadcasts implements storage.Policy: newest first.
func (db *DB) ListBroadcasts(ctx context.Context, limit int) ([]storage.Broadcast, error) {
	return queryList(ctx, db, scanBroadcast, `SELECT `+broadcastCols+` FROM broadcasts ORDER BY created_ts DESC, id LIMIT $1`, limit)
}

// BroadcastCounts implements storage.Policy. A recipient has read the
// notice when one of their read receipts in the notice room points at an
// event at or after it.
func (db *DB) BroadcastCounts(ctx context.Context, id string) (storage.BroadcastCounts, error) {
	var c storage.BroadcastCounts
	err := db.r.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(CASE WHEN EXISTS (
			SELECT 1 FROM receipts r JOIN events e ON e.event_id = r.event_id
			WHERE r.room_id = d.room_id AND r.user_id = d.user_id
			AND r.receipt_type IN ('m.read', 'm.read.private') AND e.stream_pos >= d.stream_pos
		) THEN 1 ELSE 0 END), 0), COALESCE(SUM(CASE WHEN EXISTS (
			SELECT 1 FROM memberships m WHERE m.room_id = d.room_id AND m.user_id = d.user_id AND m.membership = 'join'
		) THEN 1 ELSE 0 END), 0)
		FROM broadcast_deliveries d WHERE d.broadcast_id = $1`, id).Scan(&c.Delivered, &c.Read, &c.Joined)
	return c, mapErr(err)
}
