package clientapi

import (
	"net/http"
	"unicode/utf8"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// handleGetProfile serves GET /profile/{userId} and /profile/{userId}/{field}.
func (s *Server) handleGetProfile(w http.ResponseWriter, r *http.Request) {
	v := vars(r)
	if !s.isLocal(v["userId"]) {
		s.remoteProfile(w, r, v["userId"], v["field"])
		return
	}
	u, err := s.store.GetUser(r.Context(), v["userId"])
	if err != nil || u.Deactivated {
		if err != nil && !isNotFound(err) {
			writeError(w, err)
			return
		}
		writeError(w, errNotFound("no profile for %s", v["userId"]))
		return
	}
	profile := map[string]string{}
	if u.DisplayName != "" {
		profile["displayname"] = u.DisplayName
	}
	if u.AvatarURL != "" {
		profile["avatar_url"] = u.AvatarURL
	}
	field, ok := v["field"]
	if !ok {
		writeJSON(w, 200, profile)
		return
	}
	val, ok := profile[field]
	if !ok {
		writeError(w, errNotFound("%s has no %s", v["userId"], field))
		return
	}
	writeJSON(w, 200, map[string]string{field: val})
}

// remoteProfile answers a profile request for another server's user by
// asking that server.
func (s *Server) remoteProfile(w http.ResponseWriter, r *http.Request, userID, field string) {
	if _, err := spec.NewUserID(userID, true); err != nil {
		writeError(w, errInvalidParam("%q is not a user ID", userID))
		return
	}
	if field != "" && field != "displayname" && field != "avatar_url" {
		writeError(w, errNotFound("%s has no %s", userID, field))
		return
	}
	if s.remote == nil {
		writeError(w, errNotFound("no profile for %s: this server does not federate", userID))
		return
	}
	name, avatar, err := s.remote.Profile(r.Context(), userID, field)
	if err != nil {
		writeError(w, err)
		return
	}
	profile := map[string]string{}
	if name != "" && field != "avatar_url" {
		profile["displayname"] = name
	}
	if avatar != "" && field != "displayname" {
		profile["avatar_url"] = avatar
	}
	if field != "" && profile[field] == "" {
		writeError(w, errNotFound("%s has no %s", userID, field))
		return
	}
	writeJSON(w, 200, profile)
}

// handlePutProfile serves PUT /profile/{userId}/{field} for displayname and
// avatar_url, and sends the new profile into every room the user is in.
// Idempotent: setting the same value again changes nothing visible.
func (s *Server) handlePutProfile(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	v := vars(r)
	if v["userId"] != dev.UserID {
		writeError(w, errForbidden("you can only change your own profile"))
		return
	}
	field := v["field"]
	var req map[string]any
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	raw, present := req[field]
	val, isString := raw.(string)
	switch {
	case field != "displayname" && field != "avatar_url":
		writeError(w, errInvalidParam("only displayname and avatar_url can be set"))
		return
	case !present:
		writeError(w, errMissingParam("%s is required", field))
		return
	case !isString && raw != nil:
		writeError(w, errBadJSON("%s must be a string", field))
		return
	case utf8.RuneCountInString(val) > 256:
		writeError(w, errInvalidParam("%s is too long", field))
		return
	}
	var err error
	if field == "displayname" {
		err = s.store.SetDisplayName(r.Context(), dev.UserID, val)
	} else {
		err = s.store.SetAvatarURL(r.Context(), dev.UserID, val)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	ms, err := s.rooms.UserRooms(r.Context(), dev.UserID)
	if err != nil {
		writeError(w, err)
		return
	}
	for roomID, m := range ms {
		if m.Membership != spec.Join {
			continue
		}
		if _, err := s.setMembership(r.Context(), dev.actor(), roomID, dev.UserID, dev.UserID, spec.Join, ""); err != nil {
			s.log.Warn("propagate profile change", "user", dev.UserID, "room", roomID, "err", err)
		}
	}
	writeJSON(w, 200, map[string]any{})
}
