package clientapi

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"

	"github.com/machi-chat/machi/media"
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
	}
	p := "/_matrix/client/v1/media"
	r.Handle(p+"/config", s.requireAuth(http.HandlerFunc(s.mediaConfig))).Methods(http.MethodGet)
	r.Handle(p+"/download/{server}/{media}", s.requireAuth(http.HandlerFunc(s.download))).Methods(http.MethodGet, http.MethodHead)
	r.Handle(p+"/download/{server}/{media}/{filename}", s.requireAuth(http.HandlerFunc(s.download))).Methods(http.MethodGet, http.MethodHead)
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

// download serves a file with the headers that keep a browser from running
// it: a sandboxing Content-Security-Policy, nosniff, and attachment
// disposition for anything the spec does not allow inline. Range requests
// and conditional requests are answered by http.ServeContent.
func (s *Server) download(w http.ResponseWriter, r *http.Request) {
	v := vars(r)
	server, mediaID := v["server"], v["media"]
	if server != s.cfg.ServerName {
		// Remote media arrives with federation; until then it is unknown here.
		writeError(w, errNotFound("remote media is not available from this server"))
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
	h := w.Header()
	h.Set("Content-Type", item.ContentType)
	h.Set("Content-Disposition", media.Disposition(item.ContentType, filename))
	h.Set("Content-Security-Policy", "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	h.Set("Cache-Control", "private, max-age=31536000, immutable")
	h.Set("ETag", strconv.Quote(item.SHA256))
	http.ServeContent(w, r, "", time.UnixMilli(item.CreatedTS), f)
}
