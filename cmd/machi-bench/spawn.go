package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	_ "github.com/lib/pq"
	"gopkg.in/yaml.v3"

	"github.com/machi-chat/machi/internal/config"
)

// spawned is a machi the bench started on a fresh data folder (and, for
// PostgreSQL, a fresh database it drops afterwards).
type spawned struct {
	bin, dir, cfgPath, url string
	cmd                    *exec.Cmd
	startup                time.Duration
	dropDB                 func()
}

func (s *spawned) pid() int { return s.cmd.Process.Pid }

func spawn(ctx context.Context, bin, engine, pgDSN string) (*spawned, error) {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "machi-bench-")
	if err != nil {
		return nil, err
	}
	s := &spawned{bin: bin, dir: dir, dropDB: func() {}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()

	cfg := config.Default()
	cfg.DataDir = dir
	cfg.Listen.Client = addr
	cfg.Listen.Metrics = ""
	cfg.Registration.Enabled = true
	cfg.Registration.BcryptCost = 4 // the bench measures messaging, not password hashing
	cfg.RateLimits.Enabled = false
	cfg.Log.Level = "warn"
	switch engine {
	case "sqlite":
	case "postgres":
		if pgDSN == "" {
			return nil, fmt.Errorf("-engine postgres needs -postgres-dsn")
		}
		dsn, drop, err := freshDatabase(ctx, pgDSN)
		if err != nil {
			return nil, err
		}
		cfg.Database.Engine, cfg.Database.PostgresDSN, s.dropDB = "postgres", dsn, drop
	default:
		return nil, fmt.Errorf("-engine %q must be sqlite or postgres", engine)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	data, err := yaml.Marshal(&cfg)
	if err != nil {
		return nil, err
	}
	s.cfgPath = filepath.Join(dir, "machi.yaml")
	if err := os.WriteFile(s.cfgPath, data, 0o600); err != nil {
		return nil, err
	}
	s.url = "http://" + addr
	return s, s.start(ctx)
}

func (s *spawned) start(ctx context.Context) error {
	logFile, err := os.OpenFile(filepath.Join(s.dir, "machi.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	s.cmd = exec.Command(s.bin, "serve", "-config", s.cfgPath)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	start := time.Now()
	if err := s.cmd.Start(); err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s.startup, err = newHS(s.url).ready(rctx, start)
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "machi.log"))
		return fmt.Errorf("%w; machi's log:\n%s", err, log)
	}
	return nil
}

// stop asks machi to stop (SIGTERM) and waits, killing it after 15 s.
func (s *spawned) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
	s.cmd = nil
}

func (s *spawned) restart(ctx context.Context) error {
	s.stop()
	return s.start(ctx)
}

func (s *spawned) cleanup() {
	s.stop()
	s.dropDB()
	os.RemoveAll(s.dir)
}

// freshDatabase creates a database on the PostgreSQL server of dsn and
// returns its DSN and a function that drops it.
func freshDatabase(ctx context.Context, dsn string) (string, func(), error) {
	admin, err := sql.Open("postgres", dsn)
	if err != nil {
		return "", nil, err
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "machi_bench_" + hex.EncodeToString(b)
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		admin.Close()
		return "", nil, fmt.Errorf("create database: %w", err)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		admin.Close()
		return "", nil, err
	}
	u.Path = "/" + name
	drop := func() {
		_, _ = admin.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
		admin.Close()
	}
	return u.String(), drop, nil
}
