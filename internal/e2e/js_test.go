package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/machi-chat/machi/internal/testrig"
)

// TestMatrixJSSDK runs js/chat.test.mjs, js/e2ee.test.mjs, js/backup.test.mjs and js/threads.test.mjs — matrix-js-sdk from npm, pinned by
// js/package-lock.json — against machi. make test installs the packages and
// sets MACHI_REQUIRE_JS, so there it fails rather than skips.
func TestMatrixJSSDK(t *testing.T) {
	dir, _ := filepath.Abs("js")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "matrix-js-sdk")); err != nil {
		if os.Getenv("MACHI_REQUIRE_JS") != "" {
			t.Fatalf("matrix-js-sdk is not installed in %s (run npm ci there): %v", dir, err)
		}
		t.Skip("matrix-js-sdk not installed (make test installs it)")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node not found: %v", err)
	}
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, node, "--test", "chat.test.mjs", "e2ee.test.mjs", "backup.test.mjs", "threads.test.mjs")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "MACHI_URL="+specProxy(t, baseURL(srv)))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("matrix-js-sdk test failed: %v\n%s", err, out)
		}
		t.Logf("%s", out)
	})
}

// TestMatrixJSSDKAcrossCities runs js/e2ee_cities.test.mjs: an encrypted
// chat between users of two federated machi servers.
func TestMatrixJSSDKAcrossCities(t *testing.T) {
	dir, _ := filepath.Abs("js")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "matrix-js-sdk")); err != nil {
		if os.Getenv("MACHI_REQUIRE_JS") != "" {
			t.Fatalf("matrix-js-sdk is not installed in %s (run npm ci there): %v", dir, err)
		}
		t.Skip("matrix-js-sdk not installed (make test installs it)")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node not found: %v", err)
	}
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		const a, b = "city-a.test", "city-b.test"
		cities := startFederation(t, engine, []string{a, b}, map[string][]string{a: {b}, b: {a}}, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, node, "--test", "e2ee_cities.test.mjs")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "MACHI_URL_A="+specProxy(t, baseURL(cities[a].srv)), "MACHI_URL_B="+specProxy(t, baseURL(cities[b].srv)))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("matrix-js-sdk test across cities failed: %v\n%s", err, out)
		}
		t.Logf("%s", out)
	})
}
