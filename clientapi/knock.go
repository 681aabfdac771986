package clientapi

import (
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// handleKnock serves POST /_matrix/client/v3/knock/{roomIdOrAlias}: the
// user asks to be let into a room whose join rule is knock (or
// knock_restricted). The auth rules decide, in rooms.Submit. Idempotent in
// effect: knocking again while knocking is a new event with the same
// membership.
func (s *Server) handleKnock(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	var req struct {
		Reason string `json:"reason"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	roomID, _, err := s.resolveRoom(r.Context(), vars(r)["roomIdOrAlias"])
	if err != nil {
		writeError(w, err)
		return
	}
	snap, err := s.rooms.CurrentState(r.Context(), roomID)
	if err != nil {
		writeError(w, err)
		return
	}
	// The auth rules refuse these too, but with a message meant for
	// servers; a person is better told why.
	switch snap.Membership(dev.UserID) {
	case spec.Join:
		writeError(w, errForbidden("you are already in this room"))
		return
	case spec.Ban:
		writeError(w, errForbidden("you are banned from this room"))
		return
	case spec.Invite:
		writeError(w, errForbidden("you are already invited to this room: join it instead"))
		return
	}
	if _, err := s.setMembership(r.Context(), dev.actor(), roomID, dev.UserID, dev.UserID, spec.Knock, req.Reason); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, map[string]string{"room_id": roomID})
}
