package e2e

import (
	"errors"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/machi-chat/machi/internal/testrig"
)

// TestCanonicalAliasChecked: an m.room.canonical_alias from a client may
// list only well-formed aliases and, of this server's, only those that
// point to the room (SyTest's "Canonical alias can be set" and "… can
// include alt_aliases"); a refused one changes nothing.
func TestCanonicalAliasChecked(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice := register(t, srv, "alice")
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{RoomAliasName: "town-" + engine})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{RoomAliasName: "village-" + engine}); err != nil {
			t.Fatal(err)
		}
		mine, theirs := "#town-"+engine+":localhost", "#village-"+engine+":localhost"

		for _, tc := range []struct {
			name    string
			content map[string]any
			code    string
		}{
			{"own alias", map[string]any{"alias": mine}, ""},
			{"alias of no room", map[string]any{"alias": "#nowhere:localhost"}, "M_BAD_ALIAS"},
			{"alias of another room", map[string]any{"alias": theirs}, "M_BAD_ALIAS"},
			{"not an alias", map[string]any{"alias": "%town:localhost"}, "M_INVALID_PARAM"},
			{"alt alias of another room", map[string]any{"alias": mine, "alt_aliases": []string{theirs}}, "M_BAD_ALIAS"},
			{"bad alt alias", map[string]any{"alias": mine, "alt_aliases": []string{"town"}}, "M_INVALID_PARAM"},
			{"another server's alias", map[string]any{"alias": mine, "alt_aliases": []string{"#town:elsewhere.example"}}, ""},
			{"no alias", map[string]any{}, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := alice.SendStateEvent(ctxT(t), room.RoomID, event.StateCanonicalAlias, "", tc.content)
				if tc.code == "" {
					if err != nil {
						t.Fatalf("refused: %v", err)
					}
					return
				}
				var he mautrix.HTTPError
				if !errors.As(err, &he) || he.Response == nil || he.Response.StatusCode != 400 || he.RespError == nil || he.RespError.ErrCode != tc.code {
					t.Fatalf("got %v, want 400 %s", err, tc.code)
				}
			})
		}
		var got struct {
			Alias string `json:"alias"`
		}
		if err := alice.StateEvent(ctxT(t), room.RoomID, event.StateCanonicalAlias, "", &got); err != nil {
			t.Fatal(err)
		}
		if got.Alias != "" {
			t.Fatalf("canonical alias after the last accepted change = %q, want none", got.Alias)
		}
	})
}
