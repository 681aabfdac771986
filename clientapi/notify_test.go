package clientapi

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/pushrules"

	"github.com/machi-chat/machi/rooms"
)

// TestRuleMatchIsMautrix: the evaluator's own walk over a ruleset (event
// conditions checked once per event, content rules skipped by their
// literal) picks the same rule as mautrix's GetMatchingRule, for default
// and customised rulesets, for every member of one event in turn (sharing
// one memo, as Evaluate does).
func TestRuleMatchIsMautrix(t *testing.T) {
	var ids condIDs
	withRules := func(userID string, edit func(*pushRuleset)) *userRules {
		rules := defaultPushRules(userID)
		if edit != nil {
			edit(rules)
		}
		ur, err := compileRules(rules, &ids)
		if err != nil {
			t.Fatal(err)
		}
		return ur
	}
	users := map[string]*userRules{
		"@bob:city.test": withRules("@bob:city.test", func(rs *pushRuleset) {
			rs.Room = append(rs.Room, pushRule{RuleID: "!muted:city.test", Enabled: true, Actions: []any{}, Conditions: []pushCondition{match("room_id", "!muted:city.test")}})
		}),
		"@carol:city.test": withRules("@carol:city.test", func(rs *pushRuleset) {
			rs.Content = append([]pushRule{{RuleID: "bousai", Enabled: true, Actions: []any{notify, highlight}, Pattern: "防災*"}}, rs.Content...)
			rs.Sender = append(rs.Sender, pushRule{RuleID: "@boss:city.test", Enabled: true, Actions: []any{notify, highlight}, Conditions: []pushCondition{match("sender", "@boss:city.test")}})
			rs.Override = append(rs.Override[:1], append([]pushRule{{RuleID: "kinkyu", Enabled: true, Actions: []any{notify, highlight},
				Conditions: []pushCondition{match("content.body", "*緊急*")}}}, rs.Override[1:]...)...)
		}),
		"@dave:city.test": withRules("@dave:city.test", func(rs *pushRuleset) {
			rs.Override[0].Enabled = true // master: nothing notifies
		}),
		"@erin:city.test": withRules("@erin:city.test", func(rs *pushRuleset) {
			for i := range rs.Underride {
				if rs.Underride[i].RuleID == ".m.rule.message" {
					rs.Underride[i].Enabled = false
				}
			}
		}),
	}
	const room, muted = "!room:city.test", "!muted:city.test"
	mention := func(ids ...string) map[string]any { return map[string]any{"user_ids": ids} }
	events := []struct {
		typ, sender, room string
		stateKey          *string
		content           map[string]any
	}{
		{"m.room.message", "@alice:city.test", room, nil, map[string]any{"msgtype": "m.text", "body": "おはようございます"}},
		{"m.room.message", "@alice:city.test", room, nil, map[string]any{"msgtype": "m.text", "body": "bob, the report?"}},
		{"m.room.message", "@alice:city.test", room, nil, map[string]any{"msgtype": "m.text", "body": "Carol Chan please"}},
		{"m.room.message", "@alice:city.test", room, nil, map[string]any{"msgtype": "m.text", "body": "@room fire drill"}},
		{"m.room.message", "@intern:city.test", room, nil, map[string]any{"msgtype": "m.text", "body": "@room lunch"}},
		{"m.room.message", "@alice:city.test", room, nil, map[string]any{"msgtype": "m.text", "body": "ping", "m.mentions": mention("@bob:city.test")}},
		{"m.room.message", "@alice:city.test", room, nil, map[string]any{"msgtype": "m.text", "body": "bob", "m.mentions": map[string]any{}}},
		{"m.room.message", "@alice:city.test", room, nil, map[string]any{"msgtype": "m.text", "body": "all", "m.mentions": map[string]any{"room": true}}},
		{"m.room.message", "@alice:city.test", room, nil, map[string]any{"msgtype": "m.notice", "body": "bot says bob"}},
		{"m.room.message", "@alice:city.test", room, nil, map[string]any{"msgtype": "m.text", "body": "防災訓練のお知らせ"}},
		{"m.room.message", "@alice:city.test", room, nil, map[string]any{"msgtype": "m.text", "body": "緊急：停電"}},
		{"m.room.message", "@boss:city.test", room, nil, map[string]any{"msgtype": "m.text", "body": "see me"}},
		{"m.room.message", "@alice:city.test", muted, nil, map[string]any{"msgtype": "m.text", "body": "雑談"}},
		{"m.room.message", "@alice:city.test", room, nil, map[string]any{"msgtype": "m.text", "body": "* fixed", "m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": "$x"}}},
		{"m.room.encrypted", "@alice:city.test", room, nil, map[string]any{"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "…"}},
		{"m.reaction", "@alice:city.test", room, nil, map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": "$x", "key": "👍"}}},
		{"m.call.invite", "@alice:city.test", room, nil, map[string]any{"call_id": "c1", "version": "1"}},
		{"m.room.member", "@alice:city.test", room, strp("@bob:city.test"), map[string]any{"membership": "invite"}},
		{"m.room.member", "@alice:city.test", room, strp("@alice:city.test"), map[string]any{"membership": "join"}},
		{"m.room.tombstone", "@alice:city.test", room, strp(""), map[string]any{"body": "moved", "replacement_room": "!new:city.test"}},
	}
	var levels event.PowerLevelsEventContent
	_ = json.Unmarshal([]byte(`{"users":{"@alice:city.test":100,"@boss:city.test":100},"users_default":0}`), &levels)
	for _, members := range []int{2, 5} {
		for i, e := range events {
			raw, _ := json.Marshal(e.content)
			evt := &event.Event{Type: event.Type{Type: e.typ}, Sender: id.UserID(e.sender), RoomID: id.RoomID(e.room), StateKey: e.stateKey, ID: id.EventID(fmt.Sprintf("$e%d", i))}
			evt.Content.VeryRaw = raw
			_ = json.Unmarshal(raw, &evt.Content.Raw)
			body, _ := evt.Content.Raw["body"].(string)
			memo := map[int32]bool{}
			for _, u := range []string{"@bob:city.test", "@carol:city.test", "@dave:city.test", "@erin:city.test"} {
				r := &pushRoom{members: members, displayName: map[string]string{"@carol:city.test": "Carol Chan"}[u], levels: &levels}
				ur := users[u]
				got := ur.match(r, evt, strings.ToLower(body), memo)
				want := ur.rs.GetMatchingRule(r, evt)
				if got != want {
					t.Errorf("%s, event %d (%s %v), %d members: matched %v, mautrix matches %v", u, i, e.typ, e.content, r.members, ruleID(got), ruleID(want))
				}
			}
		}
	}
}

func ruleID(r *pushrules.PushRule) string {
	if r == nil {
		return "none"
	}
	return r.RuleID
}

func strp(s string) *string { return &s }

// BenchmarkEvaluate is one message's push rule evaluation for 49 members
// with the default rules (without room state: no display names or power
// levels to look up).
func BenchmarkEvaluate(b *testing.B) {
	e := &evaluator{s: &Server{}, rules: map[string]*userRules{}, gen: map[string]int{}, cache: map[*rooms.Event]any{}}
	var joined []string
	for i := 0; i < 49; i++ {
		u := fmt.Sprintf("@member%d:city.test", i)
		ur, err := compileRules(defaultPushRules(u), &e.ids)
		if err != nil {
			b.Fatal(err)
		}
		e.rules[u] = ur
		joined = append(joined, u)
	}
	ev := benchEvent(b, `{"msgtype":"m.text","body":"本日の防災訓練は15時からです"}`)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if out, _ := e.Evaluate(ev, nil, joined).(*evaluation); out == nil || len(out.users) != 49 {
			b.Fatalf("evaluation: %+v", out)
		}
	}
}

func benchEvent(b *testing.B, content string) *rooms.Event {
	b.Helper()
	verImpl, err := gomatrixserverlib.GetRoomVersion("10")
	if err != nil {
		b.Fatal(err)
	}
	raw := `{"auth_events":[],"content":` + content + `,"depth":5,"hashes":{"sha256":"x"},"origin_server_ts":1,"prev_events":[],` +
		`"room_id":"!room:city.test","sender":"@alice:city.test","signatures":{},"type":"m.room.message"}`
	pdu, err := verImpl.NewEventFromTrustedJSON([]byte(raw), false)
	if err != nil {
		b.Fatal(err)
	}
	return &rooms.Event{PDU: pdu, Pos: 10}
}
