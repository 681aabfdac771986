package testrig

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// MachiBinary builds cmd/machi once per test process, for tests that run
// machi as a real process (SIGKILL, the admin CLI, the bench).
func MachiBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "machi-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "machi")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/machi-chat/machi/cmd/machi").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}
