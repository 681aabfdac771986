package e2e

import (
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/pushrules"

	"github.com/machi-chat/machi/internal/testrig"
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
		"/_matrix/client/v3/pushrules/global/override/.m.rule.master/colour":  http.StatusBadRequest,
		"/_matrix/client/v3/pushrules/global/underride/":                      http.StatusOK,
		"/_matrix/client/v3/pushrules/global/underride":                       http.StatusBadRequest,
		"/_matrix/client/v3/pushrules/global":                                 http.StatusBadRequest,
		"/_matrix/client/v3/pushrules/global/sideways/":                       http.StatusBadRequest,
		"/_matrix/client/v3/pushrules":                                        http.StatusNotFound,
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

// TestPushRuleChanges: a user mutes a room, adds a keyword, reorders,
// disables a default rule and changes its actions, through mautrix-go;
// the ruleset mautrix then evaluates follows, /sync delivers m.push_rules,
// and the errors are the spec's.
func TestPushRuleChanges(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice := register(t, srv, "alice")
		ctx := ctxT(t)
		notifyAction := []*pushrules.PushAction{{Action: pushrules.ActionNotify}}
		const room = "!committee:localhost"

		// Mute one room.
		if err := alice.PutPushRule(ctx, "global", pushrules.RoomRule, room, &mautrix.ReqPutPushRule{Actions: []*pushrules.PushAction{}}); err != nil {
			t.Fatal(err)
		}
		// Keywords: budget first, then assembly before it. (Content rules
		// match whole words; mautrix's \b never matches between CJK
		// characters, so Japanese keywords need server-side evaluation.)
		for _, kw := range []struct{ id, before string }{{"budget", ""}, {"assembly", "budget"}} {
			if err := alice.PutPushRule(ctx, "global", pushrules.ContentRule, kw.id, &mautrix.ReqPutPushRule{
				Before: kw.before, Actions: notifyAction, Pattern: kw.id}); err != nil {
				t.Fatalf("put %s: %v", kw.id, err)
			}
		}
		// Turn off the suppression of notices, and make plain messages silent.
		if err := alice.SetPushRuleEnabled(ctx, "global", pushrules.OverrideRule, ".m.rule.suppress_notices", false); err != nil {
			t.Fatal(err)
		}
		if err := alice.PutPushRuleActions(ctx, "global", pushrules.UnderrideRule, ".m.rule.message", []*pushrules.PushAction{}); err != nil {
			t.Fatal(err)
		}
		rules, err := alice.GetPushRules(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var contentIDs []string
		for _, r := range rules.Content {
			contentIDs = append(contentIDs, r.RuleID)
		}
		if len(contentIDs) != 3 || contentIDs[0] != "assembly" || contentIDs[1] != "budget" || contentIDs[2] != ".m.rule.contains_user_name" {
			t.Fatalf("content rules in order: %v", contentIDs)
		}
		if rules.Override[0].RuleID != ".m.rule.master" {
			t.Fatalf("master rule is not first: %s", rules.Override[0].RuleID)
		}
		// One kind's rules alone, in the same order.
		var kindList []struct {
			RuleID string `json:"rule_id"`
		}
		if code, me := do(t, http.DefaultClient, "GET", baseURL(srv)+"/_matrix/client/v3/pushrules/global/content/", alice.AccessToken, nil, &kindList); code != 200 {
			t.Fatalf("GET content rules: %d %+v", code, me)
		}
		if len(kindList) != 3 || kindList[0].RuleID != "assembly" || kindList[1].RuleID != "budget" {
			t.Fatalf("GET /pushrules/global/content/ = %+v", kindList)
		}
		group := fakeRoom{members: 5, self: alice.UserID}
		msg := func(roomID id.RoomID, content map[string]any) *event.Event {
			ev := &event.Event{Type: event.EventMessage, Sender: "@bob:localhost", RoomID: roomID, Content: event.Content{Raw: content}}
			_ = ev.Content.ParseRaw(ev.Type)
			return ev
		}
		if a := rules.GetMatchingRule(group, msg(room, map[string]any{"msgtype": "m.text", "body": "予算の件"})); a == nil || a.RuleID != room {
			t.Errorf("muted room: matched %v", a)
		}
		if a := rules.GetMatchingRule(group, msg("!other:localhost", map[string]any{"msgtype": "m.text", "body": "FY2027 budget review"})); a == nil || a.RuleID != "budget" {
			t.Errorf("keyword: matched %v", a)
		}
		if a := rules.GetMatchingRule(group, msg("!other:localhost", map[string]any{"msgtype": "m.text", "body": "こんにちは"})); a == nil || a.RuleID != ".m.rule.message" || a.Actions.Should().Notify {
			t.Errorf("plain message: matched %v, want the silenced .m.rule.message", a)
		}
		if a := rules.GetMatchingRule(group, msg("!other:localhost", map[string]any{"msgtype": "m.notice", "body": "お知らせ"})); a != nil && a.RuleID == ".m.rule.suppress_notices" {
			t.Errorf("disabled rule still matches")
		}

		// /sync carries the changed ruleset as account data.
		resp, err := alice.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, ev := range resp.AccountData.Events {
			found = found || ev.Type.Type == "m.push_rules"
		}
		if !found {
			t.Fatal("m.push_rules is not in /sync's account data")
		}

		// Deleting: user rules go, default rules cannot.
		if err := alice.DeletePushRule(ctx, "global", pushrules.ContentRule, "budget"); err != nil {
			t.Fatal(err)
		}
		base := baseURL(srv) + "/_matrix/client/v3/pushrules/global"
		for _, tc := range []struct {
			method, path string
			body         any
			status       int
			errcode      string
		}{
			{"DELETE", "/content/budget", nil, 404, "M_NOT_FOUND"},
			{"DELETE", "/override/.m.rule.master", nil, 400, "M_INVALID_PARAM"},
			{"PUT", "/override/.my.rule", map[string]any{"actions": []any{}}, 400, "M_INVALID_PARAM"},
			{"PUT", "/content/kw", map[string]any{"actions": []any{"notify"}}, 400, "M_MISSING_PARAM"},
			{"PUT", "/override/x", map[string]any{}, 400, "M_MISSING_PARAM"},
			{"PUT", "/override/x", map[string]any{"actions": []any{"explode"}}, 400, "M_INVALID_PARAM"},
			{"PUT", "/override/x?before=nope", map[string]any{"actions": []any{}}, 404, "M_NOT_FOUND"},
			{"PUT", "/sideways/x", map[string]any{"actions": []any{}}, 400, "M_INVALID_PARAM"},
			{"PUT", "/underride/.m.rule.message/enabled", map[string]any{}, 400, "M_MISSING_PARAM"},
			{"PUT", "/underride/.m.rule.nope/enabled", map[string]any{"enabled": true}, 404, "M_NOT_FOUND"},
			{"PUT", "/underride/.m.rule.message/colour", map[string]any{"enabled": true}, 400, "M_INVALID_PARAM"},
			{"PUT", "", map[string]any{"actions": []any{}}, 400, "M_INVALID_PARAM"},
			{"PUT", "/room", map[string]any{"actions": []any{}}, 400, "M_INVALID_PARAM"},
			{"PUT", "/room/", map[string]any{"actions": []any{}}, 400, "M_INVALID_PARAM"},
			{"DELETE", "/underride/.m.rule.message/enabled", nil, 405, "M_UNRECOGNIZED"},
		} {
			code, me := do(t, http.DefaultClient, tc.method, base+tc.path, alice.AccessToken, tc.body, nil)
			if code != tc.status || me.Code != tc.errcode {
				t.Errorf("%s %s: %d %+v, want %d %s", tc.method, tc.path, code, me, tc.status, tc.errcode)
			}
		}
	})
}
