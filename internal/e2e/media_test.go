package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/machi-chat/machi/internal/config"
	"github.com/machi-chat/machi/internal/testrig"
)

// pngBytes is a valid 1×1 PNG.
var pngBytes = []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x35\x81\x84\x00\x00\x00\x00IEND\xaeB`\x82")

// TestMedia uploads with mautrix-go, shares the file in a room and
// downloads it as the other member, on both media APIs, then checks the
// headers that keep browsers safe and the error paths.
func TestMedia(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine, func(c *config.Config) {
			c.Media.MaxUploadBytes = 64 << 10
			c.Policy.Uploads.OfficeAllowedTypes = nil // any type: the download's safety headers are under test
		})
		alice, bob := register(t, srv, "alice"), register(t, srv, "bob")
		ctx := ctxT(t)

		cfg, err := alice.GetMediaConfig(ctx)
		if err != nil || cfg.UploadSize != 64<<10 {
			t.Fatalf("media config = %+v, %v; want m.upload.size 65536", cfg, err)
		}
		up, err := alice.UploadBytesWithName(ctx, pngBytes, "image/png", "会議写真.png")
		if err != nil {
			t.Fatal(err)
		}
		if up.ContentURI.Homeserver != "localhost" {
			t.Fatalf("content uri %s is not on this server", up.ContentURI)
		}
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{bob.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendMessageEvent(ctx, room.RoomID, event.EventMessage, &event.MessageEventContent{
			MsgType: event.MsgImage, Body: "会議写真.png", URL: up.ContentURI.CUString(),
		}); err != nil {
			t.Fatal(err)
		}
		var got id.ContentURIString
		waitFor(t, bob, "", func(r *mautrix.RespSync) bool {
			for _, ev := range r.Rooms.Join[room.RoomID].Timeline.Events {
				if u, _ := ev.Content.Raw["url"].(string); u != "" {
					got = id.ContentURIString(u)
					return true
				}
			}
			return false
		})
		mxc, err := got.Parse()
		if err != nil {
			t.Fatal(err)
		}
		data, err := bob.DownloadBytes(ctx, mxc)
		if err != nil || !bytes.Equal(data, pngBytes) {
			t.Fatalf("authenticated download: %d bytes, %v", len(data), err)
		}

		base := baseURL(srv)
		legacy := fmt.Sprintf("%s/_matrix/media/v3/download/%s/%s", base, mxc.Homeserver, mxc.FileID)
		authed := fmt.Sprintf("%s/_matrix/client/v1/media/download/%s/%s", base, mxc.Homeserver, mxc.FileID)

		// Legacy download works without a token and carries the safety headers.
		resp := get(t, legacy, "", nil)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Equal(body, pngBytes) {
			t.Fatalf("legacy download: %d, %d bytes", resp.StatusCode, len(body))
		}
		for k, want := range map[string]string{
			"Content-Type":           "image/png",
			"Content-Disposition":    "inline; filename*=utf-8''%E4%BC%9A%E8%AD%B0%E5%86%99%E7%9C%9F.png",
			"X-Content-Type-Options": "nosniff",
		} {
			if g := resp.Header.Get(k); g != want {
				t.Errorf("%s = %q, want %q", k, g, want)
			}
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "sandbox") {
			t.Errorf("Content-Security-Policy %q lacks sandbox", csp)
		}

		// A file name in the path replaces the stored one.
		resp = get(t, legacy+"/renamed.png", "", nil)
		resp.Body.Close()
		if d := resp.Header.Get("Content-Disposition"); d != `inline; filename=renamed.png` {
			t.Errorf("disposition with path name = %q", d)
		}

		// Ranges are served.
		resp = get(t, authed, bob.AccessToken, map[string]string{"Range": "bytes=1-3"})
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusPartialContent || string(body) != "PNG" {
			t.Errorf("range: %d %q", resp.StatusCode, body)
		}

		// An HTML upload is never served inline.
		html, err := alice.UploadBytes(ctx, []byte("<script>alert(1)</script>"), "text/html")
		if err != nil {
			t.Fatal(err)
		}
		resp = get(t, fmt.Sprintf("%s/_matrix/media/v3/download/%s/%s", base, html.ContentURI.Homeserver, html.ContentURI.FileID), "", nil)
		resp.Body.Close()
		if d := resp.Header.Get("Content-Disposition"); d != "attachment" {
			t.Errorf("html disposition = %q, want attachment", d)
		}

		// Without a declared type the content is sniffed.
		req, _ := http.NewRequest(http.MethodPost, base+"/_matrix/media/v3/upload", bytes.NewReader(pngBytes))
		req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var sniffed struct {
			ContentURI id.ContentURIString `json:"content_uri"`
		}
		json.NewDecoder(resp.Body).Decode(&sniffed)
		resp.Body.Close()
		smxc, _ := sniffed.ContentURI.Parse()
		resp = get(t, fmt.Sprintf("%s/_matrix/media/v3/download/%s/%s", base, smxc.Homeserver, smxc.FileID), "", nil)
		resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); ct != "image/png" {
			t.Errorf("sniffed type = %q, want image/png", ct)
		}

		// Error paths.
		big := bytes.Repeat([]byte("x"), 64<<10+1)
		cases := []struct {
			name, method, url, token string
			body                     io.Reader
			chunked                  bool
			status                   int
			errcode                  string
		}{
			{"upload without token", "POST", base + "/_matrix/media/v3/upload", "", strings.NewReader("x"), false, 401, "M_MISSING_TOKEN"},
			{"upload bad token", "POST", base + "/_matrix/media/v3/upload", "nope", strings.NewReader("x"), false, 401, "M_UNKNOWN_TOKEN"},
			{"upload over limit", "POST", base + "/_matrix/media/v3/upload", alice.AccessToken, bytes.NewReader(big), false, 413, "M_TOO_LARGE"},
			{"chunked upload over limit", "POST", base + "/_matrix/media/v3/upload", alice.AccessToken, io.MultiReader(bytes.NewReader(big)), true, 413, "M_TOO_LARGE"},
			{"authed download without token", "GET", authed, "", nil, false, 401, "M_MISSING_TOKEN"},
			{"unknown media", "GET", base + "/_matrix/media/v3/download/" + mxc.Homeserver + "/AAAAAAAAAAAAAAAAAAAAAAAA", "", nil, false, 404, "M_NOT_FOUND"},
			{"malformed media id", "GET", base + "/_matrix/media/v3/download/" + mxc.Homeserver + "/..%2F..%2Fmachi.db", "", nil, false, 404, "M_NOT_FOUND"},
			{"remote media", "GET", base + "/_matrix/client/v1/media/download/elsewhere.example/AAAAAAAAAAAAAAAAAAAAAAAA", bob.AccessToken, nil, false, 404, "M_NOT_FOUND"},
			{"config without token", "GET", base + "/_matrix/client/v1/media/config", "", nil, false, 401, "M_MISSING_TOKEN"},
		}
		for _, tc := range cases {
			req, _ := http.NewRequest(tc.method, tc.url, tc.body)
			if tc.chunked {
				req.ContentLength = -1
			}
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			var e struct {
				Errcode string `json:"errcode"`
			}
			json.NewDecoder(resp.Body).Decode(&e)
			resp.Body.Close()
			if resp.StatusCode != tc.status || e.Errcode != tc.errcode {
				t.Errorf("%s: %d %s, want %d %s", tc.name, resp.StatusCode, e.Errcode, tc.status, tc.errcode)
			}
		}
	})
}

func get(t *testing.T, url, token string, headers map[string]string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}
