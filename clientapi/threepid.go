package clientapi

import (
	"net/http"
)

// Third-party identifiers: machi runs on a closed network with no e-mail
// or SMS gateway and no identity server, so no account has one and none
// can be added (the m.3pid_changes capability says so too). Each endpoint
// answers with the error its spec gives for that case.

// handleGet3PIDs serves GET /_matrix/client/v3/account/3pid.
func (s *Server) handleGet3PIDs(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, 200, map[string]any{"threepids": []any{}})
}

// handleAdd3PID serves POST /account/3pid/add and /account/3pid/bind: the
// session they name can only come from a requestToken this server never
// grants.
func (s *Server) handleAdd3PID(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ClientSecret string `json:"client_secret"`
		SID          string `json:"sid"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.ClientSecret == "" || req.SID == "" {
		writeError(w, errMissingParam("client_secret and sid are required"))
		return
	}
	writeError(w, newErr(http.StatusForbidden, "M_THREEPID_DENIED", "this server does not keep third-party identifiers (e-mail, phone numbers)"))
}

// handleRemove3PID serves POST /account/3pid/delete and /account/3pid/unbind:
// no account has the identifier.
func (s *Server) handleRemove3PID(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Medium  string `json:"medium"`
		Address string `json:"address"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.Medium == "" || req.Address == "" {
		writeError(w, errMissingParam("medium and address are required"))
		return
	}
	if req.Medium != "email" && req.Medium != "msisdn" {
		writeError(w, errInvalidParam("medium must be email or msisdn"))
		return
	}
	writeError(w, newErr(http.StatusBadRequest, "M_THREEPID_NOT_FOUND", "no account on this server has that %s", req.Medium))
}

// handleRequestToken serves the requestToken endpoints. For
// /account/3pid/{medium}/requestToken the spec's answer for a medium the
// server does not support is M_THREEPID_MEDIUM_NOT_SUPPORTED; for
// /register/… and /account/password/… it is M_THREEPID_DENIED.
func (s *Server) handleRequestToken(notSupported bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if _, err := readObject(r); err != nil {
			writeError(w, err)
			return
		}
		if notSupported {
			writeError(w, newErr(http.StatusBadRequest, "M_THREEPID_MEDIUM_NOT_SUPPORTED", "this server sends no e-mail or SMS"))
			return
		}
		writeError(w, newErr(http.StatusForbidden, "M_THREEPID_DENIED", "this server does not use third-party identifiers (e-mail, phone numbers)"))
	}
}
