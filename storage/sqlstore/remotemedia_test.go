package sqlstore_test

import (
	"context"
	"errors"
	"testing"

	"github.com/machi-chat/machi/internal/testrig"
	"github.com/machi-chat/machi/storage"
)

func TestRemoteMedia(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		db := testrig.OpenStore(t, engine)
		if _, err := db.GetRemoteMedia(ctx, "city-b.test", "abc"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("unknown remote media: %v", err)
		}
		id, err := db.PutRemoteMedia(ctx, "city-b.test", "abc", "LOCALONE")
		must(t, err)
		// A second fetch that finished later keeps the first copy.
		id2, err := db.PutRemoteMedia(ctx, "city-b.test", "abc", "LOCALTWO")
		must(t, err)
		if id != "LOCALONE" || id2 != "LOCALONE" {
			t.Fatalf("copies: %q %q", id, id2)
		}
		if got, _ := db.GetRemoteMedia(ctx, "city-b.test", "abc"); got != "LOCALONE" {
			t.Fatalf("get: %q", got)
		}
	})
}
