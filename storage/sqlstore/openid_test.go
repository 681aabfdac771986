package sqlstore_test

import (
	"context"
	"errors"
	"testing"

	"github.com/machi-chat/machi/internal/testrig"
	"github.com/machi-chat/machi/storage"
)

// TestOpenIDTokens: a token names its user until it expires; storing a
// new one deletes the expired ones; a token is stored once.
func TestOpenIDTokens(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		db := testrig.OpenStore(t, engine)
		must(t, db.PutOpenIDToken(ctx, "h1", "@alice:test", 2000, 1000))
		must(t, db.PutOpenIDToken(ctx, "h2", "@bob:test", 5000, 1000))
		if u, err := db.OpenIDTokenUser(ctx, "h1", 1999); err != nil || u != "@alice:test" {
			t.Fatalf("h1 before expiry: %q %v", u, err)
		}
		if _, err := db.OpenIDTokenUser(ctx, "h1", 2000); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("h1 at expiry: %v", err)
		}
		if _, err := db.OpenIDTokenUser(ctx, "nope", 0); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("unknown token: %v", err)
		}
		if err := db.PutOpenIDToken(ctx, "h2", "@mallory:test", 9000, 1000); !errors.Is(err, storage.ErrConflict) {
			t.Fatalf("the same token twice: %v", err)
		}
		// A new token at 3000 deletes h1 (expired); h2 stays.
		must(t, db.PutOpenIDToken(ctx, "h3", "@carol:test", 6000, 3000))
		if _, err := db.OpenIDTokenUser(ctx, "h1", 0); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("h1 after the sweep: %v", err)
		}
		if u, err := db.OpenIDTokenUser(ctx, "h2", 3000); err != nil || u != "@bob:test" {
			t.Fatalf("h2: %q %v", u, err)
		}
	})
}
