package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"sync"
)

// pool is a database handle whose queries are prepared once and reused on
// every connection: parsing and planning is a large part of a small
// query's cost (on SQLite, most of it). Queries are the package's SQL
// texts; those with IN lists vary in length, so the cache is bounded and
// queries past the bound run unprepared.
type pool struct {
	*sql.DB
	mu      sync.RWMutex
	stmts   map[string]*sql.Stmt
	pending map[string]bool // being prepared in the background
}

const maxStmts = 256

func newPool(db *sql.DB) *pool {
	return &pool{DB: db, stmts: map[string]*sql.Stmt{}, pending: map[string]bool{}}
}

// stmt returns the prepared statement for query, preparing it on first
// use; nil (and no error) when the cache is full.
func (p *pool) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	p.mu.RLock()
	s := p.stmts[query]
	full := len(p.stmts) >= maxStmts
	p.mu.RUnlock()
	if s != nil {
		return s, nil
	}
	if full {
		return nil, nil
	}
	// Prepared without the lock held: preparing waits for a connection,
	// which a transaction reading the cache may hold.
	s, err := p.DB.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if old := p.stmts[query]; old != nil || len(p.stmts) >= maxStmts {
		s.Close()
		return old, nil
	}
	p.stmts[query] = s
	return s, nil
}

func (p *pool) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	s, err := p.stmt(ctx, query)
	if err != nil || s == nil {
		return p.DB.ExecContext(ctx, query, args...)
	}
	return s.ExecContext(ctx, args...)
}

func (p *pool) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	s, err := p.stmt(ctx, query)
	if err != nil || s == nil {
		return p.DB.QueryContext(ctx, query, args...)
	}
	return s.QueryContext(ctx, args...)
}

func (p *pool) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	s, err := p.stmt(ctx, query)
	if err != nil || s == nil {
		// Unprepared; a bad query reports its error through the Row.
		return p.DB.QueryRowContext(ctx, query, args...)
	}
	return s.QueryRowContext(ctx, args...)
}

func (p *pool) Close() error {
	p.mu.Lock()
	var errs []error
	for _, s := range p.stmts {
		errs = append(errs, s.Close())
	}
	p.stmts = map[string]*sql.Stmt{}
	p.mu.Unlock()
	return errors.Join(append(errs, p.DB.Close())...)
}

// txn is a transaction that uses its pool's prepared statements.
type txn struct {
	*sql.Tx
	p *pool
}

// cached returns the pool's prepared statement for query, bound to the
// transaction, or nil when there is none yet. Preparing through the pool
// needs a connection, and on SQLite the transaction holds the only one: so
// the statement is prepared in the background, once the transaction has
// let go of it, and this time the query runs unprepared.
func (t *txn) cached(ctx context.Context, query string) *sql.Stmt {
	t.p.mu.Lock()
	s := t.p.stmts[query]
	start := s == nil && !t.p.pending[query] && len(t.p.stmts) < maxStmts
	if start {
		t.p.pending[query] = true
	}
	t.p.mu.Unlock()
	if start {
		go func() {
			_, _ = t.p.stmt(context.Background(), query)
			t.p.mu.Lock()
			delete(t.p.pending, query)
			t.p.mu.Unlock()
		}()
	}
	if s == nil {
		return nil
	}
	return t.Tx.StmtContext(ctx, s)
}

func (t *txn) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if s := t.cached(ctx, query); s != nil {
		return s.ExecContext(ctx, args...)
	}
	return t.Tx.ExecContext(ctx, query, args...)
}

func (t *txn) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if s := t.cached(ctx, query); s != nil {
		return s.QueryContext(ctx, args...)
	}
	return t.Tx.QueryContext(ctx, query, args...)
}

func (t *txn) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if s := t.cached(ctx, query); s != nil {
		return s.QueryRowContext(ctx, args...)
	}
	return t.Tx.QueryRowContext(ctx, query, args...)
}
