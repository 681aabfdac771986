package clientapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
)

// Push rules. Every user has the spec's server-default rules ("Predefined
// Rules", client-server API v1.16) and may add rules of their own, disable
// rules and change their actions. A user's changes are kept as account data
// m.push_rules (which /sync delivers, as clients expect); the default rules
// are rebuilt from the server's definitions on every read, with the user's
// enabled flags and actions laid over them, so a newer server's defaults
// reach everyone.

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

// MarshalJSON writes every kind as a list, empty rather than null (the
// spec's schema, and clients, want arrays).
func (rs pushRuleset) MarshalJSON() ([]byte, error) {
	for _, k := range pushKinds {
		if l := rs.list(k); *l == nil {
			*l = []pushRule{}
		}
	}
	type plain pushRuleset
	return json.Marshal(plain(rs))
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

// pushRules returns the user's ruleset: defaults with the user's changes.
func (s *Server) pushRules(ctx context.Context, userID string) (*pushRuleset, error) {
	rules := defaultPushRules(userID)
	raw, err := s.store.GetAccountData(ctx, userID, "", "m.push_rules")
	if isNotFound(err) {
		return rules, nil
	} else if err != nil {
		return nil, err
	}
	var stored struct {
		Global pushRuleset `json:"global"`
	}
	if err := json.Unmarshal(raw, &stored); err != nil {
		s.log.Warn("unreadable m.push_rules: using the defaults", "user", userID, "err", err)
		return rules, nil
	}
	for _, kind := range pushKinds {
		defaults := rules.list(kind)
		mine := stored.Global.list(kind)
		var user []pushRule
		for _, r := range *mine {
			if r.Default {
				for i := range *defaults {
					if (*defaults)[i].RuleID == r.RuleID {
						(*defaults)[i].Enabled, (*defaults)[i].Actions = r.Enabled, r.Actions
					}
				}
				continue
			}
			user = append(user, r)
		}
		// User rules come before the defaults of their kind, except that
		// the master rule stays first.
		if kind == "override" && len(*defaults) > 0 {
			*defaults = append(append([]pushRule{(*defaults)[0]}, user...), (*defaults)[1:]...)
		} else {
			*defaults = append(user, *defaults...)
		}
	}
	return rules, nil
}

var pushKinds = []string{"override", "content", "room", "sender", "underride"}

func (rs *pushRuleset) list(kind string) *[]pushRule {
	switch kind {
	case "override":
		return &rs.Override
	case "content":
		return &rs.Content
	case "room":
		return &rs.Room
	case "sender":
		return &rs.Sender
	case "underride":
		return &rs.Underride
	}
	return nil
}

// savePushRules stores the ruleset as m.push_rules account data.
func (s *Server) savePushRules(ctx context.Context, userID string, rules *pushRuleset) error {
	b, err := json.Marshal(map[string]any{"global": rules})
	if err != nil {
		return err
	}
	defer s.eval.forget(userID) // after the write: a read in between caches the old rules
	return s.putAccountData(ctx, userID, "", "m.push_rules", b)
}

// handlePushRules serves GET /pushrules/, /pushrules/global/,
// /pushrules/global/{kind}/{ruleId} and its /enabled and /actions.
func (s *Server) handlePushRules(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	rules, err := s.pushRules(r.Context(), dev.UserID)
	if err != nil {
		writeError(w, err)
		return
	}
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
	list := rules.list(kind)
	if list == nil {
		writeError(w, errInvalidParam("unknown push rule kind %q", kind))
		return
	}
	for _, rule := range *list {
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

// pushRuleTarget parses the path of a rule to change.
func (s *Server) pushRuleTarget(r *http.Request) (rules *pushRuleset, list *[]pushRule, ruleID string, err error) {
	dev := DeviceFrom(r.Context())
	v := vars(r)
	if v["scope"] != "global" {
		return nil, nil, "", errInvalidParam("unknown push rule scope %q", v["scope"])
	}
	if rules, err = s.pushRules(r.Context(), dev.UserID); err != nil {
		return nil, nil, "", err
	}
	if list = rules.list(v["kind"]); list == nil {
		return nil, nil, "", errInvalidParam("unknown push rule kind %q", v["kind"])
	}
	return rules, list, v["ruleId"], nil
}

// handlePutPushRule serves PUT /pushrules/global/{kind}/{ruleId}[?before|after]:
// a user-defined rule, created or replaced.
func (s *Server) handlePutPushRule(w http.ResponseWriter, r *http.Request) {
	rules, list, ruleID, err := s.pushRuleTarget(r)
	if err != nil {
		writeError(w, err)
		return
	}
	kind := vars(r)["kind"]
	var req struct {
		Actions    []any           `json:"actions"`
		Conditions []pushCondition `json:"conditions"`
		Pattern    string          `json:"pattern"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	switch {
	case strings.HasPrefix(ruleID, "."):
		writeError(w, errInvalidParam("rule IDs starting with '.' are the server's"))
		return
	case ruleID == "" || strings.Contains(ruleID, "/") || strings.Contains(ruleID, `\`):
		writeError(w, errInvalidParam("a rule ID may not be empty or contain / or \\"))
		return
	case req.Actions == nil:
		writeError(w, errMissingParam("actions is required"))
		return
	case kind == "content" && req.Pattern == "":
		writeError(w, errMissingParam("content rules need a pattern"))
		return
	}
	if err := checkActions(req.Actions); err != nil {
		writeError(w, err)
		return
	}
	rule := pushRule{RuleID: ruleID, Enabled: true, Actions: req.Actions}
	switch kind {
	case "content":
		rule.Pattern = req.Pattern
	case "override", "underride":
		rule.Conditions = req.Conditions
		if rule.Conditions == nil {
			rule.Conditions = []pushCondition{}
		}
	case "room":
		rule.Conditions = []pushCondition{match("room_id", ruleID)}
	case "sender":
		rule.Conditions = []pushCondition{match("sender", ruleID)}
	}
	// Replace in place, or insert relative to before/after, or first among
	// the user's rules.
	q := r.URL.Query()
	out := make([]pushRule, 0, len(*list)+1)
	replaced := false
	for _, x := range *list {
		if x.RuleID == ruleID && !x.Default {
			if q.Get("before") == "" && q.Get("after") == "" {
				out = append(out, rule)
				replaced = true
			}
			continue
		}
		out = append(out, x)
	}
	if !replaced {
		pos := -1
		for i, x := range out {
			switch {
			case q.Get("before") != "" && x.RuleID == q.Get("before") && !x.Default:
				pos = i
			case q.Get("after") != "" && x.RuleID == q.Get("after") && !x.Default:
				pos = i + 1
			}
		}
		if pos < 0 && (q.Get("before") != "" || q.Get("after") != "") {
			writeError(w, errNotFound("no user push rule %q", q.Get("before")+q.Get("after")))
			return
		}
		if pos < 0 {
			pos = 0
			if kind == "override" && len(out) > 0 && out[0].RuleID == ".m.rule.master" {
				pos = 1
			}
		}
		out = append(out[:pos], append([]pushRule{rule}, out[pos:]...)...)
	}
	*list = out
	if err := s.savePushRules(r.Context(), DeviceFrom(r.Context()).UserID, rules); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{})
}

// checkActions accepts the spec's actions: notify, the legacy no-ops, and
// set_tweak objects.
func checkActions(actions []any) error {
	for _, a := range actions {
		switch v := a.(type) {
		case string:
			switch v {
			case "notify", "dont_notify", "coalesce":
			default:
				return errInvalidParam("unknown push action %q", v)
			}
		case map[string]any:
			if _, ok := v["set_tweak"].(string); !ok {
				return errInvalidParam("a push action object needs set_tweak")
			}
		default:
			return errInvalidParam("push actions are strings or set_tweak objects")
		}
	}
	return nil
}

// handleDeletePushRule serves DELETE /pushrules/global/{kind}/{ruleId}.
func (s *Server) handleDeletePushRule(w http.ResponseWriter, r *http.Request) {
	rules, list, ruleID, err := s.pushRuleTarget(r)
	if err != nil {
		writeError(w, err)
		return
	}
	for i, x := range *list {
		if x.RuleID != ruleID {
			continue
		}
		if x.Default {
			writeError(w, errInvalidParam("server-default rules cannot be deleted, only disabled"))
			return
		}
		*list = append((*list)[:i], (*list)[i+1:]...)
		if err := s.savePushRules(r.Context(), DeviceFrom(r.Context()).UserID, rules); err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{})
		return
	}
	writeError(w, errNotFound("no push rule %q", ruleID))
}

// handlePutPushRuleAttr serves PUT …/{ruleId}/enabled and …/actions.
func (s *Server) handlePutPushRuleAttr(w http.ResponseWriter, r *http.Request) {
	rules, list, ruleID, err := s.pushRuleTarget(r)
	if err != nil {
		writeError(w, err)
		return
	}
	var req struct {
		Enabled *bool `json:"enabled"`
		Actions []any `json:"actions"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	attr := vars(r)["attr"]
	for i := range *list {
		x := &(*list)[i]
		if x.RuleID != ruleID {
			continue
		}
		switch attr {
		case "enabled":
			if req.Enabled == nil {
				writeError(w, errMissingParam("enabled is required"))
				return
			}
			x.Enabled = *req.Enabled
		case "actions":
			if req.Actions == nil {
				writeError(w, errMissingParam("actions is required"))
				return
			}
			if err := checkActions(req.Actions); err != nil {
				writeError(w, err)
				return
			}
			x.Actions = req.Actions
		default:
			writeError(w, newErr(http.StatusNotFound, "M_UNRECOGNIZED", "unrecognized request"))
			return
		}
		if err := s.savePushRules(r.Context(), DeviceFrom(r.Context()).UserID, rules); err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{})
		return
	}
	writeError(w, errNotFound("no push rule %q", ruleID))
}
