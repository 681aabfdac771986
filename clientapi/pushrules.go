package clientapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/gorilla/mux"
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

// pushRulePath is a path under /pushrules/, parsed one segment at a time
// (the path is matched encoded, so a %2F in a rule ID stays inside it):
// "" is every rule, "global/" a scope, "global/room/" a kind, then a rule
// and one of its attributes. A listing needs its trailing slash, as the
// spec writes the paths; without it the path names nothing.
type pushRulePath struct {
	scope, kind, ruleID, attr string
	depth                     int  // 0 all, 1 scope, 2 kind, 3 rule, 4 attribute
	listing                   bool // ends in "/": the scope's or kind's rules
}

func parsePushRulePath(raw string) (pushRulePath, error) {
	var p pushRulePath
	if raw == "" {
		p.listing = true
		return p, nil
	}
	segs := strings.Split(raw, "/")
	if segs[len(segs)-1] == "" && len(segs) <= 3 {
		p.listing = true
		segs = segs[:len(segs)-1]
	}
	if len(segs) > 4 {
		return p, errInvalidParam("a push rule path has a scope, a kind, a rule ID and an attribute at most")
	}
	for i, seg := range segs {
		u, err := pathUnescape(seg)
		if err != nil {
			return p, errInvalidParam("bad escape in the push rule path")
		}
		segs[i] = u
	}
	p.depth = len(segs)
	fields := []*string{&p.scope, &p.kind, &p.ruleID, &p.attr}
	for i, seg := range segs {
		*fields[i] = seg
	}
	if p.scope != "global" {
		return p, errInvalidParam("unknown push rule scope %q", p.scope)
	}
	if p.depth >= 2 && (&pushRuleset{}).list(p.kind) == nil {
		return p, errInvalidParam("unknown push rule kind %q", p.kind)
	}
	if p.depth == 4 && p.attr != "enabled" && p.attr != "actions" {
		return p, errInvalidParam("unknown push rule attribute %q", p.attr)
	}
	return p, nil
}

// handlePushRules serves PUT, GET and DELETE under /pushrules/.
func (s *Server) handlePushRules(w http.ResponseWriter, r *http.Request) {
	p, err := parsePushRulePath(mux.Vars(r)["path"])
	if err == nil && r.Method != http.MethodGet {
		switch {
		case p.depth < 2:
			err = errInvalidParam("a push rule path needs a scope and a kind")
		case p.depth == 2 && p.listing:
			err = errInvalidParam("the rule ID is empty")
		case p.depth == 2:
			err = errInvalidParam("a push rule path needs a rule ID")
		case p.depth == 4 && r.Method == http.MethodDelete:
			err = newErr(http.StatusMethodNotAllowed, "M_UNRECOGNIZED", "a rule's attributes cannot be deleted")
		}
	}
	if err == nil && r.Method == http.MethodGet && (p.depth == 1 || p.depth == 2) && !p.listing {
		err = errInvalidParam("a push rule listing ends in a slash")
	}
	if err != nil {
		writeError(w, err)
		return
	}
	dev := DeviceFrom(r.Context())
	rules, err := s.pushRules(r.Context(), dev.UserID)
	if err != nil {
		writeError(w, err)
		return
	}
	var list *[]pushRule
	if p.depth >= 2 {
		list = rules.list(p.kind)
	}
	switch {
	case r.Method == http.MethodPut && p.depth == 3:
		s.putPushRule(w, r, rules, list, p)
	case r.Method == http.MethodPut:
		s.putPushRuleAttr(w, r, rules, list, p)
	case r.Method == http.MethodDelete:
		s.deletePushRule(w, r, rules, list, p.ruleID)
	case p.depth == 0:
		writeJSON(w, http.StatusOK, map[string]any{"global": rules})
	case p.depth == 1:
		writeJSON(w, http.StatusOK, rules)
	case p.depth == 2:
		writeJSON(w, http.StatusOK, *list)
	default:
		s.getPushRule(w, list, p)
	}
}

func (s *Server) getPushRule(w http.ResponseWriter, list *[]pushRule, p pushRulePath) {
	for _, rule := range *list {
		if rule.RuleID != p.ruleID {
			continue
		}
		switch p.attr {
		case "":
			writeJSON(w, http.StatusOK, rule)
		case "enabled":
			writeJSON(w, http.StatusOK, map[string]bool{"enabled": rule.Enabled})
		case "actions":
			writeJSON(w, http.StatusOK, map[string]any{"actions": rule.Actions})
		}
		return
	}
	writeError(w, errNotFound("no push rule %q", p.ruleID))
}

// putPushRule serves PUT /pushrules/global/{kind}/{ruleId}[?before|after]:
// a user-defined rule, created or replaced.
func (s *Server) putPushRule(w http.ResponseWriter, r *http.Request, rules *pushRuleset, list *[]pushRule, p pushRulePath) {
	kind, ruleID := p.kind, p.ruleID
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

// deletePushRule serves DELETE /pushrules/global/{kind}/{ruleId}.
func (s *Server) deletePushRule(w http.ResponseWriter, r *http.Request, rules *pushRuleset, list *[]pushRule, ruleID string) {
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

// putPushRuleAttr serves PUT …/{ruleId}/enabled and …/actions.
func (s *Server) putPushRuleAttr(w http.ResponseWriter, r *http.Request, rules *pushRuleset, list *[]pushRule, p pushRulePath) {
	ruleID := p.ruleID
	var req struct {
		Enabled *bool `json:"enabled"`
		Actions []any `json:"actions"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	attr := p.attr
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
