package e2e

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/machi-chat/machi/internal/testrig"
)

// TestAdminCLIWhileRunning: machi admin creates users, lists them and
// resets a password against the database of a running machi; the reset
// logs the user out of the running server within its token re-check time.
func TestAdminCLIWhileRunning(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs machi")
	}
	bin := testrig.MachiBinary(t)
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		cfgPath, addr := procConfig(t, engine, "server_name: city.example\nregistration: {bcrypt_cost: 4}\n")
		startProc(t, bin, cfgPath, addr)
		admin := func(stdin string, args ...string) string {
			t.Helper()
			cmd := exec.Command(bin, append([]string{"admin"}, args...)...)
			cmd.Stdin = strings.NewReader(stdin)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("machi admin %v: %v\n%s", args, err, out)
			}
			return string(out)
		}
		base := "http://" + addr + "/_matrix/client/v3"
		login := func(password string) (string, int) {
			var resp struct {
				Token string `json:"access_token"`
			}
			code, err := call("POST", base+"/login", "", map[string]any{"type": "m.login.password",
				"identifier": map[string]string{"type": "m.id.user", "user": "tanaka"}, "password": password}, &resp)
			if err != nil {
				t.Fatal(err)
			}
			return resp.Token, code
		}

		admin("first-password\n", "create-user", "-config", cfgPath, "-admin", "tanaka")
		admin("other-password\n", "create-user", "-config", cfgPath, "suzuki")
		list := admin("", "list-users", "-config", cfgPath)
		if !strings.Contains(list, "@tanaka:city.example") || !strings.Contains(list, "@suzuki:city.example") {
			t.Fatalf("list-users:\n%s", list)
		}
		tok, code := login("first-password")
		if code != 200 || tok == "" {
			t.Fatalf("login as the new user: %d", code)
		}
		if code, _ := call("GET", base+"/account/whoami", tok, nil, nil); code != 200 {
			t.Fatalf("whoami: %d", code)
		}

		out := admin("second-password\n", "reset-password", "-config", cfgPath, "tanaka")
		if !strings.Contains(out, "1 device(s) logged out") {
			t.Errorf("reset-password said %q", out)
		}
		deadline := time.Now().Add(15 * time.Second)
		for {
			code, _ := call("GET", base+"/account/whoami", tok, nil, nil)
			if code == 401 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the old token still works 15 s after the reset (%d)", code)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if _, code := login("first-password"); code != 403 {
			t.Errorf("login with the old password: %d, want 403", code)
		}
		if _, code := login("second-password"); code != 200 {
			t.Errorf("login with the new password: %d", code)
		}
	})
}
