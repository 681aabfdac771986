package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/machi-chat/machi/storage"
)

// RelatedEvents implements storage.Relations.
func (db *DB) RelatedEvents(ctx context.Context, q storage.RelationQuery) ([]storage.Event, error) {
	if len(q.Parents) == 0 || q.Limit <= 0 {
		return nil, nil
	}
	args := []any{q.RoomID, q.From, q.To, q.RelType, q.Type, q.Limit}
	args = append(args, stringArgs(q.Parents)...)
	order := "ASC"
	if q.Backwards {
		order = "DESC"
	}
	rows, err := db.r.QueryContext(ctx, `SELECT `+prefixed("e.", eventCols)+` FROM event_relations r JOIN events e ON e.event_id = r.event_id
		WHERE r.room_id = $1 AND r.stream_pos > $2 AND r.stream_pos <= $3 AND ($4 = '' OR r.rel_type = $4) AND ($5 = '' OR r.type = $5)
		AND r.relates_to IN (`+placeholders(7, len(q.Parents))+`)
		ORDER BY r.stream_pos `+order+` LIMIT $6`, args...)
	if err != nil {
		return nil, fmt.Errorf("list related events: %w", mapErr(err))
	}
	return scanEvents(rows)
}

// prefixed qualifies each column of a comma-separated list.
func prefixed(p, cols string) string { return p + strings.ReplaceAll(cols, ", ", ", "+p) }

const relationCols = `event_id, room_id, relates_to, rel_type, sender, type, aggregation_key, origin_ts, stream_pos`

func scanRelations(rows *sql.Rows) ([]storage.Relation, error) {
	defer rows.Close()
	var out []storage.Relation
	for rows.Next() {
		var r storage.Relation
		if err := rows.Scan(&r.EventID, &r.RoomID, &r.Parent, &r.RelType, &r.Sender, &r.Type, &r.Key, &r.OriginTS, &r.Pos); err != nil {
			return nil, mapErr(err)
		}
		out = append(out, r)
	}
	return out, mapErr(rows.Err())
}

// RelationsTo implements storage.Relations.
func (db *DB) RelationsTo(ctx context.Context, roomID string, parents []string, relType string, upTo int64, limit int) ([]storage.Relation, error) {
	if len(parents) == 0 {
		return nil, nil
	}
	args := append([]any{relType, upTo, limit, roomID}, stringArgs(parents)...)
	rows, err := db.r.QueryContext(ctx, `SELECT `+relationCols+` FROM event_relations
		WHERE rel_type = $1 AND stream_pos <= $2 AND room_id = $4 AND relates_to IN (`+placeholders(5, len(parents))+`)
		ORDER BY stream_pos LIMIT $3`, args...)
	if err != nil {
		return nil, fmt.Errorf("list relations: %w", mapErr(err))
	}
	return scanRelations(rows)
}

// ThreadSummaries implements storage.Relations: counts and the newest reply
// per root in one query, the newest found by its (unique) position.
func (db *DB) ThreadSummaries(ctx context.Context, roomID string, roots []string, userID string, upTo int64) ([]storage.ThreadSummary, error) {
	if len(roots) == 0 {
		return nil, nil
	}
	args := append([]any{userID, upTo, roomID}, stringArgs(roots)...)
	rows, err := db.r.QueryContext(ctx, `SELECT t.relates_to, t.n, l.event_id, t.latest, t.mine FROM (
			SELECT relates_to, COUNT(*) AS n, MAX(stream_pos) AS latest, MAX(CASE WHEN sender = $1 THEN 1 ELSE 0 END) AS mine
			FROM event_relations WHERE rel_type = 'm.thread' AND stream_pos <= $2 AND room_id = $3 AND relates_to IN (`+placeholders(4, len(roots))+`)
			GROUP BY relates_to) t
		JOIN event_relations l ON l.stream_pos = t.latest`, args...)
	if err != nil {
		return nil, fmt.Errorf("summarise threads: %w", mapErr(err))
	}
	defer rows.Close()
	var out []storage.ThreadSummary
	for rows.Next() {
		var ts storage.ThreadSummary
		var mine int
		if err := rows.Scan(&ts.Root, &ts.Count, &ts.Latest, &ts.LatestPos, &mine); err != nil {
			return nil, mapErr(err)
		}
		ts.Participated = mine != 0
		out = append(out, ts)
	}
	return out, mapErr(rows.Err())
}

// ThreadRoots implements storage.Relations.
func (db *DB) ThreadRoots(ctx context.Context, q storage.ThreadQuery) ([]storage.ThreadSummary, error) {
	participated := ""
	args := []any{q.RoomID, q.UpTo, q.Before, q.Limit}
	if q.UserID != "" {
		args = append(args, q.UserID)
		participated = ` AND (EXISTS (SELECT 1 FROM events e WHERE e.event_id = t.relates_to AND e.sender = $5)
			OR EXISTS (SELECT 1 FROM event_relations m WHERE m.relates_to = t.relates_to AND m.rel_type = 'm.thread' AND m.sender = $5 AND m.stream_pos <= $2))`
	}
	rows, err := db.r.QueryContext(ctx, `SELECT t.relates_to, t.latest FROM (
			SELECT relates_to, MAX(stream_pos) AS latest FROM event_relations
			WHERE room_id = $1 AND rel_type = 'm.thread' AND stream_pos <= $2 GROUP BY relates_to) t
		WHERE t.latest < $3`+participated+`
		ORDER BY t.latest DESC LIMIT $4`, args...)
	if err != nil {
		return nil, fmt.Errorf("list thread roots: %w", mapErr(err))
	}
	defer rows.Close()
	var out []storage.ThreadSummary
	for rows.Next() {
		var ts storage.ThreadSummary
		if err := rows.Scan(&ts.Root, &ts.LatestPos); err != nil {
			return nil, mapErr(err)
		}
		out = append(out, ts)
	}
	return out, mapErr(rows.Err())
}

// RelatedParents implements storage.Relations.
func (db *DB) RelatedParents(ctx context.Context, roomID string, parents, relTypes, senders []string, upTo int64) ([]string, error) {
	if len(parents) == 0 || (relTypes != nil && len(relTypes) == 0) || (senders != nil && len(senders) == 0) {
		return nil, nil
	}
	args := append([]any{roomID, upTo}, stringArgs(parents)...)
	where := `relates_to IN (` + placeholders(3, len(parents)) + `)`
	if relTypes != nil {
		where += ` AND rel_type IN (` + placeholders(len(args)+1, len(relTypes)) + `)`
		args = append(args, stringArgs(relTypes)...)
	}
	if senders != nil {
		where += ` AND sender IN (` + placeholders(len(args)+1, len(senders)) + `)`
		args = append(args, stringArgs(senders)...)
	}
	rows, err := db.r.QueryContext(ctx, `SELECT DISTINCT relates_to FROM event_relations WHERE room_id = $1 AND stream_pos <= $2 AND `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("select related parents: %w", mapErr(err))
	}
	return scanStrings(rows)
}

// HasRelation implements storage.Relations.
func (db *DB) HasRelation(ctx context.Context, roomID, parent, relType string) (bool, error) {
	var n int
	err := db.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM (SELECT 1 FROM event_relations WHERE relates_to = $1 AND rel_type = $2 AND room_id = $3 LIMIT 1) x`,
		parent, relType, roomID).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("look up relation: %w", mapErr(err))
	}
	return n > 0, nil
}

// Relation implements storage.Relations.
func (db *DB) Relation(ctx context.Context, eventID string) (storage.Relation, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT `+relationCols+` FROM event_relations WHERE event_id = $1`, eventID)
	if err != nil {
		return storage.Relation{}, fmt.Errorf("read relation: %w", mapErr(err))
	}
	rels, err := scanRelations(rows)
	if err != nil {
		return storage.Relation{}, err
	}
	if len(rels) == 0 {
		return storage.Relation{}, storage.ErrNotFound
	}
	return rels[0], nil
}

// HasAnnotation implements storage.Relations.
func (db *DB) HasAnnotation(ctx context.Context, roomID, parent, sender, typ, key string) (bool, error) {
	var n int
	err := db.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM event_relations
		WHERE relates_to = $1 AND rel_type = 'm.annotation' AND sender = $2 AND type = $3 AND aggregation_key = $4 AND room_id = $5`,
		parent, sender, typ, key, roomID).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("look up annotation: %w", mapErr(err))
	}
	return n > 0, nil
}
