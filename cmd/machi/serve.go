package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/machi-chat/machi/internal/config"
	"github.com/machi-chat/machi/internal/server"
)

const defaultConfig = "machi-data/machi.yaml"

func configFlag(fs *flag.FlagSet) *string {
	def := defaultConfig
	if env := os.Getenv("MACHI_CONFIG"); env != "" {
		def = env
	}
	return fs.String("config", def, "configuration file (env MACHI_CONFIG)")
}

// firstRun writes a default config into a new data folder.
func firstRun(path string) (bool, error) {
	if _, err := os.Stat(path); err == nil {
		return false, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return false, fmt.Errorf("create data folder: %w", err)
	}
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	if err := config.WriteDefault(path, base64.RawURLEncoding.EncodeToString(b)); err != nil {
		return false, err
	}
	return true, nil
}

func newLogger(cfg config.Log) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Level))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func serve(args []string) error {
	start := time.Now()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfgPath := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	created, err := firstRun(*cfgPath)
	if err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log)
	slog.SetDefault(log)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	srv, err := server.Start(ctx, cfg, log)
	if err != nil {
		return err
	}
	log.Info("machi started", "server_name", cfg.ServerName, "client", srv.ClientAddr, "metrics", srv.MetricsAddr,
		"database", cfg.Database.Engine, "startup", time.Since(start).Round(time.Microsecond))
	if created {
		fmt.Fprintf(os.Stderr, `
First run: wrote %[1]s, a signing key and an SQLite database in %[2]s.
Create the first admin account (works while machi runs):

    machi admin create-user -config %[1]s -admin alice

then log in from a Matrix client with homeserver http://%[3]s
`, *cfgPath, filepath.Dir(*cfgPath), srv.ClientAddr)
	}

	select {
	case <-ctx.Done():
	case err := <-srv.Err():
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	log.Info("machi stopping")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Close(sctx)
	return nil
}
