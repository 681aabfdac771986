package federation

import (
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

func TestServerACLPermits(t *testing.T) {
	no := false
	for _, tc := range []struct {
		acl    serverACL
		server spec.ServerName
		want   bool
	}{
		{serverACL{Allow: []string{"*"}}, "city-a.test", true},
		{serverACL{Allow: []string{"*"}}, "city-a.test:8448", true},
		{serverACL{}, "city-a.test", false}, // no allow list: nobody
		{serverACL{Allow: []string{"*"}, Deny: []string{"city-b.test"}}, "city-b.test:8448", false},
		{serverACL{Allow: []string{"*"}, Deny: []string{"*.evil.test"}}, "a.evil.test", false},
		{serverACL{Allow: []string{"*"}, Deny: []string{"*.evil.test"}}, "evil.test", true},
		{serverACL{Allow: []string{"city-?.test"}}, "city-c.test", true},
		{serverACL{Allow: []string{"city-?.test"}}, "city-cc.test", false},
		{serverACL{Allow: []string{"CITY-A.test"}}, "city-a.TEST", true},
		{serverACL{Allow: []string{"*"}}, "127.0.0.1:8448", true},
		{serverACL{Allow: []string{"*"}, AllowIPLiterals: &no}, "127.0.0.1:8448", false},
		{serverACL{Allow: []string{"*"}, AllowIPLiterals: &no}, "[::1]:8448", false},
		{serverACL{Allow: []string{"[a]"}}, "a", false}, // [ is no class
		{serverACL{Allow: []string{"*"}}, "bad:port", false},
	} {
		if got := tc.acl.permits(tc.server); got != tc.want {
			t.Errorf("%+v permits %s: %v, want %v", tc.acl, tc.server, got, tc.want)
		}
	}
}
