package sqlstore_test

import (
	"context"
	"testing"

	"github.com/machi-chat/machi/internal/testrig"
	"github.com/machi-chat/machi/storage"
)

func TestServerKeys(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		db := testrig.OpenStore(t, engine)
		a1 := storage.ServerKey{ServerName: "city-a.test", KeyID: "ed25519:a_1", PublicKey: []byte{1, 2, 3}, ValidUntilTS: 100, FetchedTS: 10, Response: []byte(`{"r":1}`)}
		a0 := storage.ServerKey{ServerName: "city-a.test", KeyID: "ed25519:a_0", PublicKey: []byte{9}, ExpiredTS: 50, FetchedTS: 10, Response: []byte(`{"r":1}`)}
		b := storage.ServerKey{ServerName: "city-b.test", KeyID: "ed25519:b", PublicKey: []byte{4}, ValidUntilTS: 200, FetchedTS: 20, Response: []byte(`{"r":2}`)}
		must(t, db.PutServerKeys(ctx, []storage.ServerKey{a1, a0, b}))
		// A refetch replaces the row.
		a1.ValidUntilTS, a1.FetchedTS, a1.Response = 300, 30, []byte(`{"r":3}`)
		must(t, db.PutServerKeys(ctx, []storage.ServerKey{a1}))

		got, err := db.GetServerKeys(ctx, []string{"city-a.test", "city-c.test"})
		must(t, err)
		if len(got) != 1 || len(got["city-a.test"]) != 2 {
			t.Fatalf("keys: %+v", got)
		}
		old, cur := got["city-a.test"][0], got["city-a.test"][1]
		if old.KeyID != "ed25519:a_0" || old.ExpiredTS != 50 || string(old.PublicKey) != "\x09" {
			t.Fatalf("old key: %+v", old)
		}
		if cur.ValidUntilTS != 300 || cur.FetchedTS != 30 || string(cur.Response) != `{"r":3}` || string(cur.PublicKey) != "\x01\x02\x03" {
			t.Fatalf("current key: %+v", cur)
		}
	})
}
