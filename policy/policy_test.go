package policy

import (
	"context"
	"strings"
	"testing"
)

type denyType struct{ typ string }

func (d denyType) ID() string { return "deny-type" }
func (d denyType) CheckEvent(_ context.Context, in EventInput) *Denial {
	if in.Type == d.typ {
		return &Denial{JA: "この種類は送れません", EN: "this type may not be sent"}
	}
	return nil
}

func TestEngineFirstDenialWinsAndIsReported(t *testing.T) {
	var reported []*Denial
	e := New(func(_ context.Context, _ EventInput, d *Denial) { reported = append(reported, d) },
		denyType{"m.room.message"}, denyType{"m.room.topic"})
	if d := e.CheckEvent(context.Background(), EventInput{Type: "m.room.name"}); d != nil {
		t.Fatalf("m.room.name denied: %v", d)
	}
	d := e.CheckEvent(context.Background(), EventInput{Type: "m.room.message"})
	if d == nil {
		t.Fatal("m.room.message allowed")
	}
	if got, want := d.RuleID, "deny-type"; got != want {
		t.Fatalf("RuleID = %q, want %q", got, want)
	}
	if !strings.Contains(d.Error(), "この種類") || !strings.Contains(d.Error(), "may not be sent") {
		t.Fatalf("Error() = %q lacks a message", d.Error())
	}
	if len(reported) != 1 {
		t.Fatalf("%d denials reported, want 1", len(reported))
	}
}

func TestEngineWithoutRulesAllows(t *testing.T) {
	if d := New(nil).CheckEvent(context.Background(), EventInput{Type: "m.room.message"}); d != nil {
		t.Fatalf("denied: %v", d)
	}
}
