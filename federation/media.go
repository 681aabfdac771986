package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// handleMediaDownload serves GET /_matrix/federation/v1/media/download/{mediaId}:
// a local file as the spec's multipart/mixed answer (metadata, then the
// bytes).
func (f *Federation) handleMediaDownload(local Local) func(http.ResponseWriter, *http.Request, spec.ServerName) {
	return func(w http.ResponseWriter, r *http.Request, _ spec.ServerName) {
		item, file, err := local.OpenMedia(r.Context(), vars(r)["mediaId"])
		if err != nil {
			writeError(w, errNotFound("no such media"))
			return
		}
		defer file.Close()
		mw := multipart.NewWriter(w)
		w.Header().Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
		meta, _ := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
		_, _ = meta.Write([]byte("{}"))
		h := textproto.MIMEHeader{"Content-Type": {item.ContentType}}
		if item.Filename != "" {
			h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": item.Filename}))
		}
		part, _ := mw.CreatePart(h)
		if _, err := io.Copy(part, file); err != nil {
			f.log.Info("federation: media download cut short", "media", item.MediaID, "err", err)
			return
		}
		_ = mw.Close()
	}
}

// DownloadMedia fetches another server's media: its type, file name and
// bytes (the caller closes them).
func (f *Federation) DownloadMedia(ctx context.Context, server, mediaID string) (contentType, filename string, body io.ReadCloser, err error) {
	if d := f.allowed(ctx, server); d != nil {
		return "", "", nil, d
	}
	resp, err := f.client.DownloadMedia(ctx, f.cfg.ServerName, spec.ServerName(server), mediaID)
	if err != nil {
		return "", "", nil, remoteError(spec.ServerName(server), err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var e struct {
			Code string `json:"errcode"`
			Msg  string `json:"error"`
		}
		_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e)
		return "", "", nil, &RemoteError{Server: server, Status: resp.StatusCode, Code: e.Code, Msg: e.Msg}
	}
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || !strings.HasPrefix(mt, "multipart/") {
		resp.Body.Close()
		return "", "", nil, &RemoteError{Server: server, Status: http.StatusBadGateway, Msg: "answered media with " + mt}
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	if _, err := mr.NextPart(); err != nil { // the metadata
		resp.Body.Close()
		return "", "", nil, &RemoteError{Server: server, Status: http.StatusBadGateway, Msg: fmt.Sprintf("unreadable media answer: %v", err)}
	}
	part, err := mr.NextPart()
	if err != nil {
		resp.Body.Close()
		return "", "", nil, &RemoteError{Server: server, Status: http.StatusBadGateway, Msg: fmt.Sprintf("unreadable media answer: %v", err)}
	}
	if _, p, err := mime.ParseMediaType(part.Header.Get("Content-Disposition")); err == nil {
		filename = p["filename"]
	}
	return part.Header.Get("Content-Type"), filename, struct {
		io.Reader
		io.Closer
	}{part, resp.Body}, nil
}
