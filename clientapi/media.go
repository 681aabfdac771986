package clientapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/machi-chat/machi/media"
	"github.com/machi-chat/machi/policy"
	"github.com/machi-chat/machi/storage"
)

// mediaRoutes registers the media repository: the legacy unauthenticated
// /_matrix/media/{v3,r0} endpoints that older clients still call, and the
// authenticated /_matrix/client/v1/media ones (spec v1.11).
func (s *Server) mediaRoutes(r *mux.Router) {
	for _, p := range []string{"/_matrix/media/v3", "/_matrix/media/r0"} {
		r.Handle(p+"/upload", s.requireAuth(http.HandlerFunc(s.upload))).Methods(http.MethodPost)
		r.Handle(p+"/config", s.requireAuth(http.HandlerFunc(s.mediaConfig))).Methods(http.MethodGet)
		r.HandleFunc(p+"/download/{server}/{media}", s.download).Methods(http.MethodGet, http.MethodHead)
		r.HandleFunc(p+"/download/{server}/{media}/{filename}", s.download).Methods(http.MethodGet, http.MethodHead)
		r.HandleFunc(p+"/thumbnail/{server}/{media}", s.thumbnail).Methods(http.MethodGet, http.MethodHead)
		r.Handle(p+"/preview_url", s.requireAuth(http.HandlerFunc(s.previewURL))).Methods(http.MethodGet)
	}
	p := "/_matrix/client/v1/media"
	r.Handle(p+"/config", s.requireAuth(http.HandlerFunc(s.mediaConfig))).Methods(http.MethodGet)
	r.Handle(p+"/download/{server}/{media}", s.requireAuth(http.HandlerFunc(s.download))).Methods(http.MethodGet, http.MethodHead)
	r.Handle(p+"/download/{server}/{media}/{filename}", s.requireAuth(http.HandlerFunc(s.download))).Methods(http.MethodGet, http.MethodHead)
	r.Handle(p+"/thumbnail/{server}/{media}", s.requireAuth(http.HandlerFunc(s.thumbnail))).Methods(http.MethodGet, http.MethodHead)
	r.Handle(p+"/preview_url", s.requireAuth(http.HandlerFunc(s.previewURL))).Methods(http.MethodGet)
}

func (s *Server) mediaConfig(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"m.upload.size": s.uploadLimit(DeviceFrom(r.Context()))})
}

// uploadLimit is the largest file dev may upload.
func (s *Server) uploadLimit(dev *Device) int64 {
	return min(s.media.MaxBytes(), s.policy.MaxUpload(dev.Class))
}

// upload implements POST /upload: the body is the file, ?filename= its
// name. The declared Content-Type is not trusted: policy sniffs the bytes
// (and, from phones, accepts only images it can decode, stripped of
// location data), and the sniffed type is what is stored and served.
func (s *Server) upload(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	if err := s.limiter.allow(dev.UserID); err != nil {
		writeError(w, err)
		return
	}
	limit := s.uploadLimit(dev)
	if r.ContentLength > limit {
		writeError(w, tooLarge(limit))
		return
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		writeError(w, errBadJSON("could not read the upload"))
		return
	}
	if int64(len(data)) > limit {
		writeError(w, tooLarge(limit))
		return
	}
	data, typ, denial := s.policy.CheckUpload(r.Context(), dev.UserID, dev.actor(), data)
	if denial != nil {
		writeError(w, denial)
		return
	}
	item, err := s.media.Store(r.Context(), media.Upload{
		Body:        bytes.NewReader(data),
		ContentType: typ,
		Filename:    r.URL.Query().Get("filename"),
		Uploader:    dev.UserID,
	})
	var big *media.ErrTooLarge
	if errors.As(err, &big) {
		writeError(w, tooLarge(big.Limit))
		return
	}
	if err != nil {
		s.log.Error("media upload failed", "user", dev.UserID, "err", err)
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"content_uri": "mxc://" + s.cfg.ServerName + "/" + item.MediaID})
}

func tooLarge(limit int64) *Error {
	return newErr(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "the file is larger than the upload limit of %d bytes", limit)
}

// download serves GET (and HEAD) /_matrix/media/{v3,r0}/download/{serverName}/{mediaId}[/{fileName}]
// and /_matrix/client/v1/media/download/…: the file with the headers that
// keep a browser from running it (mediaHeaders), attachment disposition for
// anything the spec does not allow inline. Range requests and conditional
// requests are answered by http.ServeContent.
func (s *Server) download(w http.ResponseWriter, r *http.Request) {
	v := vars(r)
	mediaID, err := s.localMediaID(r.Context(), v["server"], v["media"])
	if err != nil {
		writeError(w, err)
		return
	}
	item, f, err := s.media.Open(r.Context(), mediaID)
	if errors.Is(err, media.ErrNotFound) {
		writeError(w, errNotFound("unknown media"))
		return
	}
	if err != nil {
		writeError(w, err)
		return
	}
	defer f.Close()
	filename := item.Filename
	if name, ok := v["filename"]; ok {
		filename = name
	}
	mediaHeaders(w.Header(), item.ContentType, media.Disposition(item.ContentType, filename), strconv.Quote(item.SHA256))
	http.ServeContent(w, r, "", time.UnixMilli(item.CreatedTS), f)
}

// mediaHeaders sets what every download and thumbnail carries: its type,
// its disposition, a sandboxing Content-Security-Policy and nosniff (so a
// browser never runs it), and long caching (media never changes).
func mediaHeaders(h http.Header, contentType, disposition, etag string) {
	h.Set("Content-Type", contentType)
	h.Set("Content-Disposition", disposition)
	h.Set("Content-Security-Policy", "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	h.Set("Cache-Control", "private, max-age=31536000, immutable")
	h.Set("ETag", etag)
}

// thumbnail serves GET (and HEAD) /_matrix/media/{v3,r0}/thumbnail/{serverName}/{mediaId}
// and /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}. It only
// reads: the thumbnail it may make is cached under a name fixed by the
// media, the size and the method, so a repeat serves the same file.
func (s *Server) thumbnail(w http.ResponseWriter, r *http.Request) {
	req, err := parseThumbnailQuery(r.URL.Query())
	if err != nil {
		writeError(w, err)
		return
	}
	v := vars(r)
	mediaID, err := s.localMediaID(r.Context(), v["server"], v["media"])
	if err != nil {
		writeError(w, err)
		return
	}
	th, err := s.media.Thumbnail(r.Context(), mediaID, req)
	var big *media.ErrImageTooLarge
	switch {
	case err == nil:
	case errors.Is(err, media.ErrNotFound):
		writeError(w, errNotFound("unknown media"))
		return
	case errors.Is(err, media.ErrCannotThumbnail):
		writeError(w, newErr(http.StatusBadRequest, "M_UNKNOWN", "cannot generate a thumbnail for this media: it is not a JPEG, PNG, GIF or WebP image that decodes"))
		return
	case errors.As(err, &big):
		writeError(w, newErr(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "%s", big.Error()))
		return
	case errors.Is(err, media.ErrBusy):
		e := newErr(http.StatusTooManyRequests, "M_LIMIT_EXCEEDED", "the server is busy making thumbnails; try again shortly")
		e.Extra = map[string]any{"retry_after_ms": 1000}
		writeError(w, e)
		return
	case r.Context().Err() != nil:
		return // the client left while waiting for a thumbnail someone else was making
	default:
		s.log.Error("thumbnail failed", "media", v["media"], "err", err)
		writeError(w, err)
		return
	}
	defer th.Content.Close()
	name := "thumbnail." + strings.TrimPrefix(th.ContentType, "image/")
	mediaHeaders(w.Header(), th.ContentType, media.Disposition(th.ContentType, name), th.ETag)
	http.ServeContent(w, r, "", th.ModTime, th.Content)
}

// parseThumbnailQuery reads width, height, method, animated and timeout_ms.
// timeout_ms is checked but has nothing to wait for: every media ID this
// server hands out already has its content.
func parseThumbnailQuery(q url.Values) (media.ThumbnailRequest, error) {
	var req media.ThumbnailRequest
	var err error
	if req.Width, err = positiveParam(q, "width"); err != nil {
		return req, err
	}
	if req.Height, err = positiveParam(q, "height"); err != nil {
		return req, err
	}
	switch m := q.Get("method"); m {
	case "", "scale":
	case "crop":
		req.Crop = true
	default:
		return req, errInvalidParam("method must be crop or scale, not %q", m)
	}
	if req.Animated, err = boolParam(q, "animated"); err != nil {
		return req, err
	}
	for _, name := range []string{"allow_remote", "allow_redirect"} {
		if _, err := boolParam(q, name); err != nil {
			return req, err
		}
	}
	if t := q.Get("timeout_ms"); t != "" {
		if n, err := strconv.ParseInt(t, 10, 64); err != nil || n < 0 {
			return req, errInvalidParam("timeout_ms must be a non-negative integer")
		}
	}
	return req, nil
}

func positiveParam(q url.Values, name string) (int, error) {
	raw := q.Get(name)
	if raw == "" {
		return 0, errMissingParam("%s is required", name)
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n <= 0 {
		return 0, errInvalidParam("%s must be a positive integer, not %q", name, raw)
	}
	return n, nil
}

func boolParam(q url.Values, name string) (bool, error) {
	switch raw := q.Get(name); raw {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	default:
		return false, errInvalidParam("%s must be true or false, not %q", name, raw)
	}
}

// ruleURLPreview is the rule ID of the preview refusal.
const ruleURLPreview = "url-preview-disabled"

// previewURL serves GET /_matrix/media/{v3,r0}/preview_url and
// GET /_matrix/client/v1/media/preview_url. machi runs on a closed network
// (LGWAN) and never fetches a URL for anyone: every request is refused,
// shaped like a policy refusal (M_FORBIDDEN with the rule and both
// messages), which clients take as "no preview". It is not audited: it
// refuses a feature the server lacks, not something the user did wrong.
func (s *Server) previewURL(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("url") == "" {
		writeError(w, errMissingParam("url is required"))
		return
	}
	writeError(w, &policy.Denial{RuleID: ruleURLPreview,
		JA: "この環境（LGWAN）では URL のプレビューを表示できません。",
		EN: "URL previews are not available on this closed network (LGWAN)."})
}

// localMediaID is the local item that holds server's mediaID: itself for
// this server's media; for another server's, a copy fetched over
// federation the first time it is asked for and kept.
func (s *Server) localMediaID(ctx context.Context, server, mediaID string) (string, error) {
	if server == s.cfg.ServerName {
		return mediaID, nil
	}
	if s.remote == nil {
		return "", errNotFound("media of other servers is not available: this server does not federate")
	}
	if id, err := s.store.GetRemoteMedia(ctx, server, mediaID); err == nil {
		return id, nil
	} else if !isNotFound(err) {
		return "", err
	}
	ctype, filename, body, err := s.remote.DownloadMedia(ctx, server, mediaID)
	if err != nil {
		return "", err
	}
	defer body.Close()
	item, err := s.media.Store(ctx, media.Upload{Body: body, ContentType: ctype, Filename: filename, Uploader: "@federation:" + server})
	var big *media.ErrTooLarge
	if errors.As(err, &big) {
		return "", tooLarge(big.Limit)
	} else if err != nil {
		return "", err
	}
	return s.store.PutRemoteMedia(ctx, server, mediaID, item.MediaID)
}

// OpenMedia opens a local file for another server (federation's media
// download): only this server's own uploads, never copies of others'.
func (s *Server) OpenMedia(ctx context.Context, mediaID string) (storage.MediaItem, io.ReadCloser, error) {
	item, f, err := s.media.Open(ctx, mediaID)
	if err != nil {
		return item, nil, err
	}
	if strings.HasPrefix(item.Uploader, "@federation:") {
		f.Close()
		return item, nil, media.ErrNotFound
	}
	return item, f, nil
}
