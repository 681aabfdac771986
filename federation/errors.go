package federation

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/policy"
	"github.com/machi-chat/machi/rooms"
	"github.com/machi-chat/machi/storage"
)

// matrixError is a Matrix error answered to another server.
type matrixError struct {
	status int
	code   string
	msg    string
	extra  map[string]any
}

// with adds a field to the error's body.
func (e *matrixError) with(key string, value any) *matrixError {
	if e.extra == nil {
		e.extra = map[string]any{}
	}
	e.extra[key] = value
	return e
}

func (e *matrixError) Error() string { return e.code + ": " + e.msg }

func newErr(status int, code, format string, args ...any) *matrixError {
	return &matrixError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

func errUnauthorized(format string, args ...any) *matrixError {
	return newErr(http.StatusUnauthorized, "M_UNAUTHORIZED", format, args...)
}
func errNotFound(format string, args ...any) *matrixError {
	return newErr(http.StatusNotFound, "M_NOT_FOUND", format, args...)
}
func errMissingParam(format string, args ...any) *matrixError {
	return newErr(http.StatusBadRequest, "M_MISSING_PARAM", format, args...)
}
func errInvalidParam(format string, args ...any) *matrixError {
	return newErr(http.StatusBadRequest, "M_INVALID_PARAM", format, args...)
}
func errNotJSON(format string, args ...any) *matrixError {
	return newErr(http.StatusBadRequest, "M_NOT_JSON", format, args...)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, []byte(`{"errcode":"M_UNKNOWN","error":"could not encode the response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// writeError answers err as a Matrix error; a policy denial carries its
// rule and messages as everywhere in machi.
func writeError(w http.ResponseWriter, err error) {
	var me *matrixError
	var denial *policy.Denial
	var tooLarge *http.MaxBytesError
	var forbidden *rooms.Forbidden
	var local interface {
		MatrixError() (status int, code, msg string)
	}
	body := map[string]any{}
	status := http.StatusInternalServerError
	switch {
	case errors.As(err, &me):
		status, body["errcode"], body["error"] = me.status, me.code, me.msg
		for k, v := range me.extra {
			body[k] = v
		}
	case errors.As(err, &local):
		status, body["errcode"], body["error"] = local.MatrixError()
	case errors.As(err, &forbidden):
		status, body["errcode"], body["error"] = http.StatusForbidden, "M_FORBIDDEN", forbidden.Reason
	case errors.Is(err, rooms.ErrUnknownRoom):
		status, body["errcode"], body["error"] = http.StatusNotFound, "M_NOT_FOUND", "this server is not in that room"
	case errors.Is(err, rooms.ErrBadEvent):
		status, body["errcode"], body["error"] = http.StatusBadRequest, "M_BAD_JSON", err.Error()
	case errors.As(err, &denial):
		status, body["errcode"], body["error"] = http.StatusForbidden, "M_FORBIDDEN", denial.Error()
		for k, v := range denial.Fields() {
			body[k] = v
		}
	case errors.As(err, &tooLarge):
		status, body["errcode"], body["error"] = http.StatusRequestEntityTooLarge, "M_TOO_LARGE", fmt.Sprintf("request body is larger than %d bytes", tooLarge.Limit)
	case errors.Is(err, storage.ErrNotFound):
		status, body["errcode"], body["error"] = http.StatusNotFound, "M_NOT_FOUND", "not found"
	default:
		body["errcode"], body["error"] = "M_UNKNOWN", "internal error"
	}
	writeJSON(w, status, body)
}

// readJSON decodes a JSON object body (at most maxRequestBytes).
func readJSON(r *http.Request, v any) error { return readJSONMax(r, v, maxRequestBytes) }

// readJSONMax decodes a JSON object body of at most limit bytes.
func readJSONMax(r *http.Request, v any, limit int) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
	if err != nil {
		return errNotJSON("could not read the request body")
	}
	if len(body) > limit {
		return newErr(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "request body is larger than %d bytes", limit)
	}
	if len(body) == 0 || body[0] != '{' {
		return errNotJSON("the request body must be a JSON object")
	}
	if err := json.Unmarshal(body, v); err != nil {
		return newErr(http.StatusBadRequest, "M_BAD_JSON", "%v", err)
	}
	return nil
}

// vars are the route's path variables, decoded.
func vars(r *http.Request) map[string]string {
	out := mux.Vars(r)
	for k, v := range out {
		if d, err := url.PathUnescape(v); err == nil {
			out[k] = d
		}
	}
	return out
}

func pathEscape(s string) string { return url.PathEscape(s) }

// v1Answer serves the v1 form of an endpoint whose v2 form is h: the same
// answer, but a success is wrapped as [200, body] (the v1 APIs of
// send_join, send_leave and invite answer so); errors stay as they are.
func v1Answer(h func(http.ResponseWriter, *http.Request, spec.ServerName)) func(http.ResponseWriter, *http.Request, spec.ServerName) {
	return func(w http.ResponseWriter, r *http.Request, origin spec.ServerName) {
		rec := &recorder{header: http.Header{}}
		h(rec, r, origin)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		if rec.status != http.StatusOK {
			for k, v := range rec.header {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.status)
			_, _ = w.Write(rec.body.Bytes())
			return
		}
		writeJSON(w, http.StatusOK, []json.RawMessage{json.RawMessage("200"), rec.body.Bytes()})
	}
}

// recorder keeps a handler's answer for v1Answer.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}
