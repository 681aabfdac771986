package e2e

import (
	"net/http"
	"net/url"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/machi-chat/machi/internal/testrig"
)

// publicRoomsPost is POST /publicRooms through the mautrix client (it has
// no helper for the filtered form).
func publicRoomsPost(t *testing.T, c *mautrix.Client, body any) *mautrix.RespPublicRooms {
	t.Helper()
	var resp mautrix.RespPublicRooms
	if _, err := c.MakeRequest(ctxT(t), http.MethodPost, c.BuildClientURL("v3", "publicRooms"), body, &resp); err != nil {
		t.Fatalf("POST /publicRooms %v: %v", body, err)
	}
	return &resp
}

func roomIDs(chunk []*mautrix.PublicRoomInfo) []id.RoomID {
	var out []id.RoomID
	for _, r := range chunk {
		out = append(out, r.RoomID)
	}
	return out
}

func TestRoomDirectory(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		c := startCity(t, engine)
		alice, bob, carol := register(t, c.srv, "alice"), register(t, c.srv, "bob"), register(t, c.srv, "carol")
		ctx := ctxT(t)
		chat, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Visibility: "public", Name: "防災課 連絡室", Topic: "台風の備え", RoomAliasName: "bousai"})
		if err != nil {
			t.Fatal(err)
		}
		space, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Visibility: "public", Name: "市役所", CreationContent: map[string]any{"type": "m.space"}})
		if err != nil {
			t.Fatal(err)
		}
		hidden, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "人事 (private)"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, chat.RoomID); err != nil {
			t.Fatal(err)
		}

		// Anyone may read the directory, without a token; most members first.
		anon, _ := mautrix.NewClient(baseURL(c.srv), "", "")
		all, err := anon.PublicRooms(ctx, &mautrix.ReqPublicRooms{})
		if err != nil {
			t.Fatal(err)
		}
		if got := roomIDs(all.Chunk); len(got) != 2 || got[0] != chat.RoomID || got[1] != space.RoomID {
			t.Fatalf("directory = %v, want [%s %s]", got, chat.RoomID, space.RoomID)
		}
		if all.TotalRoomCountEstimate != 2 || all.NextBatch != "" || all.PrevBatch != "" {
			t.Fatalf("one page: total %d next %q prev %q", all.TotalRoomCountEstimate, all.NextBatch, all.PrevBatch)
		}
		r := all.Chunk[0]
		if r.Name != "防災課 連絡室" || r.Topic != "台風の備え" || r.CanonicalAlias != id.RoomAlias("#bousai:localhost") ||
			r.NumJoinedMembers != 2 || r.WorldReadable || r.GuestCanJoin || r.JoinRule != event.JoinRulePublic || r.RoomType != "" {
			t.Fatalf("chat entry = %+v", r)
		}
		if s := all.Chunk[1]; s.RoomType != event.RoomTypeSpace || s.NumJoinedMembers != 1 {
			t.Fatalf("space entry = %+v", s)
		}

		// Pages of one.
		p1, err := anon.PublicRooms(ctx, &mautrix.ReqPublicRooms{Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if got := roomIDs(p1.Chunk); len(got) != 1 || got[0] != chat.RoomID || p1.NextBatch == "" || p1.PrevBatch != "" {
			t.Fatalf("page 1 = %v next %q prev %q", got, p1.NextBatch, p1.PrevBatch)
		}
		p2, err := anon.PublicRooms(ctx, &mautrix.ReqPublicRooms{Limit: 1, Since: p1.NextBatch})
		if err != nil {
			t.Fatal(err)
		}
		if got := roomIDs(p2.Chunk); len(got) != 1 || got[0] != space.RoomID || p2.NextBatch != "" || p2.PrevBatch == "" || p2.TotalRoomCountEstimate != 2 {
			t.Fatalf("page 2 = %v next %q prev %q total %d", got, p2.NextBatch, p2.PrevBatch, p2.TotalRoomCountEstimate)
		}
		back := publicRoomsPost(t, carol, map[string]any{"limit": 1, "since": p2.PrevBatch})
		if got := roomIDs(back.Chunk); len(got) != 1 || got[0] != chat.RoomID {
			t.Fatalf("back to page 1 = %v", got)
		}

		// Filters: a term anywhere (Japanese substring, case-insensitive
		// Latin in the alias), room types.
		for _, tc := range []struct {
			name   string
			filter map[string]any
			want   []id.RoomID
		}{
			{"japanese term", map[string]any{"generic_search_term": "連絡"}, []id.RoomID{chat.RoomID}},
			{"topic", map[string]any{"generic_search_term": "台風"}, []id.RoomID{chat.RoomID}},
			{"alias any case", map[string]any{"generic_search_term": "BOUSAI"}, []id.RoomID{chat.RoomID}},
			{"no match", map[string]any{"generic_search_term": "人事"}, nil},
			{"rooms without a type", map[string]any{"room_types": []any{nil}}, []id.RoomID{chat.RoomID}},
			{"spaces", map[string]any{"room_types": []any{"m.space"}}, []id.RoomID{space.RoomID}},
			{"both", map[string]any{"room_types": []any{nil, "m.space"}}, []id.RoomID{chat.RoomID, space.RoomID}},
		} {
			got := roomIDs(publicRoomsPost(t, carol, map[string]any{"filter": tc.filter}).Chunk)
			if len(got) != len(tc.want) || (len(got) > 0 && got[0] != tc.want[0]) {
				t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
			}
		}

		// Visibility: GET for anyone, PUT for members with power or admins.
		vis := func(room id.RoomID) string {
			var v struct {
				Visibility string `json:"visibility"`
			}
			if code, me := do(t, http.DefaultClient, "GET", c.base()+"/_matrix/client/v3/directory/list/room/"+url.PathEscape(string(room)), "", nil, &v); code != 200 {
				t.Fatalf("get visibility of %s: %d %+v", room, code, me)
			}
			return v.Visibility
		}
		if vis(chat.RoomID) != "public" || vis(hidden.RoomID) != "private" {
			t.Fatalf("visibility: chat %s, hidden %s", vis(chat.RoomID), vis(hidden.RoomID))
		}
		put := func(token string, room id.RoomID, body any) (int, matrixErr) {
			return do(t, http.DefaultClient, "PUT", c.base()+"/_matrix/client/v3/directory/list/room/"+url.PathEscape(string(room)), token, body, nil)
		}
		for _, tc := range []struct {
			name   string
			token  string
			room   id.RoomID
			body   string
			status int
			code   string
		}{
			{"member without power", bob.AccessToken, chat.RoomID, `{"visibility":"private"}`, 403, "M_FORBIDDEN"},
			{"not a member", carol.AccessToken, hidden.RoomID, `{"visibility":"public"}`, 403, "M_FORBIDDEN"},
			{"bad visibility", alice.AccessToken, chat.RoomID, `{"visibility":"secret"}`, 400, "M_INVALID_PARAM"},
			{"wrong type", alice.AccessToken, chat.RoomID, `{"visibility":1}`, 400, "M_BAD_JSON"},
			{"not json", alice.AccessToken, chat.RoomID, `{"visibility"`, 400, "M_NOT_JSON"},
			{"unknown room", alice.AccessToken, "!nope:localhost", `{"visibility":"public"}`, 404, "M_NOT_FOUND"},
			{"no token", "", chat.RoomID, `{"visibility":"private"}`, 401, "M_MISSING_TOKEN"},
		} {
			if code, me := put(tc.token, tc.room, []byte(tc.body)); code != tc.status || me.Code != tc.code {
				t.Errorf("%s: %d %s, want %d %s", tc.name, code, me.Code, tc.status, tc.code)
			}
		}
		if vis(chat.RoomID) != "public" || vis(hidden.RoomID) != "private" {
			t.Fatal("a refused change changed the visibility")
		}
		if code, me := do(t, http.DefaultClient, "GET", c.base()+"/_matrix/client/v3/directory/list/room/!nope:localhost", "", nil, nil); code != 404 || me.Code != "M_NOT_FOUND" {
			t.Fatalf("unknown room visibility: %d %+v", code, me)
		}
		// The creator unpublishes (twice: idempotent); a server admin who
		// is no member publishes the private room; no body means public.
		for i := 0; i < 2; i++ {
			if code, me := put(alice.AccessToken, chat.RoomID, map[string]string{"visibility": "private"}); code != 200 {
				t.Fatalf("alice unpublishes: %d %+v", code, me)
			}
		}
		if code, me := put(c.adminToken, hidden.RoomID, []byte(`{}`)); code != 200 {
			t.Fatalf("admin publishes: %d %+v", code, me)
		}
		if vis(chat.RoomID) != "private" || vis(hidden.RoomID) != "public" {
			t.Fatalf("after changes: chat %s, hidden %s", vis(chat.RoomID), vis(hidden.RoomID))
		}
		// In room version 12 creators hold no power level but may anything.
		v12, err := carol.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomVersion: "12"})
		if err != nil {
			t.Fatal(err)
		}
		if code, me := put(carol.AccessToken, v12.RoomID, map[string]string{"visibility": "public"}); code != 200 {
			t.Fatalf("v12 creator publishes: %d %+v", code, me)
		}
		if code, me := put(carol.AccessToken, v12.RoomID, map[string]string{"visibility": "private"}); code != 200 || vis(v12.RoomID) != "private" {
			t.Fatalf("v12 creator unpublishes: %d %+v", code, me)
		}
		now, err := anon.PublicRooms(ctx, &mautrix.ReqPublicRooms{})
		if err != nil {
			t.Fatal(err)
		}
		if got := roomIDs(now.Chunk); len(got) != 2 || !slices.Contains(got, hidden.RoomID) || !slices.Contains(got, space.RoomID) {
			t.Fatalf("directory after changes = %v", got)
		}

		// Bad requests.
		base := c.base() + "/_matrix/client/v3/publicRooms"
		for _, tc := range []struct {
			name, method, url, token, body string
			status                         int
			code                           string
		}{
			{"other server", "GET", base + "?server=other.example.jp", "", "", 404, "M_NOT_FOUND"},
			{"other server post", "POST", base + "?server=other.example.jp", carol.AccessToken, `{}`, 404, "M_NOT_FOUND"},
			{"bad server name", "GET", base + "?server=" + url.QueryEscape("not a server"), "", "", 400, "M_INVALID_PARAM"},
			{"bad since", "GET", base + "?since=garbage", "", "", 400, "M_INVALID_PARAM"},
			{"bad limit", "GET", base + "?limit=many", "", "", 400, "M_INVALID_PARAM"},
			{"negative limit", "POST", base, carol.AccessToken, `{"limit":-1}`, 400, "M_INVALID_PARAM"},
			{"filter not an object", "POST", base, carol.AccessToken, `{"filter":"x"}`, 400, "M_BAD_JSON"},
			{"third-party network", "POST", base, carol.AccessToken, `{"third_party_instance_id":"irc"}`, 404, "M_NOT_FOUND"},
			{"post without token", "POST", base, "", `{}`, 401, "M_MISSING_TOKEN"},
		} {
			code, me := do(t, http.DefaultClient, tc.method, tc.url, tc.token, []byte(tc.body), nil)
			if code != tc.status || me.Code != tc.code {
				t.Errorf("%s: %d %s, want %d %s", tc.name, code, me.Code, tc.status, tc.code)
			}
		}
		if code, _ := do(t, http.DefaultClient, "GET", base+"?server=localhost", "", nil, nil); code != 200 {
			t.Fatalf("own server by name: %d", code)
		}
	})
}
