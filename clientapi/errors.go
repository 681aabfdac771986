package clientapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/machi-chat/machi/policy"
	"github.com/machi-chat/machi/rooms"
	"github.com/machi-chat/machi/storage"
)

// Error is a Matrix error: an errcode, a message and the HTTP status.
type Error struct {
	Status int
	Code   string
	Msg    string
	// Extra holds more top-level fields (retry_after_ms, rule, …).
	Extra map[string]any
}

func (e *Error) Error() string { return e.Code + ": " + e.Msg }

// MatrixError is the error's status, errcode and message, for the
// federation API's answers to what the client API's code refused.
func (e *Error) MatrixError() (status int, code, msg string) { return e.Status, e.Code, e.Msg }

func newErr(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Msg: fmt.Sprintf(format, args...)}
}

// Common errors.
func errForbidden(format string, args ...any) *Error {
	return newErr(http.StatusForbidden, "M_FORBIDDEN", format, args...)
}
func errNotFound(format string, args ...any) *Error {
	return newErr(http.StatusNotFound, "M_NOT_FOUND", format, args...)
}
func errBadJSON(format string, args ...any) *Error {
	return newErr(http.StatusBadRequest, "M_BAD_JSON", format, args...)
}
func errMissingParam(format string, args ...any) *Error {
	return newErr(http.StatusBadRequest, "M_MISSING_PARAM", format, args...)
}
func errInvalidParam(format string, args ...any) *Error {
	return newErr(http.StatusBadRequest, "M_INVALID_PARAM", format, args...)
}

// writeJSON writes v as the JSON response body.
func writeJSON(w http.ResponseWriter, status int, v any) {
	var body []byte
	switch b := v.(type) {
	case []byte:
		body = b
	case json.RawMessage:
		body = b
	default:
		var err error
		if body, err = json.Marshal(v); err != nil {
			status, body = 500, []byte(`{"errcode":"M_UNKNOWN","error":"could not encode the response"}`)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// writeError writes err as a Matrix error, mapping the errors of the
// packages below to the right code and status.
func writeError(w http.ResponseWriter, err error) {
	e := toMatrixError(err)
	body := map[string]any{"errcode": e.Code, "error": e.Msg}
	for k, v := range e.Extra {
		body[k] = v
	}
	writeJSON(w, e.Status, body)
}

func toMatrixError(err error) *Error {
	var me *Error
	var denial *policy.Denial
	var forbidden *rooms.Forbidden
	var tooLarge *http.MaxBytesError
	var remote interface {
		RemoteAnswer() (status int, code, msg string)
	}
	switch {
	case errors.As(err, &me):
		return me
	case errors.As(err, &remote):
		if x, ok := remote.(interface {
			PassThrough() bool
			RemoteExtra() map[string]any
		}); ok && x.PassThrough() {
			return passedOn(remote.RemoteAnswer())(x.RemoteExtra())
		}
		return remoteError(remote.RemoteAnswer())
	case errors.As(err, &denial):
		return denialError(denial)
	case errors.As(err, &forbidden):
		return errForbidden("%s", forbidden.Reason)
	case errors.As(err, &tooLarge):
		return newErr(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "request body is larger than %d bytes", tooLarge.Limit)
	case errors.Is(err, rooms.ErrUnknownRoom):
		return errNotFound("unknown room")
	case errors.Is(err, rooms.ErrDuplicateAnnotation):
		return newErr(http.StatusBadRequest, "M_DUPLICATE_ANNOTATION", "you have already sent this annotation to this event")
	case errors.Is(err, rooms.ErrTooLarge):
		return newErr(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "the event is larger than the 65536 bytes an event may be")
	case errors.Is(err, rooms.ErrRedactOtherRoom):
		return errInvalidParam("the event to redact is in another room")
	case errors.Is(err, rooms.ErrBadEvent):
		return errBadJSON("%s", strings.TrimPrefix(err.Error(), "bad event: "))
	case errors.Is(err, rooms.ErrUnsupportedVersion):
		return newErr(http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION", "unsupported room version")
	case errors.Is(err, storage.ErrNotFound):
		return errNotFound("not found")
	default:
		return newErr(http.StatusInternalServerError, "M_UNKNOWN", "internal error")
	}
}

// remoteError is another server's answer (or its silence) as the client's
// error: what it refused or lacks is passed on; anything else is a bad
// gateway, since the fault is not this server's nor the client's.
func remoteError(status int, code, msg string) *Error {
	switch {
	case status == http.StatusNotFound || status == http.StatusForbidden:
		if code == "" {
			code = map[int]string{http.StatusNotFound: "M_NOT_FOUND", http.StatusForbidden: "M_FORBIDDEN"}[status]
		}
		return newErr(status, code, "the other server answered: %s", msg)
	case status == 0:
		return newErr(http.StatusBadGateway, "M_UNKNOWN", "the other server could not be reached: %s", msg)
	default:
		return newErr(http.StatusBadGateway, "M_UNKNOWN", "the other server answered %d: %s", status, msg)
	}
}

// passedOn is another server's refusal of what the client asked for (a
// make_join refused with M_INCOMPATIBLE_ROOM_VERSION, say), given to the
// client as it came, with its other fields (room_version): a 4xx with an
// errcode, other than a refusal of this server's credentials or rate.
// Anything else is mapped as remoteError maps it.
func passedOn(status int, code, msg string) func(extra map[string]any) *Error {
	return func(extra map[string]any) *Error {
		if status < 400 || status >= 500 || code == "" || status == http.StatusUnauthorized || status == http.StatusTooManyRequests {
			return remoteError(status, code, msg)
		}
		e := newErr(status, code, "the other server answered: %s", msg)
		for k, v := range extra {
			if e.Extra == nil {
				e.Extra = map[string]any{}
			}
			e.Extra[k] = v
		}
		return e
	}
}

// denialError is a policy denial as a Matrix error: M_FORBIDDEN unless a
// better code fits, always with the rule ID and both messages.
func denialError(d *policy.Denial) *Error {
	e := &Error{Status: http.StatusForbidden, Code: "M_FORBIDDEN", Msg: d.Error(), Extra: d.Fields()}
	switch d.RuleID {
	case policy.RuleUploadSize:
		e.Status, e.Code = http.StatusRequestEntityTooLarge, "M_TOO_LARGE"
	case policy.RuleDeviceCodeTries:
		e.Status, e.Code = http.StatusTooManyRequests, "M_LIMIT_EXCEEDED"
	}
	if d.RetryAfter > 0 {
		e.Extra["retry_after_ms"] = d.RetryAfter.Milliseconds()
	}
	return e
}

// readBody reads the request body, mapping a body past the limit to
// M_TOO_LARGE. An empty body reads as {}.
func readBody(r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, err
		}
		return nil, errBadJSON("could not read the request body")
	}
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}")
	}
	return body, nil
}

// readObject reads a body that must be a JSON object and returns it raw:
// M_NOT_JSON for a body that is not JSON (invalid UTF-8 included: JSON is
// UTF-8, and json.Valid does not look inside strings' bytes), M_BAD_JSON
// for JSON that is not an object.
func readObject(r *http.Request) (json.RawMessage, error) {
	body, err := readBody(r)
	if err != nil {
		return nil, err
	}
	if !json.Valid(body) || !utf8.Valid(body) {
		return nil, newErr(http.StatusBadRequest, "M_NOT_JSON", "the request body is not valid JSON")
	}
	if trimmed := bytes.TrimSpace(body); trimmed[0] != '{' {
		return nil, errBadJSON("the request body must be a JSON object")
	}
	return body, nil
}

// readJSON decodes the request body, which must be a JSON object, into v:
// M_BAD_JSON for fields of the wrong type.
func readJSON(r *http.Request, v any) error {
	body, err := readObject(r)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return errBadJSON("field %q has the wrong type: want %s", te.Field, te.Type)
		}
		return errBadJSON("%v", err)
	}
	return nil
}
