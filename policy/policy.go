// Package policy decides what the city's rules allow. It does no I/O of
// its own: the write path, login, media upload and federation hand it what
// it needs and act on its answer. A denial names a stable rule ID and says
// why in Japanese and English.
//
// The rules: device classes by network (office/mobile), enrollment codes
// for new mobile devices (the check itself runs at login, which owns the
// codes), working hours with emergencies and exemptions, image-only
// uploads from mobile devices, and the federation allow-list. The Engine
// holds the live configuration, swapped atomically when an admin changes
// it, and a clock that tests control.
package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Rule IDs.
const (
	RuleWorkingHours       = "working-hours"
	RuleDeviceCodeRequired = "device-code-required"
	RuleDeviceCodeInvalid  = "device-code-invalid"
	RuleDeviceCodeTries    = "device-code-rate-limited"
	RuleFederation         = "federation-not-allowed"
)

// Origin is where a request entered the server.
type Origin string

// Origins.
const (
	OriginClient     Origin = "client"
	OriginAdmin      Origin = "admin"
	OriginFederation Origin = "federation"
)

// DeviceClass is where a device logged in from.
type DeviceClass string

// Device classes.
const (
	// ClassOffice devices logged in from a trusted (LGWAN) network.
	ClassOffice DeviceClass = "office"
	// ClassMobile devices logged in from anywhere else.
	ClassMobile DeviceClass = "mobile"
)

// Actor is who is asking: the origin and, for clients, the device.
type Actor struct {
	Origin   Origin
	DeviceID string
	Class    DeviceClass
}

// EventInput is a room event about to be written.
type EventInput struct {
	Sender   string
	RoomID   string
	Type     string
	StateKey *string
	Content  json.RawMessage
	Actor    Actor
}

// Denial is a rule's refusal.
type Denial struct {
	RuleID string // stable, e.g. "working-hours"
	JA     string // message in Japanese
	EN     string // message in English
	// NextOpen is, for working-hours denials, when the block lifts (zero if
	// unknown).
	NextOpen time.Time
	// RetryAfter is, for rate limits, how long to wait.
	RetryAfter time.Duration
}

// Error is the English and Japanese message with the rule ID, for logs and
// the Matrix error body.
func (d *Denial) Error() string {
	return fmt.Sprintf("%s (%s) [rule %s]", d.EN, d.JA, d.RuleID)
}

// Fields are the denial's members of a Matrix error body: the rule and
// both messages (and when the block lifts, for working hours).
func (d *Denial) Fields() map[string]any {
	f := map[string]any{"org.machi.rule": d.RuleID, "org.machi.message_ja": d.JA, "org.machi.message_en": d.EN}
	if !d.NextOpen.IsZero() {
		f["org.machi.next_open_ts"] = d.NextOpen.UnixMilli()
	}
	return f
}

// Subject is who a denial refused, for the audit log.
type Subject struct {
	UserID   string
	DeviceID string
	// What is what was refused: an event type, "upload", "login", a server.
	What   string
	Target string // room, server or user concerned
}

// Emergency lifts the working-hours block server-wide (no rooms) or in the
// rooms named, until Ends.
type Emergency struct {
	ID     string
	Rooms  []string
	Reason string
	Ends   time.Time
}

// Engine evaluates the rules. It is safe for concurrent use.
type Engine struct {
	now    func() time.Time
	onDeny func(ctx context.Context, s Subject, d *Denial)
	cur    atomic.Pointer[compiled]

	mu          sync.RWMutex
	emergencies []Emergency
	exempt      map[string]bool
}

// compiled is a Config made ready for the hot path.
type compiled struct {
	cfg     Config
	sched   *Schedule
	trusted []netip.Prefix
	proxies []netip.Prefix
	servers map[string]bool
}

func compile(c Config) (*compiled, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	sched, err := NewSchedule(c.WorkingHours)
	if err != nil {
		return nil, err
	}
	out := &compiled{cfg: c, sched: sched, servers: map[string]bool{}}
	for _, n := range c.TrustedNetworks {
		out.trusted = append(out.trusted, netip.MustParsePrefix(n).Masked())
	}
	for _, n := range c.TrustedProxies {
		out.proxies = append(out.proxies, netip.MustParsePrefix(n).Masked())
	}
	for _, s := range c.Federation.AllowedServers {
		out.servers[strings.ToLower(s)] = true
	}
	return out, nil
}

// New returns an engine over cfg. now is the clock (nil: time.Now); onDeny,
// if set, is told of every denial (the audit log).
func New(cfg Config, now func() time.Time, onDeny func(ctx context.Context, s Subject, d *Denial)) (*Engine, error) {
	c, err := compile(cfg)
	if err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	e := &Engine{now: now, onDeny: onDeny, exempt: map[string]bool{}}
	e.cur.Store(c)
	return e, nil
}

// Now is the engine's clock.
func (e *Engine) Now() time.Time { return e.now() }

// Config is the configuration in force.
func (e *Engine) Config() Config { return e.cur.Load().cfg }

// SetConfig validates cfg and puts it in force at once.
func (e *Engine) SetConfig(cfg Config) error {
	c, err := compile(cfg)
	if err != nil {
		return err
	}
	e.cur.Store(c)
	return nil
}

// SetEmergencies replaces the emergencies in force.
func (e *Engine) SetEmergencies(list []Emergency) {
	e.mu.Lock()
	e.emergencies = slices.Clone(list)
	e.mu.Unlock()
}

// SetExemptions replaces the users exempt from working hours.
func (e *Engine) SetExemptions(userIDs []string) {
	m := make(map[string]bool, len(userIDs))
	for _, u := range userIDs {
		m[u] = true
	}
	e.mu.Lock()
	e.exempt = m
	e.mu.Unlock()
}

// ClientAddr is the address a request came from: the peer, or, when the
// peer is a trusted proxy, the last address in X-Forwarded-For that is not
// itself a trusted proxy.
func (e *Engine) ClientAddr(remoteAddr, forwardedFor string) netip.Addr {
	peer, err := netip.ParseAddrPort(remoteAddr)
	var addr netip.Addr
	if err == nil {
		addr = peer.Addr()
	} else if a, err := netip.ParseAddr(remoteAddr); err == nil {
		addr = a
	}
	addr = addr.Unmap()
	c := e.cur.Load()
	if !inAny(c.proxies, addr) || forwardedFor == "" {
		return addr
	}
	hops := strings.Split(forwardedFor, ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return addr // a garbled header: trust only what we saw
		}
		a = a.Unmap()
		if !inAny(c.proxies, a) {
			return a
		}
		addr = a
	}
	return addr
}

func inAny(prefixes []netip.Prefix, a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Class is the class of a device logging in from addr.
func (e *Engine) Class(addr netip.Addr) DeviceClass {
	if inAny(e.cur.Load().trusted, addr) {
		return ClassOffice
	}
	return ClassMobile
}

// EnrollmentRequired reports whether a new device of class needs a code.
func (e *Engine) EnrollmentRequired(class DeviceClass) bool {
	return class == ClassMobile && e.cur.Load().cfg.Enrollment.Required
}

// Deny reports a denial made outside the engine (login) to the audit
// hook and returns it.
func (e *Engine) Deny(ctx context.Context, s Subject, d *Denial) *Denial {
	if e.onDeny != nil {
		e.onDeny(ctx, s, d)
	}
	return d
}

// CheckEvent returns the denial of a room event, or nil. Only what clients
// send is subject to the rules: admin notices and federated events (checked
// by the allow-list at the door) are not.
func (e *Engine) CheckEvent(ctx context.Context, in EventInput) *Denial {
	if in.Actor.Origin != OriginClient {
		return nil
	}
	// Leaving a room is not "use"; it stays possible at any hour.
	if in.Type == "m.room.member" && in.StateKey != nil && *in.StateKey == in.Sender && membershipOf(in.Content) == "leave" {
		return nil
	}
	if d := e.hours(in.Sender, in.RoomID, in.Actor.Class); d != nil {
		return e.Deny(ctx, Subject{UserID: in.Sender, DeviceID: in.Actor.DeviceID, What: in.Type, Target: in.RoomID}, d)
	}
	return nil
}

func membershipOf(content json.RawMessage) string {
	var c struct {
		Membership string `json:"membership"`
	}
	_ = json.Unmarshal(content, &c)
	return c.Membership
}

// CheckUpload runs the upload rules on a client's file: working hours,
// then type and size. It returns the bytes to store and their sniffed type.
func (e *Engine) CheckUpload(ctx context.Context, userID string, actor Actor, data []byte) ([]byte, string, *Denial) {
	if d := e.hours(userID, "", actor.Class); d != nil {
		return nil, "", e.Deny(ctx, Subject{UserID: userID, DeviceID: actor.DeviceID, What: "upload"}, d)
	}
	out, typ, d := CheckUpload(e.cur.Load().cfg.Uploads, actor.Class, data)
	if d != nil {
		return nil, "", e.Deny(ctx, Subject{UserID: userID, DeviceID: actor.DeviceID, What: "upload", Target: typ}, d)
	}
	return out, typ, nil
}

// MaxUpload is the largest upload a device of class may send.
func (e *Engine) MaxUpload(class DeviceClass) int64 {
	u := e.cur.Load().cfg.Uploads
	if class == ClassMobile {
		return u.MobileMaxBytes
	}
	return u.OfficeMaxBytes
}

// HoldPush reports whether push notifications to a device of class should
// be held back now (outside working hours).
func (e *Engine) HoldPush(userID string, class DeviceClass) bool {
	return e.hours(userID, "", class) != nil
}

// hours is the working-hours rule: nil when the user may write now.
func (e *Engine) hours(userID, roomID string, class DeviceClass) *Denial {
	c := e.cur.Load()
	h := c.cfg.WorkingHours
	if !h.Enabled || (h.AppliesTo == "mobile" && class != ClassMobile) {
		return nil
	}
	now := e.now()
	if c.sched.Open(now) || e.lifted(userID, roomID, now) {
		return nil
	}
	d := &Denial{
		RuleID: RuleWorkingHours,
		JA:     "執務時間外のため送信できません。",
		EN:     "Sending is not allowed outside working hours.",
	}
	if next, ok := c.sched.NextOpen(now); ok {
		d.NextOpen = next
		local := next.In(c.sched.Location())
		d.JA = fmt.Sprintf("執務時間外のため送信できません。次の執務開始は %s です。", local.Format("2006年1月2日 15:04"))
		d.EN = fmt.Sprintf("Sending is not allowed outside working hours. Working hours resume at %s.", local.Format("Mon 2 Jan 2006 15:04 MST"))
	}
	return d
}

// lifted reports whether an exemption or emergency frees the user now.
func (e *Engine) lifted(userID, roomID string, now time.Time) bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.exempt[userID] {
		return true
	}
	for _, em := range e.emergencies {
		if !now.Before(em.Ends) {
			continue
		}
		if len(em.Rooms) == 0 || (roomID != "" && slices.Contains(em.Rooms, roomID)) {
			return true
		}
	}
	return false
}

// AllowServer is the federation allow-list: nil when machi may talk to
// server, both ways.
func (e *Engine) AllowServer(ctx context.Context, server string) *Denial {
	if servers := e.cur.Load().servers; servers[strings.ToLower(server)] || servers["*"] {
		return nil
	}
	return e.Deny(ctx, Subject{What: "federation", Target: server}, &Denial{
		RuleID: RuleFederation,
		JA:     fmt.Sprintf("サーバー %s との連携は許可されていません。", server),
		EN:     fmt.Sprintf("Federation with %s is not allowed.", server),
	})
}
