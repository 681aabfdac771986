package media

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/machi-chat/machi/internal/testrig"
)

func TestDisposition(t *testing.T) {
	for _, tc := range []struct{ ctype, name, want string }{
		{"image/png", "", "inline"},
		{"image/png; charset=binary", "a.png", "inline; filename=a.png"},
		{"text/html", "x.html", "attachment; filename=x.html"},
		{"image/svg+xml", "", "attachment"},
		{"application/pdf", "議事録 2026.pdf", "attachment; filename*=utf-8''%E8%AD%B0%E4%BA%8B%E9%8C%B2%202026.pdf"},
		{"text/plain", `a"b.txt`, `inline; filename="a\"b.txt"`},
	} {
		if got := Disposition(tc.ctype, tc.name); got != tc.want {
			t.Errorf("Disposition(%q, %q) = %q, want %q", tc.ctype, tc.name, got, tc.want)
		}
	}
}

func TestStoreAndOpen(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		dir := t.TempDir()
		repo, err := New(dir, testrig.OpenStore(t, engine), 16)
		if err != nil {
			t.Fatal(err)
		}
		item, err := repo.Store(ctx, Upload{Body: bytes.NewReader([]byte("hello")), ContentType: "text/plain; charset=utf-8", Filename: "h.txt", Uploader: "@a:x"})
		if err != nil {
			t.Fatal(err)
		}
		if !validID(item.MediaID) || item.Size != 5 || item.ContentType != "text/plain; charset=utf-8" {
			t.Fatalf("stored %+v", item)
		}
		got, f, err := repo.Open(ctx, item.MediaID)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(f)
		f.Close()
		if string(data) != "hello" || got.Filename != "h.txt" || got.SHA256 != item.SHA256 {
			t.Fatalf("opened %+v %q", got, data)
		}

		// Exactly at the limit is accepted; one byte over is refused and
		// leaves nothing behind.
		if _, err := repo.Store(ctx, Upload{Body: bytes.NewReader(make([]byte, 16))}); err != nil {
			t.Fatalf("upload at the limit: %v", err)
		}
		var big *ErrTooLarge
		if _, err := repo.Store(ctx, Upload{Body: bytes.NewReader(make([]byte, 17))}); !errors.As(err, &big) {
			t.Fatalf("upload over the limit: %v", err)
		}
		if left, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(left) != 0 {
			t.Fatalf("temp files left behind: %v", left)
		}

		for _, bad := range []string{"", "short", "../../../../etc/passwd", "AAAAAAAAAAAAAAAAAAAAAAAA"} {
			if _, _, err := repo.Open(ctx, bad); !errors.Is(err, ErrNotFound) {
				t.Errorf("Open(%q) = %v, want ErrNotFound", bad, err)
			}
		}
	})
}
