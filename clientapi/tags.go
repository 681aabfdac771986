package clientapi

import (
	"encoding/json"
	"math"
	"net/http"
)

// Room tags are the user's m.tag room account data ({"tags": {tag:
// {...}}}): /sync delivers them with the rest of the room's account data.
// Changing one tag reads and rewrites the whole object, so changes of the
// same user's tags are serialised.

// maxTagBytes bounds a tag's name, as the spec's room tag section asks for
// names of at most 255 bytes.
const maxTagBytes = 255

type tagsContent struct {
	Tags map[string]json.RawMessage `json:"tags"`
}

// roomTags reads the user's tags on the room; none is an empty map.
func (s *Server) roomTags(r *http.Request, userID, roomID string) (tagsContent, error) {
	tc := tagsContent{Tags: map[string]json.RawMessage{}}
	raw, err := s.store.GetAccountData(r.Context(), userID, roomID, "m.tag")
	if isNotFound(err) {
		return tc, nil
	} else if err != nil {
		return tc, err
	}
	if err := json.Unmarshal(raw, &tc); err != nil || tc.Tags == nil {
		// Set through the raw account data endpoint with another shape:
		// start afresh rather than fail every tag call.
		tc.Tags = map[string]json.RawMessage{}
	}
	return tc, nil
}

// tagRequest checks the path of a tag request: one's own tags, a known
// room, a tag name of a sane length.
func (s *Server) tagRequest(r *http.Request) (userID, roomID, tag string, err error) {
	dev := DeviceFrom(r.Context())
	v := vars(r)
	if v["userId"] != dev.UserID {
		return "", "", "", errForbidden("you can only use your own room tags")
	}
	if _, err := s.rooms.Version(r.Context(), v["roomId"]); err != nil {
		return "", "", "", err
	}
	if len(v["tag"]) > maxTagBytes {
		return "", "", "", errInvalidParam("a tag is at most %d bytes", maxTagBytes)
	}
	return dev.UserID, v["roomId"], v["tag"], nil
}

// handleGetTags serves GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags.
func (s *Server) handleGetTags(w http.ResponseWriter, r *http.Request) {
	userID, roomID, _, err := s.tagRequest(r)
	if err != nil {
		writeError(w, err)
		return
	}
	tc, err := s.roomTags(r, userID, roomID)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, tc)
}

// handlePutTag serves PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}.
// Idempotent: the tag's content is replaced.
func (s *Server) handlePutTag(w http.ResponseWriter, r *http.Request) {
	userID, roomID, tag, err := s.tagRequest(r)
	if err != nil {
		writeError(w, err)
		return
	}
	body, err := readObject(r)
	if err != nil {
		writeError(w, err)
		return
	}
	var req struct {
		Order *float64 `json:"order"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, errBadJSON("order must be a number"))
		return
	}
	if req.Order != nil && (*req.Order < 0 || *req.Order > 1 || math.IsNaN(*req.Order)) {
		writeError(w, errInvalidParam("order must be between 0 and 1"))
		return
	}
	s.changeTags(w, r, userID, roomID, func(tags map[string]json.RawMessage) { tags[tag] = body })
}

// handleDeleteTag serves DELETE /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}.
// Idempotent: removing a tag the room does not have succeeds.
func (s *Server) handleDeleteTag(w http.ResponseWriter, r *http.Request) {
	userID, roomID, tag, err := s.tagRequest(r)
	if err != nil {
		writeError(w, err)
		return
	}
	s.changeTags(w, r, userID, roomID, func(tags map[string]json.RawMessage) { delete(tags, tag) })
}

func (s *Server) changeTags(w http.ResponseWriter, r *http.Request, userID, roomID string, change func(map[string]json.RawMessage)) {
	s.tagMu.Lock()
	defer s.tagMu.Unlock()
	tc, err := s.roomTags(r, userID, roomID)
	if err != nil {
		writeError(w, err)
		return
	}
	change(tc.Tags)
	content, _ := json.Marshal(tc)
	if err := s.putAccountData(r.Context(), userID, roomID, "m.tag", content); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, map[string]any{})
}
