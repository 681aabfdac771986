package e2e

import (
	"net/http"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/machi-chat/machi/internal/config"
	"github.com/machi-chat/machi/internal/testrig"
)

func userIDs(resp *mautrix.RespSearchUserDirectory) []id.UserID {
	var out []id.UserID
	for _, r := range resp.Results {
		out = append(out, r.UserID)
	}
	return out
}

// TestUserDirectory: with user_directory.search_all_users (every staff
// member findable), the search matches Japanese names ignoring width,
// kana and spaces, and never finds deactivated accounts.
func TestUserDirectory(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		c := startCity(t, engine, func(cfg *config.Config) { cfg.UserDir.SearchAllUsers = true })
		ctx := ctxT(t)
		named := func(name, display string) *mautrix.Client {
			cl := register(t, c.srv, name)
			if err := cl.SetDisplayName(ctx, display); err != nil {
				t.Fatal(err)
			}
			return cl
		}
		taro := named("taro", "山田 太郎")
		hanako := named("hanako", "Yamada Hanako")
		sato := named("sato", "ＳＡＴＯ　ケンジ") // full-width Latin and space
		jiro := named("jiro", "山田 次郎")
		searcher := register(t, c.srv, "searcher") // shares no room with anyone

		c.admin("POST", "/users/"+string(jiro.UserID)+"/deactivate", map[string]any{"reason": "退職"}, nil, 200)

		search := func(term string, limit int) *mautrix.RespSearchUserDirectory {
			t.Helper()
			resp, err := searcher.SearchUserDirectory(ctx, term, limit)
			if err != nil {
				t.Fatalf("search %q: %v", term, err)
			}
			return resp
		}
		for _, tc := range []struct {
			term string
			want []id.UserID
		}{
			{"山田", []id.UserID{taro.UserID}},       // substring of a Japanese name; jiro is deactivated
			{"太郎", []id.UserID{taro.UserID}},       // not only prefixes
			{"山田太郎", []id.UserID{taro.UserID}},     // spaces ignored
			{"yamada", []id.UserID{hanako.UserID}}, // Latin, any case
			{"HANAKO", []id.UserID{hanako.UserID}}, //
			{"sato", []id.UserID{sato.UserID}},     // full-width folded
			{"けんじ", []id.UserID{sato.UserID}},      // katakana matched by hiragana
			{string(taro.UserID), []id.UserID{taro.UserID}},
			{"次郎", nil},   // deactivated, never found
			{"お知らせ", nil}, // the notices system account is not staff
			{"nobody-here", nil},
		} {
			resp := search(tc.term, 10)
			got := userIDs(resp)
			if len(got) != len(tc.want) || (len(got) > 0 && got[0] != tc.want[0]) || resp.Limited {
				t.Errorf("search %q = %v (limited %v), want %v", tc.term, got, resp.Limited, tc.want)
			}
		}
		resp := search("山田 太郎", 10)
		// The spec's field is display_name (mautrix-go reads "displayname",
		// the profile API's name, so it lands in Extra).
		if len(resp.Results) != 1 || resp.Results[0].Extra["display_name"] != "山田 太郎" {
			t.Fatalf("profile in results: %+v", resp.Results[0])
		}

		// The localpart: an exact one ranks before a prefix.
		resp = search(string(taro.UserID.Localpart()), 10)
		if got := userIDs(resp); len(got) == 0 || got[0] != taro.UserID {
			t.Fatalf("search by localpart = %v", got)
		}
		// limit and limited.
		resp = search("a", 1)
		if len(resp.Results) != 1 || !resp.Limited {
			t.Fatalf("limit 1 of many: %d results, limited %v", len(resp.Results), resp.Limited)
		}
		resp = search("", 100)
		for _, u := range userIDs(resp) {
			if u == jiro.UserID {
				t.Fatal("the empty term listed a deactivated user")
			}
		}
		if len(resp.Results) < 5 {
			t.Fatalf("the empty term lists staff, got %v", userIDs(resp))
		}

		url := c.base() + "/_matrix/client/v3/user_directory/search"
		for _, tc := range []struct {
			name, token, body string
			status            int
			code              string
		}{
			{"missing term", searcher.AccessToken, `{"limit":5}`, 400, "M_MISSING_PARAM"},
			{"term not a string", searcher.AccessToken, `{"search_term":5}`, 400, "M_BAD_JSON"},
			{"negative limit", searcher.AccessToken, `{"search_term":"a","limit":-1}`, 400, "M_INVALID_PARAM"},
			{"not json", searcher.AccessToken, `{"search_term"`, 400, "M_NOT_JSON"},
			{"no token", "", `{"search_term":"a"}`, 401, "M_MISSING_TOKEN"},
		} {
			if code, me := do(t, http.DefaultClient, "POST", url, tc.token, []byte(tc.body), nil); code != tc.status || me.Code != tc.code {
				t.Errorf("%s: %d %s, want %d %s", tc.name, code, me.Code, tc.status, tc.code)
			}
		}
	})
}

// Users of another city are found by those who share a room with them or
// while they are in a public room, under the name their member event
// carries; nobody else finds them.
func TestUserDirectoryRemoteRoommates(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		const a, b = "city-a.test", "city-b.test"
		cities := startFederation(t, engine, []string{a, b}, map[string][]string{a: {b}, b: {a}}, nil)
		ctx := ctxT(t)
		alice, carol := register(t, cities[a].srv, "alice"), register(t, cities[a].srv, "carol")
		bob := register(t, cities[b].srv, "bob")
		if err := bob.SetDisplayName(ctx, "鈴木 一郎"); err != nil {
			t.Fatal(err)
		}
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "合同委員会"})
		if err != nil {
			t.Fatal(err)
		}
		if code, me := do(t, http.DefaultClient, "POST", baseURL(cities[b].srv)+"/_matrix/client/v3/join/"+string(room.RoomID)+"?server_name="+a,
			bob.AccessToken, map[string]any{}, nil); code != 200 {
			t.Fatalf("join from city-b: %d %+v", code, me)
		}
		waitFor(t, alice, "", func(r *mautrix.RespSync) bool { return memberIn(r, room.RoomID, bob.UserID, "join") })

		resp, err := alice.SearchUserDirectory(ctx, "鈴木", 10)
		if err != nil {
			t.Fatal(err)
		}
		if got := userIDs(resp); len(got) != 1 || got[0] != bob.UserID || resp.Results[0].Extra["display_name"] != "鈴木 一郎" {
			t.Fatalf("alice searches her remote roommate: %+v", resp.Results)
		}
		if resp, err := carol.SearchUserDirectory(ctx, "鈴木", 10); err != nil || len(userIDs(resp)) != 1 {
			t.Fatalf("carol finds bob in a public room: %v (%v)", userIDs(resp), err)
		}
		if _, err := alice.SendStateEvent(ctx, room.RoomID, event.StateJoinRules, "", map[string]any{"join_rule": "invite"}); err != nil {
			t.Fatal(err)
		}
		if resp, err := carol.SearchUserDirectory(ctx, "鈴木", 10); err != nil || len(resp.Results) != 0 {
			t.Fatalf("carol shares no room with bob, yet finds %v (%v)", userIDs(resp), err)
		}
		// Another server's room directory takes a user (it is asked over
		// federation: TestFederatedRoomDirectory); presence is not served.
		if code, me := do(t, http.DefaultClient, "GET", baseURL(cities[a].srv)+"/_matrix/client/v3/publicRooms?server="+b, "", nil, nil); code != 401 || me.Code != "M_MISSING_TOKEN" {
			t.Fatalf("another city's room directory without a token: %d %+v", code, me)
		}
		if code, me := do(t, http.DefaultClient, "GET", baseURL(cities[a].srv)+"/_matrix/client/v3/presence/"+string(bob.UserID)+"/status", alice.AccessToken, nil, nil); code != 404 || me.Code != "M_NOT_FOUND" {
			t.Fatalf("a remote user's presence: %d %+v", code, me)
		}
	})
}

// TestUserDirectoryVisibility: by default (the spec's behaviour) a search
// finds the users who share a room with the searcher or are joined to a
// public room (join rule public, or history world_readable); a user only
// in a private room the searcher is not in, or who left, is not found
// (SyTest's 52user-directory).
func TestUserDirectoryVisibility(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		ctx := ctxT(t)
		named := func(name, display string) *mautrix.Client {
			cl := register(t, srv, name)
			if err := cl.SetDisplayName(ctx, display); err != nil {
				t.Fatal(err)
			}
			return cl
		}
		searcher := register(t, srv, "searcher")
		priv := named("priv", "田中 私室")    // only in a private room
		pub := named("pub", "田中 公開")      // in a public room
		mate := named("mate", "田中 同室")    // shares a private room with the searcher
		loner := named("loner", "田中 ひとり") // in no room
		found := func(term string) []id.UserID {
			t.Helper()
			resp, err := searcher.SearchUserDirectory(ctx, term, 50)
			if err != nil {
				t.Fatal(err)
			}
			return userIDs(resp)
		}
		has := func(list []id.UserID, u id.UserID) bool { return slices.Contains(list, u) }

		if _, err := priv.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"}); err != nil {
			t.Fatal(err)
		}
		pubRoom, err := pub.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		shared, err := mate.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{searcher.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := searcher.JoinRoomByID(ctx, shared.RoomID); err != nil {
			t.Fatal(err)
		}
		got := found("田中")
		for u, want := range map[id.UserID]bool{priv.UserID: false, pub.UserID: true, mate.UserID: true, loner.UserID: false} {
			if has(got, u) != want {
				t.Errorf("%s found = %v, want %v (results %v)", u, !want, want, got)
			}
		}
		// One shares no room with oneself: priv does not find priv (a
		// private room), pub finds pub (a public one).
		for c, want := range map[*mautrix.Client]bool{priv: false, pub: true} {
			resp, err := c.SearchUserDirectory(ctx, "田中", 50)
			if err != nil {
				t.Fatal(err)
			}
			if has(userIDs(resp), c.UserID) != want {
				t.Errorf("%s finds themselves = %v, want %v", c.UserID, !want, want)
			}
		}

		// The public room turns private: pub disappears; its history made
		// world_readable: pub is back.
		if _, err := pub.SendStateEvent(ctx, pubRoom.RoomID, event.StateJoinRules, "", map[string]any{"join_rule": "invite"}); err != nil {
			t.Fatal(err)
		}
		if has(found("田中"), pub.UserID) {
			t.Error("pub still found after the room's join rule became invite")
		}
		if _, err := pub.SendStateEvent(ctx, pubRoom.RoomID, event.StateHistoryVisibility, "", map[string]any{"history_visibility": "world_readable"}); err != nil {
			t.Fatal(err)
		}
		if !has(found("田中"), pub.UserID) {
			t.Error("pub not found in a world_readable room")
		}
		// Leaving: mate leaves the shared room (and is in no other).
		if _, err := mate.LeaveRoom(ctx, shared.RoomID); err != nil {
			t.Fatal(err)
		}
		if has(found("田中"), mate.UserID) {
			t.Error("mate still found after leaving the only room shared with the searcher")
		}
	})
}
