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

// debianPython is the interpreter Debian's python3-matrix-nio installs for;
// a python3 earlier on PATH (pyenv, a venv) would not see the package.
const debianPython = "/usr/bin/python3"

// TestMatrixNio runs nio/chat.py — python3-matrix-nio from Debian, which
// uses the /r0 paths — against machi. make test installs the package and
// sets MACHI_REQUIRE_NIO, so there it fails rather than skips.
func TestMatrixNio(t *testing.T) {
	if err := exec.Command(debianPython, "-c", "import nio").Run(); err != nil {
		if os.Getenv("MACHI_REQUIRE_NIO") != "" {
			t.Fatalf("python3-matrix-nio is not installed for %s: %v", debianPython, err)
		}
		t.Skip("python3-matrix-nio not installed (make test installs it)")
	}
	script, _ := filepath.Abs(filepath.Join("nio", "chat.py"))
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, debianPython, script)
		cmd.Env = append(os.Environ(), "MACHI_URL="+specProxy(t, baseURL(srv)), "PYTHONDONTWRITEBYTECODE=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("matrix-nio test failed: %v\n%s", err, out)
		}
		t.Logf("%s", out)
	})
}
