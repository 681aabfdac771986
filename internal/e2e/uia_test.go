package e2e

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/machi-chat/machi/internal/testrig"
)

// uiaResp is a UIA answer: the status, and for a 401 the flows and session.
type uiaResp struct {
	status int
	mautrix.RespUserInteractive
}

// uiaCall sends a request with mautrix-go and reads a 401's UIA body.
func uiaCall(t *testing.T, c *mautrix.Client, method string, body any, path ...any) uiaResp {
	t.Helper()
	content, resp, err := c.MakeFullRequestWithResp(ctxT(t), mautrix.FullRequest{Method: method, URL: c.BuildClientURL(path...), RequestJSON: body})
	if resp == nil {
		t.Fatalf("%s %v: %v", method, path, err)
	}
	out := uiaResp{status: resp.StatusCode}
	if resp.StatusCode != 200 {
		if err := json.Unmarshal(content, &out.RespUserInteractive); err != nil {
			t.Fatalf("%s %v: %d %q: %v", method, path, resp.StatusCode, content, err)
		}
	}
	return out
}

// wantChallenge checks a 401 that offers the password stage, with errcode.
func wantChallenge(t *testing.T, what string, r uiaResp, errcode string) string {
	t.Helper()
	if r.status != 401 || r.Session == "" || len(r.Flows) != 1 || !slices.Equal(r.Flows[0].Stages, []mautrix.AuthType{mautrix.AuthTypePassword}) || r.ErrCode != errcode {
		t.Fatalf("%s: %d %+v, want 401 with the m.login.password flow, a session and errcode %q", what, r.status, r.RespUserInteractive, errcode)
	}
	if len(r.Completed) != 0 {
		t.Fatalf("%s: completed %v", what, r.Completed)
	}
	return r.Session
}

func passwordAuth(user id.UserID, password, session string) map[string]any {
	return map[string]any{"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": string(user)},
		"password": password, "session": session}
}

// loginAgain logs c's user in on a new device.
func loginAgain(t *testing.T, c *mautrix.Client, password string) (*mautrix.Client, error) {
	t.Helper()
	other, err := mautrix.NewClient(c.HomeserverURL.String(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = other.Login(ctxT(t), &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, Password: password, StoreCredentials: true,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: string(c.UserID)}})
	return other, err
}

func wantTokenDead(t *testing.T, c *mautrix.Client) {
	t.Helper()
	if _, err := c.Whoami(ctxT(t)); !errors.Is(err, mautrix.MUnknownToken) {
		t.Fatalf("token of %s still works: %v", c.DeviceID, err)
	}
}

// TestUIA drives user-interactive auth with mautrix-go: a challenge, a
// wrong password, the right one, and sessions that cannot be replayed for
// another request.
func TestUIA(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		srv := startServer(t, engine)
		alice, bob := register(t, srv, "alice"), register(t, srv, "bob")
		const pw = "secret-alice"
		second, err := loginAgain(t, alice, pw)
		if err != nil {
			t.Fatal(err)
		}
		third, err := loginAgain(t, alice, pw)
		if err != nil {
			t.Fatal(err)
		}

		// No auth: a 401 with the flow and a session; nothing happens.
		r := uiaCall(t, alice, "DELETE", map[string]any{}, "v3", "devices", second.DeviceID)
		session := wantChallenge(t, "delete without auth", r, "")
		if _, err := second.Whoami(ctxT(t)); err != nil {
			t.Fatalf("device deleted without auth: %v", err)
		}
		// A wrong password: 401 M_FORBIDDEN, same session; still nothing.
		r = uiaCall(t, alice, "DELETE", map[string]any{"auth": passwordAuth(alice.UserID, "wrong", session)}, "v3", "devices", second.DeviceID)
		if got := wantChallenge(t, "wrong password", r, "M_FORBIDDEN"); got != session {
			t.Fatalf("wrong password changed the session: %s → %s", session, got)
		}
		// Bob's identifier and password do not confirm alice's request:
		// a 403 (the request is not bob's to make), whether the password
		// is bob's or not, and by localpart too, in any case (SyTest's "DELETE
		// /device/{deviceId} requires UI auth user to match device owner").
		for _, who := range []string{bob.UserID.String(), bob.UserID.Localpart(), strings.ToUpper(bob.UserID.Localpart())} {
			for _, pw := range []string{"secret-bob", "wrong"} {
				r = uiaCall(t, alice, "DELETE", map[string]any{"auth": passwordAuth(id.UserID(who), pw, session)}, "v3", "devices", second.DeviceID)
				if r.status != 403 || r.ErrCode != "M_FORBIDDEN" {
					t.Fatalf("%s's identifier with password %q: %d %+v, want 403 M_FORBIDDEN", who, pw, r.status, r.RespUserInteractive)
				}
			}
		}
		if _, err := second.Whoami(ctxT(t)); err != nil {
			t.Fatalf("device deleted with bob's password: %v", err)
		}
		// Not a stage on offer.
		r = uiaCall(t, alice, "DELETE", map[string]any{"auth": map[string]any{"type": "m.login.dummy", "session": session}}, "v3", "devices", second.DeviceID)
		wantChallenge(t, "dummy stage", r, "M_UNRECOGNIZED")
		// The session alone completes nothing.
		r = uiaCall(t, alice, "DELETE", map[string]any{"auth": map[string]any{"session": session}}, "v3", "devices", second.DeviceID)
		if got := wantChallenge(t, "session alone", r, ""); got != session {
			t.Fatalf("session alone: new session %s", got)
		}
		if r := uiaCall(t, alice, "DELETE", map[string]any{"auth": map[string]any{"type": "m.login.password", "session": session}}, "v3", "devices", second.DeviceID); r.status != 400 || r.ErrCode != "M_MISSING_PARAM" {
			t.Fatalf("no password: %d %+v", r.status, r.RespUserInteractive)
		}

		// The session is for deleting that device: not for changing the
		// password, nor for deleting more devices, nor for bob.
		r = uiaCall(t, alice, "POST", map[string]any{"new_password": "hijacked", "auth": passwordAuth(alice.UserID, pw, session)}, "v3", "account", "password")
		if r.status != 403 || r.ErrCode != "M_FORBIDDEN" {
			t.Fatalf("session replayed for /account/password: %d %+v", r.status, r.RespUserInteractive)
		}
		r = uiaCall(t, alice, "POST", map[string]any{"devices": []id.DeviceID{second.DeviceID, third.DeviceID}, "auth": passwordAuth(alice.UserID, pw, session)}, "v3", "delete_devices")
		if r.status != 403 || r.ErrCode != "M_FORBIDDEN" {
			t.Fatalf("session replayed for more devices: %d %+v", r.status, r.RespUserInteractive)
		}
		r = uiaCall(t, bob, "POST", map[string]any{"auth": passwordAuth(bob.UserID, "secret-bob", session)}, "v3", "account", "deactivate")
		if r.status != 403 || r.ErrCode != "M_FORBIDDEN" {
			t.Fatalf("alice's session used by bob: %d %+v", r.status, r.RespUserInteractive)
		}
		if _, err := loginAgain(t, alice, pw); err != nil {
			t.Fatalf("password changed by a replayed session: %v", err)
		}
		if _, err := third.Whoami(ctxT(t)); err != nil {
			t.Fatalf("third device deleted by a replayed session: %v", err)
		}
		if _, err := bob.Whoami(ctxT(t)); err != nil {
			t.Fatalf("bob deactivated by alice's session: %v", err)
		}

		// The right password completes it, through mautrix's DeleteDevice.
		if err := alice.DeleteDevice(ctxT(t), second.DeviceID, &mautrix.ReqDeleteDevice[any]{Auth: passwordAuth(alice.UserID, pw, session)}); err != nil {
			t.Fatalf("delete with the password: %v", err)
		}
		wantTokenDead(t, second)

		// A completed session is spent; an unknown one starts over.
		r = uiaCall(t, alice, "POST", map[string]any{"devices": []id.DeviceID{third.DeviceID}}, "v3", "delete_devices")
		multi := wantChallenge(t, "delete_devices without auth", r, "")
		if err := alice.DeleteDevices(ctxT(t), &mautrix.ReqDeleteDevices[any]{Devices: []id.DeviceID{third.DeviceID}, Auth: passwordAuth(alice.UserID, pw, multi)}); err != nil {
			t.Fatalf("delete_devices with the password: %v", err)
		}
		wantTokenDead(t, third)
		r = uiaCall(t, alice, "POST", map[string]any{"devices": []id.DeviceID{third.DeviceID}, "auth": passwordAuth(alice.UserID, pw, multi)}, "v3", "delete_devices")
		if r.status != 403 || r.ErrCode != "M_FORBIDDEN" {
			t.Fatalf("spent session used again: %d %+v", r.status, r.RespUserInteractive)
		}
		r = uiaCall(t, alice, "POST", map[string]any{"devices": []id.DeviceID{"X"}, "auth": passwordAuth(alice.UserID, pw, "no-such-session")}, "v3", "delete_devices")
		if got := wantChallenge(t, "unknown session", r, "M_UNKNOWN"); got == "no-such-session" {
			t.Fatal("an unknown session was taken up")
		}
		if r := uiaCall(t, alice, "DELETE", map[string]any{"auth": passwordAuth(alice.UserID, pw, "")}, "v3", "devices", "NOSUCHDEVICE"); r.status != 404 || r.ErrCode != "M_NOT_FOUND" {
			t.Fatalf("delete an unknown device: %d %+v", r.status, r.RespUserInteractive)
		}

		// Password change: the body is checked before any auth; the legacy
		// "user" form of the identifier and no session work too.
		if r := uiaCall(t, alice, "POST", map[string]any{}, "v3", "account", "password"); r.status != 400 || r.ErrCode != "M_MISSING_PARAM" {
			t.Fatalf("no new_password: %d %+v", r.status, r.RespUserInteractive)
		}
		wantChallenge(t, "password without auth", uiaCall(t, alice, "POST", map[string]any{"new_password": "new-pw"}, "v3", "account", "password"), "")
		fourth, err := loginAgain(t, alice, pw)
		if err != nil {
			t.Fatal(err)
		}
		r = uiaCall(t, alice, "POST", map[string]any{"new_password": "new-pw", "logout_devices": true,
			"auth": map[string]any{"type": "m.login.password", "user": strings.TrimPrefix(strings.Split(string(alice.UserID), ":")[0], "@"), "password": pw}}, "v3", "account", "password")
		if r.status != 200 {
			t.Fatalf("password change: %d %+v", r.status, r.RespUserInteractive)
		}
		wantTokenDead(t, fourth)
		if _, err := alice.Whoami(ctxT(t)); err != nil {
			t.Fatalf("the device that changed the password was logged out: %v", err)
		}
		if _, err := loginAgain(t, alice, pw); !errors.Is(err, mautrix.MForbidden) {
			t.Fatalf("old password still works: %v", err)
		}
		if _, err := loginAgain(t, alice, "new-pw"); err != nil {
			t.Fatalf("new password: %v", err)
		}

		// Cross-signing: the first upload and a repeat of it need no auth;
		// a new master key does, which mautrix's callback supplies.
		keys := func(pub string) *mautrix.UploadCrossSigningKeysReq[any] {
			k := func(usage id.CrossSigningUsage, p string) mautrix.CrossSigningKeys {
				return mautrix.CrossSigningKeys{UserID: alice.UserID, Usage: []id.CrossSigningUsage{usage}, Keys: map[id.KeyID]id.Ed25519{id.NewKeyID(id.KeyAlgorithmEd25519, p): id.Ed25519(p)}}
			}
			return &mautrix.UploadCrossSigningKeysReq[any]{Master: k(id.XSUsageMaster, pub), SelfSigning: k(id.XSUsageSelfSigning, pub+"self"), UserSigning: k(id.XSUsageUserSigning, pub+"user")}
		}
		if err := alice.UploadCrossSigningKeys(ctxT(t), keys("masterA"), nil); err != nil {
			t.Fatalf("first cross-signing upload: %v", err)
		}
		if err := alice.UploadCrossSigningKeys(ctxT(t), keys("masterA"), nil); err != nil {
			t.Fatalf("the same keys again: %v", err)
		}
		var he mautrix.HTTPError
		if err := alice.UploadCrossSigningKeys(ctxT(t), keys("masterB"), nil); !errors.As(err, &he) || !he.IsStatus(http.StatusUnauthorized) {
			t.Fatalf("a new master key without auth: %v, want 401", err)
		}
		var challenged bool
		if err := alice.UploadCrossSigningKeys(ctxT(t), keys("masterB"), func(ui *mautrix.RespUserInteractive) any {
			challenged = ui.Session != "" && len(ui.Flows) == 1
			return passwordAuth(alice.UserID, "new-pw", ui.Session)
		}); err != nil || !challenged {
			t.Fatalf("a new master key with the password: %v (challenged %v)", err, challenged)
		}
		q, err := bob.QueryKeys(ctxT(t), &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{alice.UserID: {}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := q.MasterKeys[alice.UserID].Keys[id.NewKeyID(id.KeyAlgorithmEd25519, "masterB")]; !ok {
			t.Fatalf("master key after replacement: %+v", q.MasterKeys[alice.UserID])
		}

		// Deactivation: 401, then the wrong password, then the right one.
		session = wantChallenge(t, "deactivate without auth", uiaCall(t, bob, "POST", map[string]any{}, "v3", "account", "deactivate"), "")
		wantChallenge(t, "deactivate, wrong password", uiaCall(t, bob, "POST", map[string]any{"auth": passwordAuth(bob.UserID, "nope", session)}, "v3", "account", "deactivate"), "M_FORBIDDEN")
		if _, err := bob.Whoami(ctxT(t)); err != nil {
			t.Fatalf("deactivated by a wrong password: %v", err)
		}
		if r := uiaCall(t, bob, "POST", map[string]any{"auth": passwordAuth(bob.UserID, "secret-bob", session)}, "v3", "account", "deactivate"); r.status != 200 {
			t.Fatalf("deactivate: %d %+v", r.status, r.RespUserInteractive)
		}
		wantTokenDead(t, bob)
	})
}
