package federation

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"path"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// serverACL is the content of a room's m.room.server_acl.
type serverACL struct {
	Allow           []string `json:"allow"`
	Deny            []string `json:"deny"`
	AllowIPLiterals *bool    `json:"allow_ip_literals"`
}

// permits applies the ACL to a server name, its port ignored: an IP
// literal only if allowed (the default), then no deny glob may match, and
// an allow glob must. Globs have * and ? and match case-insensitively.
func (a serverACL) permits(server spec.ServerName) bool {
	host, _, ok := spec.ParseAndValidateServerName(server)
	if !ok {
		return false
	}
	host = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	if net.ParseIP(host) != nil && a.AllowIPLiterals != nil && !*a.AllowIPLiterals {
		return false
	}
	match := func(globs []string) bool {
		for _, g := range globs {
			// path.Match's only other syntax, [ and \, is escaped.
			g = strings.NewReplacer(`\`, `\\`, `[`, `\[`).Replace(strings.ToLower(g))
			if ok, _ := path.Match(g, host); ok {
				return true
			}
		}
		return false
	}
	return !match(a.Deny) && match(a.Allow)
}

// aclDenied is a 403 when the room's server ACL bans origin (nil when it
// does not, or this server does not know the room: the endpoint says so).
func (f *Federation) aclDenied(ctx context.Context, roomID string, origin spec.ServerName) error {
	snap, err := f.rooms.CurrentState(ctx, roomID)
	if err != nil {
		return nil
	}
	ev := snap.Get("m.room.server_acl", "")
	if ev == nil {
		return nil
	}
	var acl serverACL
	if err := json.Unmarshal(ev.PDU.Content(), &acl); err != nil {
		return nil // an unreadable ACL bans nobody
	}
	if acl.permits(origin) {
		return nil
	}
	return newErr(http.StatusForbidden, "M_FORBIDDEN", "%s is banned from room %s by its server ACL", origin, roomID)
}

// roomACL wraps a handler of a room's endpoint ({roomId} in the path):
// servers the room's ACL bans are refused.
func (f *Federation) roomACL(h func(w http.ResponseWriter, r *http.Request, origin spec.ServerName)) func(w http.ResponseWriter, r *http.Request, origin spec.ServerName) {
	return func(w http.ResponseWriter, r *http.Request, origin spec.ServerName) {
		if err := f.aclDenied(r.Context(), vars(r)["roomId"], origin); err != nil {
			writeError(w, err)
			return
		}
		h(w, r, origin)
	}
}
