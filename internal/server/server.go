// Package server wires machi's parts into one running homeserver: storage,
// the rooms write path, the client API, media and metrics. cmd/machi and the
// end-to-end tests both start it through Start.
package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/machi-chat/machi/clientapi"
	"github.com/machi-chat/machi/federation"
	"github.com/machi-chat/machi/internal/config"
	"github.com/machi-chat/machi/media"
	"github.com/machi-chat/machi/policy"
	"github.com/machi-chat/machi/rooms"
	"github.com/machi-chat/machi/search"
	"github.com/machi-chat/machi/storage"
	"github.com/machi-chat/machi/storage/sqlstore"
)

// SearchIndexDir is where the search index lives, in the data folder. It
// holds nothing the database does not: deleting it makes machi rebuild it.
const SearchIndexDir = "search-index"

// Server is a running machi.
type Server struct {
	// ClientAddr is the client API's listening address.
	ClientAddr  string
	MetricsAddr string
	Store       *sqlstore.DB
	Rooms       *rooms.Service
	Policy      *policy.Engine
	Search      *search.Index
	API         *clientapi.Server
	// AdminSocket is the admin socket's path ("" when not listening).
	AdminSocket string
	// Federation is the server-server API; nil when federation.listen is "".
	Federation *federation.Federation
	// FederationAddr is the federation listener's address.
	FederationAddr string

	log   *slog.Logger
	audit *clientapi.AuditLog
	srv   *http.Server
	msrv  *http.Server
	asrv  *http.Server
	fsrv  *http.Server
	errc  chan error
}

// Version is machi's version, as /versions-like endpoints tell it.
const Version = "0.1.0"

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

// Option changes how a server starts.
type Option func(*options)

type options struct{ now func() time.Time }

// WithClock makes the policy read the time from now (tests move it).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// Open builds every part of machi over the configured database without
// listening anywhere: Start's first half, and what `machi admin` uses when
// no server is running. Close it with Close.
func Open(ctx context.Context, cfg *config.Config, log *slog.Logger, opts ...Option) (_ *Server, err error) {
	o := options{now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	s := &Server{log: log, errc: make(chan error, 4)}
	defer func() {
		if err != nil {
			s.closeParts()
		}
	}()
	keyID, key, err := LoadKey(cfg.Path(cfg.SigningKeyPath))
	if err != nil {
		return nil, err
	}
	if s.Store, err = OpenStore(ctx, cfg); err != nil {
		return nil, err
	}
	pcfg, err := effectivePolicy(ctx, cfg, s.Store, log)
	if err != nil {
		return nil, err
	}
	s.audit = clientapi.NewAuditLog(s.Store, o.now, log)
	if s.Policy, err = policy.New(pcfg, o.now, s.audit.Denied); err != nil {
		return nil, err
	}
	s.Rooms, err = rooms.New(ctx, rooms.Config{
		ServerName: spec.ServerName(cfg.ServerName), KeyID: keyID, Key: key,
		DefaultVersion: cfg.Rooms.DefaultVersion, Log: log,
	}, s.Store, s.Policy)
	if err != nil {
		return nil, err
	}
	var remote clientapi.Remote
	if cfg.Federation.Listen != "" {
		s.Federation, err = federation.New(ctx, federation.Config{ServerName: spec.ServerName(cfg.ServerName), KeyID: keyID, Key: key,
			Federation: cfg.Federation, Version: Version, Now: o.now}, cfg.Path(cfg.Federation.CABundle), s.Store, s.Rooms, s.Policy, log)
		if err != nil {
			return nil, err
		}
		remote = s.Federation
	}
	repo, err := media.New(cfg.Path(cfg.Media.Path), s.Store, cfg.Media.MaxUploadBytes)
	if err != nil {
		return nil, err
	}
	if s.Search, err = search.Open(ctx, cfg.Path(SearchIndexDir), s.Rooms, s.Store, log); err != nil {
		return nil, err
	}
	s.API = clientapi.New(cfg, clientapi.Deps{Store: s.Store, Rooms: s.Rooms, Media: repo, Search: s.Search, Policy: s.Policy, Audit: s.audit, Log: log, Remote: remote})
	if err := s.API.ReloadPolicyState(ctx); err != nil {
		return nil, err
	}
	if err := s.API.EnsureNoticesUser(ctx); err != nil {
		return nil, err
	}
	if err := s.API.LoadPresence(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// effectivePolicy is the config file's policy, unless admins changed it at
// run time: then the copy they stored in the database.
func effectivePolicy(ctx context.Context, cfg *config.Config, store *sqlstore.DB, log *slog.Logger) (policy.Config, error) {
	raw, err := store.GetSetting(ctx, clientapi.PolicySetting)
	if errors.Is(err, storage.ErrNotFound) {
		return cfg.Policy, nil
	} else if err != nil {
		return policy.Config{}, err
	}
	p := cfg.Policy
	if err := json.Unmarshal(raw, &p); err != nil {
		return policy.Config{}, fmt.Errorf("the policy stored by admins is unreadable (machi admin policy reset drops it): %w", err)
	}
	if err := p.Validate(); err != nil {
		return policy.Config{}, fmt.Errorf("the policy stored by admins is invalid (machi admin policy reset drops it): %w", err)
	}
	log.Info("policy: using the version admins changed at run time, not the config file's", "reset_with", "machi admin policy reset")
	return p, nil
}

// Start opens everything and starts listening: the client API, the
// metrics listener and the local admin socket. Stop it with Close.
func Start(ctx context.Context, cfg *config.Config, log *slog.Logger, opts ...Option) (_ *Server, err error) {
	s, err := Open(ctx, cfg, log, opts...)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			s.Close(ctx)
		}
	}()
	if cfg.Listen.AdminSocket != "" {
		if err := s.listenAdmin(cfg.Path(cfg.Listen.AdminSocket)); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", cfg.Listen.Client)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen.Client, err)
	}
	s.ClientAddr = ln.Addr().String()
	s.srv = &http.Server{Handler: s.API.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute}
	go func() { s.errc <- s.srv.Serve(ln) }()

	if s.Federation != nil {
		if err := s.listenFederation(cfg); err != nil {
			return nil, err
		}
	}

	if cfg.Listen.Metrics != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		reg.MustRegister(rooms.Collectors()...)
		reg.MustRegister(clientapi.Collectors()...)
		reg.MustRegister(media.Collectors()...)
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

// listenFederation serves the server-server API over TLS.
func (s *Server) listenFederation(cfg *config.Config) error {
	cert, err := tls.LoadX509KeyPair(cfg.Path(cfg.Federation.TLSCert), cfg.Path(cfg.Federation.TLSKey))
	if err != nil {
		return fmt.Errorf("federation TLS certificate: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.Federation.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Federation.Listen, err)
	}
	s.FederationAddr = ln.Addr().String()
	s.fsrv = &http.Server{Handler: s.Federation.Handler(s.API), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
	go func() { s.errc <- s.fsrv.ServeTLS(ln, "", "") }()
	return nil
}

// Err is closed over the first listener error.
func (s *Server) Err() <-chan error { return s.errc }

// listenAdmin serves the admin API on a Unix socket that only this OS
// user can open (`machi admin` talks to it). A socket file left by a crash
// is replaced; one a running server answers on is not.
func (s *Server) listenAdmin(path string) error {
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return fmt.Errorf("another machi is running on this data folder (its admin socket %s answers)", path)
	}
	_ = os.Remove(path)
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return fmt.Errorf("admin socket %s: %w", path, err)
	}
	s.AdminSocket = path
	s.asrv = &http.Server{Handler: s.API.AdminSocketHandler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { s.errc <- s.asrv.Serve(ln) }()
	return nil
}

// Close stops listening, lets requests finish (up to the context's
// deadline), commits what is queued and closes the database.
func (s *Server) Close(ctx context.Context) {
	for _, srv := range []*http.Server{s.srv, s.fsrv, s.msrv, s.asrv} {
		if srv != nil {
			_ = srv.Shutdown(ctx)
		}
	}
	if s.AdminSocket != "" {
		_ = os.Remove(s.AdminSocket)
	}
	s.closeParts()
}

// closeParts closes what Open opened, in reverse order.
func (s *Server) closeParts() {
	if s.API != nil {
		s.API.Close()
	}
	if s.Rooms != nil {
		s.Rooms.Close()
	}
	if s.Federation != nil {
		s.Federation.Close()
	}
	if s.Search != nil {
		// After the rooms writer, whose last commits it takes in.
		if err := s.Search.Close(); err != nil {
			s.log.Error("close search index", "err", err)
		}
	}
	if s.audit != nil {
		s.audit.Close()
	}
	if s.Store != nil {
		s.Store.Close()
	}
}
