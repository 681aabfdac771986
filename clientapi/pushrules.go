package clientapi

import (
	"net/http"
	"strings"
)

// Push rules. Every user has the spec's server-default rules ("Predefined
// Rules", client-server API v1.16); changing them (PUT, DELETE, enabled,
// actions) comes with the push-rules work. Clients such as matrix-js-sdk
// read the ruleset before their first sync.

type pushCondition struct {
	Kind    string `json:"kind"`
	Key     string `json:"key,omitempty"`
	Pattern string `json:"pattern,omitempty"`
	Value   any    `json:"value,omitempty"`
	Is      string `json:"is,omitempty"`
}

type pushRule struct {
	RuleID     string          `json:"rule_id"`
	Default    bool            `json:"default"`
	Enabled    bool            `json:"enabled"`
	Actions    []any           `json:"actions"`
	Conditions []pushCondition `json:"conditions,omitempty"`
	Pattern    string          `json:"pattern,omitempty"`
}

type pushRuleset struct {
	Override  []pushRule `json:"override"`
	Content   []pushRule `json:"content"`
	Room      []pushRule `json:"room"`
	Sender    []pushRule `json:"sender"`
	Underride []pushRule `json:"underride"`
}

func (rs *pushRuleset) kind(k string) ([]pushRule, bool) {
	switch k {
	case "override":
		return rs.Override, true
	case "content":
		return rs.Content, true
	case "room":
		return rs.Room, true
	case "sender":
		return rs.Sender, true
	case "underride":
		return rs.Underride, true
	}
	return nil, false
}

func match(key, pattern string) pushCondition {
	return pushCondition{Kind: "event_match", Key: key, Pattern: pattern}
}

var (
	notify         = "notify"
	soundDefault   = map[string]any{"set_tweak": "sound", "value": "default"}
	soundRing      = map[string]any{"set_tweak": "sound", "value": "ring"}
	highlight      = map[string]any{"set_tweak": "highlight"}
	roomPermission = pushCondition{Kind: "sender_notification_permission", Key: "room"}
)

// defaultPushRules is the spec's predefined ruleset for userID.
func defaultPushRules(userID string) *pushRuleset {
	local := strings.TrimPrefix(strings.SplitN(userID, ":", 2)[0], "@")
	rule := func(id string, actions []any, conds ...pushCondition) pushRule {
		if actions == nil {
			actions = []any{}
		}
		return pushRule{RuleID: id, Default: true, Enabled: true, Actions: actions, Conditions: conds}
	}
	master := rule(".m.rule.master", nil)
	master.Enabled = false
	master.Conditions = []pushCondition{}
	return &pushRuleset{
		Override: []pushRule{
			master,
			rule(".m.rule.suppress_notices", nil, match("content.msgtype", "m.notice")),
			rule(".m.rule.invite_for_me", []any{notify, soundDefault},
				match("type", "m.room.member"), match("content.membership", "invite"), match("state_key", userID)),
			rule(".m.rule.member_event", nil, match("type", "m.room.member")),
			rule(".m.rule.is_user_mention", []any{notify, highlight, soundDefault},
				pushCondition{Kind: "event_property_contains", Key: `content.m\.mentions.user_ids`, Value: userID}),
			rule(".m.rule.contains_display_name", []any{notify, soundDefault, highlight},
				pushCondition{Kind: "contains_display_name"}),
			rule(".m.rule.is_room_mention", []any{notify, highlight},
				pushCondition{Kind: "event_property_is", Key: `content.m\.mentions.room`, Value: true}, roomPermission),
			rule(".m.rule.roomnotif", []any{notify, highlight}, roomPermission, match("content.body", "@room")),
			rule(".m.rule.tombstone", []any{notify, highlight}, match("type", "m.room.tombstone"), match("state_key", "")),
			rule(".m.rule.reaction", nil, match("type", "m.reaction")),
			rule(".m.rule.room.server_acl", nil, match("type", "m.room.server_acl"), match("state_key", "")),
			rule(".m.rule.suppress_edits", nil,
				pushCondition{Kind: "event_property_is", Key: `content.m\.relates_to.rel_type`, Value: "m.replace"}),
		},
		Content: []pushRule{{RuleID: ".m.rule.contains_user_name", Default: true, Enabled: true,
			Actions: []any{notify, soundDefault, highlight}, Pattern: local}},
		Room:   []pushRule{},
		Sender: []pushRule{},
		Underride: []pushRule{
			rule(".m.rule.call", []any{notify, soundRing}, match("type", "m.call.invite")),
			rule(".m.rule.encrypted_room_one_to_one", []any{notify, soundDefault},
				pushCondition{Kind: "room_member_count", Is: "2"}, match("type", "m.room.encrypted")),
			rule(".m.rule.room_one_to_one", []any{notify, soundDefault},
				pushCondition{Kind: "room_member_count", Is: "2"}, match("type", "m.room.message")),
			rule(".m.rule.message", []any{notify}, match("type", "m.room.message")),
			rule(".m.rule.encrypted", []any{notify}, match("type", "m.room.encrypted")),
		},
	}
}

// handlePushRules serves GET /pushrules/, /pushrules/global/,
// /pushrules/global/{kind}/{ruleId} and its /enabled and /actions.
func (s *Server) handlePushRules(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	rules := defaultPushRules(dev.UserID)
	v := vars(r)
	scope, kind, ruleID, attr := v["scope"], v["kind"], v["ruleId"], v["attr"]
	if scope == "" {
		writeJSON(w, http.StatusOK, map[string]any{"global": rules})
		return
	}
	if scope != "global" {
		writeError(w, errInvalidParam("unknown push rule scope %q", scope))
		return
	}
	if kind == "" {
		writeJSON(w, http.StatusOK, rules)
		return
	}
	list, ok := rules.kind(kind)
	if !ok {
		writeError(w, errInvalidParam("unknown push rule kind %q", kind))
		return
	}
	for _, rule := range list {
		if rule.RuleID != ruleID {
			continue
		}
		switch attr {
		case "":
			writeJSON(w, http.StatusOK, rule)
		case "enabled":
			writeJSON(w, http.StatusOK, map[string]bool{"enabled": rule.Enabled})
		case "actions":
			writeJSON(w, http.StatusOK, map[string]any{"actions": rule.Actions})
		default:
			writeError(w, newErr(http.StatusNotFound, "M_UNRECOGNIZED", "unrecognized request"))
		}
		return
	}
	writeError(w, errNotFound("no push rule %q", ruleID))
}
