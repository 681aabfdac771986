package clientapi

import (
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/rooms"
)

// handleUpgrade serves POST /_matrix/client/v3/rooms/{roomId}/upgrade. Not
// idempotent: each call replaces the room (the current one, which after a
// first call is the tombstoned old room, so a retry makes a second
// replacement only if the user still has the power to).
func (s *Server) handleUpgrade(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	var req struct {
		NewVersion         *string  `json:"new_version"`
		AdditionalCreators []string `json:"additional_creators"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.NewVersion == nil {
		writeError(w, errMissingParam("new_version is required"))
		return
	}
	for _, u := range req.AdditionalCreators {
		if _, err := spec.NewUserID(u, true); err != nil {
			writeError(w, errInvalidParam("invalid user ID %q in additional_creators", u))
			return
		}
	}
	if err := s.limiter.allow(dev.UserID); err != nil {
		writeError(w, err)
		return
	}
	roomID := vars(r)["roomId"]
	if _, err := s.access(r.Context(), dev.UserID, roomID); err != nil {
		writeError(w, err)
		return
	}
	member, err := s.memberContent(r.Context(), dev.UserID, spec.Join, "")
	if err != nil {
		writeError(w, err)
		return
	}
	newID, err := s.rooms.UpgradeRoom(r.Context(), &rooms.UpgradeRequest{
		RoomID: roomID, Sender: dev.UserID, NewVersion: *req.NewVersion, AdditionalCreators: req.AdditionalCreators,
		CreatorMember: member, Actor: dev.actor(),
	})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, map[string]string{"replacement_room": newID})
}
