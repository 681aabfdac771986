// Package server wires machi's parts into one running homeserver: storage,
// the rooms write path, the client API, media and metrics. cmd/machi and the
// end-to-end tests both start it through Start.
package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/machi-chat/machi/clientapi"
	"github.com/machi-chat/machi/internal/config"
	"github.com/machi-chat/machi/media"
	"github.com/machi-chat/machi/policy"
	"github.com/machi-chat/machi/rooms"
	"github.com/machi-chat/machi/storage/sqlstore"
)

// Server is a running machi.
type Server struct {
	// ClientAddr is the client API's listening address.
	ClientAddr  string
	MetricsAddr string
	Store       *sqlstore.DB
	Rooms       *rooms.Service
	API         *clientapi.Server

	log  *slog.Logger
	srv  *http.Server
	msrv *http.Server
	errc chan error
}

// LoadKey reads the signing key ("ed25519 <id> <base64 seed>", the format
// Synapse uses), creating it if missing.
func LoadKey(path string) (gomatrixserverlib.KeyID, ed25519.PrivateKey, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		_, key, _ := ed25519.GenerateKey(nil)
		id := make([]byte, 3)
		_, _ = rand.Read(id)
		line := fmt.Sprintf("ed25519 a_%s %s\n", base64.RawURLEncoding.EncodeToString(id), base64.RawStdEncoding.EncodeToString(key.Seed()))
		if err := os.WriteFile(path, []byte(line), 0o600); err != nil {
			return "", nil, fmt.Errorf("write signing key: %w", err)
		}
		raw = []byte(line)
	} else if err != nil {
		return "", nil, fmt.Errorf("read signing key: %w", err)
	}
	f := strings.Fields(string(raw))
	if len(f) != 3 || f[0] != "ed25519" {
		return "", nil, fmt.Errorf("signing key %s: want \"ed25519 <id> <base64 seed>\"", path)
	}
	seed, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(f[2], "="))
	if err != nil || len(seed) != ed25519.SeedSize {
		return "", nil, fmt.Errorf("signing key %s: bad seed", path)
	}
	return gomatrixserverlib.KeyID("ed25519:" + f[1]), ed25519.NewKeyFromSeed(seed), nil
}

// OpenStore opens the configured database.
func OpenStore(ctx context.Context, cfg *config.Config) (*sqlstore.DB, error) {
	if cfg.Database.Engine == "postgres" {
		return sqlstore.OpenPostgres(ctx, cfg.Database.PostgresDSN)
	}
	return sqlstore.OpenSQLite(ctx, cfg.Path(cfg.Database.SQLitePath), cfg.Database.Synchronous == "full")
}

// Start opens everything and starts listening. Stop it with Close.
func Start(ctx context.Context, cfg *config.Config, log *slog.Logger) (_ *Server, err error) {
	s := &Server{log: log, errc: make(chan error, 2)}
	var closers []func()
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
		}
	}()
	keyID, key, err := LoadKey(cfg.Path(cfg.SigningKeyPath))
	if err != nil {
		return nil, err
	}
	if s.Store, err = OpenStore(ctx, cfg); err != nil {
		return nil, err
	}
	closers = append(closers, func() { s.Store.Close() })
	pol := policy.New(func(_ context.Context, in policy.EventInput, d *policy.Denial) {
		log.Info("policy denied event", "rule", d.RuleID, "sender", in.Sender, "room", in.RoomID, "type", in.Type)
	})
	s.Rooms, err = rooms.New(ctx, rooms.Config{
		ServerName: spec.ServerName(cfg.ServerName), KeyID: keyID, Key: key,
		DefaultVersion: cfg.Rooms.DefaultVersion, Log: log,
	}, s.Store, pol)
	if err != nil {
		return nil, err
	}
	closers = append(closers, s.Rooms.Close)
	repo, err := media.New(cfg.Path(cfg.Media.Path), s.Store, cfg.Media.MaxUploadBytes)
	if err != nil {
		return nil, err
	}
	s.API = clientapi.New(cfg, s.Store, s.Rooms, repo, log)

	ln, err := net.Listen("tcp", cfg.Listen.Client)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen.Client, err)
	}
	s.ClientAddr = ln.Addr().String()
	s.srv = &http.Server{Handler: s.API.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute}
	go func() { s.errc <- s.srv.Serve(ln) }()
	closers = append(closers, func() { s.srv.Close() })

	if cfg.Listen.Metrics != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		reg.MustRegister(rooms.Collectors()...)
		reg.MustRegister(clientapi.Collectors()...)
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		// Profiles for operators, on the metrics listener only (never the
		// client one).
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		mln, err := net.Listen("tcp", cfg.Listen.Metrics)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", cfg.Listen.Metrics, err)
		}
		s.MetricsAddr = mln.Addr().String()
		s.msrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { s.errc <- s.msrv.Serve(mln) }()
	}
	return s, nil
}

// Err is closed over the first listener error.
func (s *Server) Err() <-chan error { return s.errc }

// Close stops listening, lets requests finish (up to the context's
// deadline), commits what is queued and closes the database.
func (s *Server) Close(ctx context.Context) {
	_ = s.srv.Shutdown(ctx)
	if s.msrv != nil {
		_ = s.msrv.Shutdown(ctx)
	}
	s.Rooms.Close()
	s.Store.Close()
}
