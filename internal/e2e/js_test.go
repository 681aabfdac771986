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

// The matrix-js-sdk tests in js/ (matrix-js-sdk from npm, pinned by
// js/package-lock.json) run under node against servers started here. make
// test installs the packages and sets MACHI_REQUIRE_JS, so there they fail
// rather than skip.

// runJS runs the node test files in js/ with env added, bounded by limit.
func runJS(t *testing.T, limit time.Duration, env []string, files ...string) {
	t.Helper()
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
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, append([]string{"--test"}, files...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("matrix-js-sdk test %v failed: %v\n%s", files, err, out)
	}
	t.Logf("%s", out)
}

// TestMatrixJSSDK: chat, end-to-end encryption, key backup and threads.
func TestMatrixJSSDK(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		runJS(t, 4*time.Minute, []string{"MACHI_URL=" + specProxy(t, baseURL(srv))},
			"chat.test.mjs", "e2ee.test.mjs", "backup.test.mjs", "threads.test.mjs")
	})
}

// TestMatrixJSSDKAcrossCities runs js/e2ee_cities.test.mjs: an encrypted
// chat between users of two federated machi servers.
func TestMatrixJSSDKAcrossCities(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		const a, b = "city-a.test", "city-b.test"
		cities := startFederation(t, engine, []string{a, b}, map[string][]string{a: {b}, b: {a}}, nil)
		runJS(t, 3*time.Minute, []string{"MACHI_URL_A=" + specProxy(t, baseURL(cities[a].srv)), "MACHI_URL_B=" + specProxy(t, baseURL(cities[b].srv))},
			"e2ee_cities.test.mjs")
	})
}
