package e2e

import (
	"net/http"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/machi-chat/machi/internal/testrig"
)

type adminReport struct {
	ID       int64          `json:"id"`
	TS       int64          `json:"ts"`
	Reporter string         `json:"reporter"`
	RoomID   string         `json:"room_id"`
	EventID  string         `json:"event_id"`
	Reason   string         `json:"reason"`
	Event    map[string]any `json:"event"`
}

// TestReports: a member reports a message and a room; the city's admins
// see both through the admin API (with the message as the reporter saw
// it), each with its audit log entry. Reports of what the reporter cannot
// see, and malformed ones, are refused and stored nowhere.
func TestReports(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		c := startCity(t, engine)
		alice, bob, carol := register(t, c.srv, "alice"), register(t, c.srv, "bob"), register(t, c.srv, "carol")
		ctx := ctxT(t)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "防災課"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		spam, err := alice.SendText(ctx, room.RoomID, "儲かる副業のご案内")
		if err != nil {
			t.Fatal(err)
		}
		private, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		secret, err := alice.SendText(ctx, private.RoomID, "非公開")
		if err != nil {
			t.Fatal(err)
		}
		if err := bob.ReportEvent(ctx, room.RoomID, spam.EventID, "勧誘です"); err != nil {
			t.Fatalf("report an event: %v", err)
		}
		// A room report's reason is required but may be blank (mautrix-go
		// leaves a blank one out, so send it by hand).
		if code, me := do(t, http.DefaultClient, "POST", bob.BuildClientURL("v3", "rooms", room.RoomID, "report"), bob.AccessToken, map[string]any{"reason": ""}, nil); code != 200 {
			t.Fatalf("report a room with a blank reason: %d %+v", code, me)
		}

		reportURL := func(room id.RoomID, ev id.EventID) string {
			if ev == "" {
				return bob.BuildClientURL("v3", "rooms", room, "report")
			}
			return bob.BuildClientURL("v3", "rooms", room, "report", ev)
		}
		long := strings.Repeat("あ", 2000)
		for _, r := range []struct {
			who    *mautrix.Client
			url    string
			body   any
			status int
			code   string
		}{
			{carol, reportURL(room.RoomID, spam.EventID), map[string]any{"reason": "x"}, 404, "M_NOT_FOUND"},    // not a member
			{bob, reportURL(private.RoomID, secret.EventID), map[string]any{"reason": "x"}, 404, "M_NOT_FOUND"}, // not his room
			{bob, reportURL(room.RoomID, secret.EventID), map[string]any{"reason": "x"}, 404, "M_NOT_FOUND"},    // another room's event
			{bob, reportURL(room.RoomID, "$nothing"), map[string]any{"reason": "x"}, 404, "M_NOT_FOUND"},
			{bob, reportURL(private.RoomID, ""), map[string]any{"reason": "x"}, 404, "M_NOT_FOUND"}, // a room he cannot know
			{bob, reportURL("!nowhere:"+id.RoomID(bob.UserID.Homeserver()), ""), map[string]any{"reason": "x"}, 404, "M_NOT_FOUND"},
			{bob, reportURL(room.RoomID, ""), map[string]any{}, 400, "M_MISSING_PARAM"},
			{bob, reportURL(room.RoomID, spam.EventID), map[string]any{"reason": 5}, 400, "M_BAD_JSON"},
			{bob, reportURL(room.RoomID, spam.EventID), map[string]any{"reason": long}, 400, "M_INVALID_PARAM"},
			{bob, reportURL(room.RoomID, spam.EventID), []byte("{"), 400, "M_NOT_JSON"},
		} {
			if code, me := do(t, http.DefaultClient, "POST", r.url, r.who.AccessToken, r.body, nil); code != r.status || me.Code != r.code {
				t.Errorf("%s POST %s: %d %+v, want %d %s", r.who.UserID, r.url, code, me, r.status, r.code)
			}
		}
		// Carol, outside, may still report the public room.
		if err := carol.ReportRoom(ctx, room.RoomID, "公開ルームに不適切な名前"); err != nil {
			t.Errorf("report of a public room from outside: %v", err)
		}

		var list struct {
			Reports []adminReport `json:"reports"`
		}
		c.admin("GET", "/reports", nil, &list, 200)
		if len(list.Reports) != 3 {
			t.Fatalf("admin sees %d reports, want 3: %+v", len(list.Reports), list.Reports)
		}
		first := list.Reports[0]
		if first.Reporter != string(bob.UserID) || first.RoomID != string(room.RoomID) || first.EventID != string(spam.EventID) ||
			first.Reason != "勧誘です" || first.TS != wednesdayMorning.UnixMilli() {
			t.Errorf("event report: %+v", first)
		}
		if content, _ := first.Event["content"].(map[string]any); content["body"] != "儲かる副業のご案内" || first.Event["sender"] != string(alice.UserID) {
			t.Errorf("reported event as stored: %v", first.Event)
		}
		if second := list.Reports[1]; second.EventID != "" || second.Event != nil || second.Reason != "" {
			t.Errorf("room report: %+v", second)
		}
		var page struct {
			Reports []adminReport `json:"reports"`
		}
		c.admin("GET", "/reports?room_id="+url.QueryEscape(string(room.RoomID))+"&after="+itoa(first.ID)+"&limit=1", nil, &page, 200)
		if len(page.Reports) != 1 || page.Reports[0].Reporter != string(bob.UserID) || page.Reports[0].EventID != "" {
			t.Errorf("filtered reports: %+v", page.Reports)
		}
		for _, q := range []string{"?limit=0", "?limit=x", "?after=-1"} {
			if me := c.admin("GET", "/reports"+q, nil, nil, 400); me.Code != "M_INVALID_PARAM" {
				t.Errorf("reports%s: %+v", q, me)
			}
		}
		if code, me := do(t, http.DefaultClient, "GET", c.base()+"/_machi/admin/v1/reports", bob.AccessToken, nil, nil); code != 403 {
			t.Errorf("a non-admin read the reports: %d %+v", code, me)
		}
		var audit struct {
			Entries []struct {
				Actor  string         `json:"actor"`
				Action string         `json:"action"`
				Target string         `json:"target"`
				Detail map[string]any `json:"detail"`
			} `json:"entries"`
		}
		c.admin("GET", "/audit?action=report.event", nil, &audit, 200)
		if len(audit.Entries) != 1 || audit.Entries[0].Actor != string(bob.UserID) || audit.Entries[0].Target != string(room.RoomID) ||
			audit.Entries[0].Detail["event_id"] != string(spam.EventID) {
			t.Errorf("audit of the event report: %+v", audit.Entries)
		}
		c.admin("GET", "/audit?action=report.room", nil, &audit, 200)
		if len(audit.Entries) != 2 {
			t.Errorf("audit of the room reports: %+v", audit.Entries)
		}
	})
}

// TestReportsCLI: machi admin reports lists what users reported.
func TestReportsCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs machi")
	}
	bin := testrig.MachiBinary(t)
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		cfgPath, addr := procConfig(t, engine, "server_name: city.example\nregistration: {bcrypt_cost: 4}\n")
		startProc(t, bin, cfgPath, addr)
		admin := func(stdin string, args ...string) string {
			t.Helper()
			cmd := exec.Command(bin, append([]string{"admin"}, args...)...)
			cmd.Stdin = strings.NewReader(stdin)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("machi admin %v: %v\n%s", args, err, out)
			}
			return string(out)
		}
		admin("password-sato\n", "create-user", "-config", cfgPath, "sato")
		base := "http://" + addr + "/_matrix/client/v3"
		var login struct {
			Token string `json:"access_token"`
		}
		if code, err := call("POST", base+"/login", "", map[string]any{"type": "m.login.password",
			"identifier": map[string]string{"type": "m.id.user", "user": "sato"}, "password": "password-sato"}, &login); err != nil || code != 200 {
			t.Fatalf("login: %d %v", code, err)
		}
		var room struct {
			RoomID string `json:"room_id"`
		}
		if code, err := call("POST", base+"/createRoom", login.Token, map[string]any{"name": "情報政策課"}, &room); err != nil || code != 200 {
			t.Fatalf("createRoom: %d %v", code, err)
		}
		if code, err := call("POST", base+"/rooms/"+url.PathEscape(room.RoomID)+"/report", login.Token, map[string]any{"reason": "名称が不適切"}, nil); err != nil || code != 200 {
			t.Fatalf("report: %d %v", code, err)
		}
		out := admin("", "reports", "-config", cfgPath)
		if !strings.Contains(out, "@sato:city.example") || !strings.Contains(out, room.RoomID) || !strings.Contains(out, "名称が不適切") || !strings.Contains(out, "(room)") {
			t.Errorf("machi admin reports:\n%s", out)
		}
		if out := admin("", "reports", "-config", cfgPath, "-room", "!other:city.example"); strings.Contains(out, room.RoomID) {
			t.Errorf("machi admin reports -room filtered nothing:\n%s", out)
		}
	})
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
