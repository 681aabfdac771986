package sqlstore

import (
	"context"
	"fmt"
	"strings"

	"github.com/machi-chat/machi/storage"
)

const reportCols = `id, ts, reporter, room_id, event_id, reason, event_json`

func scanReport(row interface{ Scan(...any) error }) (storage.Report, error) {
	var r storage.Report
	var js string
	err := row.Scan(&r.ID, &r.TS, &r.Reporter, &r.RoomID, &r.EventID, &r.Reason, &js)
	if js != "" {
		r.EventJSON = []byte(js)
	}
	return r, mapErr(err)
}

// PutReport implements storage.Reports.
func (db *DB) PutReport(ctx context.Context, r storage.Report, audit storage.AuditEntry) (int64, error) {
	if audit.Detail == "" {
		audit.Detail = "{}"
	}
	var id int64
	err := db.tx(ctx, func(tx *txn) error {
		if err := tx.QueryRowContext(ctx, `INSERT INTO reports (ts, reporter, room_id, event_id, reason, event_json)
			VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`, r.TS, r.Reporter, r.RoomID, r.EventID, r.Reason, string(r.EventJSON)).Scan(&id); err != nil {
			return fmt.Errorf("insert report: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO audit_log (ts, actor, device_id, action, rule, target, detail)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, audit.TS, audit.Actor, audit.DeviceID, audit.Action, audit.Rule, audit.Target, audit.Detail); err != nil {
			return fmt.Errorf("insert report audit entry: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store report: %w", err)
	}
	return id, nil
}

// ListReports implements storage.Reports.
func (db *DB) ListReports(ctx context.Context, q storage.ReportQuery) ([]storage.Report, error) {
	where := []string{"id > $1"}
	args := []any{q.AfterID}
	if q.RoomID != "" {
		args = append(args, q.RoomID)
		where = append(where, fmt.Sprintf("room_id = $%d", len(args)))
	}
	limit := q.Limit
	if limit <= 0 || limit > 10000 {
		limit = 10000
	}
	return queryList(ctx, db, scanReport, `SELECT `+reportCols+` FROM reports WHERE `+strings.Join(where, " AND ")+fmt.Sprintf(` ORDER BY id LIMIT %d`, limit), args...)
}
