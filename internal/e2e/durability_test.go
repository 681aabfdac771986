package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/machi-chat/machi/internal/testrig"
)

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// proc is a machi process.
type proc struct {
	cmd  *exec.Cmd
	addr string
}

// stop ends the process gracefully (SIGTERM) and waits for it.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("machi did not stop within 20 s of SIGTERM")
	}
}

// procConfig writes a config file for a machi process on engine, on a
// free loopback port, with the given extra YAML lines.
func procConfig(t *testing.T, engine, extra string) (cfgPath, addr string) {
	t.Helper()
	addr = freePort(t)
	db := "database: {engine: sqlite, sqlite_path: machi.db}"
	if engine == "postgres" {
		db = fmt.Sprintf("database: {engine: postgres, postgres_dsn: %q}", testrig.PostgresDSN(t))
	}
	cfgPath = filepath.Join(t.TempDir(), "machi.yaml")
	cfg := fmt.Sprintf("listen: {client: %q, metrics: \"\"}\n%s\nlog: {level: error}\n%s", addr, db, extra)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgPath, addr
}

func startProc(t *testing.T, bin, cfgPath, addr string) *proc {
	t.Helper()
	cmd := exec.Command(bin, "serve", "-config", cfgPath)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, addr: addr}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/_matrix/client/versions")
		if err == nil {
			resp.Body.Close()
			return p
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("machi did not start:\n%s", stderr.String())
	return nil
}

func call(method, url, token string, body any, out any) (int, error) {
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, _ := http.NewRequest(method, url, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return resp.StatusCode, err
		}
	}
	return resp.StatusCode, nil
}

// TestAcknowledgedSendsSurviveSIGKILL sends under load, kills machi with
// SIGKILL at a random moment, restarts it, and checks that every send that
// got a 200 is there, in each sender's order.
func TestAcknowledgedSendsSurviveSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills a real process")
	}
	bin := testrig.MachiBinary(t)
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		cfgPath, addr := procConfig(t, engine, "server_name: localhost\nregistration: {enabled: true, bcrypt_cost: 4}\nrate_limits: {enabled: false}\n")
		p := startProc(t, bin, cfgPath, addr)
		base := "http://" + addr + "/_matrix/client/v3"

		var reg struct {
			Token string `json:"access_token"`
		}
		if code, err := call("POST", base+"/register", "", map[string]any{"username": "durable", "password": "pw", "auth": map[string]string{"type": "m.login.dummy"}}, &reg); err != nil || code != 200 {
			t.Fatalf("register: %d %v", code, err)
		}
		var room struct {
			RoomID string `json:"room_id"`
		}
		if code, err := call("POST", base+"/createRoom", reg.Token, map[string]any{}, &room); err != nil || code != 200 {
			t.Fatalf("createRoom: %d %v", code, err)
		}

		const senders = 8
		acked := make([][]string, senders)
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for s := 0; s < senders; s++ {
			wg.Add(1)
			go func(s int) {
				defer wg.Done()
				for i := 0; i < 5000; i++ {
					select {
					case <-stop:
						return
					default:
					}
					body := fmt.Sprintf("s%d-%d", s, i)
					url := fmt.Sprintf("%s/rooms/%s/send/m.room.message/%s", base, room.RoomID, body)
					code, err := call("PUT", url, reg.Token, map[string]string{"msgtype": "m.text", "body": body}, nil)
					if err != nil || code != 200 {
						return // the server is gone
					}
					acked[s] = append(acked[s], body)
				}
			}(s)
		}
		time.Sleep(time.Duration(200+rand.IntN(800)) * time.Millisecond)
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = p.cmd.Wait()
		close(stop)
		wg.Wait()
		total := 0
		for _, a := range acked {
			total += len(a)
		}
		if total == 0 {
			t.Fatal("no send was acknowledged before the kill")
		}

		startProc(t, bin, cfgPath, addr)
		var stored []string
		from := ""
		for page := 0; page < 10000; page++ {
			var msgs struct {
				Chunk []struct {
					Type    string `json:"type"`
					Content struct {
						Body string `json:"body"`
					} `json:"content"`
				} `json:"chunk"`
				End string `json:"end"`
			}
			url := fmt.Sprintf("%s/rooms/%s/messages?dir=f&limit=500&from=%s", base, room.RoomID, from)
			if from == "" {
				url = strings.TrimSuffix(url, "&from=")
			}
			if code, err := call("GET", url, reg.Token, nil, &msgs); err != nil || code != 200 {
				t.Fatalf("messages: %d %v", code, err)
			}
			for _, ev := range msgs.Chunk {
				if ev.Type == "m.room.message" {
					stored = append(stored, ev.Content.Body)
				}
			}
			if msgs.End == "" || len(msgs.Chunk) == 0 {
				break
			}
			from = msgs.End
		}
		index := map[string]int{}
		for i, b := range stored {
			index[b] = i
		}
		for s, list := range acked {
			last := -1
			for _, body := range list {
				i, ok := index[body]
				if !ok {
					t.Fatalf("acknowledged send %s lost (sender %d had %d acked)", body, s, len(list))
				}
				if i <= last {
					t.Fatalf("sender %d's %s is out of order", s, body)
				}
				last = i
			}
		}
		t.Logf("%s: %d acknowledged sends, %d stored, all there in order", engine, total, len(stored))
	})
}
