// Package policy decides what the city's rules allow. It does no I/O of
// its own: the write path, login and media upload hand it what it needs and
// act on its Decision. A denial names a stable rule ID and says why in
// Japanese and English.
//
// Rules arrive with the issues that define them (working hours, image-only
// uploads from phones, device enrollment, lost-device suspension, the
// federation allow-list). An Engine with no rules configured allows
// everything.
package policy

import (
	"context"
	"encoding/json"
	"fmt"
)

// Origin is where a request entered the server.
type Origin string

// Origins.
const (
	OriginClient     Origin = "client"
	OriginAdmin      Origin = "admin"
	OriginFederation Origin = "federation"
)

// EventInput is a room event about to be written.
type EventInput struct {
	Sender   string
	RoomID   string
	Type     string
	StateKey *string
	Content  json.RawMessage
	Origin   Origin
}

// Denial is a rule's refusal.
type Denial struct {
	RuleID string // stable, e.g. "working-hours"
	JA     string // message in Japanese
	EN     string // message in English
}

// Error is the English and Japanese message with the rule ID, for logs and
// the Matrix error body.
func (d *Denial) Error() string {
	return fmt.Sprintf("%s (%s) [rule %s]", d.EN, d.JA, d.RuleID)
}

// EventRule is one rule over room events; nil means allowed.
type EventRule interface {
	ID() string
	CheckEvent(ctx context.Context, in EventInput) *Denial
}

// Engine evaluates the configured rules in order; the first denial wins.
type Engine struct {
	eventRules []EventRule
	onDeny     func(ctx context.Context, in EventInput, d *Denial)
}

// New returns an engine over the given rules. onDeny, if set, is told of
// every denial (the audit log).
func New(onDeny func(ctx context.Context, in EventInput, d *Denial), rules ...EventRule) *Engine {
	return &Engine{eventRules: rules, onDeny: onDeny}
}

// CheckEvent returns the first rule's denial of the event, or nil.
func (e *Engine) CheckEvent(ctx context.Context, in EventInput) *Denial {
	for _, r := range e.eventRules {
		if d := r.CheckEvent(ctx, in); d != nil {
			if d.RuleID == "" {
				d.RuleID = r.ID()
			}
			if e.onDeny != nil {
				e.onDeny(ctx, in, d)
			}
			return d
		}
	}
	return nil
}

// DeviceClass is where a device logged in from.
type DeviceClass string

// Device classes.
const (
	// ClassOffice devices logged in from a trusted (LGWAN) network.
	ClassOffice DeviceClass = "office"
	// ClassMobile devices logged in from anywhere else.
	ClassMobile DeviceClass = "mobile"
)
