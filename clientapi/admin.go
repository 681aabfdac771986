package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/machi-chat/machi/policy"
	"github.com/machi-chat/machi/storage"
)

// The admin API, /_machi/admin/v1: every city rule and account action, for
// admin accounts over the client listener and for `machi admin` over the
// local admin socket. Every change takes effect at once (it goes through
// this process's caches) and is written to the audit log before the reply.

const adminPrefix = "/_machi/admin/v1"

// PolicySetting is the settings row that holds the policy admins changed
// at run time; it takes precedence over the config file's policy section.
const PolicySetting = "policy"

// adminRoutes registers the admin API on r, each handler wrapped by wrap
// (which authenticates the caller).
func (s *Server) adminRoutes(r *mux.Router, wrap func(http.HandlerFunc) http.Handler) {
	h := func(method, path string, fn http.HandlerFunc) {
		r.Handle(adminPrefix+path, wrap(fn)).Methods(method)
	}
	h("GET", "/users", s.adminListUsers)
	h("POST", "/users", s.adminCreateUser)
	h("GET", "/users/{userId}", s.adminGetUser)
	h("PUT", "/users/{userId}/admin", s.adminSetAdmin)
	h("POST", "/users/{userId}/suspend", s.adminSuspend(true))
	h("POST", "/users/{userId}/unsuspend", s.adminSuspend(false))
	h("POST", "/users/{userId}/deactivate", s.adminDeactivate)
	h("POST", "/users/{userId}/password", s.adminResetPassword)
	h("PUT", "/users/{userId}/groups", s.adminSetGroups)
	h("GET", "/users/{userId}/devices", s.adminListDevices)
	h("DELETE", "/users/{userId}/devices/{deviceId}", s.adminRevokeDevice)
	h("POST", "/users/{userId}/enrollment_codes", s.adminIssueCode)
	h("GET", "/users/{userId}/enrollment_codes", s.adminListCodes)
	h("DELETE", "/users/{userId}/enrollment_codes/{codeId}", s.adminDeleteCode)
	h("PUT", "/users/{userId}/exemption", s.adminSetExemption)
	h("DELETE", "/users/{userId}/exemption", s.adminDeleteExemption)
	h("GET", "/exemptions", s.adminListExemptions)
	h("GET", "/emergencies", s.adminListEmergencies)
	h("POST", "/emergencies", s.adminDeclareEmergency)
	h("DELETE", "/emergencies/{id}", s.adminEndEmergency)
	h("GET", "/policy", s.adminGetPolicy)
	h("PUT", "/policy", s.adminPutPolicy)
	h("DELETE", "/policy", s.adminResetPolicy)
	h("GET", "/broadcasts", s.adminListBroadcasts)
	h("POST", "/broadcasts", s.adminSendBroadcast)
	h("GET", "/broadcasts/{id}", s.adminGetBroadcast)
	h("GET", "/audit", s.adminAudit)
	h("GET", "/reports", s.adminReports)
}

// requireAdmin lets only admin accounts through.
func (s *Server) requireAdmin(next http.HandlerFunc) http.Handler {
	return s.requireAuth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !DeviceFrom(r.Context()).IsAdmin {
			writeError(w, errForbidden("this API is for administrators only (管理者専用です)"))
			return
		}
		next(w, r)
	}))
}

// CLIActor is the audit log's actor for the local admin socket.
const CLIActor = "cli"

// AdminSocketHandler is the admin API for the local admin socket, which
// only the server's own OS user can open: requests act as CLIActor.
func (s *Server) AdminSocketHandler() http.Handler {
	r := mux.NewRouter().UseEncodedPath()
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, newErr(http.StatusNotFound, "M_UNRECOGNIZED", "unrecognized request"))
	})
	cli := &Device{UserID: CLIActor, IsAdmin: true}
	s.adminRoutes(r, func(h http.HandlerFunc) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			h(w, req.WithContext(context.WithValue(req.Context(), deviceKey, cli)))
		})
	})
	return s.middleware(r)
}

// record writes an admin action to the audit log; the caller replies only
// if it succeeds.
func (s *Server) record(r *http.Request, action, target string, detail map[string]any) error {
	dev := DeviceFrom(r.Context())
	return s.audit.Record(r.Context(), dev.UserID, dev.DeviceID, action, target, detail)
}

// done records the action and replies with body.
func (s *Server) done(w http.ResponseWriter, r *http.Request, action, target string, detail map[string]any, body any) {
	if err := s.record(r, action, target, detail); err != nil {
		s.log.Error("audit log write failed", "action", action, "err", err)
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, body)
}

// targetUser is the {userId} of the path, which must be a local account.
func (s *Server) targetUser(r *http.Request) (storage.User, error) {
	id, err := s.userID(vars(r)["userId"])
	if err != nil {
		return storage.User{}, err
	}
	u, err := s.store.GetUser(r.Context(), id)
	if errors.Is(err, storage.ErrNotFound) {
		return u, errNotFound("no such user: %s", id)
	}
	return u, err
}

type adminUserJSON struct {
	UserID      string   `json:"user_id"`
	DisplayName string   `json:"displayname,omitempty"`
	Admin       bool     `json:"admin"`
	Suspended   bool     `json:"suspended"`
	Deactivated bool     `json:"deactivated"`
	CreatedTS   int64    `json:"created_ts"`
	Groups      []string `json:"groups,omitempty"`
}

func toAdminUser(u storage.User) adminUserJSON {
	return adminUserJSON{UserID: u.UserID, DisplayName: u.DisplayName, Admin: u.IsAdmin, Suspended: u.Suspended,
		Deactivated: u.Deactivated, CreatedTS: u.CreatedTS}
}

func (s *Server) adminListUsers(w http.ResponseWriter, r *http.Request) {
	users, err := s.store.ListUsers(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]adminUserJSON, 0, len(users))
	for _, u := range users {
		out = append(out, toAdminUser(u))
	}
	writeJSON(w, http.StatusOK, map[string]any{"users": out})
}

func (s *Server) adminCreateUser(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Username    string   `json:"username"`
		Password    string   `json:"password"`
		Admin       bool     `json:"admin"`
		DisplayName string   `json:"displayname"`
		Groups      []string `json:"groups"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	id, err := s.userID(req.Username)
	if err != nil {
		writeError(w, err)
		return
	}
	if len(req.Password) < 8 || len(req.Password) > 512 {
		writeError(w, newErr(http.StatusBadRequest, "M_WEAK_PASSWORD", "the password must be 8 to 512 characters"))
		return
	}
	ctx := r.Context()
	if err := CreateUser(ctx, s.store, id, req.Password, req.Admin, s.cfg.Registration.BcryptCost); err != nil {
		if errors.Is(err, storage.ErrConflict) {
			writeError(w, newErr(http.StatusBadRequest, "M_USER_IN_USE", "that user name is taken"))
			return
		}
		writeError(w, err)
		return
	}
	if req.DisplayName != "" {
		if err := s.store.SetDisplayName(ctx, id, req.DisplayName); err != nil {
			writeError(w, err)
			return
		}
	}
	if len(req.Groups) > 0 {
		if err := s.store.SetUserGroups(ctx, id, cleanGroups(req.Groups)); err != nil {
			writeError(w, err)
			return
		}
	}
	s.done(w, r, "user.create", id, map[string]any{"admin": req.Admin, "groups": req.Groups}, map[string]string{"user_id": id})
}

func (s *Server) adminGetUser(w http.ResponseWriter, r *http.Request) {
	u, err := s.targetUser(r)
	if err != nil {
		writeError(w, err)
		return
	}
	ctx := r.Context()
	out := struct {
		adminUserJSON
		Devices []adminDeviceJSON `json:"devices"`
		Exempt  bool              `json:"working_hours_exempt"`
	}{adminUserJSON: toAdminUser(u)}
	if out.Groups, err = s.store.UserGroups(ctx, u.UserID); err != nil {
		writeError(w, err)
		return
	}
	if out.Devices, err = s.adminDevices(ctx, u.UserID); err != nil {
		writeError(w, err)
		return
	}
	ex, err := s.store.Exemptions(ctx)
	if err != nil {
		writeError(w, err)
		return
	}
	for _, e := range ex {
		out.Exempt = out.Exempt || e.UserID == u.UserID
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) adminSetAdmin(w http.ResponseWriter, r *http.Request) {
	u, err := s.targetUser(r)
	if err != nil {
		writeError(w, err)
		return
	}
	var req struct {
		Admin *bool `json:"admin"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.Admin == nil {
		writeError(w, errMissingParam("admin (true or false) is required"))
		return
	}
	if err := s.store.SetAdmin(r.Context(), u.UserID, *req.Admin); err != nil {
		writeError(w, err)
		return
	}
	s.forgetUserTokens(u.UserID)
	s.done(w, r, "user.admin", u.UserID, map[string]any{"admin": *req.Admin}, map[string]any{})
}

// adminSuspend suspends an account (every token fails at once, login is
// refused) or lifts the suspension.
func (s *Server) adminSuspend(suspend bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		u, err := s.targetUser(r)
		if err != nil {
			writeError(w, err)
			return
		}
		var req struct {
			Reason string `json:"reason"`
		}
		if err := readJSON(r, &req); err != nil {
			writeError(w, err)
			return
		}
		if u.Deactivated {
			writeError(w, errInvalidParam("%s is deactivated", u.UserID))
			return
		}
		if err := s.store.SetSuspended(r.Context(), u.UserID, suspend); err != nil {
			writeError(w, err)
			return
		}
		s.forgetUserTokens(u.UserID)
		action := "user.suspend"
		if !suspend {
			action = "user.unsuspend"
		}
		s.done(w, r, action, u.UserID, map[string]any{"reason": req.Reason}, map[string]any{})
	}
}

// adminDeactivate makes the user leave every room and deactivates the
// account for good.
func (s *Server) adminDeactivate(w http.ResponseWriter, r *http.Request) {
	u, err := s.targetUser(r)
	if err != nil {
		writeError(w, err)
		return
	}
	var req struct {
		Reason string `json:"reason"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if err := s.leaveAll(r.Context(), adminActor, u.UserID); err != nil {
		writeError(w, err)
		return
	}
	devices, _ := s.store.ListDevices(r.Context(), u.UserID)
	if err := s.store.DeactivateUser(r.Context(), u.UserID); err != nil {
		writeError(w, err)
		return
	}
	s.forgetUserTokens(u.UserID)
	s.forgetPresence(u.UserID)
	s.devicesRemoved(r.Context(), u.UserID, deviceIDs(devices))
	s.done(w, r, "user.deactivate", u.UserID, map[string]any{"reason": req.Reason}, map[string]any{})
}

func (s *Server) adminResetPassword(w http.ResponseWriter, r *http.Request) {
	u, err := s.targetUser(r)
	if err != nil {
		writeError(w, err)
		return
	}
	var req struct {
		Password string `json:"password"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if len(req.Password) < 8 || len(req.Password) > 512 {
		writeError(w, newErr(http.StatusBadRequest, "M_WEAK_PASSWORD", "the password must be 8 to 512 characters"))
		return
	}
	out, err := ChangePassword(r.Context(), s.store, u.UserID, req.Password, s.cfg.Registration.BcryptCost, "")
	if err != nil {
		writeError(w, err)
		return
	}
	s.forgetUserTokens(u.UserID)
	s.devicesRemoved(r.Context(), u.UserID, out)
	s.done(w, r, "user.password_reset", u.UserID, map[string]any{"devices_logged_out": len(out)}, map[string]any{"devices_logged_out": out})
}

// cleanGroups trims, drops empties and duplicates.
func cleanGroups(in []string) []string {
	seen := map[string]bool{}
	out := []string{}
	for _, g := range in {
		g = strings.TrimSpace(g)
		if g != "" && !seen[g] {
			seen[g] = true
			out = append(out, g)
		}
	}
	return out
}

func (s *Server) adminSetGroups(w http.ResponseWriter, r *http.Request) {
	u, err := s.targetUser(r)
	if err != nil {
		writeError(w, err)
		return
	}
	var req struct {
		Groups []string `json:"groups"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.Groups == nil {
		writeError(w, errMissingParam("groups is required ([] for none)"))
		return
	}
	groups := cleanGroups(req.Groups)
	if err := s.store.SetUserGroups(r.Context(), u.UserID, groups); err != nil {
		writeError(w, err)
		return
	}
	s.done(w, r, "user.groups", u.UserID, map[string]any{"groups": groups}, map[string]any{"groups": groups})
}

type adminDeviceJSON struct {
	DeviceID    string `json:"device_id"`
	DisplayName string `json:"display_name,omitempty"`
	Class       string `json:"class"`
	LastSeenIP  string `json:"last_seen_ip,omitempty"`
	LastSeenTS  int64  `json:"last_seen_ts,omitempty"`
	CreatedTS   int64  `json:"created_ts"`
}

func (s *Server) adminDevices(ctx context.Context, userID string) ([]adminDeviceJSON, error) {
	list, err := s.store.ListDevices(ctx, userID)
	if err != nil {
		return nil, err
	}
	out := make([]adminDeviceJSON, 0, len(list))
	for _, d := range list {
		out = append(out, adminDeviceJSON{DeviceID: d.DeviceID, DisplayName: d.DisplayName, Class: d.Class,
			LastSeenIP: d.LastSeenIP, LastSeenTS: d.LastSeenTS, CreatedTS: d.CreatedTS})
	}
	return out, nil
}

func (s *Server) adminListDevices(w http.ResponseWriter, r *http.Request) {
	u, err := s.targetUser(r)
	if err != nil {
		writeError(w, err)
		return
	}
	out, err := s.adminDevices(r.Context(), u.UserID)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"devices": out})
}

// adminRevokeDevice logs a (lost) device out: its token fails on its very
// next request.
func (s *Server) adminRevokeDevice(w http.ResponseWriter, r *http.Request) {
	u, err := s.targetUser(r)
	if err != nil {
		writeError(w, err)
		return
	}
	deviceID := vars(r)["deviceId"]
	d, err := s.store.GetDevice(r.Context(), u.UserID, deviceID)
	if errors.Is(err, storage.ErrNotFound) {
		writeError(w, errNotFound("%s has no device %s", u.UserID, deviceID))
		return
	} else if err != nil {
		writeError(w, err)
		return
	}
	deleted, err := s.store.DeleteDevices(r.Context(), u.UserID, []string{deviceID}, "")
	if err != nil {
		writeError(w, err)
		return
	}
	s.forgetTokens(d.TokenHash)
	// Its encryption keys went with it; the user's other devices and
	// contacts learn that the device is gone.
	s.devicesRemoved(r.Context(), u.UserID, deleted)
	s.done(w, r, "device.revoke", u.UserID, map[string]any{"device_id": deviceID, "class": d.Class, "last_seen_ip": d.LastSeenIP}, map[string]any{})
}

func (s *Server) adminIssueCode(w http.ResponseWriter, r *http.Request) {
	u, err := s.targetUser(r)
	if err != nil {
		writeError(w, err)
		return
	}
	var req struct {
		TTL string `json:"ttl"` // e.g. "24h"; default from the policy
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if u.Deactivated || u.Suspended {
		writeError(w, errInvalidParam("%s is not active", u.UserID))
		return
	}
	ttl := s.policy.Config().Enrollment.CodeTTL.D()
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 || d > 30*24*time.Hour {
			writeError(w, errInvalidParam("ttl must be a duration up to 720h, e.g. 24h"))
			return
		}
		ttl = d
	}
	now := s.policy.Now()
	code := newEnrollmentCode()
	c := storage.EnrollmentCode{CodeID: strings.ToLower(randomToken(6)), UserID: u.UserID, CodeHash: hashCode(code),
		CreatedBy: DeviceFrom(r.Context()).UserID, CreatedTS: now.UnixMilli(), ExpiresTS: now.Add(ttl).UnixMilli()}
	if err := s.store.PutEnrollmentCode(r.Context(), c); err != nil {
		writeError(w, err)
		return
	}
	s.done(w, r, "enrollment.issue", u.UserID, map[string]any{"code_id": c.CodeID, "expires_ts": c.ExpiresTS},
		map[string]any{"code_id": c.CodeID, "code": code, "expires_ts": c.ExpiresTS})
}

type codeJSON struct {
	CodeID     string `json:"code_id"`
	CreatedBy  string `json:"created_by"`
	CreatedTS  int64  `json:"created_ts"`
	ExpiresTS  int64  `json:"expires_ts"`
	UsedTS     int64  `json:"used_ts,omitempty"`
	UsedDevice string `json:"used_device,omitempty"`
	State      string `json:"state"` // unused, used, expired
}

func (s *Server) adminListCodes(w http.ResponseWriter, r *http.Request) {
	u, err := s.targetUser(r)
	if err != nil {
		writeError(w, err)
		return
	}
	codes, err := s.store.ListEnrollmentCodes(r.Context(), u.UserID)
	if err != nil {
		writeError(w, err)
		return
	}
	now := s.policy.Now().UnixMilli()
	out := make([]codeJSON, 0, len(codes))
	for _, c := range codes {
		state := "unused"
		if c.UsedTS != 0 {
			state = "used"
		} else if c.ExpiresTS <= now {
			state = "expired"
		}
		out = append(out, codeJSON{CodeID: c.CodeID, CreatedBy: c.CreatedBy, CreatedTS: c.CreatedTS, ExpiresTS: c.ExpiresTS,
			UsedTS: c.UsedTS, UsedDevice: c.UsedDevice, State: state})
	}
	writeJSON(w, http.StatusOK, map[string]any{"enrollment_codes": out})
}

func (s *Server) adminDeleteCode(w http.ResponseWriter, r *http.Request) {
	u, err := s.targetUser(r)
	if err != nil {
		writeError(w, err)
		return
	}
	id := vars(r)["codeId"]
	if err := s.store.DeleteEnrollmentCode(r.Context(), u.UserID, id); errors.Is(err, storage.ErrNotFound) {
		writeError(w, errNotFound("%s has no enrollment code %s", u.UserID, id))
		return
	} else if err != nil {
		writeError(w, err)
		return
	}
	s.done(w, r, "enrollment.delete", u.UserID, map[string]any{"code_id": id}, map[string]any{})
}

// ReloadPolicyState puts the stored emergencies and exemptions in force.
func (s *Server) ReloadPolicyState(ctx context.Context) error {
	ems, err := s.store.Emergencies(ctx, s.policy.Now().UnixMilli())
	if err != nil {
		return err
	}
	list := make([]policy.Emergency, 0, len(ems))
	for _, e := range ems {
		list = append(list, policy.Emergency{ID: e.ID, Rooms: e.RoomIDs, Reason: e.Reason, Ends: time.UnixMilli(e.EndsTS)})
	}
	ex, err := s.store.Exemptions(ctx)
	if err != nil {
		return err
	}
	users := make([]string, 0, len(ex))
	for _, e := range ex {
		users = append(users, e.UserID)
	}
	s.policy.SetEmergencies(list)
	s.policy.SetExemptions(users)
	return nil
}

func (s *Server) adminSetExemption(w http.ResponseWriter, r *http.Request) {
	u, err := s.targetUser(r)
	if err != nil {
		writeError(w, err)
		return
	}
	var req struct {
		Reason string `json:"reason"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if strings.TrimSpace(req.Reason) == "" {
		writeError(w, errMissingParam("reason is required (e.g. 危機管理課)"))
		return
	}
	err = s.store.PutExemption(r.Context(), storage.Exemption{UserID: u.UserID, Reason: req.Reason,
		CreatedBy: DeviceFrom(r.Context()).UserID, CreatedTS: s.policy.Now().UnixMilli()})
	if err == nil {
		err = s.ReloadPolicyState(r.Context())
	}
	if err != nil {
		writeError(w, err)
		return
	}
	s.done(w, r, "exemption.set", u.UserID, map[string]any{"reason": req.Reason}, map[string]any{})
}

func (s *Server) adminDeleteExemption(w http.ResponseWriter, r *http.Request) {
	u, err := s.targetUser(r)
	if err != nil {
		writeError(w, err)
		return
	}
	if err := s.store.DeleteExemption(r.Context(), u.UserID); errors.Is(err, storage.ErrNotFound) {
		writeError(w, errNotFound("%s is not exempt", u.UserID))
		return
	} else if err != nil {
		writeError(w, err)
		return
	}
	if err := s.ReloadPolicyState(r.Context()); err != nil {
		writeError(w, err)
		return
	}
	s.done(w, r, "exemption.delete", u.UserID, nil, map[string]any{})
}

func (s *Server) adminListExemptions(w http.ResponseWriter, r *http.Request) {
	ex, err := s.store.Exemptions(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]map[string]any, 0, len(ex))
	for _, e := range ex {
		out = append(out, map[string]any{"user_id": e.UserID, "reason": e.Reason, "created_by": e.CreatedBy, "created_ts": e.CreatedTS})
	}
	writeJSON(w, http.StatusOK, map[string]any{"exemptions": out})
}

func emergencyJSON(e storage.Emergency) map[string]any {
	return map[string]any{"id": e.ID, "rooms": append([]string{}, e.RoomIDs...), "reason": e.Reason,
		"starts_ts": e.StartsTS, "ends_ts": e.EndsTS, "created_by": e.CreatedBy}
}

func (s *Server) adminListEmergencies(w http.ResponseWriter, r *http.Request) {
	ems, err := s.store.Emergencies(r.Context(), s.policy.Now().UnixMilli())
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]map[string]any, 0, len(ems))
	for _, e := range ems {
		out = append(out, emergencyJSON(e))
	}
	writeJSON(w, http.StatusOK, map[string]any{"emergencies": out})
}

// adminDeclareEmergency (緊急時) lifts the working-hours block, server-wide
// or for the rooms given, until ends_ts or for duration.
func (s *Server) adminDeclareEmergency(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Reason   string   `json:"reason"`
		Rooms    []string `json:"rooms"`
		EndsTS   int64    `json:"ends_ts"`
		Duration string   `json:"duration"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if strings.TrimSpace(req.Reason) == "" {
		writeError(w, errMissingParam("reason is required"))
		return
	}
	now := s.policy.Now()
	ends := time.UnixMilli(req.EndsTS)
	switch {
	case req.Duration != "" && req.EndsTS != 0:
		writeError(w, errInvalidParam("give ends_ts or duration, not both"))
		return
	case req.Duration != "":
		d, err := time.ParseDuration(req.Duration)
		if err != nil || d <= 0 {
			writeError(w, errInvalidParam("duration must be positive, e.g. 6h"))
			return
		}
		ends = now.Add(d)
	case req.EndsTS == 0:
		writeError(w, errMissingParam("ends_ts or duration is required: an emergency must end"))
		return
	}
	if !ends.After(now) || ends.Sub(now) > 30*24*time.Hour {
		writeError(w, errInvalidParam("the emergency must end in the future and within 30 days"))
		return
	}
	for _, room := range req.Rooms {
		if !strings.HasPrefix(room, "!") {
			writeError(w, errInvalidParam("%q is not a room ID", room))
			return
		}
	}
	e := storage.Emergency{ID: "em_" + strings.ToLower(randomToken(6)), RoomIDs: req.Rooms, Reason: req.Reason,
		StartsTS: now.UnixMilli(), EndsTS: ends.UnixMilli(), CreatedBy: DeviceFrom(r.Context()).UserID}
	if err := s.store.PutEmergency(r.Context(), e); err != nil {
		writeError(w, err)
		return
	}
	if err := s.ReloadPolicyState(r.Context()); err != nil {
		writeError(w, err)
		return
	}
	s.done(w, r, "emergency.declare", strings.Join(req.Rooms, ","), map[string]any{"id": e.ID, "reason": e.Reason, "ends_ts": e.EndsTS}, emergencyJSON(e))
}

func (s *Server) adminEndEmergency(w http.ResponseWriter, r *http.Request) {
	id := vars(r)["id"]
	if err := s.store.EndEmergency(r.Context(), id, s.policy.Now().UnixMilli()); errors.Is(err, storage.ErrNotFound) {
		writeError(w, errNotFound("no emergency %s", id))
		return
	} else if err != nil {
		writeError(w, err)
		return
	}
	if err := s.ReloadPolicyState(r.Context()); err != nil {
		writeError(w, err)
		return
	}
	s.done(w, r, "emergency.end", "", map[string]any{"id": id}, map[string]any{})
}

func (s *Server) adminGetPolicy(w http.ResponseWriter, r *http.Request) {
	source := "config file"
	if _, err := s.store.GetSetting(r.Context(), PolicySetting); err == nil {
		source = "admin (stored in the database)"
	}
	writeJSON(w, http.StatusOK, map[string]any{"policy": s.policy.Config(), "source": source})
}

// adminPutPolicy changes the policy at run time: the fields given replace
// the ones in force; the rest stay.
func (s *Server) adminPutPolicy(w http.ResponseWriter, r *http.Request) {
	body, err := readObject(r)
	if err != nil {
		writeError(w, err)
		return
	}
	cfg := s.policy.Config()
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		writeError(w, errBadJSON("policy: %v", err))
		return
	}
	if err := cfg.Validate(); err != nil {
		writeError(w, errInvalidParam("%v", err))
		return
	}
	stored, _ := json.Marshal(cfg)
	if err := s.store.PutSetting(r.Context(), PolicySetting, stored, s.policy.Now().UnixMilli()); err != nil {
		writeError(w, err)
		return
	}
	if err := s.policy.SetConfig(cfg); err != nil {
		writeError(w, errInvalidParam("%v", err))
		return
	}
	s.done(w, r, "policy.update", "", map[string]any{"change": json.RawMessage(body)}, map[string]any{"policy": cfg})
}

// adminResetPolicy drops the admins' changes: the config file's policy is
// in force again.
func (s *Server) adminResetPolicy(w http.ResponseWriter, r *http.Request) {
	if err := s.store.DeleteSetting(r.Context(), PolicySetting); err != nil {
		writeError(w, err)
		return
	}
	if err := s.policy.SetConfig(s.cfg.Policy); err != nil {
		writeError(w, err)
		return
	}
	s.done(w, r, "policy.reset", "", nil, map[string]any{"policy": s.cfg.Policy})
}

func (s *Server) broadcastJSON(ctx context.Context, b storage.Broadcast) (map[string]any, error) {
	c, err := s.store.BroadcastCounts(ctx, b.ID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"broadcast_id": b.ID, "sender": b.Sender, "group": b.Group, "body": b.Body, "created_ts": b.CreatedTS,
		"recipients": b.Recipients, "delivered": c.Delivered, "joined": c.Joined, "read": c.Read}, nil
}

// adminSendBroadcast sends a notice (一斉通知) to everyone or to a group.
func (s *Server) adminSendBroadcast(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Body  string `json:"body"`
		Group string `json:"group"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if strings.TrimSpace(req.Body) == "" {
		writeError(w, errMissingParam("body is required"))
		return
	}
	ctx := r.Context()
	users, err := s.notices.recipients(ctx, strings.TrimSpace(req.Group))
	if err != nil {
		writeError(w, err)
		return
	}
	if len(users) == 0 {
		writeError(w, errInvalidParam("nobody to send to: group %q has no active members", req.Group))
		return
	}
	b := storage.Broadcast{ID: "bc_" + strings.ToLower(randomToken(8)), Sender: DeviceFrom(ctx).UserID, Group: strings.TrimSpace(req.Group),
		Body: req.Body, CreatedTS: s.policy.Now().UnixMilli(), Recipients: len(users)}
	if err := s.store.PutBroadcast(ctx, b); err != nil {
		writeError(w, err)
		return
	}
	// Delivery goes on even if the admin's request is cancelled midway.
	failed := s.notices.broadcast(context.WithoutCancel(ctx), b, users)
	out, err := s.broadcastJSON(ctx, b)
	if err != nil {
		writeError(w, err)
		return
	}
	out["failed"] = append([]string{}, failed...)
	s.done(w, r, "broadcast.send", b.Group, map[string]any{"broadcast_id": b.ID, "recipients": len(users), "failed": len(failed)}, out)
}

func (s *Server) adminListBroadcasts(w http.ResponseWriter, r *http.Request) {
	list, err := s.store.ListBroadcasts(r.Context(), 100)
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]map[string]any, 0, len(list))
	for _, b := range list {
		j, err := s.broadcastJSON(r.Context(), b)
		if err != nil {
			writeError(w, err)
			return
		}
		out = append(out, j)
	}
	writeJSON(w, http.StatusOK, map[string]any{"broadcasts": out})
}

func (s *Server) adminGetBroadcast(w http.ResponseWriter, r *http.Request) {
	b, err := s.store.GetBroadcast(r.Context(), vars(r)["id"])
	if errors.Is(err, storage.ErrNotFound) {
		writeError(w, errNotFound("no such broadcast"))
		return
	} else if err != nil {
		writeError(w, err)
		return
	}
	out, err := s.broadcastJSON(r.Context(), b)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// adminAudit serves the audit log as JSON, or as CSV with format=csv.
// Filters: since, until (ms), actor, action, rule, target, after (an ID,
// for paging), limit.
func (s *Server) adminAudit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var aq storage.AuditQuery
	for _, f := range []struct {
		name string
		dst  *int64
	}{{"since", &aq.Since}, {"until", &aq.Until}, {"after", &aq.AfterID}} {
		if v := q.Get(f.name); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				writeError(w, errInvalidParam("%s must be a non-negative integer", f.name))
				return
			}
			*f.dst = n
		}
	}
	aq.Actor, aq.Action, aq.Rule, aq.Target = q.Get("actor"), q.Get("action"), q.Get("rule"), q.Get("target")
	aq.Limit = 1000
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > 10000 {
			writeError(w, errInvalidParam("limit must be 1 to 10000"))
			return
		}
		aq.Limit = n
	}
	// Denials are written in the background; show every one made so far.
	fctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	if err := s.audit.Flush(fctx); err != nil {
		s.log.Warn("audit log: queued denials not yet written", "err", err)
	}
	cancel()
	entries, err := s.store.QueryAudit(r.Context(), aq)
	if err != nil {
		writeError(w, err)
		return
	}
	switch q.Get("format") {
	case "", "json":
		out := make([]auditJSON, 0, len(entries))
		for _, e := range entries {
			out = append(out, toAuditJSON(e))
		}
		writeJSON(w, http.StatusOK, map[string]any{"entries": out})
	case "csv":
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Content-Disposition", `attachment; filename="machi-audit.csv"`)
		if err := writeAuditCSV(w, entries); err != nil {
			s.log.Error("audit CSV export failed", "err", err)
		}
	default:
		writeError(w, errInvalidParam("format must be json or csv"))
	}
}
