package e2e

import (
	"errors"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

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

// TestDeleteAliasUpdatesCanonicalAlias: deleting an alias that the room's
// m.room.canonical_alias names takes it out of that event, as alias or in
// alt_aliases, other aliases kept (SyTest's "Can delete canonical alias").
// A member without the power to change the event still deletes their own
// alias (200), and the event stays as it was.
func TestDeleteAliasUpdatesCanonicalAlias(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice, bob := register(t, srv, "alice"), register(t, srv, "bob")
		ctx := ctxT(t)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Invite: []id.UserID{bob.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		a, b, c, d := id.RoomAlias("#main-"+engine+":localhost"), id.RoomAlias("#alt1-"+engine+":localhost"),
			id.RoomAlias("#alt2-"+engine+":localhost"), id.RoomAlias("#bobs-"+engine+":localhost")
		for _, al := range []id.RoomAlias{a, b, c} {
			if _, err := alice.CreateAlias(ctx, al, room.RoomID); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := bob.CreateAlias(ctx, d, room.RoomID); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendStateEvent(ctx, room.RoomID, event.StateCanonicalAlias, "", map[string]any{
			"alias": a, "alt_aliases": []id.RoomAlias{b, c, d}, "org.machi.note": "kept",
		}); err != nil {
			t.Fatal(err)
		}
		canonical := func() map[string]any { return stateContent(t, alice, room.RoomID, event.StateCanonicalAlias, "") }

		if _, err := alice.DeleteAlias(ctx, a); err != nil {
			t.Fatal(err)
		}
		deepEq(t, "after deleting the main alias", canonical(), map[string]any{
			"alt_aliases": []any{string(b), string(c), string(d)}, "org.machi.note": "kept"})

		if _, err := alice.DeleteAlias(ctx, c); err != nil {
			t.Fatal(err)
		}
		deepEq(t, "after deleting an alt alias", canonical(), map[string]any{
			"alt_aliases": []any{string(b), string(d)}, "org.machi.note": "kept"})

		// bob (power 0) may delete the alias he made, not change the event.
		if _, err := bob.DeleteAlias(ctx, d); err != nil {
			t.Fatalf("bob deleting his alias: %v", err)
		}
		if _, err := alice.ResolveAlias(ctx, d); err == nil {
			t.Fatal("bob's alias still resolves")
		}
		deepEq(t, "after bob's deletion", canonical(), map[string]any{
			"alt_aliases": []any{string(b), string(d)}, "org.machi.note": "kept"})

		// An alias the event does not name: no new state event.
		canonicalID := func() id.EventID {
			st, err := alice.State(ctx, room.RoomID)
			if err != nil {
				t.Fatal(err)
			}
			if ev := st[event.StateCanonicalAlias][""]; ev != nil {
				return ev.ID
			}
			return ""
		}
		before := canonicalID()
		e := id.RoomAlias("#other-" + engine + ":localhost")
		if _, err := alice.CreateAlias(ctx, e, room.RoomID); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.DeleteAlias(ctx, e); err != nil {
			t.Fatal(err)
		}
		if after := canonicalID(); before == "" || before != after {
			t.Fatalf("canonical alias event changed for an alias it does not name: %v → %v", before, after)
		}
	})
}
