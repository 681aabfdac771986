// Package config loads, validates and writes machi's one YAML configuration
// file. The file is read once at start; each package receives its own section
// through its constructor.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/machi-chat/machi/policy"
)

// Config is the whole configuration file.
type Config struct {
	// ServerName is the domain part of every user ID (@alice:ServerName).
	ServerName string `yaml:"server_name"`
	// DataDir holds the database, the signing key, media and the search
	// index (search-index). Relative paths below are resolved against it.
	// Defaults to the config file's folder.
	DataDir string `yaml:"data_dir"`
	// SigningKeyPath is the ed25519 key that signs this server's events.
	SigningKeyPath string `yaml:"signing_key_path"`

	Listen       Listen        `yaml:"listen"`
	Database     Database      `yaml:"database"`
	Registration Registration  `yaml:"registration"`
	RateLimits   RateLimits    `yaml:"rate_limits"`
	Media        Media         `yaml:"media"`
	Rooms        Rooms         `yaml:"rooms"`
	Federation   Federation    `yaml:"federation"`
	Presence     Presence      `yaml:"presence"`
	UserDir      UserDirectory `yaml:"user_directory"`
	TURN         TURN          `yaml:"turn"`
	Policy       policy.Config `yaml:"policy"`
	Log          Log           `yaml:"log"`
}

// Presence configures online/offline status.
type Presence struct {
	// Enabled shares presence (online, idle, offline, a status message)
	// with the people a user shares a room with. Off: /sync carries none
	// and GET /presence answers 404.
	Enabled bool `yaml:"enabled"`
}

// UserDirectory configures /user_directory/search.
type UserDirectory struct {
	// SearchAllUsers makes every active local account findable by every
	// user (all staff of the city find each other). Off (the spec's
	// behaviour), a search finds only the users who share a room with the
	// searcher or are in a public room (join rule public, or history
	// world_readable).
	SearchAllUsers bool `yaml:"search_all_users"`
}

// TURN configures the TURN servers VoIP clients are given
// (/voip/turnServer). With no URIs, clients are told there is none.
type TURN struct {
	// URIs are turn: or turns: URIs, e.g. turn:turn.example.jp:3478?transport=udp.
	URIs []string `yaml:"uris"`
	// SharedSecret is coturn's static-auth-secret (use-auth-secret): each
	// user gets a username "<expiry>:<user_id>" and an HMAC-SHA1 password
	// valid for TTL. Either this or Username and Password.
	SharedSecret string `yaml:"shared_secret"`
	// Username and Password are static credentials handed to every user.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// TTL is how long the credentials are valid.
	TTL policy.Duration `yaml:"ttl"`
}

// Listen holds the listener addresses.
type Listen struct {
	// Client is the client-server API listener (host:port).
	Client string `yaml:"client"`
	// Metrics is the Prometheus /metrics listener; empty disables it.
	Metrics string `yaml:"metrics"`
	// PublicBaseURL is what /.well-known/matrix/client advertises; empty
	// means http://<client listener>.
	PublicBaseURL string `yaml:"public_base_url"`
	// AdminSocket is the Unix socket `machi admin` talks to (only this OS
	// user can open it); empty disables it.
	AdminSocket string `yaml:"admin_socket"`
}

// Database selects and configures the storage engine.
type Database struct {
	// Engine is "sqlite" (embedded, the default) or "postgres".
	Engine string `yaml:"engine"`
	// SQLitePath is the SQLite database file.
	SQLitePath string `yaml:"sqlite_path"`
	// PostgresDSN is a lib/pq connection string, e.g.
	// postgres://machi:secret@127.0.0.1:5432/machi?sslmode=disable
	PostgresDSN string `yaml:"postgres_dsn"`
	// Synchronous is "normal" (a commit survives a crash of machi, not of
	// the machine: SQLite WAL synchronous=NORMAL, PostgreSQL
	// synchronous_commit=off is NOT used) or "full" (fsync on every commit).
	Synchronous string `yaml:"synchronous"`
}

// Registration controls who may create accounts.
type Registration struct {
	// Enabled allows open registration through /register. Off by default:
	// staff accounts are made by admins. Turn on for tests and benchmarks.
	Enabled bool `yaml:"enabled"`
	// SharedSecret enables Synapse-compatible /_synapse/admin/v1/register,
	// which admin tools use. Empty disables it.
	SharedSecret string `yaml:"shared_secret"`
	// BcryptCost is the cost of password hashes (4–31).
	BcryptCost int `yaml:"bcrypt_cost"`
}

// RateLimits bounds requests per user (or per IP before login).
type RateLimits struct {
	Enabled bool `yaml:"enabled"`
	// PerSecond is the sustained rate of requests that are limited
	// (sends, logins, registrations, room creation, uploads).
	PerSecond float64 `yaml:"per_second"`
	// Burst is how many such requests may come at once.
	Burst int `yaml:"burst"`
}

// Media configures the media repository.
type Media struct {
	// Path is the folder that holds uploaded files.
	Path string `yaml:"path"`
	// MaxUploadBytes is the largest upload accepted.
	MaxUploadBytes int64 `yaml:"max_upload_bytes"`
}

// Rooms configures room creation defaults.
type Rooms struct {
	// DefaultVersion is the room version of new rooms (10, 11 or 12).
	DefaultVersion string `yaml:"default_version"`
}

// Federation configures the server-server API. Which servers machi
// federates with is the policy's allow-list (policy.federation).
type Federation struct {
	// Listen is the federation listener (HTTPS, host:port); empty: machi
	// neither serves nor sends federation traffic.
	Listen string `yaml:"listen"`
	// TLSCert and TLSKey are the PEM certificate chain and key the
	// listener presents; the certificate must name server_name.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// CABundle is a PEM file of extra certificate authorities trusted for
	// other servers (a private CA on a closed network), besides the system's.
	CABundle string `yaml:"ca_bundle"`
	// Peers maps server names to host:port, for networks without public
	// DNS: a server listed here is reached there, with TLS checked against
	// its server name.
	Peers map[string]string `yaml:"peers"`
	// Discovery finds servers not in Peers by .well-known/matrix/server and
	// SRV records, as the spec describes.
	Discovery bool `yaml:"discovery"`
}

// Log configures structured logging.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is text or json.
	Format string `yaml:"format"`
}

// Default returns the configuration a first run writes.
func Default() Config {
	return Config{
		ServerName:     "localhost",
		SigningKeyPath: "signing.key",
		Listen:         Listen{Client: "127.0.0.1:8008", Metrics: "127.0.0.1:9108", AdminSocket: "admin.sock"},
		Database:       Database{Engine: "sqlite", SQLitePath: "machi.db", Synchronous: "normal"},
		Registration:   Registration{BcryptCost: 10},
		RateLimits:     RateLimits{Enabled: true, PerSecond: 10, Burst: 50},
		Media:          Media{Path: "media", MaxUploadBytes: 50 << 20},
		Rooms:          Rooms{DefaultVersion: "10"},
		Federation:     Federation{Peers: map[string]string{}, Discovery: true},
		Presence:       Presence{Enabled: true},
		TURN:           TURN{URIs: []string{}, TTL: policy.Duration(24 * time.Hour)},
		Policy:         policy.DefaultConfig(),
		Log:            Log{Level: "info", Format: "text"},
	}
}

// SupportedRoomVersions are the room versions machi creates and joins: every
// stable version of the spec (new rooms get rooms.default_version). Older
// versions stay because other servers host rooms made years ago in them.
var SupportedRoomVersions = []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"}

// Load reads and validates the file at path. Fields missing from the file
// keep their defaults.
func Load(path string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg := Default()
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if cfg.DataDir == "" {
		cfg.DataDir = filepath.Dir(path)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return &cfg, nil
}

// Validate reports every problem in the configuration at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if c.ServerName == "" || strings.ContainsAny(c.ServerName, " /@!#$") {
		bad("server_name %q must be a domain name (with an optional :port)", c.ServerName)
	}
	if c.Listen.Client == "" {
		bad("listen.client must be set (e.g. 127.0.0.1:8008)")
	} else if _, _, err := net.SplitHostPort(c.Listen.Client); err != nil {
		bad("listen.client %q: %v", c.Listen.Client, err)
	}
	if c.Listen.Metrics != "" {
		if _, _, err := net.SplitHostPort(c.Listen.Metrics); err != nil {
			bad("listen.metrics %q: %v", c.Listen.Metrics, err)
		} else if c.Listen.Metrics == c.Listen.Client {
			bad("listen.metrics must differ from listen.client")
		}
	}
	switch c.Database.Engine {
	case "sqlite":
		if c.Database.SQLitePath == "" {
			bad("database.sqlite_path must be set for engine sqlite")
		}
	case "postgres":
		if c.Database.PostgresDSN == "" {
			bad("database.postgres_dsn must be set for engine postgres")
		}
	default:
		bad("database.engine %q must be sqlite or postgres", c.Database.Engine)
	}
	switch c.Database.Synchronous {
	case "normal", "full":
	default:
		bad("database.synchronous %q must be normal or full", c.Database.Synchronous)
	}
	if c.SigningKeyPath == "" {
		bad("signing_key_path must be set")
	}
	if c.Registration.BcryptCost < 4 || c.Registration.BcryptCost > 31 {
		bad("registration.bcrypt_cost %d must be between 4 and 31", c.Registration.BcryptCost)
	}
	if c.RateLimits.Enabled && (c.RateLimits.PerSecond <= 0 || c.RateLimits.Burst <= 0) {
		bad("rate_limits.per_second and rate_limits.burst must be positive when rate limits are enabled")
	}
	if c.Media.Path == "" {
		bad("media.path must be set")
	}
	if c.Media.MaxUploadBytes <= 0 {
		bad("media.max_upload_bytes must be positive")
	}
	if !contains(SupportedRoomVersions, c.Rooms.DefaultVersion) {
		bad("rooms.default_version %q must be one of %s", c.Rooms.DefaultVersion, strings.Join(SupportedRoomVersions, ", "))
	}
	c.validateFederation(bad)
	c.validateListen(bad)
	c.TURN.validate(bad)
	if err := c.Policy.Validate(); err != nil {
		errs = append(errs, err)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level %q must be debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format %q must be text or json", c.Log.Format)
	}
	return errors.Join(errs...)
}

func (c *Config) validateFederation(bad func(string, ...any)) {
	f := c.Federation
	if f.Listen == "" {
		return
	}
	if _, _, err := net.SplitHostPort(f.Listen); err != nil {
		bad("federation.listen %q: %v", f.Listen, err)
	} else if f.Listen == c.Listen.Client || f.Listen == c.Listen.Metrics {
		bad("federation.listen must differ from the other listeners")
	}
	if f.TLSCert == "" || f.TLSKey == "" {
		bad("federation.tls_cert and federation.tls_key must be set when federation.listen is (federation is HTTPS only)")
	}
	for name, addr := range f.Peers {
		if name == "" || strings.ContainsAny(name, " /@!#$") {
			bad("federation.peers: %q is not a server name", name)
		}
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
			bad("federation.peers[%s] %q must be host:port", name, addr)
		}
	}
}

// validateListen checks what /.well-known advertises.
func (c *Config) validateListen(bad func(string, ...any)) {
	if c.Listen.PublicBaseURL == "" {
		return
	}
	u, err := url.Parse(c.Listen.PublicBaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		bad("listen.public_base_url %q must be an http:// or https:// URL with a host and no query (e.g. https://matrix.city.example.jp)", c.Listen.PublicBaseURL)
	}
}

func (t *TURN) validate(bad func(string, ...any)) {
	for _, u := range t.URIs {
		rest, ok := strings.CutPrefix(u, "turn:")
		if !ok {
			rest, ok = strings.CutPrefix(u, "turns:")
		}
		if !ok || rest == "" || strings.ContainsAny(u, " \t\n") {
			bad("turn.uris: %q must be a turn: or turns: URI (e.g. turn:turn.example.jp:3478?transport=udp)", u)
		}
	}
	static := t.Username != "" || t.Password != ""
	switch {
	case t.SharedSecret != "" && static:
		bad("turn: set either shared_secret or username and password, not both")
	case static && (t.Username == "" || t.Password == ""):
		bad("turn.username and turn.password must be set together")
	case len(t.URIs) > 0 && t.SharedSecret == "" && !static:
		bad("turn.uris are set but no credentials: set turn.shared_secret (coturn's static-auth-secret) or turn.username and turn.password")
	case len(t.URIs) == 0 && (t.SharedSecret != "" || static):
		bad("turn has credentials but no uris")
	}
	if t.TTL.D() < time.Minute || t.TTL.D() > 7*24*time.Hour {
		bad("turn.ttl %s must be between 1m and 168h", t.TTL.D())
	}
}

// Path resolves p against the data folder.
func (c *Config) Path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.DataDir, p)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// WriteDefault writes a documented default configuration to path, with
// the given shared secret, and fails if the file exists.
func WriteDefault(path, sharedSecret string) error {
	text := strings.Replace(defaultFile, "shared_secret: \"\"", fmt.Sprintf("shared_secret: %q", sharedSecret), 1)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write default config: %w", err)
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return fmt.Errorf("write default config: %w", err)
	}
	return f.Close()
}

// defaultFile is the documented configuration written on first run. It must
// load to exactly Default() (a test checks).
const defaultFile = `# machi configuration. Relative paths are resolved against data_dir, which
# defaults to the folder this file is in. The search index is kept in
# <data_dir>/search-index; it holds nothing the database does not, and machi
# rebuilds it at start when it is missing or damaged.

# The domain part of every user ID on this server (@alice:server_name).
# Choose it before creating users: it cannot change later.
server_name: localhost

# The ed25519 key that signs this server's events (written on first run).
signing_key_path: signing.key

listen:
  # Client-server API (Matrix clients connect here).
  client: 127.0.0.1:8008
  # Prometheus metrics at /metrics; "" disables the listener.
  metrics: 127.0.0.1:9108
  # Base URL advertised in /.well-known/matrix/client; "" means http://<client>.
  public_base_url: ""
  # Unix socket for "machi admin" (only this OS user can open it); "" disables it.
  admin_socket: admin.sock

database:
  # sqlite (embedded, no setup) or postgres.
  engine: sqlite
  sqlite_path: machi.db
  # e.g. postgres://machi:secret@127.0.0.1:5432/machi?sslmode=disable
  postgres_dsn: ""
  # normal: an acknowledged write survives a crash of machi.
  # full: it also survives a power cut (fsync on every commit; slower).
  synchronous: normal

registration:
  # Open registration through /register. Leave off in production: staff
  # accounts are created by admins ("machi admin create-user").
  enabled: false
  # Secret for Synapse-compatible /_synapse/admin/v1/register; "" disables it.
  shared_secret: ""
  # Cost of bcrypt password hashes.
  bcrypt_cost: 10

rate_limits:
  # Limits sends, logins, registrations, room creation and uploads per user
  # (per IP before login).
  enabled: true
  per_second: 10
  burst: 50

media:
  path: media
  max_upload_bytes: 52428800

rooms:
  # Room version of new rooms: "1" to "12" (machi joins rooms of all of them).
  default_version: "10"

presence:
  # Share online/idle/offline and status messages with the people one shares
  # a room with. false: /sync carries no presence.
  enabled: true

user_directory:
  # true: every active account of this server can be found by everyone on
  # it (staff find each other without sharing a room). false, as the Matrix
  # spec has it: a search finds the users who share a room with the
  # searcher or are in a public room.
  search_all_users: false

# TURN servers for voice and video calls (/voip/turnServer). No uris: clients
# are told there is none.
turn:
  # e.g. ["turn:turn.city.example.jp:3478?transport=udp", "turns:turn.city.example.jp:5349?transport=tcp"]
  uris: []
  # coturn's static-auth-secret (use-auth-secret): time-limited credentials
  # per user. Or set a static username and password instead.
  shared_secret: ""
  username: ""
  password: ""
  # How long the credentials are valid (1m to 168h).
  ttl: 24h

# The city's rules. Admins can change them at run time (admin API or
# "machi admin policy set"); such changes are kept in the database and win
# over this section until "machi admin policy reset".
policy:
  # The office side (LGWAN): devices that log in from these networks are
  # "office", all others "mobile". List your LGWAN ranges here.
  trusted_networks: ["127.0.0.0/8", "::1/128"]
  # Reverse proxies whose X-Forwarded-For header is believed.
  trusted_proxies: []
  enrollment:
    # A new mobile device needs a one-time code issued by an admin
    # ("machi admin issue-code USER").
    required: true
    code_ttl: 72h
    # Wrong codes allowed per user (or address) per failure_window.
    max_failures: 5
    failure_window: 15m
  working_hours:
    enabled: true
    # mobile: only mobile devices are blocked outside working hours; all: every device.
    applies_to: mobile
    time_zone: Asia/Tokyo
    weekly:
      - days: [mon, tue, wed, thu, fri]
        open: "08:30"
        close: "17:15"
    # Closed on Japanese public holidays (祝日・振替休日・国民の休日).
    public_holidays: true
    # Closed every year (年末年始), as MM-DD.
    closing_days: ["12-29", "12-30", "12-31", "01-01", "01-02", "01-03"]
    # Dates (YYYY-MM-DD) open anyway (with the first window's hours) or closed anyway.
    extra_open: []
    extra_closed: []
  uploads:
    # Phones may send JPEG, PNG, GIF and WebP images only (fully decoded).
    mobile_images_only: true
    # Remove EXIF/XMP (camera, GPS location) from images.
    strip_metadata: true
    # What office devices may send (sniffed type; "image/*" matches all images).
    office_allowed_types:
      - image/*
      - application/pdf
      - text/plain
      - text/csv
      - application/vnd.openxmlformats-officedocument.wordprocessingml.document
      - application/vnd.openxmlformats-officedocument.spreadsheetml.sheet
      - application/vnd.openxmlformats-officedocument.presentationml.presentation
      - application/msword
      - application/vnd.ms-excel
      - application/vnd.ms-powerpoint
      - application/zip
    mobile_max_bytes: 20971520
    office_max_bytes: 52428800
  federation:
    # Server names this server federates with (neighbouring cities, the
    # prefecture). Empty: no federation. "*": every server (test networks
    # only, such as SyTest's).
    allowed_servers: []

federation:
  # The federation listener (HTTPS); "" turns federation off. Which servers
  # may federate is policy.federation.allowed_servers.
  listen: ""
  # The certificate (PEM chain, naming server_name) and key it presents.
  tls_cert: ""
  tls_key: ""
  # Extra CAs (PEM) trusted for other servers, e.g. the city's private CA.
  ca_bundle: ""
  # Where to reach servers on a closed network without public DNS,
  # e.g. {city-b.lg.jp: "10.1.2.3:8448"}.
  peers: {}
  # Look other servers up by .well-known/matrix/server and SRV records.
  discovery: true

log:
  level: info   # debug, info, warn, error
  format: text  # text or json
`
