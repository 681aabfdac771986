package clientapi

import (
	"crypto/subtle"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/machi-chat/machi/policy"
)

// machi's sign-in page, reached through the standard SSO redirect flow
// (GET /login/sso/redirect?redirectUrl=…): stock clients that offer
// "Continue with SSO" — Element Web, Desktop, X — open it in a browser; the
// user gives name, password and, on a phone, the enrollment code; the page
// sends the browser back to the client with a one-time loginToken, which
// the client exchanges through m.login.token.

const (
	ssoProvider  = "machi"
	ssoPagePath  = "/_machi/sso/login"
	ssoCSRFName  = "machi_sso_csrf"
	ssoFormLimit = 16 << 10
)

// handleSSORedirect serves GET /login/sso/redirect[/{idpId}].
func (s *Server) handleSSORedirect(w http.ResponseWriter, r *http.Request) {
	if idp, ok := vars(r)["idpId"]; ok && idp != ssoProvider {
		writeError(w, errNotFound("unknown identity provider %q", idp))
		return
	}
	redirect := r.URL.Query().Get("redirectUrl")
	if err := checkRedirect(redirect); err != nil {
		writeError(w, err)
		return
	}
	http.Redirect(w, r, ssoPagePath+"?"+url.Values{"redirectUrl": {redirect}}.Encode(), http.StatusFound)
}

// checkRedirect accepts the client's return address: any absolute URL
// except the schemes that run code in the page.
func checkRedirect(raw string) *Error {
	if raw == "" {
		return errMissingParam("redirectUrl is required")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return errInvalidParam("redirectUrl must be an absolute URL")
	}
	switch strings.ToLower(u.Scheme) {
	case "javascript", "data", "vbscript", "file", "blob":
		return errInvalidParam("redirectUrl may not use the %s scheme", u.Scheme)
	}
	return nil
}

type ssoPage struct {
	Redirect string
	Host     string // where the browser goes back to, shown to the user
	CSRF     string
	User     string
	Mobile   bool
	ErrJA    string
	ErrEN    string
}

// handleSSOPage serves GET and POST /_machi/sso/login.
func (s *Server) handleSSOPage(w http.ResponseWriter, r *http.Request) {
	redirect := r.URL.Query().Get("redirectUrl")
	if r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(w, r.Body, ssoFormLimit)
		if err := r.ParseForm(); err != nil {
			s.renderSSO(w, r, http.StatusBadRequest, ssoPage{ErrJA: "送信内容を読み取れませんでした。", ErrEN: "The form could not be read."})
			return
		}
		redirect = r.PostForm.Get("redirectUrl")
	}
	if err := checkRedirect(redirect); err != nil {
		s.renderSSO(w, r, http.StatusBadRequest, ssoPage{ErrJA: "戻り先のアドレスが正しくありません。アプリからやり直してください。", ErrEN: "The return address is not valid: start again from your app."})
		return
	}
	page := ssoPage{Redirect: redirect, Mobile: s.policy.EnrollmentRequired(s.deviceClass(r))}
	if u, err := url.Parse(redirect); err == nil {
		page.Host = u.Host
		if page.Host == "" {
			page.Host = u.Scheme + ":"
		}
	}
	if r.Method != http.MethodPost {
		s.renderSSO(w, r, http.StatusOK, page)
		return
	}
	cookie, err := r.Cookie(ssoCSRFName)
	if err != nil || cookie.Value == "" || subtle.ConstantTimeCompare([]byte(cookie.Value), []byte(r.PostForm.Get("csrf"))) != 1 {
		page.ErrJA, page.ErrEN = "ページの有効期限が切れました。もう一度入力してください。", "This page expired; please enter your details again."
		s.renderSSO(w, r, http.StatusForbidden, page)
		return
	}
	if err := s.limiter.allow("login:" + s.clientIP(r)); err != nil {
		page.ErrJA, page.ErrEN = "試行回数が多すぎます。しばらくしてからやり直してください。", "Too many attempts; please wait and try again."
		s.renderSSO(w, r, http.StatusTooManyRequests, page)
		return
	}
	page.User = r.PostForm.Get("user")
	userID, err := s.checkPassword(r.Context(), passwordAuth{
		Identifier: identifier{Type: "m.id.user", User: page.User}, Password: r.PostForm.Get("password"),
	})
	if err != nil {
		page.ErrJA, page.ErrEN = "ユーザー名またはパスワードが正しくありません。", "Wrong user name or password."
		if me, ok := err.(*Error); ok && me.Code == "M_USER_LOCKED" {
			page.ErrJA, page.ErrEN = "このアカウントは利用停止中です。管理者に連絡してください。", "This account is suspended: contact your administrator."
		}
		s.renderSSO(w, r, http.StatusForbidden, page)
		return
	}
	enrolled := false
	if page.Mobile {
		code := r.PostForm.Get("code")
		var d error
		if strings.TrimSpace(code) == "" {
			d = s.policy.Deny(r.Context(), policy.Subject{UserID: userID, What: "login"}, deviceCodeRequired())
		} else {
			d = s.useCode(r.Context(), userID, code, "(sign-in page)")
		}
		if d != nil {
			if den, ok := d.(*policy.Denial); ok {
				page.ErrJA, page.ErrEN = den.JA, den.EN
			} else {
				page.ErrJA, page.ErrEN = "サインインできませんでした。", "Sign-in failed."
			}
			s.renderSSO(w, r, http.StatusForbidden, page)
			return
		}
		enrolled = true
	}
	tok := s.loginTokens.issue(loginGrant{userID: userID, enrolled: enrolled, expires: time.Now().Add(loginTokenTTL)})
	back, _ := url.Parse(redirect)
	q := back.Query()
	q.Set("loginToken", tok)
	back.RawQuery = q.Encode()
	http.Redirect(w, r, back.String(), http.StatusSeeOther)
}

func (s *Server) renderSSO(w http.ResponseWriter, r *http.Request, status int, page ssoPage) {
	page.CSRF = randomToken(18)
	http.SetCookie(w, &http.Cookie{Name: ssoCSRFName, Value: page.CSRF, Path: ssoPagePath, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil, MaxAge: 3600})
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' *; frame-ancestors 'none'")
	w.WriteHeader(status)
	_ = ssoTemplate.Execute(w, page)
}

var ssoTemplate = template.Must(template.New("sso").Parse(`<!DOCTYPE html>
<html lang="ja">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>サインイン / Sign in — machi</title>
<style>
body { font-family: system-ui, "Hiragino Sans", "Noto Sans JP", sans-serif; max-width: 26rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
h1 { font-size: 1.3rem; }
label { display: block; margin-top: 1rem; font-weight: 600; }
small { display: block; font-weight: normal; color: #555; }
input { width: 100%; box-sizing: border-box; font-size: 1.1rem; padding: .5rem; margin-top: .3rem; }
button { margin-top: 1.5rem; width: 100%; font-size: 1.1rem; padding: .7rem; }
.error { background: #fde8e8; border: 1px solid #e0a0a0; padding: .7rem; margin-top: 1rem; }
.note { color: #555; font-size: .9rem; margin-top: 1rem; }
</style>
</head>
<body>
<h1>machi サインイン <small>Sign in</small></h1>
{{if .ErrJA}}<div class="error" role="alert" id="error">{{.ErrJA}}<br>{{.ErrEN}}</div>{{end}}
{{if .Redirect}}
<form method="post" action="/_machi/sso/login">
<input type="hidden" name="redirectUrl" value="{{.Redirect}}">
<input type="hidden" name="csrf" value="{{.CSRF}}">
<label for="user">ユーザー名 <small>User name</small></label>
<input id="user" name="user" autocomplete="username" autocapitalize="none" value="{{.User}}" required>
<label for="password">パスワード <small>Password</small></label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
{{if .Mobile}}
<label for="code">端末認証コード <small>Enrollment code (issued by your administrator)</small></label>
<input id="code" name="code" autocomplete="one-time-code" autocapitalize="characters" placeholder="XXXX-XXXX-XXXX" required>
<p class="note">この端末は庁外の端末（スマートフォンなど）として扱われます。管理者が発行したコードを入力してください。<br>This device is outside the office network: enter the code your administrator gave you.</p>
{{end}}
<button type="submit" id="submit">サインイン / Sign in</button>
<p class="note">サインイン後、{{.Host}} に戻ります。<br>After signing in you return to {{.Host}}.</p>
</form>
{{end}}
</body>
</html>
`))
