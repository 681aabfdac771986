package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/machi-chat/machi/internal/config"
	"github.com/machi-chat/machi/internal/server"
	"github.com/machi-chat/machi/internal/testrig"
)

// searchIDs runs a search and returns the IDs of the results in order.
func searchIDs(t *testing.T, c *mautrix.Client, req *mautrix.ReqSearch) []id.EventID {
	t.Helper()
	resp, err := c.Search(ctxT(t), req)
	if err != nil {
		t.Fatalf("search %q: %v", req.SearchTerm, err)
	}
	out := []id.EventID{}
	for _, r := range resp.Results {
		out = append(out, r.Event.ID)
	}
	return out
}

func sameIDs(got, want []id.EventID) bool {
	got, want = slices.Clone(got), slices.Clone(want)
	slices.Sort(got)
	slices.Sort(want)
	return slices.Equal(got, want)
}

// say sends a text message and returns its ID.
func say(t *testing.T, c *mautrix.Client, roomID id.RoomID, body string) id.EventID {
	t.Helper()
	resp, err := c.SendText(ctxT(t), roomID, body)
	if err != nil {
		t.Fatalf("send %q: %v", body, err)
	}
	return resp.EventID
}

// TestSearchJapanese: 会議 finds 課内会議資料 as soon as the send returns, as
// do 資料, 会議資料 and the single kanji 会; English words and mixed text
// are found both ways; names and topics by their keys.
func TestSearchJapanese(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice, bob := register(t, srv, "alice"), register(t, srv, "bob")
		ctx := ctxT(t)
		name, topic := "総務課 連絡室", "庁内の連絡 and notices"
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: name, Topic: topic, Invite: []id.UserID{bob.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		docs := say(t, alice, room.RoomID, "課内会議資料を共有します")
		mixed := say(t, bob, room.RoomID, "防災訓練 schedule は来週です")
		english := say(t, alice, room.RoomID, "The Budget Meeting moved to 10:00")
		wide := say(t, alice, room.RoomID, "ＰＤＦで送ります")

		for _, tc := range []struct {
			term string
			keys []string
			want []id.EventID
		}{
			{"会議", nil, []id.EventID{docs}},
			{"資料", nil, []id.EventID{docs}},
			{"会議資料", nil, []id.EventID{docs}},
			{"会", nil, []id.EventID{docs}},
			{"資料会議", nil, nil},
			{"防災訓練", nil, []id.EventID{mixed}},
			{"schedule", nil, []id.EventID{mixed}},
			{"防災訓練 Schedule", nil, []id.EventID{mixed}},
			{"budget meeting", nil, []id.EventID{english}},
			{"pdf", nil, []id.EventID{wide}},
			{"unrelated", nil, nil},
		} {
			for _, c := range []*mautrix.Client{alice, bob} {
				if got := searchIDs(t, c, &mautrix.ReqSearch{SearchTerm: tc.term, Keys: tc.keys}); !sameIDs(got, tc.want) {
					t.Errorf("%s searches %q: got %v, want %v", c.UserID, tc.term, got, tc.want)
				}
			}
		}
		// Names and topics, by key.
		resp, err := alice.Search(ctx, &mautrix.ReqSearch{SearchTerm: "連絡", Keys: []string{"content.topic"}})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Results) != 1 || resp.Results[0].Event.Type != event.StateTopic {
			t.Errorf("search 連絡 in content.topic: %+v", resp.Results)
		}
		resp, err = alice.Search(ctx, &mautrix.ReqSearch{SearchTerm: "総務課", Keys: []string{"content.name"}})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Results) != 1 || resp.Results[0].Event.Type != event.StateRoomName {
			t.Errorf("search 総務課 in content.name: %+v", resp.Results)
		}
		if got := searchIDs(t, alice, &mautrix.ReqSearch{SearchTerm: "総務課", Keys: []string{"content.body"}}); len(got) != 0 {
			t.Errorf("search 総務課 in content.body: %v", got)
		}
		if !slices.Contains(resp.Highlights, "総務課") || resp.Count != 1 || resp.Results[0].Rank <= 0 {
			t.Errorf("highlights %v, count %d, rank %v", resp.Highlights, resp.Count, resp.Results[0].Rank)
		}
	})
}

// TestSearchFiltersOrderPages: room and sender filters, order_by recent,
// pagination through next_batch, context with profiles, groups and state.
func TestSearchFiltersOrderPages(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice, bob := register(t, srv, "alice"), register(t, srv, "bob")
		ctx := ctxT(t)
		if err := alice.SetDisplayName(ctx, "総務 花子"); err != nil {
			t.Fatal(err)
		}
		r1, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		r2, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, r1.RoomID); err != nil {
			t.Fatal(err)
		}
		a1 := say(t, alice, r1.RoomID, "議事録 その一")
		b1 := say(t, bob, r1.RoomID, "議事録 その二")
		a2 := say(t, alice, r2.RoomID, "議事録 その三")
		file, err := alice.SendMessageEvent(ctx, r1.RoomID, event.EventMessage, map[string]any{"msgtype": "m.file", "body": "議事録.pdf", "url": "mxc://localhost/abc"})
		if err != nil {
			t.Fatal(err)
		}
		yes := true
		for _, tc := range []struct {
			name   string
			filter *mautrix.FilterPart
			want   []id.EventID
		}{
			{"rooms", &mautrix.FilterPart{Rooms: []id.RoomID{r2.RoomID}}, []id.EventID{a2}},
			{"not_rooms", &mautrix.FilterPart{NotRooms: []id.RoomID{r2.RoomID}}, []id.EventID{a1, b1, file.EventID}},
			{"senders", &mautrix.FilterPart{Senders: []id.UserID{bob.UserID}}, []id.EventID{b1}},
			{"not_senders", &mautrix.FilterPart{NotSenders: []id.UserID{alice.UserID}}, []id.EventID{b1}},
			{"contains_url", &mautrix.FilterPart{ContainsURL: &yes}, []id.EventID{file.EventID}},
			{"types wildcard", &mautrix.FilterPart{Types: []event.Type{{Type: "m.room.*"}}}, []id.EventID{a1, b1, a2, file.EventID}},
			{"not_types", &mautrix.FilterPart{NotTypes: []event.Type{event.EventMessage}}, nil},
		} {
			if got := searchIDs(t, alice, &mautrix.ReqSearch{SearchTerm: "議事録", Filter: tc.filter}); !sameIDs(got, tc.want) {
				t.Errorf("filter %s: got %v, want %v", tc.name, got, tc.want)
			}
		}
		// Bob is not in r2: its message never shows.
		if got := searchIDs(t, bob, &mautrix.ReqSearch{SearchTerm: "議事録"}); !sameIDs(got, []id.EventID{a1, b1, file.EventID}) {
			t.Errorf("bob's search: %v", got)
		}
		if got := searchIDs(t, alice, &mautrix.ReqSearch{SearchTerm: "議事録", OrderBy: "recent"}); !slices.Equal(got, []id.EventID{file.EventID, a2, b1, a1}) {
			t.Errorf("order_by recent: got %v", got)
		}

		// Pages: seven more in r2, three at a time, in both orders.
		var paged []id.EventID
		for i := 0; i < 7; i++ {
			paged = append(paged, say(t, alice, r2.RoomID, fmt.Sprintf("ページ送り %d", i)))
		}
		for _, order := range []string{"rank", "recent"} {
			var all, sentBetween []id.EventID
			next := ""
			for page := 0; page < 5; page++ {
				resp, err := alice.Search(ctx, &mautrix.ReqSearch{SearchTerm: "ページ送り", OrderBy: order, NextBatch: next, Filter: &mautrix.FilterPart{Limit: 3}})
				if err != nil {
					t.Fatal(err)
				}
				if resp.Count != len(paged) {
					t.Errorf("%s page %d: count %d, want %d", order, page, resp.Count, len(paged))
				}
				if len(resp.Results) > 3 {
					t.Fatalf("%s page %d: %d results past the limit", order, page, len(resp.Results))
				}
				for _, r := range resp.Results {
					all = append(all, r.Event.ID)
				}
				if next = resp.NextBatch; next == "" {
					break
				}
				if page == 0 {
					// A message sent between pages does not shift them
					// (it is found by the next search).
					sentBetween = append(sentBetween, say(t, alice, r2.RoomID, "ページ送り 後から"))
				}
			}
			if next != "" || !sameIDs(all, paged) {
				t.Errorf("%s pages: %v (next %q), want the %d of %v", order, all, next, len(paged), paged)
			}
			if order == "recent" {
				want := slices.Clone(paged)
				slices.Reverse(want)
				if !slices.Equal(all, want) {
					t.Errorf("recent pages out of order: %v", all)
				}
			}
			paged = append(paged, sentBetween...)
		}

		// Context, profiles, groups and state, read raw: every field the
		// spec names.
		var raw struct {
			SearchCategories struct {
				RoomEvents struct {
					Results []struct {
						Result  map[string]any `json:"result"`
						Context struct {
							Start        string                       `json:"start"`
							End          string                       `json:"end"`
							EventsBefore []map[string]any             `json:"events_before"`
							EventsAfter  []map[string]any             `json:"events_after"`
							ProfileInfo  map[string]map[string]string `json:"profile_info"`
						} `json:"context"`
					} `json:"results"`
					Groups map[string]map[string]struct {
						Order   int      `json:"order"`
						Results []string `json:"results"`
					} `json:"groups"`
					State map[string][]map[string]any `json:"state"`
				} `json:"room_events"`
			} `json:"search_categories"`
		}
		body := map[string]any{"search_categories": map[string]any{"room_events": map[string]any{
			"search_term": "その二", "event_context": map[string]any{"before_limit": 1, "after_limit": 1, "include_profile": true},
			"groupings": map[string]any{"group_by": []map[string]string{{"key": "room_id"}, {"key": "sender"}}}, "include_state": true,
		}}}
		if code, me := do(t, http.DefaultClient, "POST", baseURL(srv)+"/_matrix/client/v3/search", alice.AccessToken, body, &raw); code != 200 {
			t.Fatalf("search with context: %d %+v", code, me)
		}
		re := raw.SearchCategories.RoomEvents
		if len(re.Results) != 1 || re.Results[0].Result["event_id"] != string(b1) {
			t.Fatalf("search その二: %+v", re.Results)
		}
		cx := re.Results[0].Context
		if len(cx.EventsBefore) != 1 || cx.EventsBefore[0]["event_id"] != string(a1) || len(cx.EventsAfter) != 1 || cx.EventsAfter[0]["event_id"] != file.EventID.String() {
			t.Errorf("context: before %v, after %v", cx.EventsBefore, cx.EventsAfter)
		}
		if cx.Start == "" || cx.End == "" {
			t.Errorf("context tokens: %q %q", cx.Start, cx.End)
		}
		if got := cx.ProfileInfo[alice.UserID.String()]["displayname"]; got != "総務 花子" {
			t.Errorf("profile_info: %v", cx.ProfileInfo)
		}
		if _, ok := cx.ProfileInfo[bob.UserID.String()]; !ok {
			t.Errorf("profile_info lacks the result's sender: %v", cx.ProfileInfo)
		}
		if g := re.Groups["room_id"][r1.RoomID.String()]; g.Order != 1 || !slices.Equal(g.Results, []string{string(b1)}) {
			t.Errorf("groups by room: %+v", re.Groups)
		}
		if g := re.Groups["sender"][bob.UserID.String()]; g.Order != 1 || len(g.Results) != 1 {
			t.Errorf("groups by sender: %+v", re.Groups)
		}
		hasCreate := false
		for _, ev := range re.State[r1.RoomID.String()] {
			hasCreate = hasCreate || ev["type"] == "m.room.create"
		}
		if !hasCreate || len(re.State) != 1 {
			t.Errorf("include_state: %d rooms, create event %v", len(re.State), hasCreate)
		}
	})
}

// TestSearchNoLeaks: nothing from a room the user never joined, nothing
// sent after they left or (under "joined") before they joined, nothing
// encrypted, nothing redacted.
func TestSearchNoLeaks(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice, bob, carol := register(t, srv, "alice"), register(t, srv, "bob"), register(t, srv, "carol")
		ctx := ctxT(t)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		before := say(t, alice, room.RoomID, "人事異動の内示 一")
		if _, err := bob.LeaveRoom(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		after := say(t, alice, room.RoomID, "人事異動の内示 二")
		if got := searchIDs(t, alice, &mautrix.ReqSearch{SearchTerm: "人事異動"}); !sameIDs(got, []id.EventID{before, after}) {
			t.Errorf("alice: %v", got)
		}
		if got := searchIDs(t, bob, &mautrix.ReqSearch{SearchTerm: "人事異動"}); !sameIDs(got, []id.EventID{before}) {
			t.Errorf("bob, who left between the two: %v", got)
		}
		// Even naming the room in the filter, or with context, shows
		// nothing past the leave.
		resp, err := bob.Search(ctx, &mautrix.ReqSearch{SearchTerm: "人事異動", Filter: &mautrix.FilterPart{Rooms: []id.RoomID{room.RoomID}}, EventContext: mautrix.SearchEventContext{AfterLimit: 5}})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Results) != 1 || len(resp.Results[0].Context.EventsAfter) != 1 {
			// The one event after "一" bob may see is his own leave.
			t.Errorf("bob with context: %+v", resp.Results)
		} else if ev := resp.Results[0].Context.EventsAfter[0]; ev.Type != event.StateMember {
			t.Errorf("bob's context after his leave: %s %v", ev.Type, ev.Content.Raw)
		}
		if got := searchIDs(t, carol, &mautrix.ReqSearch{SearchTerm: "人事異動", Filter: &mautrix.FilterPart{Rooms: []id.RoomID{room.RoomID}}}); len(got) != 0 {
			t.Errorf("carol, never in the room: %v", got)
		}

		// History visibility "joined": carol joins after a message and
		// never sees it.
		closed, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{{
			Type: event.StateHistoryVisibility, StateKey: new(string),
			Content: event.Content{Parsed: &event.HistoryVisibilityEventContent{HistoryVisibility: event.HistoryVisibilityJoined}},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 5; i++ {
			// Ranked above what carol may see: hidden hits fill whole
			// pages of the index before hers comes.
			say(t, alice, closed.RoomID, "参加前の予算案 予算案 予算案")
		}
		if _, err := carol.JoinRoomByID(ctx, closed.RoomID); err != nil {
			t.Fatal(err)
		}
		later := say(t, alice, closed.RoomID, "参加後の予算案")
		for _, order := range []string{"rank", "recent"} {
			if got := searchIDs(t, carol, &mautrix.ReqSearch{SearchTerm: "予算案", OrderBy: order}); !sameIDs(got, []id.EventID{later}) {
				t.Errorf("carol under joined visibility, %s: %v", order, got)
			}
			if got := searchIDs(t, carol, &mautrix.ReqSearch{SearchTerm: "予算案", OrderBy: order, Filter: &mautrix.FilterPart{Limit: 1}}); !sameIDs(got, []id.EventID{later}) {
				t.Errorf("carol under joined visibility, %s, one at a time: %v", order, got)
			}
		}
		if got := searchIDs(t, alice, &mautrix.ReqSearch{SearchTerm: "予算案", Filter: &mautrix.FilterPart{Limit: 2}}); len(got) != 2 || got[0] == later {
			t.Errorf("alice's first page by rank: %v (the repeated word ranks first)", got)
		}

		// An encrypted room: the server has only ciphertext.
		enc, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", InitialState: []*event.Event{{
			Type: event.StateEncryption, StateKey: new(string),
			Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendMessageEvent(ctx, enc.RoomID, event.EventEncrypted, map[string]any{
			"algorithm": id.AlgorithmMegolmV1, "ciphertext": "AwgAEnAcme 機密", "sender_key": "k", "session_id": "s", "device_id": "D",
		}); err != nil {
			t.Fatal(err)
		}
		if got := searchIDs(t, alice, &mautrix.ReqSearch{SearchTerm: "機密"}); len(got) != 0 {
			t.Errorf("encrypted event found: %v", got)
		}
		if got := searchIDs(t, alice, &mautrix.ReqSearch{SearchTerm: "AwgAEnAcme"}); len(got) != 0 {
			t.Errorf("ciphertext found: %v", got)
		}

		// A redacted message disappears.
		memo := say(t, alice, room.RoomID, "削除予定のメモ")
		if got := searchIDs(t, alice, &mautrix.ReqSearch{SearchTerm: "削除予定"}); !sameIDs(got, []id.EventID{memo}) {
			t.Fatalf("before redaction: %v", got)
		}
		if _, err := alice.RedactEvent(ctx, room.RoomID, memo); err != nil {
			t.Fatal(err)
		}
		if got := searchIDs(t, alice, &mautrix.ReqSearch{SearchTerm: "削除予定"}); len(got) != 0 {
			t.Errorf("after redaction: %v", got)
		}
	})
}

// TestSearchErrors: bad requests get 400 with the right errcode and
// change nothing; a search needs a token.
func TestSearchErrors(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice := register(t, srv, "alice")
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		say(t, alice, room.RoomID, "エラー確認")
		rankTok := ""
		for i := 0; i < 3; i++ {
			say(t, alice, room.RoomID, "エラー確認 続き")
		}
		resp, err := alice.Search(ctxT(t), &mautrix.ReqSearch{SearchTerm: "エラー確認", Filter: &mautrix.FilterPart{Limit: 1}})
		if err != nil || resp.NextBatch == "" {
			t.Fatalf("first page: %v %+v", err, resp)
		}
		rankTok = resp.NextBatch
		url := baseURL(srv) + "/_matrix/client/v3/search"
		cat := func(re map[string]any) map[string]any {
			return map[string]any{"search_categories": map[string]any{"room_events": re}}
		}
		for _, tc := range []struct {
			name   string
			query  string
			body   any
			status int
			code   string
		}{
			{"not JSON", "", []byte("{nope"), 400, "M_NOT_JSON"},
			{"not an object", "", []byte(`["search"]`), 400, "M_BAD_JSON"},
			{"no search_categories", "", map[string]any{}, 400, "M_MISSING_PARAM"},
			{"no search_term", "", cat(map[string]any{}), 400, "M_MISSING_PARAM"},
			{"empty search_term", "", cat(map[string]any{"search_term": ""}), 400, "M_INVALID_PARAM"},
			{"blank search_term", "", cat(map[string]any{"search_term": "  "}), 400, "M_INVALID_PARAM"},
			{"search_term not a string", "", cat(map[string]any{"search_term": 5}), 400, "M_BAD_JSON"},
			{"bad order_by", "", cat(map[string]any{"search_term": "x", "order_by": "newest"}), 400, "M_INVALID_PARAM"},
			{"bad key", "", cat(map[string]any{"search_term": "x", "keys": []string{"content.url"}}), 400, "M_INVALID_PARAM"},
			{"bad group_by", "", cat(map[string]any{"search_term": "x", "groupings": map[string]any{"group_by": []map[string]string{{"key": "type"}}}}), 400, "M_INVALID_PARAM"},
			{"negative limit", "", cat(map[string]any{"search_term": "x", "filter": map[string]any{"limit": -1}}), 400, "M_INVALID_PARAM"},
			{"negative context", "", cat(map[string]any{"search_term": "x", "event_context": map[string]any{"before_limit": -1}}), 400, "M_INVALID_PARAM"},
			{"bad next_batch", "?next_batch=garbage", cat(map[string]any{"search_term": "x"}), 400, "M_INVALID_PARAM"},
			{"overflowing next_batch", "?next_batch=r99999999999999999999_1", cat(map[string]any{"search_term": "x"}), 400, "M_INVALID_PARAM"},
			{"rank next_batch for recent", "?next_batch=" + rankTok, cat(map[string]any{"search_term": "x", "order_by": "recent"}), 400, "M_INVALID_PARAM"},
		} {
			code, me := do(t, http.DefaultClient, "POST", url+tc.query, alice.AccessToken, tc.body, nil)
			if code != tc.status || me.Code != tc.code || me.Msg == "" {
				t.Errorf("%s: %d %s %q, want %d %s", tc.name, code, me.Code, me.Msg, tc.status, tc.code)
			}
		}
		if code, me := do(t, http.DefaultClient, "POST", url, "", cat(map[string]any{"search_term": "x"}), nil); code != 401 || me.Code != "M_MISSING_TOKEN" {
			t.Errorf("no token: %d %s", code, me.Code)
		}
		// No room_events category: nothing to search, nothing found.
		var out map[string]map[string]any
		if code, _ := do(t, http.DefaultClient, "POST", url, alice.AccessToken, map[string]any{"search_categories": map[string]any{}}, &out); code != 200 || len(out["search_categories"]) != 0 {
			t.Errorf("empty categories: %d %v", code, out)
		}
		// Punctuation only: no words, no results, no error.
		if got := searchIDs(t, alice, &mautrix.ReqSearch{SearchTerm: "。、"}); len(got) != 0 {
			t.Errorf("punctuation: %v", got)
		}
		// The token still works after all that.
		if resp, err := alice.Search(ctxT(t), &mautrix.ReqSearch{SearchTerm: "エラー確認", NextBatch: rankTok, Filter: &mautrix.FilterPart{Limit: 10}}); err != nil || len(resp.Results) != 3 {
			t.Errorf("second page: %v %d", err, len(resp.Results))
		}
	})
}

// TestSearchRestartCatchUp: an index left behind (restored from before
// later sends and a redaction) is caught up at start, and a deleted one
// is rebuilt from the database.
func TestSearchRestartCatchUp(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		cfg := config.Default()
		cfg.DataDir = t.TempDir()
		cfg.Listen.Client = "127.0.0.1:0"
		cfg.Listen.Metrics = ""
		cfg.Registration.Enabled = true
		cfg.Registration.BcryptCost = 4
		cfg.RateLimits.Enabled = false
		if engine == "postgres" {
			cfg.Database.Engine = "postgres"
			cfg.Database.PostgresDSN = testrig.PostgresDSN(t)
		}
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		var srv *server.Server
		start := func() {
			var err error
			if srv, err = server.Start(context.Background(), &cfg, log); err != nil {
				t.Fatalf("start machi: %v", err)
			}
		}
		stop := func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			srv.Close(ctx)
			srv = nil
		}
		t.Cleanup(func() {
			if srv != nil {
				stop()
			}
		})
		client := func(c *mautrix.Client) *mautrix.Client {
			n, err := mautrix.NewClient(baseURL(srv), c.UserID, c.AccessToken)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		start()
		alice := register(t, srv, "alice")
		room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		first := say(t, alice, room.RoomID, "再起動前の会議メモ")
		doomed := say(t, alice, room.RoomID, "再起動前の会議 draft")
		stop()

		dir := filepath.Join(cfg.DataDir, server.SearchIndexDir)
		saved := filepath.Join(t.TempDir(), "saved-index")
		if err := os.CopyFS(saved, os.DirFS(dir)); err != nil {
			t.Fatal(err)
		}
		start()
		alice = client(alice)
		later := say(t, alice, room.RoomID, "再起動後の会議資料")
		if _, err := alice.RedactEvent(ctxT(t), room.RoomID, doomed); err != nil {
			t.Fatal(err)
		}
		stop()

		check := func(stage string) {
			t.Helper()
			if got := searchIDs(t, alice, &mautrix.ReqSearch{SearchTerm: "会議"}); !sameIDs(got, []id.EventID{first, later}) {
				t.Errorf("%s: search 会議: %v, want %v", stage, got, []id.EventID{first, later})
			}
			if got := searchIDs(t, alice, &mautrix.ReqSearch{SearchTerm: "draft"}); len(got) != 0 {
				t.Errorf("%s: the redacted message is found: %v", stage, got)
			}
		}
		// The index as it was before the later send and the redaction.
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.CopyFS(dir, os.DirFS(saved)); err != nil {
			t.Fatal(err)
		}
		start()
		alice = client(alice)
		check("index behind")
		stop()

		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		start()
		alice = client(alice)
		check("index deleted")
	})
}

// TestSearchMatrixJSSDK runs js/search.test.mjs (matrix-js-sdk searching
// the way Element does) against a server of its own, so that its sends
// and indexing do not slow the timing-sensitive tests of js_test.go.
func TestSearchMatrixJSSDK(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		runJS(t, 2*time.Minute, []string{"MACHI_URL=" + specProxy(t, baseURL(srv))}, "search.test.mjs")
	})
}
