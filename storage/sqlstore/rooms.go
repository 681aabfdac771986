package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/machi-chat/machi/storage"
)

// CommitEvents implements storage.Rooms: every event of the batch, its state
// group, current state, membership, redaction and the room head, in one
// transaction.
func (db *DB) CommitEvents(ctx context.Context, commits []storage.EventCommit) error {
	if len(commits) == 0 {
		return nil
	}
	err := db.tx(ctx, func(tx *txn) error {
		heads := map[string]*storage.EventCommit{}
		var order []string
		for i := range commits {
			c := &commits[i]
			if err := commitOne(ctx, tx, c); err != nil {
				return err
			}
			if _, ok := heads[c.Event.RoomID]; !ok {
				order = append(order, c.Event.RoomID)
			}
			heads[c.Event.RoomID] = c
		}
		for _, roomID := range order {
			c := heads[roomID]
			latest, _ := json.Marshal(c.Latest)
			if _, err := tx.ExecContext(ctx, `UPDATE rooms SET latest = $2, depth = $3, state_group = $4 WHERE room_id = $1`,
				roomID, string(latest), c.Depth, c.StateGroup); err != nil {
				return fmt.Errorf("update room head: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("commit events: %w", err)
	}
	return nil
}

func commitOne(ctx context.Context, tx *txn, c *storage.EventCommit) error {
	ev := &c.Event
	if r := c.NewRoom; r != nil {
		latest, _ := json.Marshal(r.Latest)
		if _, err := tx.ExecContext(ctx, `INSERT INTO rooms (room_id, room_version, creator, created_ts, latest, depth, state_group, published)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			r.RoomID, r.Version, r.Creator, r.CreatedTS, string(latest), r.Depth, r.StateGroup, boolInt(r.Published)); err != nil {
			return fmt.Errorf("insert room: %w", err)
		}
	}
	if err := insertEvent(ctx, tx, ev); err != nil {
		return err
	}
	for _, g := range c.ExtraGroups {
		if err := insertGroup(ctx, tx, g); err != nil {
			return err
		}
	}
	if g := c.NewGroup; g != nil {
		if err := insertGroup(ctx, tx, g); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO current_state (room_id, type, state_key, event_id) VALUES ($1, $2, $3, $4)
			ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id`,
			ev.RoomID, ev.Type, *ev.StateKey, ev.EventID); err != nil {
			return fmt.Errorf("update current state: %w", err)
		}
	}
	if c.Rejoined {
		// The state the other server gave replaces the stale one whole.
		if _, err := tx.ExecContext(ctx, `DELETE FROM current_state WHERE room_id = $1`, ev.RoomID); err != nil {
			return fmt.Errorf("replace current state: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE rooms SET rejoined_pos = $2 WHERE room_id = $1`, ev.RoomID, ev.Pos); err != nil {
			return fmt.Errorf("mark room rejoined: %w", err)
		}
	}
	for _, e := range c.CurrentState {
		if _, err := tx.ExecContext(ctx, `INSERT INTO current_state (room_id, type, state_key, event_id) VALUES ($1, $2, $3, $4)
			ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id`,
			ev.RoomID, e.Type, e.StateKey, e.EventID); err != nil {
			return fmt.Errorf("update current state: %w", err)
		}
	}
	for _, it := range c.Outbox {
		if _, err := tx.ExecContext(ctx, `INSERT INTO federation_outbox (id, destination, kind, payload, created_ts) VALUES ($1, $2, $3, $4, $5)`,
			it.ID, it.Destination, it.Kind, string(it.Payload), it.CreatedTS); err != nil {
			return fmt.Errorf("queue event for %s: %w", it.Destination, err)
		}
	}
	if m := c.Membership; m != nil {
		if _, err := tx.ExecContext(ctx, `INSERT INTO memberships (room_id, user_id, membership, event_id, stream_pos, forgotten) VALUES ($1, $2, $3, $4, $5, 0)
			ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership, event_id = excluded.event_id,
			stream_pos = excluded.stream_pos, forgotten = 0`,
			m.RoomID, m.UserID, m.Membership, m.EventID, m.Pos); err != nil {
			return fmt.Errorf("update membership: %w", err)
		}
	}
	if rel := c.Relation; rel != nil {
		if _, err := tx.ExecContext(ctx, `INSERT INTO event_relations (event_id, room_id, relates_to, rel_type, sender, type, aggregation_key, origin_ts, stream_pos)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
			rel.EventID, rel.RoomID, rel.Parent, rel.RelType, rel.Sender, rel.Type, rel.Key, rel.OriginTS, rel.Pos); err != nil {
			return fmt.Errorf("insert relation: %w", err)
		}
	}
	if c.Redacts != "" {
		if _, err := tx.ExecContext(ctx, `UPDATE events SET redacted_by = $2, event_json = $3 WHERE event_id = $1`,
			c.Redacts, ev.EventID, string(c.RedactedJSON)); err != nil {
			return fmt.Errorf("redact event: %w", err)
		}
		// Redaction strips content, m.relates_to with it.
		if _, err := tx.ExecContext(ctx, `DELETE FROM event_relations WHERE event_id = $1`, c.Redacts); err != nil {
			return fmt.Errorf("remove redacted relation: %w", err)
		}
	}
	return nil
}

func insertEvent(ctx context.Context, tx *txn, ev *storage.Event) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO events (stream_pos, event_id, room_id, type, state_key, sender, depth, state_group, event_json, redacted_by, txn_device, txn_id, origin_ts, outlier)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
		ev.Pos, ev.EventID, ev.RoomID, ev.Type, ev.StateKey, ev.Sender, ev.Depth, ev.StateGroup, string(ev.JSON), ev.RedactedBy, ev.TxnDevice, ev.TxnID, ev.OriginTS, boolInt(ev.Outlier)); err != nil {
		return fmt.Errorf("insert event: %w", err)
	}
	return nil
}

// PutBackfill implements storage.Rooms.
func (db *DB) PutBackfill(ctx context.Context, events []storage.Event) error {
	return db.tx(ctx, func(tx *txn) error {
		for i := range events {
			ev := &events[i]
			res, err := tx.ExecContext(ctx, `UPDATE events SET stream_pos = $2, state_group = $3, outlier = 0 WHERE event_id = $1 AND outlier = 1`,
				ev.EventID, ev.Pos, ev.StateGroup)
			if err != nil {
				return fmt.Errorf("backfill %s: %w", ev.EventID, err)
			}
			if n, _ := res.RowsAffected(); n > 0 {
				continue
			}
			if err := insertEvent(ctx, tx, ev); err != nil {
				return err
			}
		}
		return nil
	})
}

func insertGroup(ctx context.Context, tx *txn, g *storage.StateGroup) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO state_groups (group_id, room_id, prev_group, chain_len) VALUES ($1, $2, $3, $4)`,
		g.ID, g.RoomID, g.Prev, g.Depth); err != nil {
		return fmt.Errorf("insert state group: %w", err)
	}
	for _, e := range g.Entries {
		if _, err := tx.ExecContext(ctx, `INSERT INTO state_group_entries (group_id, type, state_key, event_id) VALUES ($1, $2, $3, $4)`,
			g.ID, e.Type, e.StateKey, e.EventID); err != nil {
			return fmt.Errorf("insert state group entry: %w", err)
		}
	}
	return nil
}

// GetRoom implements storage.Rooms.
func (db *DB) GetRoom(ctx context.Context, roomID string) (storage.Room, error) {
	var r storage.Room
	var latest string
	var pub int
	err := db.r.QueryRowContext(ctx, `SELECT room_id, room_version, creator, created_ts, latest, depth, state_group, published, rejoined_pos FROM rooms WHERE room_id = $1`, roomID).
		Scan(&r.RoomID, &r.Version, &r.Creator, &r.CreatedTS, &latest, &r.Depth, &r.StateGroup, &pub, &r.RejoinedPos)
	if err != nil {
		return r, mapErr(err)
	}
	r.Published = pub != 0
	if err := json.Unmarshal([]byte(latest), &r.Latest); err != nil {
		return r, fmt.Errorf("room %s: bad latest events: %w", roomID, err)
	}
	return r, nil
}

const eventCols = `stream_pos, event_id, room_id, type, state_key, sender, depth, state_group, event_json, redacted_by, txn_device, txn_id, origin_ts, outlier`

func scanEvents(rows *sql.Rows) ([]storage.Event, error) {
	defer rows.Close()
	var out []storage.Event
	for rows.Next() {
		var e storage.Event
		var sk sql.NullString
		var js string
		var outlier int
		if err := rows.Scan(&e.Pos, &e.EventID, &e.RoomID, &e.Type, &sk, &e.Sender, &e.Depth, &e.StateGroup, &js, &e.RedactedBy, &e.TxnDevice, &e.TxnID, &e.OriginTS, &outlier); err != nil {
			return nil, mapErr(err)
		}
		e.Outlier = outlier != 0
		if sk.Valid {
			s := sk.String
			e.StateKey = &s
		}
		e.JSON = []byte(js)
		out = append(out, e)
	}
	return out, mapErr(rows.Err())
}

// placeholders returns "$start,$start+1,…" for n values.
func placeholders(start, n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(start + i))
	}
	return b.String()
}

func stringArgs(ss []string) []any {
	args := make([]any, len(ss))
	for i, s := range ss {
		args[i] = s
	}
	return args
}

// GetEvents implements storage.Rooms. Missing IDs are left out.
func (db *DB) GetEvents(ctx context.Context, eventIDs []string) ([]storage.Event, error) {
	var out []storage.Event
	for len(eventIDs) > 0 {
		n := min(len(eventIDs), 500)
		rows, err := db.r.QueryContext(ctx, `SELECT `+eventCols+` FROM events WHERE event_id IN (`+placeholders(1, n)+`)`, stringArgs(eventIDs[:n])...)
		if err != nil {
			return nil, mapErr(err)
		}
		evs, err := scanEvents(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, evs...)
		eventIDs = eventIDs[n:]
	}
	return out, nil
}

// GetStateGroup implements storage.Rooms.
func (db *DB) GetStateGroup(ctx context.Context, id int64) (storage.StateGroup, error) {
	g := storage.StateGroup{ID: id}
	err := db.r.QueryRowContext(ctx, `SELECT room_id, prev_group, chain_len FROM state_groups WHERE group_id = $1`, id).Scan(&g.RoomID, &g.Prev, &g.Depth)
	if err != nil {
		return g, mapErr(err)
	}
	rows, err := db.r.QueryContext(ctx, `SELECT type, state_key, event_id FROM state_group_entries WHERE group_id = $1`, id)
	if err != nil {
		return g, mapErr(err)
	}
	g.Entries, err = scanEntries(rows)
	return g, err
}

func scanEntries(rows *sql.Rows) ([]storage.StateEntry, error) {
	defer rows.Close()
	var out []storage.StateEntry
	for rows.Next() {
		var e storage.StateEntry
		if err := rows.Scan(&e.Type, &e.StateKey, &e.EventID); err != nil {
			return nil, mapErr(err)
		}
		out = append(out, e)
	}
	return out, mapErr(rows.Err())
}

// CurrentState implements storage.Rooms.
func (db *DB) CurrentState(ctx context.Context, roomID string) ([]storage.StateEntry, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT type, state_key, event_id FROM current_state WHERE room_id = $1`, roomID)
	if err != nil {
		return nil, mapErr(err)
	}
	return scanEntries(rows)
}

// RoomEvents implements storage.Rooms.
func (db *DB) RoomEvents(ctx context.Context, roomID string, from, to int64, limit int, backwards bool) ([]storage.Event, error) {
	order := "ASC"
	if backwards {
		order = "DESC"
	}
	rows, err := db.r.QueryContext(ctx, `SELECT `+eventCols+` FROM events WHERE room_id = $1 AND outlier = 0 AND stream_pos > $2 AND stream_pos <= $3
		ORDER BY stream_pos `+order+` LIMIT $4`, roomID, from, to, limit)
	if err != nil {
		return nil, mapErr(err)
	}
	return scanEvents(rows)
}

// EventsAtTS implements storage.Rooms. Outliers (below position 0) are
// in no timeline, so not found here; ties on the timestamp go by stream
// position, so the answer is the same on both engines.
func (db *DB) EventsAtTS(ctx context.Context, roomID string, ts int64, forward bool, limit int) ([]storage.Event, error) {
	q := `SELECT ` + eventCols + ` FROM events WHERE room_id = $1 AND outlier = 0 AND origin_ts >= $2 ORDER BY origin_ts ASC, stream_pos ASC LIMIT $3`
	if !forward {
		q = `SELECT ` + eventCols + ` FROM events WHERE room_id = $1 AND outlier = 0 AND origin_ts <= $2 ORDER BY origin_ts DESC, stream_pos DESC LIMIT $3`
	}
	rows, err := db.r.QueryContext(ctx, q, roomID, ts, limit)
	if err != nil {
		return nil, mapErr(err)
	}
	return scanEvents(rows)
}

// EventsAfter implements storage.Rooms.
func (db *DB) EventsAfter(ctx context.Context, from, to int64, types []string, limit int) ([]storage.Event, error) {
	if len(types) == 0 {
		return nil, nil
	}
	args := []any{from, to, limit}
	marks := make([]string, len(types))
	for i, t := range types {
		args = append(args, t)
		marks[i] = "$" + strconv.Itoa(i+4)
	}
	rows, err := db.r.QueryContext(ctx, `SELECT `+eventCols+` FROM events WHERE stream_pos > $1 AND stream_pos > 0 AND stream_pos <= $2
		AND type IN (`+strings.Join(marks, ", ")+`) ORDER BY stream_pos LIMIT $3`, args...)
	if err != nil {
		return nil, mapErr(err)
	}
	return scanEvents(rows)
}

// EventByTxn implements storage.Rooms.
func (db *DB) EventByTxn(ctx context.Context, userID, deviceID, txnID string) (string, error) {
	var id string
	err := db.r.QueryRowContext(ctx, `SELECT event_id FROM events WHERE sender = $1 AND txn_device = $2 AND txn_id = $3 AND txn_id <> ''`, userID, deviceID, txnID).Scan(&id)
	return id, mapErr(err)
}

func scanMemberships(rows *sql.Rows) ([]storage.Membership, error) {
	defer rows.Close()
	var out []storage.Membership
	for rows.Next() {
		var m storage.Membership
		var forgotten int
		if err := rows.Scan(&m.RoomID, &m.UserID, &m.Membership, &m.EventID, &m.Pos, &forgotten); err != nil {
			return nil, mapErr(err)
		}
		m.Forgotten = forgotten != 0
		out = append(out, m)
	}
	return out, mapErr(rows.Err())
}

const membershipCols = `room_id, user_id, membership, event_id, stream_pos, forgotten`

// UserMemberships implements storage.Rooms.
func (db *DB) UserMemberships(ctx context.Context, userID string) ([]storage.Membership, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT `+membershipCols+` FROM memberships WHERE user_id = $1`, userID)
	if err != nil {
		return nil, mapErr(err)
	}
	return scanMemberships(rows)
}

// RoomMemberships implements storage.Rooms.
func (db *DB) RoomMemberships(ctx context.Context, roomID string) ([]storage.Membership, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT `+membershipCols+` FROM memberships WHERE room_id = $1`, roomID)
	if err != nil {
		return nil, mapErr(err)
	}
	return scanMemberships(rows)
}

// ForgetRoom implements storage.Rooms.
func (db *DB) ForgetRoom(ctx context.Context, userID, roomID string) error {
	return db.execOne(ctx, `UPDATE memberships SET forgotten = 1 WHERE user_id = $1 AND room_id = $2`, userID, roomID)
}

// PutAlias implements storage.Rooms.
func (db *DB) PutAlias(ctx context.Context, alias, roomID, creator string) error {
	_, err := db.w.ExecContext(ctx, `INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3)`, alias, roomID, creator)
	return mapErr(err)
}

// GetAlias implements storage.Rooms.
func (db *DB) GetAlias(ctx context.Context, alias string) (string, error) {
	var roomID string
	err := db.r.QueryRowContext(ctx, `SELECT room_id FROM room_aliases WHERE alias = $1`, alias).Scan(&roomID)
	return roomID, mapErr(err)
}

// DeleteAlias implements storage.Rooms.
func (db *DB) DeleteAlias(ctx context.Context, alias string) error {
	return db.execOne(ctx, `DELETE FROM room_aliases WHERE alias = $1`, alias)
}

// RoomAliases implements storage.Rooms.
func (db *DB) RoomAliases(ctx context.Context, roomID string) ([]string, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias`, roomID)
	if err != nil {
		return nil, mapErr(err)
	}
	return scanStrings(rows)
}

func scanStrings(rows *sql.Rows) ([]string, error) {
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, mapErr(err)
		}
		out = append(out, s)
	}
	return out, mapErr(rows.Err())
}

// SetPublished implements storage.Rooms.
func (db *DB) SetPublished(ctx context.Context, roomID string, published bool) error {
	return db.execOne(ctx, `UPDATE rooms SET published = $2 WHERE room_id = $1`, roomID, boolInt(published))
}

// PublishedRooms implements storage.Rooms.
func (db *DB) PublishedRooms(ctx context.Context) ([]string, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT room_id FROM rooms WHERE published = 1 ORDER BY room_id`)
	if err != nil {
		return nil, mapErr(err)
	}
	return scanStrings(rows)
}

// ReplaceRoom implements storage.Rooms.
func (db *DB) ReplaceRoom(ctx context.Context, oldRoomID, newRoomID string) error {
	err := db.tx(ctx, func(tx *txn) error {
		if _, err := tx.ExecContext(ctx, `UPDATE room_aliases SET room_id = $2 WHERE room_id = $1`, oldRoomID, newRoomID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE rooms SET published = (SELECT published FROM rooms WHERE room_id = $1) WHERE room_id = $2`, oldRoomID, newRoomID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE rooms SET published = 0 WHERE room_id = $1`, oldRoomID)
		return err
	})
	if err != nil {
		return fmt.Errorf("move aliases to the new room: %w", err)
	}
	return nil
}
