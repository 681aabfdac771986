package e2e

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/machi-chat/machi/internal/testrig"
)

// TestAdminCLIWhileRunning: machi admin, talking to a running machi over
// its admin socket, creates users, lists them, resets a password and
// revokes a device; each change takes effect on the very next request, and
// each is in the audit log. With the server stopped, the same commands
// work on the database directly.
func TestAdminCLIWhileRunning(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs machi")
	}
	bin := testrig.MachiBinary(t)
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		cfgPath, addr := procConfig(t, engine, "server_name: city.example\nregistration: {bcrypt_cost: 4}\n")
		p := startProc(t, bin, cfgPath, addr)
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
		// At once, not after a cache expires.
		if code, _ := call("GET", base+"/account/whoami", tok, nil, nil); code != 401 {
			t.Fatalf("the old token works right after the reset (%d)", code)
		}
		if _, code := login("first-password"); code != 403 {
			t.Errorf("login with the old password: %d, want 403", code)
		}
		tok, code = login("second-password")
		if code != 200 {
			t.Fatalf("login with the new password: %d", code)
		}
		var who struct {
			DeviceID string `json:"device_id"`
		}
		if code, _ := call("GET", base+"/account/whoami", tok, nil, &who); code != 200 {
			t.Fatalf("whoami: %d", code)
		}
		if devs := admin("", "devices", "-config", cfgPath, "tanaka"); !strings.Contains(devs, who.DeviceID) || !strings.Contains(devs, "office") {
			t.Fatalf("devices:\n%s", devs)
		}
		admin("", "revoke-device", "-config", cfgPath, "tanaka", who.DeviceID)
		if code, _ := call("GET", base+"/account/whoami", tok, nil, nil); code != 401 {
			t.Fatalf("the revoked device still works (%d)", code)
		}
		if code := admin("", "issue-code", "-config", cfgPath, "suzuki"); !strings.Contains(code, "enrollment code for @suzuki:city.example: ") {
			t.Fatalf("issue-code: %s", code)
		}
		audit := admin("", "audit", "-config", cfgPath, "-csv")
		for _, action := range []string{"user.create", "user.password_reset", "device.revoke", "enrollment.issue"} {
			if !strings.Contains(audit, ",cli,,"+action+",") {
				t.Errorf("audit lacks the CLI's %s:\n%s", action, audit)
			}
		}

		// Stopped: the CLI opens the database itself.
		p.stop(t)
		admin("third-password\n", "create-user", "-config", cfgPath, "yamada")
		if list := admin("", "list-users", "-config", cfgPath); !strings.Contains(list, "@yamada:city.example") {
			t.Fatalf("offline list-users:\n%s", list)
		}
	})
}
