package e2e

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/machi-chat/machi/internal/server"

	"github.com/machi-chat/machi/internal/testrig"
)

// TestFederatedRoomDirectory: a user of city-b reads city-a's room
// directory (GET and filtered POST /publicRooms?server=), which city-a
// answers over federation as it answers its own users; a server off the
// allow-list is neither asked nor answered.
func TestFederatedRoomDirectory(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		const a, b, c = "city-a.test", "city-b.test", "city-c.test"
		strangerAddr, strangerConns := recorder(t)
		cities := startFederation(t, engine, []string{a, b, c},
			map[string][]string{a: {b}, b: {a}, c: {a}},
			map[string]map[string]string{b: {c: strangerAddr}})
		alice := register(t, cities[a].srv, "alice")
		bob := register(t, cities[b].srv, "bob")
		carol := register(t, cities[c].srv, "carol")
		ctx := ctxT(t)
		notice, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Visibility: "public", Name: "防災のお知らせ", Topic: "避難所の開設状況"})
		if err != nil {
			t.Fatal(err)
		}
		other, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Visibility: "public", Name: "観光課"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "非公開"}); err != nil {
			t.Fatal(err)
		}

		remote, err := bob.PublicRooms(ctx, &mautrix.ReqPublicRooms{Server: a})
		if err != nil {
			t.Fatal(err)
		}
		got := roomIDs(remote.Chunk)
		if len(got) != 2 || !slices.Contains(got, notice.RoomID) || !slices.Contains(got, other.RoomID) {
			t.Fatalf("city-a's directory seen from city-b: %v", got)
		}
		for _, r := range remote.Chunk {
			if r.RoomID == notice.RoomID && (r.Name != "防災のお知らせ" || r.Topic != "避難所の開設状況" || r.NumJoinedMembers != 1) {
				t.Fatalf("entry: %+v", r)
			}
		}
		// Paged, and filtered (POST), all the way through.
		page, err := bob.PublicRooms(ctx, &mautrix.ReqPublicRooms{Server: a, Limit: 1})
		if err != nil || len(page.Chunk) != 1 || page.NextBatch == "" {
			t.Fatalf("first page: %+v %v", page, err)
		}
		next, err := bob.PublicRooms(ctx, &mautrix.ReqPublicRooms{Server: a, Limit: 1, Since: page.NextBatch})
		if err != nil || len(next.Chunk) != 1 || next.Chunk[0].RoomID == page.Chunk[0].RoomID {
			t.Fatalf("second page: %+v %v", next, err)
		}
		var filtered mautrix.RespPublicRooms
		u := bob.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "publicRooms"}, map[string]string{"server": a})
		if _, err := bob.MakeRequest(ctx, http.MethodPost, u, map[string]any{"filter": map[string]any{"generic_search_term": "避難所"}}, &filtered); err != nil {
			t.Fatal(err)
		}
		if got := roomIDs(filtered.Chunk); len(got) != 1 || got[0] != notice.RoomID {
			t.Fatalf("filtered: %v", got)
		}
		// A bad since token: city-a's 400, told as a bad gateway.
		if code, me := do(t, http.DefaultClient, "GET", baseURL(cities[b].srv)+"/_matrix/client/v3/publicRooms?server="+a+"&since=nope", bob.AccessToken, nil, nil); code != 502 || !strings.Contains(me.Msg, "invalid since token") {
			t.Fatalf("bad since across: %d %+v", code, me)
		}
		if code, me := do(t, http.DefaultClient, "GET", baseURL(cities[b].srv)+"/_matrix/client/v3/publicRooms?server="+url.QueryEscape("bad:server:name"), bob.AccessToken, nil, nil); code != 400 {
			t.Fatalf("bad server name: %d %+v", code, me)
		}

		// The GET form over federation, signed as city-b.
		keyID, key, err := server.LoadKey(cities[b].cfg.Path(cities[b].cfg.SigningKeyPath))
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			query  string
			status int
			rooms  int
		}{{"limit=1", 200, 1}, {"", 200, 2}, {"limit=x", 400, 0}, {"include_all_networks=maybe", 400, 0}, {"third_party_instance_id=irc", 404, 0}} {
			req := signedRequest(t, cities[a], b, keyID, key, "GET", "/_matrix/federation/v1/publicRooms?"+tc.query, nil)
			resp, err := insecureFed(a).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var out mautrix.RespPublicRooms
			_ = json.NewDecoder(resp.Body).Decode(&out)
			resp.Body.Close()
			if resp.StatusCode != tc.status || len(out.Chunk) != tc.rooms {
				t.Fatalf("federation GET /publicRooms?%s: %d, %d rooms", tc.query, resp.StatusCode, len(out.Chunk))
			}
		}

		if code, me := do(t, http.DefaultClient, "GET", baseURL(cities[b].srv)+"/_matrix/client/v3/publicRooms?server="+a, "", nil, nil); code != 401 {
			t.Fatalf("another city's directory without a token: %d %+v", code, me)
		}
		// city-b does not federate with city-c: refused, never contacted.
		if code, me := do(t, http.DefaultClient, "GET", baseURL(cities[b].srv)+"/_matrix/client/v3/publicRooms?server="+c, bob.AccessToken, nil, nil); code != 403 || me.Rule == "" {
			t.Fatalf("directory of a server off the allow-list: %d %+v", code, me)
		}
		if n := strangerConns.Load(); n != 0 {
			t.Fatalf("city-b contacted city-c %d times", n)
		}
		// city-c allows city-a, but city-a does not allow city-c.
		if code, me := do(t, http.DefaultClient, "GET", baseURL(cities[c].srv)+"/_matrix/client/v3/publicRooms?server="+a, carol.AccessToken, nil, nil); code != 403 {
			t.Fatalf("city-c asking city-a: %d %+v", code, me)
		}
	})
}
