// Package e2e drives a real machi — started in-process on a loopback
// listener, on SQLite and on PostgreSQL — with real client libraries:
// mautrix-go here, matrix-js-sdk in js/.
package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"reflect"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/machi-chat/machi/internal/config"
	"github.com/machi-chat/machi/internal/server"
	"github.com/machi-chat/machi/internal/testrig"
)

// startServer runs machi on engine with open registration and no rate
// limits, stopped at cleanup.
func startServer(t *testing.T, engine string, edit ...func(*config.Config)) *server.Server {
	t.Helper()
	return startServerOpts(t, engine, nil, edit...)
}

// startServerOpts is startServer with server options (a test clock).
func startServerOpts(t *testing.T, engine string, opts []server.Option, edit ...func(*config.Config)) *server.Server {
	t.Helper()
	cfg := testConfig(t, engine, edit...)
	return startWith(t, &cfg, opts...)
}

// testConfig is a machi configuration for tests on engine: a fresh data
// folder and database, open registration, no rate limits.
func testConfig(t *testing.T, engine string, edit ...func(*config.Config)) config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Listen.Client = "127.0.0.1:0"
	cfg.Listen.Metrics = ""
	cfg.Registration.Enabled = true
	cfg.Registration.BcryptCost = 4
	cfg.Registration.SharedSecret = "test-secret"
	cfg.RateLimits.Enabled = false
	if engine == "postgres" {
		cfg.Database.Engine = "postgres"
		cfg.Database.PostgresDSN = testrig.PostgresDSN(t)
	}
	for _, e := range edit {
		e(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startWith starts machi on cfg, stopped at cleanup.
func startWith(t *testing.T, cfg *config.Config, opts ...server.Option) *server.Server {
	t.Helper()
	srv := startUnmanaged(t, cfg, opts...)
	t.Cleanup(func() { stopServer(srv) })
	return srv
}

// startUnmanaged starts machi on cfg; the caller stops it (stopServer).
func startUnmanaged(t *testing.T, cfg *config.Config, opts ...server.Option) *server.Server {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("MACHI_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	srv, err := server.Start(context.Background(), cfg, log, opts...)
	if err != nil {
		t.Fatalf("start machi: %v", err)
	}
	return srv
}

func stopServer(srv *server.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Close(ctx)
}

func baseURL(srv *server.Server) string { return "http://" + srv.ClientAddr }

var userSeq int

// register makes a user through /register with a real mautrix client.
func register(t *testing.T, srv *server.Server, name string) *mautrix.Client {
	t.Helper()
	userSeq++
	c, err := mautrix.NewClient(baseURL(srv), "", "")
	if err != nil {
		t.Fatal(err)
	}
	c.Client = &http.Client{Timeout: 60 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := c.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: fmt.Sprintf("%s%d", name, userSeq), Password: "secret-" + name})
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	c.SetCredentials(resp.UserID, resp.AccessToken)
	c.DeviceID = resp.DeviceID
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitFor syncs c until fn finds what it wants in a response, bounded.
func waitFor(t *testing.T, c *mautrix.Client, since string, fn func(*mautrix.RespSync) bool) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := c.SyncRequest(ctxT(t), 5000, since, "", false, "")
		if err != nil {
			t.Fatalf("sync: %v", err)
		}
		since = resp.NextBatch
		if fn(resp) {
			return since
		}
	}
	t.Fatal("timed out waiting for sync")
	return ""
}

func roomTimelineHas(resp *mautrix.RespSync, roomID id.RoomID, body string) bool {
	jr, ok := resp.Rooms.Join[roomID]
	if !ok {
		return false
	}
	for _, ev := range jr.Timeline.Events {
		if b, _ := ev.Content.Raw["body"].(string); b == body {
			return true
		}
	}
	return false
}

// deepEq fails the test when got and want differ.
func deepEq(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got  %v\n want %v", what, got, want)
	}
}
