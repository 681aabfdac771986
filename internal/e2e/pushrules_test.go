package e2e

import (
	"net/http"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/pushrules"
)

// TestDefaultPushRules reads the server-default ruleset with mautrix-go
// and evaluates it with mautrix's own push-rule engine: a message in a
// two-person room notifies, a notice does not, a mention highlights.
func TestDefaultPushRules(t *testing.T) {
	srv := startServer(t, "sqlite")
	alice := register(t, srv, "alice")
	ctx := ctxT(t)
	rules, err := alice.GetPushRules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rules.Override) < 10 || len(rules.Underride) != 5 || len(rules.Content) != 1 {
		t.Fatalf("ruleset sizes: override %d, content %d, underride %d", len(rules.Override), len(rules.Content), len(rules.Underride))
	}
	room := fakeRoom{members: 2, self: alice.UserID}
	msg := func(content map[string]any) *event.Event {
		ev := &event.Event{Type: event.EventMessage, Sender: "@bob:localhost", RoomID: "!r:localhost", Content: event.Content{Raw: content}}
		_ = ev.Content.ParseRaw(ev.Type)
		return ev
	}
	if a := rules.GetMatchingRule(room, msg(map[string]any{"msgtype": "m.text", "body": "hi"})); a == nil || a.RuleID != ".m.rule.room_one_to_one" {
		t.Errorf("plain message matched %v, want .m.rule.room_one_to_one", a)
	}
	if a := rules.GetMatchingRule(room, msg(map[string]any{"msgtype": "m.notice", "body": "hi"})); a == nil || a.RuleID != ".m.rule.suppress_notices" {
		t.Errorf("notice matched %v, want .m.rule.suppress_notices", a)
	}
	mention := msg(map[string]any{"msgtype": "m.text", "body": "hi", "m.mentions": map[string]any{"user_ids": []any{alice.UserID.String()}}})
	if a := rules.GetMatchingRule(room, mention); a == nil || a.RuleID != ".m.rule.is_user_mention" || !a.Actions.Should().Highlight {
		t.Errorf("mention matched %v, want .m.rule.is_user_mention with highlight", a)
	}

	one, err := alice.GetPushRule(ctx, "global", pushrules.OverrideRule, ".m.rule.master")
	if err != nil || one.Enabled {
		t.Errorf("master rule = %+v, %v; want it disabled", one, err)
	}
	for path, want := range map[string]int{
		"/_matrix/client/v3/pushrules/global/override/.m.rule.nope":           http.StatusNotFound,
		"/_matrix/client/v3/pushrules/global/sideways/.m.rule.master":         http.StatusBadRequest,
		"/_matrix/client/v3/pushrules/device/":                                http.StatusBadRequest,
		"/_matrix/client/v3/pushrules/global/override/.m.rule.master/enabled": http.StatusOK,
	} {
		resp := get(t, baseURL(srv)+path, alice.AccessToken, nil)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s = %d, want %d", path, resp.StatusCode, want)
		}
	}
}

// fakeRoom is the room an evaluated event is in, for mautrix's engine.
type fakeRoom struct {
	members int
	self    id.UserID
}

func (r fakeRoom) GetOwnDisplayname() string { return "Alice" }
func (r fakeRoom) GetMemberCount() int       { return r.members }
