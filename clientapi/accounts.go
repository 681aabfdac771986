package clientapi

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/machi-chat/machi/policy"
	"github.com/machi-chat/machi/storage"
)

func isNotFound(err error) bool { return errors.Is(err, storage.ErrNotFound) }

func pathUnescape(s string) (string, error) { return url.PathUnescape(s) }

func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

var localpartRE = regexp.MustCompile(`^[a-z0-9._=/+-]+$`)

// userID makes a full user ID from a localpart or accepts a full local ID.
// It trims nothing: a name for a new account with a stray newline is
// refused, not taken as its neighbour (logins trim before calling).
func (s *Server) userID(name string) (string, error) {
	if strings.HasPrefix(name, "@") {
		local, server, ok := strings.Cut(name[1:], ":")
		if !ok || server != s.cfg.ServerName {
			return "", errForbidden("%s is not a user of this server", name)
		}
		name = local
	}
	name = strings.ToLower(name)
	if name == "" || !localpartRE.MatchString(name) {
		return "", newErr(http.StatusBadRequest, "M_INVALID_USERNAME", "user names may contain only a-z, 0-9, and ._=-/+")
	}
	id := "@" + name + ":" + s.cfg.ServerName
	if len(id) > 255 {
		return "", newErr(http.StatusBadRequest, "M_INVALID_USERNAME", "user ID is too long")
	}
	return id, nil
}

// CreateUser creates an account; for registration and the admin CLI. Its
// display name starts as the localpart, as clients expect of a new account
// (member lists and joined_members show a name, not a bare ID).
func CreateUser(ctx context.Context, store storage.Accounts, userID, password string, admin bool, cost int) error {
	hash := ""
	if password != "" {
		h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
		if err != nil {
			return fmt.Errorf("hash password: %w", err)
		}
		hash = string(h)
	}
	localpart, _, _ := strings.Cut(strings.TrimPrefix(userID, "@"), ":")
	return store.CreateUser(ctx, storage.User{UserID: userID, PasswordHash: hash, IsAdmin: admin, DisplayName: localpart,
		CreatedTS: time.Now().UnixMilli()})
}

// SetPassword sets a user's password; for the admin CLI and /account/password.
func SetPassword(ctx context.Context, store storage.Accounts, userID, password string, cost int) error {
	h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		return fmt.Errorf("hash password: %w", err)
	}
	return store.SetPasswordHash(ctx, userID, string(h))
}

// ChangePassword sets a user's password and logs out every device but
// keepDevice (which may be ""), since whoever knew the old password may
// hold one of them. It returns the devices logged out.
func ChangePassword(ctx context.Context, store storage.Accounts, userID, password string, cost int, keepDevice string) ([]string, error) {
	if err := SetPassword(ctx, store, userID, password, cost); err != nil {
		return nil, err
	}
	return store.DeleteDevices(ctx, userID, nil, keepDevice)
}

func newDeviceID() string { return strings.ToUpper(randomToken(8))[:10] }

// newDevice logs a user in on a device and returns its access token.
func (s *Server) newDevice(ctx context.Context, r *http.Request, userID, deviceID, displayName string, class policy.DeviceClass) (string, string, error) {
	if deviceID == "" {
		deviceID = newDeviceID()
	}
	// Re-using a device ID replaces its token: the old one stops working.
	if old, err := s.store.GetDevice(ctx, userID, deviceID); err == nil {
		s.forgetTokens(old.TokenHash)
	}
	tok := "mct_" + randomToken(32)
	now := time.Now().UnixMilli()
	err := s.store.PutDevice(ctx, storage.Device{
		UserID: userID, DeviceID: deviceID, DisplayName: displayName, TokenHash: hashToken(tok),
		LastSeenTS: now, LastSeenIP: s.clientIP(r), CreatedTS: now, Class: string(class),
	})
	if err == nil {
		// A new device is a change of the user's device list, for them
		// and those who share a room with them, before it uploads keys.
		if err := s.deviceListChanged(ctx, userID, deviceID); err != nil {
			s.log.Warn("record device list change for a new device", "user", userID, "err", err)
		}
	}
	return deviceID, tok, err
}

type loginResponse struct {
	UserID      string `json:"user_id"`
	AccessToken string `json:"access_token,omitempty"`
	DeviceID    string `json:"device_id,omitempty"`
	HomeServer  string `json:"home_server,omitempty"`
}

// handleLoginFlows serves GET /_matrix/client/v3/login: passwords (with
// an enrollment code from phones), machi's own sign-in page through the SSO
// redirect flow, and login tokens (from that page, or an enrollment code).
func (s *Server) handleLoginFlows(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, 200, map[string]any{"flows": []any{
		map[string]string{"type": "m.login.password"},
		map[string]any{"type": "m.login.sso", "identity_providers": []any{
			map[string]string{"id": ssoProvider, "name": "machi (端末認証 / device sign-in)"},
		}},
		map[string]string{"type": "m.login.token"},
	}})
}

type identifier struct {
	Type string `json:"type"`
	User string `json:"user"`
}

type passwordAuth struct {
	Type       string     `json:"type"`
	Identifier identifier `json:"identifier"`
	User       string     `json:"user"` // deprecated form
	Password   string     `json:"password"`
	Session    string     `json:"session"`
}

// checkPassword verifies a password login and returns the user ID.
func (s *Server) checkPassword(ctx context.Context, a passwordAuth) (string, error) {
	name := a.Identifier.User
	if a.Identifier.Type == "" && name == "" {
		name = a.User
	} else if a.Identifier.Type != "m.id.user" {
		return "", errBadJSON("unsupported identifier type %q", a.Identifier.Type)
	}
	if name == "" || a.Password == "" {
		return "", errMissingParam("user and password are required")
	}
	// People type "alice " at a login prompt.
	userID, err := s.userID(strings.TrimSpace(name))
	if err != nil {
		return "", errForbidden("invalid user name or password")
	}
	u, err := s.store.GetUser(ctx, userID)
	if err != nil && !isNotFound(err) {
		return "", err
	}
	if err != nil || u.Deactivated || u.PasswordHash == "" ||
		bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(a.Password)) != nil {
		return "", errForbidden("invalid user name or password")
	}
	if u.Suspended {
		return "", errLocked()
	}
	return userID, nil
}

// handleLogin serves POST /_matrix/client/v3/login: m.login.password and
// m.login.token. A device logging in from outside the trusted networks is
// "mobile" and needs an enrollment code: with the password as
// org.machi.enrollment_code, from the sign-in page, or as the token itself.
// Not idempotent: every call makes a new token (re-using device_id replaces
// that device's token).
func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	if err := s.limiter.allow("login:" + s.clientIP(r)); err != nil {
		writeError(w, err)
		return
	}
	var req struct {
		passwordAuth
		Token       string `json:"token"`
		Code        string `json:"org.machi.enrollment_code"`
		DeviceID    string `json:"device_id"`
		DisplayName string `json:"initial_device_display_name"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	ctx := r.Context()
	class := s.deviceClass(r)
	if req.DeviceID == "" {
		req.DeviceID = newDeviceID()
	}
	var userID string
	var err error
	switch req.Type {
	case "m.login.password":
		if userID, err = s.checkPassword(ctx, req.passwordAuth); err != nil {
			break
		}
		if s.policy.EnrollmentRequired(class) {
			if strings.TrimSpace(req.Code) == "" {
				err = s.policy.Deny(ctx, policy.Subject{UserID: userID, DeviceID: req.DeviceID, What: "login"}, deviceCodeRequired())
			} else {
				err = s.useCode(ctx, userID, req.Code, req.DeviceID)
			}
		}
	case "m.login.token":
		userID, err = s.loginWithToken(ctx, r, req.Token, req.DeviceID, class)
	default:
		err = newErr(http.StatusBadRequest, "M_UNKNOWN", "unsupported login type %q", req.Type)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	deviceID, tok, err := s.newDevice(ctx, r, userID, req.DeviceID, req.DisplayName, class)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, loginResponse{UserID: userID, AccessToken: tok, DeviceID: deviceID, HomeServer: s.cfg.ServerName})
}

// handleRegister serves POST /_matrix/client/v3/register: open registration
// (when enabled) with the m.login.dummy stage.
func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("kind") == "guest" {
		writeError(w, newErr(http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN", "guest access is disabled"))
		return
	}
	if !s.cfg.Registration.Enabled {
		writeError(w, errForbidden("registration is disabled: ask an administrator for an account"))
		return
	}
	if err := s.limiter.allow("register:" + s.clientIP(r)); err != nil {
		writeError(w, err)
		return
	}
	var req struct {
		Username     string `json:"username"`
		Password     string `json:"password"`
		DeviceID     string `json:"device_id"`
		DisplayName  string `json:"initial_device_display_name"`
		InhibitLogin *bool  `json:"inhibit_login"`
		Auth         *struct {
			Type    string `json:"type"`
			Session string `json:"session"`
		} `json:"auth"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	params := regParams{Username: req.Username, Password: req.Password, DeviceID: req.DeviceID, DisplayName: req.DisplayName, InhibitLogin: req.InhibitLogin}
	now := time.Now()
	if req.Auth == nil || req.Auth.Type == "" {
		writeJSON(w, http.StatusUnauthorized, map[string]any{
			"flows": []any{map[string]any{"stages": []string{"m.login.dummy"}}}, "params": map[string]any{}, "session": s.registrations.start(params, now),
		})
		return
	}
	if req.Auth.Type != "m.login.dummy" {
		writeError(w, errBadJSON("unsupported auth type %q", req.Auth.Type))
		return
	}
	sess, known := s.registrations.get(req.Auth.Session, now)
	if known {
		params.fill(sess.params)
	}
	inhibit := params.InhibitLogin != nil && *params.InhibitLogin
	// A phone cannot register itself a session: it needs an enrollment code,
	// which only exists for accounts an admin made.
	class := s.deviceClass(r)
	if !inhibit && s.policy.EnrollmentRequired(class) {
		writeError(w, s.policy.Deny(r.Context(), policy.Subject{What: "register", Target: s.clientIP(r)}, deviceCodeRequired()))
		return
	}
	var userID string
	if known && sess.userID != "" {
		// This session's account exists: the same request again (its
		// answer lost) gets the same account, logged in anew.
		userID = sess.userID
	} else {
		if params.Username == "" {
			params.Username = strings.ToLower(randomToken(9))
		}
		var err error
		if userID, err = s.userID(params.Username); err != nil {
			writeError(w, err)
			return
		}
		if params.Password == "" {
			writeError(w, errMissingParam("password is required"))
			return
		}
		if len(params.Password) > 512 {
			writeError(w, newErr(http.StatusBadRequest, "M_WEAK_PASSWORD", "password is too long"))
			return
		}
		if err := CreateUser(r.Context(), s.store, userID, params.Password, false, s.cfg.Registration.BcryptCost); err != nil {
			if errors.Is(err, storage.ErrConflict) {
				writeError(w, newErr(http.StatusBadRequest, "M_USER_IN_USE", "that user name is taken"))
				return
			}
			writeError(w, err)
			return
		}
		if known {
			s.registrations.made(req.Auth.Session, userID)
		}
	}
	req.DeviceID, req.DisplayName = params.DeviceID, params.DisplayName
	resp := loginResponse{UserID: userID, HomeServer: s.cfg.ServerName}
	if !inhibit {
		var err error
		if resp.DeviceID, resp.AccessToken, err = s.newDevice(r.Context(), r, userID, req.DeviceID, req.DisplayName, class); err != nil {
			writeError(w, err)
			return
		}
	}
	writeJSON(w, 200, resp)
}

// handleRegisterAvailable serves GET /_matrix/client/v3/register/available.
func (s *Server) handleRegisterAvailable(w http.ResponseWriter, r *http.Request) {
	userID, err := s.userID(r.URL.Query().Get("username"))
	if err != nil {
		writeError(w, err)
		return
	}
	if _, err := s.store.GetUser(r.Context(), userID); err == nil {
		writeError(w, newErr(http.StatusBadRequest, "M_USER_IN_USE", "that user name is taken"))
		return
	} else if !isNotFound(err) {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, map[string]bool{"available": true})
}

// handleSharedSecretNonce serves GET /_synapse/admin/v1/register.
func (s *Server) handleSharedSecretNonce(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Registration.SharedSecret == "" {
		writeError(w, errForbidden("shared-secret registration is disabled"))
		return
	}
	writeJSON(w, 200, map[string]string{"nonce": s.nonces.issue()})
}

// handleSharedSecretRegister serves POST /_synapse/admin/v1/register: the
// body's mac is HMAC-SHA1(secret, nonce\0user\0password\0admin|notadmin).
// A nonce works once.
func (s *Server) handleSharedSecretRegister(w http.ResponseWriter, r *http.Request) {
	secret := s.cfg.Registration.SharedSecret
	if secret == "" {
		writeError(w, errForbidden("shared-secret registration is disabled"))
		return
	}
	var req struct {
		Nonce       string `json:"nonce"`
		Username    string `json:"username"`
		DisplayName string `json:"displayname"`
		Password    string `json:"password"`
		Admin       bool   `json:"admin"`
		Mac         string `json:"mac"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.Nonce == "" || req.Username == "" || req.Password == "" || req.Mac == "" {
		writeError(w, errMissingParam("nonce, username, password and mac are required"))
		return
	}
	if !s.nonces.use(req.Nonce) {
		writeError(w, errForbidden("unrecognised nonce"))
		return
	}
	mac := hmac.New(sha1.New, []byte(secret))
	adminStr := "notadmin"
	if req.Admin {
		adminStr = "admin"
	}
	mac.Write([]byte(req.Nonce + "\x00" + req.Username + "\x00" + req.Password + "\x00" + adminStr))
	want := hex.EncodeToString(mac.Sum(nil))
	if !hmac.Equal([]byte(want), []byte(strings.ToLower(req.Mac))) {
		writeError(w, errForbidden("HMAC incorrect"))
		return
	}
	userID, err := s.userID(req.Username)
	if err != nil {
		writeError(w, err)
		return
	}
	if err := CreateUser(r.Context(), s.store, userID, req.Password, req.Admin, s.cfg.Registration.BcryptCost); err != nil {
		if errors.Is(err, storage.ErrConflict) {
			writeError(w, newErr(http.StatusBadRequest, "M_USER_IN_USE", "that user name is taken"))
			return
		}
		writeError(w, err)
		return
	}
	if req.DisplayName != "" {
		_ = s.store.SetDisplayName(r.Context(), userID, req.DisplayName)
	}
	deviceID, tok, err := s.newDevice(r.Context(), r, userID, "", "", s.deviceClass(r))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, loginResponse{UserID: userID, AccessToken: tok, DeviceID: deviceID, HomeServer: s.cfg.ServerName})
}

// handleWhoami serves GET /_matrix/client/v3/account/whoami.
func (s *Server) handleWhoami(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	writeJSON(w, 200, map[string]any{"user_id": dev.UserID, "device_id": dev.DeviceID, "is_guest": false})
}

// handleLogout serves POST /_matrix/client/v3/logout: deletes this device.
func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	deleted, err := s.store.DeleteDevices(r.Context(), dev.UserID, []string{dev.DeviceID}, "")
	if err != nil {
		writeError(w, err)
		return
	}
	s.forgetTokens(dev.tokenHash)
	s.devicesRemoved(r.Context(), dev.UserID, deleted)
	writeJSON(w, 200, map[string]any{})
}

// handleLogoutAll serves POST /_matrix/client/v3/logout/all.
func (s *Server) handleLogoutAll(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	deleted, err := s.store.DeleteDevices(r.Context(), dev.UserID, nil, "")
	if err != nil {
		writeError(w, err)
		return
	}
	s.forgetUserTokens(dev.UserID)
	s.devicesRemoved(r.Context(), dev.UserID, deleted)
	writeJSON(w, 200, map[string]any{})
}

// handlePassword serves POST /_matrix/client/v3/account/password (UIA:
// m.login.password). Other devices are logged out unless logout_devices is
// false.
func (s *Server) handlePassword(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	var req struct {
		NewPassword   string   `json:"new_password"`
		LogoutDevices *bool    `json:"logout_devices"`
		Auth          *uiaAuth `json:"auth"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.NewPassword == "" {
		writeError(w, errMissingParam("new_password is required"))
		return
	}
	if len(req.NewPassword) > 512 {
		writeError(w, newErr(http.StatusBadRequest, "M_WEAK_PASSWORD", "password is too long"))
		return
	}
	if !s.uia(w, r, dev, "account/password", req.Auth) {
		return
	}
	var err error
	if req.LogoutDevices == nil || *req.LogoutDevices {
		var deleted []string
		deleted, err = ChangePassword(r.Context(), s.store, dev.UserID, req.NewPassword, s.cfg.Registration.BcryptCost, dev.DeviceID)
		s.forgetUserTokens(dev.UserID)
		s.devicesRemoved(r.Context(), dev.UserID, deleted)
	} else {
		err = SetPassword(r.Context(), s.store, dev.UserID, req.NewPassword, s.cfg.Registration.BcryptCost)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, map[string]any{})
}

// handleDeactivate serves POST /_matrix/client/v3/account/deactivate (UIA:
// m.login.password): leaves every room, then deactivates the account and
// removes its devices.
func (s *Server) handleDeactivate(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	var req struct {
		Auth *uiaAuth `json:"auth"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if !s.uia(w, r, dev, "account/deactivate", req.Auth) {
		return
	}
	if err := s.leaveAll(r.Context(), dev.actor(), dev.UserID); err != nil {
		writeError(w, err)
		return
	}
	devices, _ := s.store.ListDevices(r.Context(), dev.UserID)
	if err := s.store.DeactivateUser(r.Context(), dev.UserID); err != nil {
		writeError(w, err)
		return
	}
	s.forgetUserTokens(dev.UserID)
	s.forgetPresence(dev.UserID)
	s.devicesRemoved(r.Context(), dev.UserID, deviceIDs(devices))
	writeJSON(w, 200, map[string]string{"id_server_unbind_result": "no-support"})
}

type deviceJSON struct {
	DeviceID    string `json:"device_id"`
	DisplayName string `json:"display_name,omitempty"`
	LastSeenIP  string `json:"last_seen_ip,omitempty"`
	LastSeenTS  int64  `json:"last_seen_ts,omitempty"`
}

func toDeviceJSON(d storage.Device) deviceJSON {
	return deviceJSON{DeviceID: d.DeviceID, DisplayName: d.DisplayName, LastSeenIP: d.LastSeenIP, LastSeenTS: d.LastSeenTS}
}

// handleDevices serves GET /_matrix/client/v3/devices.
func (s *Server) handleDevices(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	list, err := s.store.ListDevices(r.Context(), dev.UserID)
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]deviceJSON, 0, len(list))
	for _, d := range list {
		out = append(out, toDeviceJSON(d))
	}
	writeJSON(w, 200, map[string]any{"devices": out})
}

// handleGetDevice serves GET /_matrix/client/v3/devices/{deviceId}.
func (s *Server) handleGetDevice(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	d, err := s.store.GetDevice(r.Context(), dev.UserID, vars(r)["deviceId"])
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, toDeviceJSON(d))
}

// handlePutDevice serves PUT /_matrix/client/v3/devices/{deviceId}.
func (s *Server) handlePutDevice(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	var req struct {
		DisplayName *string `json:"display_name"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	id := vars(r)["deviceId"]
	if _, err := s.store.GetDevice(r.Context(), dev.UserID, id); err != nil {
		writeError(w, err)
		return
	}
	if req.DisplayName != nil {
		if err := s.store.SetDeviceName(r.Context(), dev.UserID, id, *req.DisplayName); err != nil {
			writeError(w, err)
			return
		}
		if err := s.deviceListChanged(r.Context(), dev.UserID, id); err != nil {
			writeError(w, err)
			return
		}
	}
	writeJSON(w, 200, map[string]any{})
}

// handleDeleteDevice serves DELETE /_matrix/client/v3/devices/{deviceId}
// (UIA: m.login.password).
func (s *Server) handleDeleteDevice(w http.ResponseWriter, r *http.Request) {
	s.deleteDevices(w, r, []string{vars(r)["deviceId"]}, false)
}

// handleDeleteDevices serves POST /_matrix/client/v3/delete_devices (UIA).
func (s *Server) handleDeleteDevices(w http.ResponseWriter, r *http.Request) {
	s.deleteDevices(w, r, nil, true)
}

func (s *Server) deleteDevices(w http.ResponseWriter, r *http.Request, ids []string, fromBody bool) {
	dev := DeviceFrom(r.Context())
	var req struct {
		Devices []string `json:"devices"`
		Auth    *uiaAuth `json:"auth"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if fromBody {
		if req.Devices == nil {
			writeError(w, errMissingParam("devices is required"))
			return
		}
		ids = req.Devices
	}
	if len(ids) == 0 {
		writeJSON(w, 200, map[string]any{})
		return
	}
	if len(ids) == 1 && !fromBody {
		if _, err := s.store.GetDevice(r.Context(), dev.UserID, ids[0]); err != nil {
			writeError(w, err)
			return
		}
	}
	// The session is bound to the devices it deletes, in any order.
	if !s.uia(w, r, dev, "delete_devices:"+strings.Join(slices.Sorted(slices.Values(ids)), "\x00"), req.Auth) {
		return
	}
	hashes := map[string]string{}
	if list, err := s.store.ListDevices(r.Context(), dev.UserID); err == nil {
		for _, d := range list {
			hashes[d.DeviceID] = d.TokenHash
		}
	}
	deleted, err := s.store.DeleteDevices(r.Context(), dev.UserID, ids, "")
	if err != nil {
		writeError(w, err)
		return
	}
	for _, id := range deleted {
		s.forgetTokens(hashes[id])
	}
	s.devicesRemoved(r.Context(), dev.UserID, deleted)
	writeJSON(w, 200, map[string]any{})
}

// rawObject reports whether b is a JSON object.
func rawObject(b json.RawMessage) bool {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		case '{':
			return true
		default:
			return false
		}
	}
	return false
}

func deviceIDs(list []storage.Device) []string {
	out := make([]string, len(list))
	for i, d := range list {
		out[i] = d.DeviceID
	}
	return out
}
