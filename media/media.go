// Package media is machi's media repository: uploaded files live on disk
// in a tree sharded by media ID; their metadata lives in the database. An upload is acknowledged only once its bytes are fsynced
// and its row committed, so nothing acknowledged is lost.
package media

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gabriel-vasile/mimetype"

	"github.com/machi-chat/machi/storage"
)

// ErrTooLarge is returned by Upload for content over the size limit.
type ErrTooLarge struct{ Limit int64 }

func (e *ErrTooLarge) Error() string {
	return fmt.Sprintf("media is larger than %d bytes", e.Limit)
}

// ErrNotFound is returned for an unknown media ID or a missing file.
var ErrNotFound = errors.New("media not found")

// Repo stores and serves media.
type Repo struct {
	dir      string
	store    storage.Media
	maxBytes int64
	now      func() time.Time

	thumbs thumbnailer
}

// New returns a repository keeping files under dir (created if missing).
func New(dir string, store storage.Media, maxBytes int64) (*Repo, error) {
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o750); err != nil {
		return nil, fmt.Errorf("media directory: %w", err)
	}
	return &Repo{dir: dir, store: store, maxBytes: maxBytes, now: time.Now, thumbs: newThumbnailer()}, nil
}

// MaxBytes is the upload size limit.
func (r *Repo) MaxBytes() int64 { return r.maxBytes }

// Upload is one file to store.
type Upload struct {
	Body        io.Reader
	ContentType string // as declared by the client; sniffed when empty or invalid
	Filename    string
	Uploader    string
}

// Store writes an upload to disk and records it. It returns the stored
// item once the file is durable and its metadata committed.
func (r *Repo) Store(ctx context.Context, up Upload) (storage.MediaItem, error) {
	id, err := newID()
	if err != nil {
		return storage.MediaItem{}, err
	}
	tmp, err := os.CreateTemp(filepath.Join(r.dir, "tmp"), "up-*")
	if err != nil {
		return storage.MediaItem{}, fmt.Errorf("media temp file: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	defer tmp.Close()

	h := sha256.New()
	// Read one byte past the limit to tell "exactly at" from "over".
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(up.Body, r.maxBytes+1))
	if err != nil {
		return storage.MediaItem{}, fmt.Errorf("media upload: %w", err)
	}
	if n > r.maxBytes {
		return storage.MediaItem{}, &ErrTooLarge{Limit: r.maxBytes}
	}
	ctype := cleanContentType(up.ContentType)
	if ctype == "" {
		if _, err := tmp.Seek(0, io.SeekStart); err != nil {
			return storage.MediaItem{}, err
		}
		m, err := mimetype.DetectReader(tmp)
		if err != nil {
			return storage.MediaItem{}, fmt.Errorf("media sniff: %w", err)
		}
		ctype = m.String()
	}
	if err := tmp.Sync(); err != nil {
		return storage.MediaItem{}, fmt.Errorf("media fsync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return storage.MediaItem{}, err
	}
	final := r.path(id)
	if err := os.MkdirAll(filepath.Dir(final), 0o750); err != nil {
		return storage.MediaItem{}, err
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return storage.MediaItem{}, fmt.Errorf("media rename: %w", err)
	}
	if err := syncDir(filepath.Dir(final)); err != nil {
		return storage.MediaItem{}, err
	}
	item := storage.MediaItem{
		MediaID:     id,
		ContentType: ctype,
		Size:        n,
		Filename:    up.Filename,
		SHA256:      hex.EncodeToString(h.Sum(nil)),
		Uploader:    up.Uploader,
		CreatedTS:   r.now().UnixMilli(),
	}
	if err := r.store.PutMedia(ctx, item); err != nil {
		os.Remove(final)
		return storage.MediaItem{}, err
	}
	return item, nil
}

// Open returns a stored item and its file; the caller closes the file.
func (r *Repo) Open(ctx context.Context, mediaID string) (storage.MediaItem, *os.File, error) {
	if !validID(mediaID) {
		return storage.MediaItem{}, nil, ErrNotFound
	}
	item, err := r.store.GetMedia(ctx, mediaID)
	if errors.Is(err, storage.ErrNotFound) {
		return storage.MediaItem{}, nil, ErrNotFound
	}
	if err != nil {
		return storage.MediaItem{}, nil, err
	}
	f, err := os.Open(r.path(mediaID))
	if errors.Is(err, os.ErrNotExist) {
		return storage.MediaItem{}, nil, ErrNotFound
	}
	if err != nil {
		return storage.MediaItem{}, nil, err
	}
	return item, f, nil
}

// path shards files by the first two pairs of ID characters so no
// directory grows past a few thousand entries.
func (r *Repo) path(id string) string {
	return filepath.Join(r.dir, id[:2], id[2:4], id)
}

const idChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
const idLen = 24

// newID returns a random 24-letter media ID (about 137 bits).
func newID() (string, error) {
	var b [idLen]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	for i := range b {
		b[i] = idChars[int(b[i])%len(idChars)]
	}
	return string(b[:]), nil
}

// validID accepts only IDs this repository could have made, so a path
// can never escape the media directory.
func validID(id string) bool {
	if len(id) != idLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if !strings.ContainsRune(idChars, rune(id[i])) {
			return false
		}
	}
	return true
}

// cleanContentType returns a normalised media type, or "" when the
// declared one is missing or unparsable.
func cleanContentType(ct string) string {
	if ct == "" {
		return ""
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || !strings.Contains(mt, "/") {
		return ""
	}
	return mime.FormatMediaType(mt, params)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// inlineTypes are the types the spec allows to be served inline
// ("Serving inline content"); everything else is an attachment.
var inlineTypes = map[string]bool{
	"text/css": true, "text/plain": true, "text/csv": true,
	"application/json": true, "application/ld+json": true,
	"image/jpeg": true, "image/gif": true, "image/png": true, "image/apng": true,
	"image/webp": true, "image/avif": true,
	"video/mp4": true, "video/webm": true, "video/ogg": true, "video/quicktime": true,
	"audio/mp4": true, "audio/webm": true, "audio/aac": true, "audio/mpeg": true,
	"audio/ogg": true, "audio/wave": true, "audio/wav": true, "audio/x-wav": true,
	"audio/x-pn-wav": true, "audio/flac": true, "audio/x-flac": true,
}

// Disposition builds a Content-Disposition header value: inline for the
// spec's safe types, attachment otherwise, with the filename quoted, or in
// the RFC 2231 UTF-8 form when it is not ASCII (Japanese names survive).
func Disposition(contentType, filename string) string {
	mt, _, _ := mime.ParseMediaType(contentType)
	disp := "attachment"
	if inlineTypes[mt] {
		disp = "inline"
	}
	if filename == "" {
		return disp
	}
	if v := mime.FormatMediaType(disp, map[string]string{"filename": filename}); v != "" {
		return v // mime encodes non-ASCII names as filename*=utf-8''…
	}
	return disp
}
