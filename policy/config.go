package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Config is the city's policy: the `policy:` section of the configuration
// file, and what admins change at run time through the admin API (which
// stores a copy in the database that then takes precedence over the file).
type Config struct {
	// TrustedNetworks are the office side (LGWAN): a device that logs in
	// from one of these is "office", any other is "mobile".
	TrustedNetworks []string `yaml:"trusted_networks" json:"trusted_networks"`
	// TrustedProxies are reverse proxies whose X-Forwarded-For is believed.
	TrustedProxies []string `yaml:"trusted_proxies" json:"trusted_proxies"`

	Enrollment   EnrollmentConfig `yaml:"enrollment" json:"enrollment"`
	WorkingHours HoursConfig      `yaml:"working_hours" json:"working_hours"`
	Uploads      UploadConfig     `yaml:"uploads" json:"uploads"`
	Federation   FederationConfig `yaml:"federation" json:"federation"`
}

// EnrollmentConfig governs the one-time codes that admit a mobile device.
type EnrollmentConfig struct {
	// Required makes a new mobile device present a code (default true).
	Required bool `yaml:"required" json:"required"`
	// CodeTTL is how long an issued code stays valid.
	CodeTTL Duration `yaml:"code_ttl" json:"code_ttl"`
	// MaxFailures is how many wrong codes a user may try per FailureWindow
	// before further tries are refused.
	MaxFailures   int      `yaml:"max_failures" json:"max_failures"`
	FailureWindow Duration `yaml:"failure_window" json:"failure_window"`
}

// HoursConfig is the working-hours schedule (執務時間).
type HoursConfig struct {
	Enabled bool `yaml:"enabled" json:"enabled"`
	// AppliesTo is "mobile" (the default) or "all".
	AppliesTo string `yaml:"applies_to" json:"applies_to"`
	// TimeZone is an IANA zone name (default Asia/Tokyo).
	TimeZone string `yaml:"time_zone" json:"time_zone"`
	// Weekly are the opening windows of an ordinary week.
	Weekly []Window `yaml:"weekly" json:"weekly"`
	// PublicHolidays closes the Japanese public holidays (国民の祝日,
	// 振替休日, 国民の休日).
	PublicHolidays bool `yaml:"public_holidays" json:"public_holidays"`
	// ClosingDays are days closed every year, as MM-DD (年末年始:
	// 12-29 … 01-03).
	ClosingDays []string `yaml:"closing_days" json:"closing_days"`
	// ExtraOpen are dates (YYYY-MM-DD) open although the rules above close
	// them (e.g. an election Sunday); they open with the first weekly
	// window's hours.
	ExtraOpen []string `yaml:"extra_open" json:"extra_open"`
	// ExtraClosed are dates (YYYY-MM-DD) closed although otherwise open.
	ExtraClosed []string `yaml:"extra_closed" json:"extra_closed"`
}

// Window is a daily opening time on some weekdays.
type Window struct {
	// Days are mon, tue, wed, thu, fri, sat, sun.
	Days []string `yaml:"days" json:"days"`
	// Open and Close are HH:MM, local time; Close is after Open.
	Open  string `yaml:"open" json:"open"`
	Close string `yaml:"close" json:"close"`
}

// UploadConfig governs what each device class may upload.
type UploadConfig struct {
	// MobileImagesOnly accepts only JPEG, PNG, GIF and WebP images, fully
	// decoded, from mobile devices (default true).
	MobileImagesOnly bool `yaml:"mobile_images_only" json:"mobile_images_only"`
	// StripMetadata removes EXIF/XMP (camera, GPS location) from images.
	StripMetadata bool `yaml:"strip_metadata" json:"strip_metadata"`
	// OfficeAllowedTypes are the sniffed MIME types office devices may
	// upload; "image/*" style prefixes work. Empty allows every type.
	OfficeAllowedTypes []string `yaml:"office_allowed_types" json:"office_allowed_types"`
	MobileMaxBytes     int64    `yaml:"mobile_max_bytes" json:"mobile_max_bytes"`
	OfficeMaxBytes     int64    `yaml:"office_max_bytes" json:"office_max_bytes"`
}

// FederationConfig is the federation allow-list.
type FederationConfig struct {
	// AllowedServers are the server names this server federates with, both
	// ways. Empty means no federation at all; "*" means every server (for a
	// test network such as SyTest's, whose servers take random ports; never
	// for a city).
	AllowedServers []string `yaml:"allowed_servers" json:"allowed_servers"`
}

// DefaultConfig is the policy of a fresh install: loopback is the only
// office network until the city lists its LGWAN ranges.
func DefaultConfig() Config {
	return Config{
		TrustedNetworks: []string{"127.0.0.0/8", "::1/128"},
		TrustedProxies:  []string{},
		Enrollment: EnrollmentConfig{
			Required: true, CodeTTL: Duration(72 * time.Hour),
			MaxFailures: 5, FailureWindow: Duration(15 * time.Minute),
		},
		WorkingHours: HoursConfig{
			Enabled:   true,
			AppliesTo: "mobile",
			TimeZone:  "Asia/Tokyo",
			Weekly: []Window{{
				Days: []string{"mon", "tue", "wed", "thu", "fri"}, Open: "08:30", Close: "17:15",
			}},
			PublicHolidays: true,
			ClosingDays:    []string{"12-29", "12-30", "12-31", "01-01", "01-02", "01-03"},
			ExtraOpen:      []string{},
			ExtraClosed:    []string{},
		},
		Uploads: UploadConfig{
			MobileImagesOnly: true,
			StripMetadata:    true,
			OfficeAllowedTypes: []string{
				"image/*", "application/pdf", "text/plain", "text/csv",
				"application/vnd.openxmlformats-officedocument.wordprocessingml.document",
				"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
				"application/vnd.openxmlformats-officedocument.presentationml.presentation",
				"application/msword", "application/vnd.ms-excel", "application/vnd.ms-powerpoint",
				"application/zip",
			},
			MobileMaxBytes: 20 << 20,
			OfficeMaxBytes: 50 << 20,
		},
		Federation: FederationConfig{AllowedServers: []string{}},
	}
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("policy."+format, args...)) }
	for _, n := range c.TrustedNetworks {
		if _, err := netip.ParsePrefix(n); err != nil {
			bad("trusted_networks: %q is not a CIDR prefix (e.g. 10.0.0.0/8)", n)
		}
	}
	for _, n := range c.TrustedProxies {
		if _, err := netip.ParsePrefix(n); err != nil {
			bad("trusted_proxies: %q is not a CIDR prefix", n)
		}
	}
	if c.Enrollment.CodeTTL <= 0 {
		bad("enrollment.code_ttl must be positive")
	}
	if c.Enrollment.MaxFailures <= 0 || c.Enrollment.FailureWindow <= 0 {
		bad("enrollment.max_failures and enrollment.failure_window must be positive")
	}
	switch c.WorkingHours.AppliesTo {
	case "mobile", "all":
	default:
		bad("working_hours.applies_to %q must be mobile or all", c.WorkingHours.AppliesTo)
	}
	if _, err := NewSchedule(c.WorkingHours); err != nil {
		errs = append(errs, fmt.Errorf("policy.working_hours: %w", err))
	}
	for _, t := range c.Uploads.OfficeAllowedTypes {
		if !strings.Contains(t, "/") {
			bad("uploads.office_allowed_types: %q is not a MIME type", t)
		}
	}
	if c.Uploads.MobileMaxBytes <= 0 || c.Uploads.OfficeMaxBytes <= 0 {
		bad("uploads.mobile_max_bytes and uploads.office_max_bytes must be positive")
	}
	for _, s := range c.Federation.AllowedServers {
		if s == "" || strings.ContainsAny(s, " /@!#$") {
			bad("federation.allowed_servers: %q is not a server name", s)
		}
	}
	return errors.Join(errs...)
}

// Duration is a time.Duration written as "72h", "15m" in YAML and JSON.
type Duration time.Duration

// D is the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: use e.g. 72h or 15m", b)
	}
	*d = Duration(v)
	return nil
}
