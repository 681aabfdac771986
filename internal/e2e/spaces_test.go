package e2e

import (
	"net/http"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/machi-chat/machi/internal/testrig"
)

// TestSpaceHierarchy: the city's departments as spaces. 総務部 holds 防災課
// and 情報政策課, a nested 総務課 space with its 文書係 room, and 人事係, a
// private room. A member of the department sees the tree depth-first in
// the spec's order without the private room, page by page; suggested_only
// and max_depth cut it; an outsider gets M_FORBIDDEN.
func TestSpaceHierarchy(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice, bob, carol := register(t, srv, "alice"), register(t, srv, "bob"), register(t, srv, "carol")
		ctx := ctxT(t)
		via := []string{alice.UserID.Homeserver()}
		mk := func(name, preset string, space bool) id.RoomID {
			t.Helper()
			req := &mautrix.ReqCreateRoom{Name: name, Preset: preset}
			if space {
				req.CreationContent = map[string]any{"type": "m.space"}
			}
			resp, err := alice.CreateRoom(ctx, req)
			if err != nil {
				t.Fatalf("create %s: %v", name, err)
			}
			return resp.RoomID
		}
		child := func(parent, room id.RoomID, content map[string]any) {
			t.Helper()
			if _, err := alice.SendStateEvent(ctx, parent, event.StateSpaceChild, string(room), content); err != nil {
				t.Fatal(err)
			}
		}
		soumubu := mk("総務部", "private_chat", true)
		bousai := mk("防災課", "public_chat", false)
		jouhou := mk("情報政策課", "private_chat", false)
		soumuka := mk("総務課", "public_chat", true)
		bunsho := mk("文書係", "public_chat", false)
		jinji := mk("人事係", "private_chat", false)
		gone := mk("旧課", "public_chat", false)
		// Listed out of order: the order keys decide.
		child(soumubu, jinji, map[string]any{"via": via, "order": "d"})
		child(soumubu, jouhou, map[string]any{"via": via, "order": "b"})
		child(soumubu, bousai, map[string]any{"via": via, "order": "a", "suggested": true})
		child(soumubu, soumuka, map[string]any{"via": via, "order": "c"})
		child(soumubu, gone, map[string]any{}) // removed: no via
		child(soumuka, bunsho, map[string]any{"via": via})
		for _, r := range []id.RoomID{soumubu, jouhou} {
			if _, err := alice.InviteUser(ctx, r, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
				t.Fatal(err)
			}
			if _, err := bob.JoinRoomByID(ctx, r); err != nil {
				t.Fatal(err)
			}
		}

		ids := func(resp *mautrix.RespHierarchy) []id.RoomID {
			var out []id.RoomID
			for _, r := range resp.Rooms {
				out = append(out, r.RoomID)
			}
			return out
		}
		hier := func(c *mautrix.Client, req *mautrix.ReqHierarchy) *mautrix.RespHierarchy {
			t.Helper()
			resp, err := c.Hierarchy(ctx, soumubu, req)
			if err != nil {
				t.Fatalf("hierarchy %+v: %v", req, err)
			}
			return resp
		}
		resp := hier(bob, nil)
		deepEq(t, "bob's hierarchy", ids(resp), []id.RoomID{soumubu, bousai, jouhou, soumuka, bunsho})
		if resp.NextBatch != "" {
			t.Errorf("next_batch %q on the only page", resp.NextBatch)
		}
		top := resp.Rooms[0]
		if top.Name != "総務部" || top.RoomType != event.RoomTypeSpace || top.NumJoinedMembers != 2 || top.JoinRule != event.JoinRuleInvite ||
			top.WorldReadable || !top.GuestCanJoin || top.RoomVersion != "10" { // private_chat lets guests join
			t.Errorf("space summary: %+v", top.PublicRoomInfo)
		}
		var kids []string
		for _, ev := range top.ChildrenState {
			if ev.Type != event.StateSpaceChild || ev.Sender != alice.UserID || ev.Timestamp == 0 {
				t.Errorf("child state: %+v", ev)
			}
			kids = append(kids, *ev.StateKey)
		}
		deepEq(t, "children_state", kids, []string{string(bousai), string(jouhou), string(soumuka), string(jinji)})
		if r := resp.Rooms[1]; r.Name != "防災課" || r.JoinRule != event.JoinRulePublic || r.RoomType != "" || len(r.ChildrenState) != 0 || r.NumJoinedMembers != 1 {
			t.Errorf("防災課 summary: %+v", r)
		}
		// Alice sees her private room too.
		deepEq(t, "alice's hierarchy", ids(hier(alice, nil)), []id.RoomID{soumubu, bousai, jouhou, soumuka, bunsho, jinji})

		zero, one := 0, 1
		deepEq(t, "max_depth=1", ids(hier(bob, &mautrix.ReqHierarchy{MaxDepth: &one})), []id.RoomID{soumubu, bousai, jouhou, soumuka})
		deepEq(t, "max_depth=0", ids(hier(bob, &mautrix.ReqHierarchy{MaxDepth: &zero})), []id.RoomID{soumubu})
		deepEq(t, "suggested_only", ids(hier(bob, &mautrix.ReqHierarchy{SuggestedOnly: true})), []id.RoomID{soumubu, bousai})

		// Pages of two.
		var pages [][]id.RoomID
		from := ""
		for i := 0; i < 5; i++ {
			p := hier(bob, &mautrix.ReqHierarchy{Limit: 2, From: from})
			pages = append(pages, ids(p))
			if from = p.NextBatch; from == "" {
				break
			}
		}
		deepEq(t, "pages", pages, [][]id.RoomID{{soumubu, bousai}, {jouhou, soumuka}, {bunsho}})

		// Error paths.
		first := hier(bob, &mautrix.ReqHierarchy{Limit: 1})
		base := baseURL(srv) + "/_matrix/client/v1/rooms/" + url.PathEscape(string(soumubu)) + "/hierarchy"
		for _, c := range []struct {
			query string
			code  string
		}{
			{"from=" + url.QueryEscape(first.NextBatch) + "&max_depth=1", "M_INVALID_PARAM"},
			{"from=" + url.QueryEscape(first.NextBatch) + "&suggested_only=true", "M_INVALID_PARAM"},
			{"from=garbage", "M_INVALID_PARAM"},
			{"limit=0", "M_INVALID_PARAM"},
			{"limit=x", "M_INVALID_PARAM"},
			{"max_depth=-1", "M_INVALID_PARAM"},
			{"suggested_only=maybe", "M_INVALID_PARAM"},
		} {
			if code, me := do(t, http.DefaultClient, "GET", base+"?"+c.query, bob.AccessToken, nil, nil); code != 400 || me.Code != c.code {
				t.Errorf("?%s: %d %+v, want 400 %s", c.query, code, me, c.code)
			}
		}
		if _, err := carol.Hierarchy(ctx, soumubu, nil); httpErr(t, err).Code != "M_FORBIDDEN" {
			t.Errorf("outsider: %v", err)
		}
		if _, err := carol.Hierarchy(ctx, "!nowhere:"+id.RoomID(via[0]), nil); httpErr(t, err).Code != "M_FORBIDDEN" {
			t.Errorf("unknown room: %v", err)
		}
		// Anyone may look into a public space.
		resp, err := carol.Hierarchy(ctx, soumuka, nil)
		if err != nil {
			t.Fatal(err)
		}
		deepEq(t, "carol in the public space", ids(resp), []id.RoomID{soumuka, bunsho})
	})
}
