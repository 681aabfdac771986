// Package sqlstore implements storage.Store once, for SQLite (modernc.org/sqlite,
// WAL) and PostgreSQL (lib/pq). Both dialects accept the same SQL text:
// $N placeholders, ON CONFLICT … DO UPDATE, partial indexes. The dialect
// decides only how to connect and how driver errors map to storage errors.
//
// SQLite has one writer at a time, so the store keeps two pools on SQLite: a
// single-connection writer (BEGIN IMMEDIATE) and a reader pool that, under
// WAL, reads committed data without waiting for the writer.
package sqlstore

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"sort"
	"strings"

	"github.com/lib/pq"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/machi-chat/machi/storage"
)

//go:embed migrations/*.sql
var migrations embed.FS

// DB is the SQL store.
type DB struct {
	w       *pool // writes (one connection on SQLite)
	r       *pool // reads
	dialect string
}

var _ storage.Store = (*DB)(nil)

// OpenSQLite opens (creating if needed) the SQLite database at path. With
// fullSync, every commit is fsynced; otherwise a commit survives a crash of
// the process but not of the machine.
func OpenSQLite(ctx context.Context, path string, fullSync bool) (*DB, error) {
	syncMode := "NORMAL"
	if fullSync {
		syncMode = "FULL"
	}
	dsn := func(pragmas ...string) string {
		q := url.Values{}
		for _, p := range pragmas {
			q.Add("_pragma", p)
		}
		return "file:" + path + "?" + q.Encode()
	}
	common := []string{"busy_timeout(10000)", "foreign_keys(0)", "cache_size(-8000)", "temp_store(MEMORY)"}
	w, err := sql.Open("sqlite", dsn(append([]string{"journal_mode(WAL)", "synchronous(" + syncMode + ")"}, common...)...)+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	// The writer creates the file and switches it to WAL before any reader
	// opens it.
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", dsn(append([]string{"query_only(1)"}, common...)...))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	r.SetMaxOpenConns(4)
	r.SetMaxIdleConns(4)
	db := &DB{w: newPool(w), r: newPool(r), dialect: "sqlite"}
	if err := db.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// OpenPostgres connects to PostgreSQL at dsn.
func OpenPostgres(ctx context.Context, dsn string) (*DB, error) {
	p, err := sql.Open("postgres", dsn)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	p.SetMaxOpenConns(32)
	p.SetMaxIdleConns(32) // idle connections keep their prepared statements
	if err := p.PingContext(ctx); err != nil {
		p.Close()
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	pp := newPool(p)
	db := &DB{w: pp, r: pp, dialect: "postgres"}
	if err := db.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// Dialect is "sqlite" or "postgres".
func (db *DB) Dialect() string { return db.dialect }

// Close closes both pools.
func (db *DB) Close() error {
	err := db.w.Close()
	if db.r != db.w {
		err = errors.Join(err, db.r.Close())
	}
	return err
}

// migrate applies the embedded migrations not yet applied, each in its own
// transaction, in order.
func (db *DB) migrate(ctx context.Context) error {
	if _, err := db.w.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, name := range names {
		var version int
		if _, err := fmt.Sscanf(strings.TrimPrefix(name, "migrations/"), "%d_", &version); err != nil {
			return fmt.Errorf("migration %s: name must start with its number", name)
		}
		var n int
		if err := db.w.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE version = $1`, version).Scan(&n); err != nil {
			return fmt.Errorf("read schema_migrations: %w", err)
		}
		if n > 0 {
			continue
		}
		body, err := migrations.ReadFile(name)
		if err != nil {
			return err
		}
		err = db.tx(ctx, func(tx *txn) error {
			for _, stmt := range splitStatements(string(body), db.dialect) {
				if _, err := tx.Tx.ExecContext(ctx, stmt); err != nil { // one-off: not prepared
					return fmt.Errorf("%s: %w\n%s", name, err, stmt)
				}
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, version)
			return err
		})
		if err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
	}
	return nil
}

// splitStatements splits a migration on semicolons at line ends and drops
// lines marked "-- only: <other dialect>".
func splitStatements(body, dialect string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(body, "\n") {
		if i := strings.Index(line, "-- only: "); i >= 0 {
			if strings.TrimSpace(line[i+len("-- only: "):]) != dialect {
				continue
			}
			line = line[:i]
		}
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "--") || trimmed == "" {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(trimmed, ";") {
			out = append(out, cur.String())
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		out = append(out, s)
	}
	return out
}

// tx runs fn in a write transaction, committing if it returns nil.
func (db *DB) tx(ctx context.Context, fn func(*txn) error) error {
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return mapErr(err)
	}
	if err := fn(&txn{Tx: tx, p: db.w}); err != nil {
		_ = tx.Rollback()
		return mapErr(err)
	}
	return mapErr(tx.Commit())
}

// mapErr maps driver errors to storage sentinels, keeping the original
// error in the chain.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w: %w", storage.ErrNotFound, err)
	}
	var pqErr *pq.Error
	if errors.As(err, &pqErr) && pqErr.Code == "23505" {
		return fmt.Errorf("%w: %w", storage.ErrConflict, err)
	}
	var sqErr *sqlite.Error
	if errors.As(err, &sqErr) {
		switch sqErr.Code() {
		case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE:
			return fmt.Errorf("%w: %w", storage.ErrConflict, err)
		}
	}
	return err
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// MinEventPos implements storage.Store.
func (db *DB) MinEventPos(ctx context.Context) (int64, error) {
	var pos int64
	err := db.w.QueryRowContext(ctx, `SELECT COALESCE(MIN(stream_pos), 0) FROM events WHERE stream_pos < 0`).Scan(&pos)
	return pos, mapErr(err)
}

// MaxStreamPos implements storage.Store.
func (db *DB) MaxStreamPos(ctx context.Context) (int64, error) {
	var pos int64
	err := db.w.QueryRowContext(ctx, `SELECT MAX(p) FROM (
		SELECT COALESCE(MAX(stream_pos), 0) AS p FROM events
		UNION ALL SELECT COALESCE(MAX(stream_pos), 0) FROM account_data
		UNION ALL SELECT COALESCE(MAX(stream_pos), 0) FROM receipts
		UNION ALL SELECT COALESCE(MAX(stream_pos), 0) FROM to_device
		UNION ALL SELECT COALESCE(MAX(stream_pos), 0) FROM memberships
		UNION ALL SELECT COALESCE(MAX(stream_pos), 0) FROM device_list_changes
		UNION ALL SELECT COALESCE(MAX(stream_pos), 0) FROM device_list_viewer_changes
		UNION ALL SELECT COALESCE(MAX(pos), 0) FROM stream_high
	) AS m`).Scan(&pos)
	return pos, mapErr(err)
}

// MaxStateGroup implements storage.Store.
func (db *DB) MaxStateGroup(ctx context.Context) (int64, error) {
	var id int64
	err := db.w.QueryRowContext(ctx, `SELECT COALESCE(MAX(group_id), 0) FROM state_groups`).Scan(&id)
	return id, mapErr(err)
}
