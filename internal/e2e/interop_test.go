package e2e

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/machi-chat/machi/internal/config"
	"github.com/machi-chat/machi/internal/testrig"
)

// TestDendriteInterop: the joint committee with Dendrite, an independent
// implementation, as one of the cities. make interop builds Dendrite
// 0.15.2 from the Go module proxy and sets MACHI_DENDRITE; without it the
// test says so and skips. Server names are IP:port, so no name needs to
// be looked up; both sides trust the test CA.
func TestDendriteInterop(t *testing.T) {
	bin := os.Getenv("MACHI_DENDRITE")
	if bin == "" {
		t.Skip("MACHI_DENDRITE is not set: make interop builds Dendrite and runs this test")
	}
	ca := testrig.NewCA(t)
	dName, dHTTP, mName := testrig.FreePort(t, "127.0.0.13"), testrig.FreePort(t, "127.0.0.13"), testrig.FreePort(t, "127.0.0.11")

	// Dendrite, with its own CI configuration and the test CA's certificate.
	dir := t.TempDir()
	tools := filepath.Dir(bin)
	yaml, err := exec.Command(filepath.Join(tools, "generate-config"), "-ci", "-dir", dir, "-server", dName).Output()
	if err != nil {
		t.Fatalf("generate Dendrite's config: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "dendrite.yaml"), yaml, 0o600); err != nil {
		t.Fatal(err)
	}
	gen := exec.Command(filepath.Join(tools, "generate-keys"), "--private-key", "matrix_key.pem")
	gen.Dir = dir
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("generate Dendrite's key: %v\n%s", err, out)
	}
	dCert, dKey := ca.Issue(t, "127.0.0.13", net.ParseIP("127.0.0.13"))
	logFile, err := os.Create(filepath.Join(dir, "dendrite.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-config", "dendrite.yaml", "-http-bind-address", dHTTP, "-https-bind-address", dName, "-tls-cert", dCert, "-tls-key", dKey,
		"-really-enable-open-registration") // its CI config has registration open; users are made with the shared secret

	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, logFile, logFile
	cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+ca.PEMPath)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start Dendrite: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		logFile.Close()
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "dendrite.log"))
			t.Logf("Dendrite's log (last 4 KiB):\n%s", tail(log, 4096))
		}
	})
	dURL := "http://" + dHTTP
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(dURL + "/_matrix/client/versions")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case <-exited:
			t.Fatal("Dendrite stopped at start")
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("Dendrite did not start: %v", err)
		}
	}

	// machi, allowing Dendrite's city.
	mCert, mKey := ca.Issue(t, "127.0.0.11", net.ParseIP("127.0.0.11"))
	cfg := testConfig(t, "sqlite", func(c *config.Config) {
		c.ServerName = mName
		c.Federation = config.Federation{Listen: mName, TLSCert: mCert, TLSKey: mKey, CABundle: ca.PEMPath, Peers: map[string]string{}, Discovery: true}
		c.Policy.Federation.AllowedServers = []string{dName}
	})
	srv := startWith(t, &cfg)
	alice := register(t, srv, "alice")
	bob := dendriteUser(t, dURL, "bob")

	room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "合同委員会", Invite: []id.UserID{bob.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, bob, "", func(r *mautrix.RespSync) bool { _, ok := r.Rooms.Invite[room.RoomID]; return ok })
	if _, err := bob.JoinRoomByID(ctxT(t), room.RoomID); err != nil {
		t.Fatalf("bob (Dendrite) joins machi's room: %v", err)
	}
	waitFor(t, alice, "", func(r *mautrix.RespSync) bool { return memberIn(r, room.RoomID, bob.UserID, "join") })
	if _, err := alice.SendText(ctxT(t), room.RoomID, "machi から"); err != nil {
		t.Fatal(err)
	}
	waitHistory(t, bob, room.RoomID, func(bodies []string) bool { return contains(bodies, "machi から") })
	if _, err := bob.SendText(ctxT(t), room.RoomID, "Dendrite から"); err != nil {
		t.Fatal(err)
	}
	waitHistory(t, alice, room.RoomID, func(bodies []string) bool { return contains(bodies, "Dendrite から") })
	var name struct {
		Name string `json:"name"`
	}
	if err := bob.StateEvent(ctxT(t), room.RoomID, event.StateRoomName, "", &name); err != nil || name.Name != "合同委員会" {
		t.Fatalf("room name on Dendrite: %q %v", name.Name, err)
	}

	// And the other way: a room on Dendrite that alice (machi) is invited
	// to and joins through Dendrite.
	theirs, err := bob.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "県の部会", Invite: []id.UserID{alice.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, alice, "", func(r *mautrix.RespSync) bool { _, ok := r.Rooms.Invite[theirs.RoomID]; return ok })
	if _, err := alice.JoinRoomByID(ctxT(t), theirs.RoomID); err != nil {
		t.Fatalf("alice (machi) joins Dendrite's room: %v", err)
	}
	if _, err := bob.SendText(ctxT(t), theirs.RoomID, "部会へようこそ"); err != nil {
		t.Fatal(err)
	}
	waitHistory(t, alice, theirs.RoomID, func(bodies []string) bool { return contains(bodies, "部会へようこそ") })
	if _, err := alice.SendText(ctxT(t), theirs.RoomID, "参加しました"); err != nil {
		t.Fatal(err)
	}
	waitHistory(t, bob, theirs.RoomID, func(bodies []string) bool { return contains(bodies, "参加しました") })
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// dendriteUser registers a user on another homeserver through /register
// (m.login.dummy: the test server's registration is open).
func dendriteUser(t *testing.T, base, name string) *mautrix.Client {
	t.Helper()
	c, err := mautrix.NewClient(base, "", "")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.RegisterDummy(ctxT(t), &mautrix.ReqRegister[any]{Username: name, Password: "password-" + name})
	if err != nil {
		t.Fatalf("register %s on Dendrite: %v", name, err)
	}
	c.SetCredentials(resp.UserID, resp.AccessToken)
	c.DeviceID = resp.DeviceID
	return c
}
