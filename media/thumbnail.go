package media

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	_ "image/gif" // decoders for image.DecodeConfig
	_ "image/jpeg"
	_ "image/png"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Thumbnails are made on demand and cached on disk, one file per media ID,
// output size and method, under thumbs/ in the media folder:
//
//	request ─ snap to the size ladder ─ plan (size.go)
//	   ├─ the original at its own size, and static (or animation wanted) → the original
//	   ├─ cached file → served
//	   └─ else: one generation per file at a time (others wait for it),
//	      at most GOMAXPROCS at once: decode → box-average → Catmull-Rom
//	      → JPEG, or PNG when alpha matters → temp file, fsync, rename
//
// Nothing is made at upload: clients ask for sizes that depend on the
// screen's pixel ratio, so a fixed set made in advance would often miss,
// and on a small server the encoding would compete with the send path for
// the same cores. The first viewer of an image pays one generation, which
// every member opening the room at the same moment shares.

// Thumbnailing limits, checked on the declared size before decoding.
const (
	defaultMaxThumbPixels = 50_000_000 // a 48-megapixel phone photo passes
	defaultMaxThumbDecode = 256 << 20  // bytes of decoded pixels
	thumbSlotWait         = 20 * time.Second
)

// thumbFormats are the decoders thumbnails are made from (image.Decode
// knows only these, but a registration elsewhere must not widen it).
var thumbFormats = map[string]bool{"jpeg": true, "png": true, "gif": true, "webp": true}

// ErrCannotThumbnail is returned for media that is not an image this
// repository can decode.
var ErrCannotThumbnail = errors.New("cannot generate a thumbnail for this media")

// ErrBusy is returned when every generation slot stayed taken too long.
var ErrBusy = errors.New("thumbnail generation is busy")

// ErrImageTooLarge is returned for an image whose declared size is past
// the thumbnailing limits (a decompression bomb, or simply too big).
type ErrImageTooLarge struct{ Width, Height int }

func (e *ErrImageTooLarge) Error() string {
	return fmt.Sprintf("the image is too large to thumbnail (%d×%d pixels)", e.Width, e.Height)
}

// ThumbnailRequest is what a client asked for.
type ThumbnailRequest struct {
	Width, Height int  // minimum size wanted, both > 0
	Crop          bool // method=crop; otherwise scale
	Animated      bool // animated=true: the client prefers animation
}

// Thumbnail is a thumbnail ready to serve; the caller closes Content.
type Thumbnail struct {
	ContentType string
	ETag        string
	ModTime     time.Time
	Content     *os.File
}

type thumbnailer struct {
	maxPixels int64
	maxDecode int64
	slots     chan struct{}
	slotWait  time.Duration

	mu      sync.Mutex
	flights map[string]*flight
}

type flight struct {
	done chan struct{}
	err  error
}

func newThumbnailer() thumbnailer {
	return thumbnailer{
		maxPixels: defaultMaxThumbPixels,
		maxDecode: defaultMaxThumbDecode,
		slots:     make(chan struct{}, max(1, runtime.GOMAXPROCS(0))),
		slotWait:  thumbSlotWait,
		flights:   map[string]*flight{},
	}
}

// Thumbnail returns a thumbnail of a stored image: from the cache, made
// now, or the original itself when it is no larger than the request.
func (r *Repo) Thumbnail(ctx context.Context, mediaID string, req ThumbnailRequest) (Thumbnail, error) {
	item, f, err := r.Open(ctx, mediaID)
	if err != nil {
		return Thumbnail{}, err
	}
	keep := false
	defer func() {
		if !keep {
			f.Close()
		}
	}()
	cfg, format, err := image.DecodeConfig(bufio.NewReader(f))
	if err != nil || !thumbFormats[format] || cfg.Width <= 0 || cfg.Height <= 0 {
		return Thumbnail{}, ErrCannotThumbnail
	}
	if int64(cfg.Width)*int64(cfg.Height) > r.thumbs.maxPixels || decodedBytes(cfg) > r.thumbs.maxDecode {
		return Thumbnail{}, &ErrImageTooLarge{Width: cfg.Width, Height: cfg.Height}
	}
	p := planFor(cfg.Width, cfg.Height, req.Width, req.Height, req.Crop)
	if p.original {
		// The spec prefers the original to a same-size copy, unless it is
		// animated and animation was not asked for (then a static frame).
		asIs := format == "jpeg" || req.Animated
		if !asIs {
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return Thumbnail{}, fmt.Errorf("rewind media: %w", err)
			}
			anim, err := animated(f, format)
			if err != nil {
				return Thumbnail{}, ErrCannotThumbnail
			}
			asIs = !anim
		}
		if asIs {
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return Thumbnail{}, fmt.Errorf("rewind media: %w", err)
			}
			keep = true
			thumbServed.WithLabelValues("original").Inc()
			return Thumbnail{ContentType: "image/" + format, ETag: strconv.Quote(item.SHA256),
				ModTime: time.UnixMilli(item.CreatedTS), Content: f}, nil
		}
	}
	path := r.thumbPath(mediaID, p)
	if th, err := openThumb(path, item.SHA256); err == nil {
		thumbServed.WithLabelValues("cache").Inc()
		return th, nil
	}
	err = r.thumbs.once(ctx, path, func() error {
		if _, err := os.Stat(path); err == nil {
			return nil // made while this request looked
		}
		defer prometheus.NewTimer(thumbSeconds).ObserveDuration()
		return r.generate(f, format, cfg, p, path)
	})
	if err != nil {
		return Thumbnail{}, err
	}
	thumbServed.WithLabelValues("generated").Inc()
	return openThumb(path, item.SHA256)
}

func (r *Repo) thumbPath(id string, p plan) string {
	return filepath.Join(r.dir, "thumbs", id[:2], id[2:4], id, fmt.Sprintf("%dx%d-%s", p.w, p.h, p.method()))
}

// once runs fn for key unless a run is already under way, in which case
// it waits for that run's result (or for ctx).
func (t *thumbnailer) once(ctx context.Context, key string, fn func() error) error {
	t.mu.Lock()
	if fl, ok := t.flights[key]; ok {
		t.mu.Unlock()
		select {
		case <-fl.done:
			return fl.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	fl := &flight{done: make(chan struct{})}
	t.flights[key] = fl
	t.mu.Unlock()

	fl.err = fn()
	t.mu.Lock()
	delete(t.flights, key)
	t.mu.Unlock()
	close(fl.done)
	return fl.err
}

// generate makes one thumbnail file. It does not follow the request's
// context: others may be waiting for the same file, and a finished file
// serves later requests anyway.
func (r *Repo) generate(f *os.File, format string, cfg image.Config, p plan, path string) error {
	select {
	case r.thumbs.slots <- struct{}{}:
		defer func() { <-r.thumbs.slots }()
	case <-time.After(r.thumbs.slotWait):
		return ErrBusy
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("rewind media: %w", err)
	}
	out, alpha, err := decodeAndRender(f, format, cfg, p)
	if err != nil {
		return err
	}

	tmp, err := os.CreateTemp(filepath.Join(r.dir, "tmp"), "thumb-*")
	if err != nil {
		return fmt.Errorf("create thumbnail temp file: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	defer tmp.Close()
	bw := bufio.NewWriter(tmp)
	if _, err := encode(bw, out, alpha); err != nil {
		return fmt.Errorf("encode thumbnail: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write thumbnail: %w", err)
	}
	// The file is fsynced before it gets its name, so a crash can lose a
	// thumbnail (it is made again) but never leave a torn one to serve.
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("fsync thumbnail: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close thumbnail: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("create thumbnail directory: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename thumbnail: %w", err)
	}
	return nil
}

// decodeAndRender decodes the original and renders the plan. A decoder
// that panics on a hostile file fails this one thumbnail, not the request
// (nor the others waiting on it).
func decodeAndRender(f *os.File, format string, cfg image.Config, p plan) (out image.Image, alpha bool, err error) {
	defer func() {
		if v := recover(); v != nil {
			out, err = nil, fmt.Errorf("%w: the %s decoder failed: %v", ErrCannotThumbnail, format, v)
		}
	}()
	img, err := decodeFirst(bufio.NewReader(f), format, cfg)
	if err != nil {
		return nil, false, fmt.Errorf("%w: decode %s: %v", ErrCannotThumbnail, format, err)
	}
	sr := p.src.Add(img.Bounds().Min)
	if !sr.In(img.Bounds()) {
		return nil, false, fmt.Errorf("%w: the %s pixels disagree with its header", ErrCannotThumbnail, format)
	}
	alpha = !opaque(img, sr)
	return render(img, sr, p.w, p.h), alpha, nil
}

var pngMagic = []byte("\x89PNG\r\n\x1a\n")

// openThumb opens a cached thumbnail; its type is read from its first
// bytes (the encoder chose it from the pixels).
func openThumb(path, sha string) (Thumbnail, error) {
	f, err := os.Open(path)
	if err != nil {
		return Thumbnail{}, err
	}
	var magic [8]byte
	st, err := f.Stat()
	if err == nil {
		_, err = io.ReadFull(f, magic[:])
	}
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return Thumbnail{}, fmt.Errorf("read cached thumbnail: %w", err)
	}
	ctype := "image/jpeg"
	if bytes.Equal(magic[:], pngMagic) {
		ctype = "image/png"
	} else if magic[0] != 0xFF || magic[1] != 0xD8 {
		f.Close()
		os.Remove(path) // made again by the request that found it
		return Thumbnail{}, fmt.Errorf("cached thumbnail %s is neither PNG nor JPEG", path)
	}
	return Thumbnail{ContentType: ctype, ETag: strconv.Quote(sha + "-" + filepath.Base(path)),
		ModTime: st.ModTime(), Content: f}, nil
}
