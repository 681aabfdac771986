package sqlstore

import (
	"context"
	"fmt"
	"strings"

	"github.com/machi-chat/machi/storage"
)

const notificationCols = `user_id, event_id, room_id, stream_pos, thread_id, notify, highlight, actions, ts`

// insertNotifications returns the INSERT for n rows; callers use a few
// fixed sizes so each text is prepared once. The sizes stay small: SQLite
// binds $N parameters by name, in time that grows with the square of
// their number.
func insertNotifications(n int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO notifications (` + notificationCols + `) VALUES `)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("(" + placeholders(i*9+1, 9) + ")")
	}
	b.WriteString(` ON CONFLICT (user_id, stream_pos) DO NOTHING`)
	return b.String()
}

var notificationInserts = map[int]string{16: insertNotifications(16), 4: insertNotifications(4), 1: insertNotifications(1)}

// PutNotifications implements storage.Notifications, with multi-row
// inserts (a message in a room of 50 is 49 rows).
func (db *DB) PutNotifications(ctx context.Context, ns []storage.Notification) error {
	if len(ns) == 0 {
		return nil
	}
	return db.tx(ctx, func(tx *txn) error { return putNotifications(ctx, tx, ns) })
}

func putNotifications(ctx context.Context, tx *txn, ns []storage.Notification) error {
	for len(ns) > 0 {
		size := 1
		for _, s := range []int{16, 4} {
			if len(ns) >= s {
				size = s
				break
			}
		}
		args := make([]any, 0, size*9)
		for _, n := range ns[:size] {
			args = append(args, n.UserID, n.EventID, n.RoomID, n.Pos, n.ThreadID, n.Notify, n.Highlight, string(n.Actions), n.TS)
		}
		if _, err := tx.ExecContext(ctx, notificationInserts[size], args...); err != nil {
			return fmt.Errorf("insert notifications: %w", err)
		}
		ns = ns[size:]
	}
	return nil
}

func scanNotification(row interface{ Scan(...any) error }) (storage.Notification, error) {
	var n storage.Notification
	var actions string
	err := row.Scan(&n.UserID, &n.EventID, &n.RoomID, &n.Pos, &n.ThreadID, &n.Notify, &n.Highlight, &actions, &n.TS)
	n.Actions = []byte(actions)
	return n, mapErr(err)
}

// UserNotifications implements storage.Notifications.
func (db *DB) UserNotifications(ctx context.Context, userID string) ([]storage.Notification, error) {
	ns, err := queryList(ctx, db, scanNotification, `SELECT `+notificationCols+` FROM notifications WHERE user_id = $1 ORDER BY stream_pos`, userID)
	if err != nil {
		return nil, fmt.Errorf("list user notifications: %w", err)
	}
	return ns, nil
}

// ListNotifications implements storage.Notifications.
func (db *DB) ListNotifications(ctx context.Context, q storage.NotificationQuery) ([]storage.Notification, error) {
	before := q.Before
	if before <= 0 {
		before = 1<<63 - 1
	}
	query := `SELECT ` + notificationCols + ` FROM notifications WHERE user_id = $1 AND stream_pos < $2 ORDER BY stream_pos DESC LIMIT $3`
	if q.OnlyHighlight {
		query = `SELECT ` + notificationCols + ` FROM notifications WHERE user_id = $1 AND stream_pos < $2 AND highlight ORDER BY stream_pos DESC LIMIT $3`
	}
	ns, err := queryList(ctx, db, scanNotification, query, q.UserID, before, q.Limit)
	if err != nil {
		return nil, fmt.Errorf("list notifications: %w", err)
	}
	return ns, nil
}

// PruneNotifications implements storage.Notifications.
func (db *DB) PruneNotifications(ctx context.Context, readBefore, anyBefore int64) (int64, error) {
	var total int64
	err := db.tx(ctx, func(tx *txn) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM notifications WHERE ts < $1 AND stream_pos <= COALESCE((
			SELECT MAX(e.stream_pos) FROM receipts r JOIN events e ON e.event_id = r.event_id
			WHERE r.user_id = notifications.user_id AND r.room_id = notifications.room_id
			AND r.receipt_type IN ('m.read', 'm.read.private') AND (r.thread_id = '' OR r.thread_id = notifications.thread_id)), 0)`, readBefore)
		if err != nil {
			return err
		}
		n, _ := res.RowsAffected()
		total += n
		if res, err = tx.ExecContext(ctx, `DELETE FROM notifications WHERE ts < $1`, anyBefore); err != nil {
			return err
		}
		n, _ = res.RowsAffected()
		total += n
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("prune notifications: %w", err)
	}
	return total, nil
}

var benchSizes = []int{16, 4}
