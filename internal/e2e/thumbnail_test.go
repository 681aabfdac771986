package e2e

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"net/http"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/machi-chat/machi/internal/config"
	"github.com/machi-chat/machi/internal/testrig"
)

// photo is a w×h image with detail everywhere; alpha fades to clear
// across the width when withAlpha.
func photo(w, h int, withAlpha bool) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			c := color.NRGBA{uint8(x * 255 / w), uint8(y * 255 / h), uint8((x ^ y) & 0xff), 255}
			if withAlpha {
				c.A = uint8(255 - x*255/w)
			}
			img.SetNRGBA(x, y, c)
		}
	}
	return img
}

func pngChunk(typ string, data []byte) []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.BigEndian, uint32(len(data)))
	b.WriteString(typ)
	b.Write(data)
	binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(append([]byte(typ), data...)))
	return b.Bytes()
}

// TestThumbnails uploads images with mautrix-go and fetches thumbnails on
// the authenticated API (mautrix-go's DownloadThumbnail) and on the legacy
// one (plain HTTP, no token), decoding each to check its size and type;
// then the error paths, and URL previews, which are refused.
func TestThumbnails(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine, func(c *config.Config) {
			c.Policy.Uploads.OfficeAllowedTypes = nil // a text file is uploaded to be refused a thumbnail
		})
		alice, bob := register(t, srv, "alice"), register(t, srv, "bob")
		ctx := ctxT(t)
		upload := func(data []byte, ctype string) id.ContentURI {
			t.Helper()
			up, err := alice.UploadBytes(ctx, data, ctype)
			if err != nil {
				t.Fatal(err)
			}
			return up.ContentURI
		}
		var jpg, alphaPNG, anim bytes.Buffer
		jpeg.Encode(&jpg, photo(1200, 900, false), &jpeg.Options{Quality: 90})
		png.Encode(&alphaPNG, photo(640, 480, true))
		pal := color.Palette{color.RGBA{255, 0, 0, 255}, color.RGBA{0, 0, 255, 255}}
		f1, f2 := image.NewPaletted(image.Rect(0, 0, 40, 30), pal), image.NewPaletted(image.Rect(0, 0, 40, 30), pal)
		for i := range f2.Pix {
			f2.Pix[i] = 1
		}
		gif.EncodeAll(&anim, &gif.GIF{Image: []*image.Paletted{f1, f2}, Delay: []int{10, 10}})
		photoURI := upload(jpg.Bytes(), "image/jpeg")
		alphaURI := upload(alphaPNG.Bytes(), "image/png")
		gifURI := upload(anim.Bytes(), "image/gif")
		textURI := upload([]byte("議事録: 15時から"), "text/plain")
		bomb := append([]byte("\x89PNG\r\n\x1a\n"), pngChunk("IHDR", []byte{0, 1, 0x86, 0xa0, 0, 1, 0x86, 0xa0, 8, 6, 0, 0, 0})...)
		bomb = append(append(bomb, pngChunk("IDAT", []byte{0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01})...), pngChunk("IEND", nil)...)
		bombURI := upload(bomb, "image/png")

		decode := func(what string, resp *http.Response) (image.Image, string, []byte) {
			t.Helper()
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s: %d %s", what, resp.StatusCode, body)
			}
			img, format, err := image.Decode(bytes.NewReader(body))
			if err != nil {
				t.Fatalf("%s: the thumbnail does not decode: %v", what, err)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "image/"+format {
				t.Fatalf("%s: Content-Type %q for a %s", what, ct, format)
			}
			return img, format, body
		}

		// Authenticated, through mautrix-go, as another member.
		for _, tc := range []struct {
			uri          id.ContentURI
			w, h         int
			method       string
			format       string
			wantW, wantH int
		}{
			{photoURI, 320, 240, "scale", "jpeg", 320, 240},
			{photoURI, 800, 600, "", "jpeg", 800, 600},
			{photoURI, 96, 96, "crop", "jpeg", 96, 96},
			{photoURI, 320, 320, "scale", "jpeg", 427, 320}, // covers the request, keeps the aspect
			{alphaURI, 320, 240, "scale", "png", 320, 240},  // alpha matters: PNG
			{alphaURI, 32, 32, "crop", "png", 32, 32},
		} {
			what := fmt.Sprintf("%s %dx%d %s", tc.uri.FileID[:6], tc.w, tc.h, tc.method)
			resp, err := bob.DownloadThumbnail(ctx, tc.uri, tc.h, tc.w, mautrix.DownloadThumbnailExtra{Method: tc.method})
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			img, format, _ := decode(what, resp)
			if b := img.Bounds(); format != tc.format || b.Dx() != tc.wantW || b.Dy() != tc.wantH {
				t.Errorf("%s: %s %dx%d, want %s %dx%d", what, format, b.Dx(), b.Dy(), tc.format, tc.wantW, tc.wantH)
			}
		}

		// A small animated GIF: itself when animation is asked for, else a
		// still of its first frame at its own size.
		resp, err := bob.DownloadThumbnail(ctx, gifURI, 96, 96, mautrix.DownloadThumbnailExtra{Animated: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, format, body := decode("animated gif", resp); format != "gif" || !bytes.Equal(body, anim.Bytes()) {
			t.Errorf("animated=true: got a %s, want the original GIF", format)
		}
		resp, err = bob.DownloadThumbnail(ctx, gifURI, 96, 96)
		if err != nil {
			t.Fatal(err)
		}
		if img, format, _ := decode("static gif", resp); format == "gif" || img.Bounds().Dx() != 40 {
			t.Errorf("animation not asked for: got a %s %v", format, img.Bounds())
		}

		// Legacy paths, no token: the same thumbnail with download's headers,
		// then a conditional request answered from the ETag.
		base := baseURL(srv)
		var etag string
		for _, prefix := range []string{"/_matrix/media/v3", "/_matrix/media/r0"} {
			u := fmt.Sprintf("%s%s/thumbnail/%s/%s?width=96&height=96&method=crop", base, prefix, photoURI.Homeserver, photoURI.FileID)
			resp := get(t, u, "", nil)
			h := resp.Header
			img, _, _ := decode(prefix, resp)
			if b := img.Bounds(); b.Dx() != 96 || b.Dy() != 96 {
				t.Errorf("%s: %v", prefix, b)
			}
			for k, want := range map[string]string{
				"Content-Type":           "image/jpeg",
				"Content-Disposition":    "inline; filename=thumbnail.jpeg",
				"X-Content-Type-Options": "nosniff",
				"Cache-Control":          "private, max-age=31536000, immutable",
			} {
				if g := h.Get(k); g != want {
					t.Errorf("%s: %s = %q, want %q", prefix, k, g, want)
				}
			}
			if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "sandbox") {
				t.Errorf("%s: Content-Security-Policy %q lacks sandbox", prefix, csp)
			}
			if etag != "" && h.Get("ETag") != etag {
				t.Errorf("%s: ETag %q, the other path's %q", prefix, h.Get("ETag"), etag)
			}
			etag = h.Get("ETag")
			resp = get(t, u, "", map[string]string{"If-None-Match": etag})
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotModified {
				t.Errorf("%s: conditional request: %d, want 304", prefix, resp.StatusCode)
			}
		}

		// Error paths.
		thumb := func(prefix string, uri id.ContentURI, query string) string {
			return fmt.Sprintf("%s%s/thumbnail/%s/%s?%s", base, prefix, uri.Homeserver, uri.FileID, query)
		}
		authed, legacy := "/_matrix/client/v1/media", "/_matrix/media/v3"
		remote := id.ContentURI{Homeserver: "elsewhere.example", FileID: photoURI.FileID}
		unknown := id.ContentURI{Homeserver: photoURI.Homeserver, FileID: "AAAAAAAAAAAAAAAAAAAAAAAA"}
		cases := []struct {
			name, url, token string
			status           int
			errcode          string
		}{
			{"no token", thumb(authed, photoURI, "width=32&height=32"), "", 401, "M_MISSING_TOKEN"},
			{"missing width", thumb(authed, photoURI, "height=32"), bob.AccessToken, 400, "M_MISSING_PARAM"},
			{"missing height", thumb(legacy, photoURI, "width=32"), "", 400, "M_MISSING_PARAM"},
			{"zero width", thumb(authed, photoURI, "width=0&height=32"), bob.AccessToken, 400, "M_INVALID_PARAM"},
			{"negative height", thumb(legacy, photoURI, "width=32&height=-5"), "", 400, "M_INVALID_PARAM"},
			{"non-numeric", thumb(authed, photoURI, "width=abc&height=32"), bob.AccessToken, 400, "M_INVALID_PARAM"},
			{"non-integer", thumb(legacy, photoURI, "width=32.5&height=32"), "", 400, "M_INVALID_PARAM"},
			{"bad method", thumb(authed, photoURI, "width=32&height=32&method=zoom"), bob.AccessToken, 400, "M_INVALID_PARAM"},
			{"bad animated", thumb(authed, photoURI, "width=32&height=32&animated=yes"), bob.AccessToken, 400, "M_INVALID_PARAM"},
			{"bad timeout", thumb(legacy, photoURI, "width=32&height=32&timeout_ms=soon"), "", 400, "M_INVALID_PARAM"},
			{"unknown media", thumb(authed, unknown, "width=32&height=32"), bob.AccessToken, 404, "M_NOT_FOUND"},
			{"remote media", thumb(authed, remote, "width=32&height=32"), bob.AccessToken, 404, "M_NOT_FOUND"},
			{"remote media legacy", thumb(legacy, remote, "width=32&height=32&allow_remote=true"), "", 404, "M_NOT_FOUND"},
			{"not an image", thumb(authed, textURI, "width=32&height=32"), bob.AccessToken, 400, "M_UNKNOWN"},
			{"decompression bomb", thumb(legacy, bombURI, "width=32&height=32"), "", 413, "M_TOO_LARGE"},
			{"preview without token", base + authed + "/preview_url?url=https://example.org/", "", 401, "M_MISSING_TOKEN"},
			{"preview without url", base + authed + "/preview_url", bob.AccessToken, 400, "M_MISSING_PARAM"},
			{"preview legacy", base + legacy + "/preview_url?url=https://example.org/", bob.AccessToken, 403, "M_FORBIDDEN"},
			{"preview r0", base + "/_matrix/media/r0/preview_url?url=https://example.org/", bob.AccessToken, 403, "M_FORBIDDEN"},
		}
		for _, tc := range cases {
			resp := get(t, tc.url, tc.token, nil)
			var e map[string]any
			err := json.NewDecoder(resp.Body).Decode(&e)
			resp.Body.Close()
			if err != nil || resp.StatusCode != tc.status || e["errcode"] != tc.errcode || e["error"] == "" {
				t.Errorf("%s: %d %v (%v), want %d %s", tc.name, resp.StatusCode, e, err, tc.status, tc.errcode)
			}
			if tc.status == 403 && (e["org.machi.rule"] != "url-preview-disabled" || e["org.machi.message_ja"] == nil) {
				t.Errorf("%s: refusal without rule and Japanese message: %v", tc.name, e)
			}
		}

		// mautrix-go sees the refusal as M_FORBIDDEN; the media config is
		// unchanged.
		if _, err := bob.GetURLPreview(ctx, "https://www.city.example.lg.jp/"); !errors.Is(err, mautrix.MForbidden) {
			t.Errorf("GetURLPreview = %v, want M_FORBIDDEN", err)
		}
		if cfg, err := bob.GetMediaConfig(ctx); err != nil || cfg.UploadSize <= 0 {
			t.Errorf("media config = %+v, %v", cfg, err)
		}
	})
}
