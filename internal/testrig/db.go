// Package testrig holds fixtures for machi's tests: real databases (SQLite in
// a temp dir, PostgreSQL from MACHI_TEST_POSTGRES_DSN), never mocks.
package testrig

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	_ "github.com/lib/pq"

	"github.com/machi-chat/machi/storage/sqlstore"
)

// Engines lists the storage engines a test body runs on: always "sqlite",
// and "postgres" when MACHI_TEST_POSTGRES_DSN is set (make test sets it).
func Engines(t testing.TB) []string {
	if os.Getenv("MACHI_TEST_POSTGRES_DSN") == "" {
		if os.Getenv("MACHI_REQUIRE_POSTGRES") != "" {
			t.Fatal("MACHI_REQUIRE_POSTGRES is set but MACHI_TEST_POSTGRES_DSN is not")
		}
		t.Log("MACHI_TEST_POSTGRES_DSN not set: PostgreSQL variant not run (make test sets it)")
		return []string{"sqlite"}
	}
	return []string{"sqlite", "postgres"}
}

// ForEachEngine runs body once per engine, as subtests named after it.
func ForEachEngine(t *testing.T, body func(t *testing.T, engine string)) {
	for _, engine := range Engines(t) {
		t.Run(engine, func(t *testing.T) { body(t, engine) })
	}
}

// OpenStore opens a fresh, empty store on engine, closed at cleanup.
func OpenStore(t testing.TB, engine string) *sqlstore.DB {
	t.Helper()
	ctx := context.Background()
	var db *sqlstore.DB
	var err error
	switch engine {
	case "sqlite":
		db, err = sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "machi.db"), false)
	case "postgres":
		db, err = sqlstore.OpenPostgres(ctx, PostgresDSN(t))
	default:
		t.Fatalf("unknown engine %q", engine)
	}
	if err != nil {
		t.Fatalf("open %s store: %v", engine, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// PostgresDSN creates a fresh database in the test cluster and returns its
// DSN; the database is dropped at cleanup.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	base := os.Getenv("MACHI_TEST_POSTGRES_DSN")
	if base == "" {
		t.Fatal("MACHI_TEST_POSTGRES_DSN is not set")
	}
	admin, err := sql.Open("postgres", base)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "machi_test_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		a, err := sql.Open("postgres", base)
		if err != nil {
			return
		}
		defer a.Close()
		_, _ = a.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("parse MACHI_TEST_POSTGRES_DSN: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}
