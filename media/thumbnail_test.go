package media

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/machi-chat/machi/internal/testrig"
)

func TestPlanFor(t *testing.T) {
	for _, tc := range []struct {
		name        string
		W, H, w, h  int
		crop        bool
		ow, oh      int
		src         image.Rectangle
		original    bool
		cacheMethod string
	}{
		{"scale exact", 4000, 3000, 800, 600, false, 800, 600, image.Rect(0, 0, 4000, 3000), false, "scale"},
		{"scale covers the request", 4000, 3000, 320, 320, false, 427, 320, image.Rect(0, 0, 4000, 3000), false, "scale"},
		{"scale snaps up", 4000, 3000, 100, 70, false, 128, 96, image.Rect(0, 0, 4000, 3000), false, "scale"},
		{"scale never upscales", 300, 200, 800, 600, false, 300, 200, image.Rect(0, 0, 300, 200), true, "scale"},
		{"scale one side short", 1000, 100, 320, 240, false, 1000, 100, image.Rect(0, 0, 1000, 100), true, "scale"},
		{"crop square of landscape", 4000, 3000, 96, 96, true, 96, 96, image.Rect(500, 0, 3500, 3000), false, "crop"},
		{"crop portrait", 3000, 4000, 32, 32, true, 32, 32, image.Rect(0, 500, 3000, 3500), false, "crop"},
		{"crop same aspect is a scale", 4000, 3000, 640, 480, true, 640, 480, image.Rect(0, 0, 4000, 3000), false, "scale"},
		{"crop never upscales", 100, 50, 96, 96, true, 96, 50, image.Rect(2, 0, 98, 50), false, "crop"},
		{"crop of a tiny image", 20, 20, 96, 96, true, 20, 20, image.Rect(0, 0, 20, 20), true, "scale"},
		{"huge request", 640, 480, 1 << 30, 1 << 30, true, 640, 480, image.Rect(0, 0, 640, 480), true, "scale"},
	} {
		p := planFor(tc.W, tc.H, tc.w, tc.h, tc.crop)
		if p.w != tc.ow || p.h != tc.oh || p.src != tc.src || p.original != tc.original || p.method() != tc.cacheMethod {
			t.Errorf("%s: plan %dx%d src %v original %v method %s; want %dx%d src %v original %v method %s",
				tc.name, p.w, p.h, p.src, p.original, p.method(), tc.ow, tc.oh, tc.src, tc.original, tc.cacheMethod)
		}
		// The spec's floor: at least the request wherever the original has the pixels.
		if p.w < min(tc.w, tc.W) && p.h < min(tc.h, tc.H) {
			t.Errorf("%s: %dx%d is smaller than the request %dx%d", tc.name, p.w, p.h, tc.w, tc.h)
		}
	}
}

// pattern is an image with detail everywhere (a smooth gradient with a
// grid), so scaling does real work; alpha fades from opaque to clear
// across the width when withAlpha.
func pattern(w, h int, withAlpha bool) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			c := color.NRGBA{uint8(x * 255 / w), uint8(y * 255 / h), uint8((x ^ y) & 0xff), 255}
			if (x/7+y/7)%2 == 0 {
				c.B = 255 - c.B
			}
			if withAlpha {
				c.A = uint8(255 - x*255/w)
			}
			img.SetNRGBA(x, y, c)
		}
	}
	return img
}

func encodeJPEG(t testing.TB, img image.Image) []byte {
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func encodePNG(t testing.TB, img image.Image) []byte {
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// animatedGIF is a two-frame GIF whose first frame is red with a
// transparent top row, the second blue.
func animatedGIF(t testing.TB, w, h int) []byte {
	pal := color.Palette{color.RGBA{}, color.RGBA{255, 0, 0, 255}, color.RGBA{0, 0, 255, 255}}
	var frames []*image.Paletted
	for _, idx := range []uint8{1, 2} {
		f := image.NewPaletted(image.Rect(0, 0, w, h), pal)
		for i := range f.Pix {
			f.Pix[i] = idx
		}
		frames = append(frames, f)
	}
	for x := 0; x < w; x++ {
		frames[0].SetColorIndex(x, 0, 0)
	}
	var b bytes.Buffer
	if err := gif.EncodeAll(&b, &gif.GIF{Image: frames, Delay: []int{10, 10}}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// pngChunk is one PNG chunk with its CRC.
func pngChunk(typ string, data []byte) []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.BigEndian, uint32(len(data)))
	b.WriteString(typ)
	b.Write(data)
	binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(append([]byte(typ), data...)))
	return b.Bytes()
}

// bombPNG declares a w×h RGBA picture in a file of a few dozen bytes.
func bombPNG(w, h uint32) []byte {
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 6
	out := append([]byte{}, pngMagic...)
	out = append(out, pngChunk("IHDR", ihdr)...)
	out = append(out, pngChunk("IDAT", []byte{0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01})...)
	return append(out, pngChunk("IEND", nil)...)
}

// withAcTL turns a PNG into an APNG header-wise: acTL after IHDR.
func withAcTL(p []byte) []byte {
	ihdrEnd := 8 + 8 + 13 + 4
	out := append([]byte{}, p[:ihdrEnd]...)
	out = append(out, pngChunk("acTL", []byte{0, 0, 0, 2, 0, 0, 0, 0})...)
	return append(out, p[ihdrEnd:]...)
}

func readFixture(t testing.TB, name string) []byte {
	// testdata/*.webp are test images from golang.org/x/image (BSD licence).
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type decoded struct {
	ctype string
	img   image.Image
	raw   []byte
}

func fetchThumb(t *testing.T, repo *Repo, id string, req ThumbnailRequest) (Thumbnail, decoded) {
	t.Helper()
	th, err := repo.Thumbnail(context.Background(), id, req)
	if err != nil {
		t.Fatalf("Thumbnail(%s, %+v): %v", id, req, err)
	}
	defer th.Content.Close()
	raw, err := io.ReadAll(th.Content)
	if err != nil {
		t.Fatal(err)
	}
	img, format, err := image.Decode(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("thumbnail of %+v does not decode: %v", req, err)
	}
	if "image/"+format != th.ContentType {
		t.Fatalf("thumbnail says %s but is %s", th.ContentType, format)
	}
	return th, decoded{th.ContentType, img, raw}
}

func TestThumbnail(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		dir := t.TempDir()
		repo, err := New(dir, testrig.OpenStore(t, engine), 32<<20)
		if err != nil {
			t.Fatal(err)
		}
		put := func(data []byte, ctype string) string {
			t.Helper()
			item, err := repo.Store(ctx, Upload{Body: bytes.NewReader(data), ContentType: ctype, Uploader: "@a:x"})
			if err != nil {
				t.Fatal(err)
			}
			return item.MediaID
		}
		jpg := encodeJPEG(t, pattern(1200, 900, false))
		gifData := animatedGIF(t, 400, 300)
		opaquePNG := encodePNG(t, pattern(640, 480, false))
		tinyPNG := encodePNG(t, pattern(20, 10, true))
		ids := map[string]string{
			"jpeg":       put(jpg, "image/jpeg"),
			"png":        put(opaquePNG, "image/png"),
			"png-alpha":  put(encodePNG(t, pattern(640, 480, true)), "image/png"),
			"gif":        put(gifData, "image/gif"),
			"webp":       put(readFixture(t, "video-001.lossy.webp"), "image/webp"),
			"webp-alpha": put(readFixture(t, "yellow_rose.lossy-with-alpha.webp"), "image/webp"),
			"tiny":       put(tinyPNG, "image/png"),
			"apng":       put(withAcTL(tinyPNG), "image/png"),
		}

		for _, tc := range []struct {
			media  string
			req    ThumbnailRequest
			ctype  string
			w, h   int
			sameAs []byte // the original is served as it is
		}{
			{"jpeg", ThumbnailRequest{Width: 320, Height: 240}, "image/jpeg", 320, 240, nil},
			{"jpeg", ThumbnailRequest{Width: 96, Height: 96, Crop: true}, "image/jpeg", 96, 96, nil},
			{"jpeg", ThumbnailRequest{Width: 100, Height: 100}, "image/jpeg", 171, 128, nil},
			{"jpeg", ThumbnailRequest{Width: 2000, Height: 2000}, "image/jpeg", 1200, 900, jpg},
			{"png", ThumbnailRequest{Width: 32, Height: 32, Crop: true}, "image/jpeg", 32, 32, nil},
			{"png", ThumbnailRequest{Width: 800, Height: 600}, "image/png", 640, 480, opaquePNG},
			{"png-alpha", ThumbnailRequest{Width: 320, Height: 240}, "image/png", 320, 240, nil},
			{"png-alpha", ThumbnailRequest{Width: 96, Height: 96, Crop: true}, "image/png", 96, 96, nil},
			{"gif", ThumbnailRequest{Width: 96, Height: 96, Crop: true}, "image/png", 96, 96, nil},
			{"gif", ThumbnailRequest{Width: 96, Height: 96, Crop: true, Animated: true}, "image/png", 96, 96, nil},
			{"gif", ThumbnailRequest{Width: 800, Height: 600}, "image/png", 400, 300, nil},
			{"gif", ThumbnailRequest{Width: 800, Height: 600, Animated: true}, "image/gif", 400, 300, gifData},
			{"webp", ThumbnailRequest{Width: 32, Height: 32, Crop: true}, "image/jpeg", 32, 32, nil},
			{"webp-alpha", ThumbnailRequest{Width: 320, Height: 240}, "image/png", 320, 241, nil},
			{"tiny", ThumbnailRequest{Width: 32, Height: 32}, "image/png", 20, 10, tinyPNG},
			{"apng", ThumbnailRequest{Width: 32, Height: 32}, "image/png", 20, 10, nil},
			{"apng", ThumbnailRequest{Width: 32, Height: 32, Animated: true}, "image/png", 20, 10, withAcTL(tinyPNG)},
		} {
			_, got := fetchThumb(t, repo, ids[tc.media], tc.req)
			b := got.img.Bounds()
			if got.ctype != tc.ctype || b.Dx() != tc.w || b.Dy() != tc.h {
				t.Errorf("%s %+v: %s %dx%d, want %s %dx%d", tc.media, tc.req, got.ctype, b.Dx(), b.Dy(), tc.ctype, tc.w, tc.h)
			}
			if tc.sameAs != nil && !bytes.Equal(got.raw, tc.sameAs) {
				t.Errorf("%s %+v: not the original", tc.media, tc.req)
			}
			if tc.sameAs == nil && tc.media == "apng" && bytes.Contains(got.raw, []byte("acTL")) {
				t.Errorf("%s %+v: animation served though not asked for", tc.media, tc.req)
			}
		}

		// Alpha survives: the right edge of the fading PNG is transparent,
		// the left opaque; the GIF's transparent top row stays clear.
		_, alpha := fetchThumb(t, repo, ids["png-alpha"], ThumbnailRequest{Width: 320, Height: 240})
		if _, _, _, a := alpha.img.At(318, 120).RGBA(); a > 0x0800 {
			t.Errorf("right edge alpha %#x, want nearly clear", a)
		}
		if _, _, _, a := alpha.img.At(1, 120).RGBA(); a < 0xf000 {
			t.Errorf("left edge alpha %#x, want nearly opaque", a)
		}
		_, frame := fetchThumb(t, repo, ids["gif"], ThumbnailRequest{Width: 800, Height: 600})
		if _, _, _, a := frame.img.At(5, 0).RGBA(); a != 0 {
			t.Errorf("gif transparent row alpha %#x", a)
		}
		if r, g, b, _ := frame.img.At(5, 5).RGBA(); r != 0xffff || g != 0 || b != 0 {
			t.Errorf("gif thumbnail is not the first (red) frame: %x %x %x", r, g, b)
		}
		// The scaled JPEG looks like its original: the gradient's corners.
		_, photo := fetchThumb(t, repo, ids["jpeg"], ThumbnailRequest{Width: 320, Height: 240})
		if r, g, _, _ := photo.img.At(316, 236).RGBA(); r < 0xe000 || g < 0xe000 {
			t.Errorf("bottom-right corner %x %x, want bright red and green", r, g)
		}

		// A second request is served from the cache: the cached file is
		// replaced behind the repository's back, and that is what comes out.
		first, _ := fetchThumb(t, repo, ids["jpeg"], ThumbnailRequest{Width: 640, Height: 480})
		cached := filepath.Join(dir, "thumbs", ids["jpeg"][:2], ids["jpeg"][2:4], ids["jpeg"], "640x480-scale")
		marker := encodeJPEG(t, image.NewGray(image.Rect(0, 0, 7, 5)))
		if err := os.WriteFile(cached, marker, 0o640); err != nil {
			t.Fatal(err)
		}
		second, again := fetchThumb(t, repo, ids["jpeg"], ThumbnailRequest{Width: 600, Height: 470})
		if !bytes.Equal(again.raw, marker) || second.ETag != first.ETag {
			t.Fatalf("second request not served from the cache (etag %s vs %s)", second.ETag, first.ETag)
		}
		// A corrupt cache file is dropped and made again.
		if err := os.WriteFile(cached, []byte("garbage!"), 0o640); err != nil {
			t.Fatal(err)
		}
		if _, remade := fetchThumb(t, repo, ids["jpeg"], ThumbnailRequest{Width: 640, Height: 480}); remade.img.Bounds().Dx() != 640 {
			t.Fatalf("remade thumbnail is %v", remade.img.Bounds())
		}

		// Many viewers at once share one generation and all get it.
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				th, err := repo.Thumbnail(ctx, ids["webp-alpha"], ThumbnailRequest{Width: 96, Height: 96, Crop: true})
				if err == nil {
					th.Content.Close()
				}
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("concurrent thumbnail: %v", err)
			}
		}

		// Refusals.
		var tooBig *ErrImageTooLarge
		if _, err := repo.Thumbnail(ctx, put(bombPNG(100_000, 100_000), "image/png"), ThumbnailRequest{Width: 32, Height: 32}); !errors.As(err, &tooBig) || tooBig.Width != 100_000 {
			t.Errorf("decompression bomb: %v", err)
		}
		repo.thumbs.maxPixels = 1000 // the limit is on the declared size, whatever the file's
		if _, err := repo.Thumbnail(ctx, ids["jpeg"], ThumbnailRequest{Width: 33, Height: 33}); !errors.As(err, &tooBig) {
			t.Errorf("over the pixel limit: %v", err)
		}
		repo.thumbs.maxPixels = defaultMaxThumbPixels
		truncated := encodePNG(t, pattern(300, 300, false))
		truncated = truncated[:len(truncated)/2]
		for name, data := range map[string][]byte{
			"text":      []byte("会議は15時からです"),
			"pdf":       []byte("%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"),
			"truncated": truncated,
			"svg":       []byte(`<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>`),
		} {
			if _, err := repo.Thumbnail(ctx, put(data, ""), ThumbnailRequest{Width: 32, Height: 32}); !errors.Is(err, ErrCannotThumbnail) {
				t.Errorf("%s: %v, want ErrCannotThumbnail", name, err)
			}
		}
		// Every slot taken for longer than a request waits: busy, and the
		// next request, once a slot is free, makes the thumbnail.
		for range cap(repo.thumbs.slots) {
			repo.thumbs.slots <- struct{}{}
		}
		repo.thumbs.slotWait = 50 * time.Millisecond
		if _, err := repo.Thumbnail(ctx, ids["jpeg"], ThumbnailRequest{Width: 48, Height: 48, Crop: true}); !errors.Is(err, ErrBusy) {
			t.Errorf("all slots taken: %v, want ErrBusy", err)
		}
		for range cap(repo.thumbs.slots) {
			<-repo.thumbs.slots
		}
		if _, got := fetchThumb(t, repo, ids["jpeg"], ThumbnailRequest{Width: 48, Height: 48, Crop: true}); got.img.Bounds().Dx() != 48 {
			t.Errorf("after busy: %v", got.img.Bounds())
		}
		if _, err := repo.Thumbnail(ctx, "AAAAAAAAAAAAAAAAAAAAAAAA", ThumbnailRequest{Width: 32, Height: 32}); !errors.Is(err, ErrNotFound) {
			t.Errorf("unknown media: %v", err)
		}
		if left, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(left) != 0 {
			t.Errorf("temp files left behind: %v", left)
		}
	})
}

func TestAnimated(t *testing.T) {
	still := encodePNG(t, pattern(4, 4, false))
	oneFrame := func() []byte {
		var b bytes.Buffer
		gif.Encode(&b, image.NewPaletted(image.Rect(0, 0, 4, 4), color.Palette{color.Black, color.White}), nil)
		return b.Bytes()
	}()
	vp8x := func(flags byte) []byte {
		b := append([]byte("RIFF\x00\x00\x00\x00WEBPVP8X\x0a\x00\x00\x00"), flags, 0, 0, 0)
		return append(b, make([]byte, 6)...)
	}
	for _, tc := range []struct {
		name, format string
		data         []byte
		want         bool
	}{
		{"png", "png", still, false},
		{"apng", "png", withAcTL(still), true},
		{"gif one frame", "gif", oneFrame, false},
		{"gif two frames", "gif", animatedGIF(t, 4, 4), true},
		{"webp simple", "webp", readFixture(t, "video-001.lossy.webp"), false},
		{"webp alpha only", "webp", vp8x(0x10), false},
		{"webp animated", "webp", vp8x(0x12), true},
		{"jpeg", "jpeg", encodeJPEG(t, pattern(4, 4, false)), false},
	} {
		got, err := animated(bytes.NewReader(tc.data), tc.format)
		if err != nil || got != tc.want {
			t.Errorf("%s: animated = %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
	if _, err := animated(bytes.NewReader([]byte("GIF89a\x01")), "gif"); err == nil {
		t.Error("truncated gif: no error")
	}
}

// BenchmarkThumbnail measures making one thumbnail from the file's bytes:
// decode, shrink, encode (what the first viewer of an image waits for).
func BenchmarkThumbnail(b *testing.B) {
	photo := encodeJPEG(b, pattern(4000, 3000, false))
	shot := encodePNG(b, pattern(1920, 1080, true))
	for _, bc := range []struct {
		name string
		data []byte
		w, h int
		crop bool
	}{
		{"jpeg-4000x3000/scale-800x600", photo, 800, 600, false},
		{"jpeg-4000x3000/crop-96x96", photo, 96, 96, true},
		{"png-alpha-1920x1080/scale-320x240", shot, 320, 240, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cfg, format, err := image.DecodeConfig(bytes.NewReader(bc.data))
			if err != nil {
				b.Fatal(err)
			}
			p := planFor(cfg.Width, cfg.Height, bc.w, bc.h, bc.crop)
			b.SetBytes(int64(len(bc.data)))
			for b.Loop() {
				img, err := decodeFirst(bytes.NewReader(bc.data), format, cfg)
				if err != nil {
					b.Fatal(err)
				}
				out := render(img, p.src, p.w, p.h)
				if _, err := encode(io.Discard, out, !opaque(img, p.src)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkThumbnailCached measures a repeat request: the metadata row,
// the original's header, and the cached file opened.
func BenchmarkThumbnailCached(b *testing.B) {
	ctx := context.Background()
	repo, err := New(b.TempDir(), testrig.OpenStore(b, "sqlite"), 32<<20)
	if err != nil {
		b.Fatal(err)
	}
	item, err := repo.Store(ctx, Upload{Body: bytes.NewReader(encodeJPEG(b, pattern(1600, 1200, false))), ContentType: "image/jpeg"})
	if err != nil {
		b.Fatal(err)
	}
	req := ThumbnailRequest{Width: 320, Height: 240}
	for b.Loop() {
		th, err := repo.Thumbnail(ctx, item.MediaID, req)
		if err != nil {
			b.Fatal(err)
		}
		th.Content.Close()
	}
}
