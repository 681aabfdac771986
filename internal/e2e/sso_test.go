package e2e

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/machi-chat/machi/internal/testrig"
)

// chromium finds Debian's headless Chromium; make test installs it and sets
// MACHI_REQUIRE_CHROMIUM, so the test cannot be skipped there.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("MACHI_REQUIRE_CHROMIUM") != "" {
		t.Fatal("Chromium is required (MACHI_REQUIRE_CHROMIUM) but not installed: apt-get install chromium")
	}
	t.Skip("Chromium not installed (apt-get install chromium)")
	return ""
}

// TestSSOSignInPageInChromium drives machi's sign-in page the way Element
// does: the client sends the browser to /login/sso/redirect with its
// redirectUrl; the user signs in with name, password and the enrollment
// code; the browser comes back to the client with a loginToken, which the
// client exchanges with m.login.token. Here every address counts as a
// phone (the office network is elsewhere), so the code step is shown.
func TestSSOSignInPageInChromium(t *testing.T) {
	bin := chromium(t)
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		c := startCity(t, engine)
		suzuki := register(t, c.srv, "suzuki") // from the office, before the change below
		// Now every address is "mobile": the browser on 127.0.0.1 too.
		c.admin("PUT", "/policy", map[string]any{"trusted_networks": []string{"10.99.0.0/16"}}, nil, 200)
		code := c.issueCode(suzuki.UserID, "")

		// The "client": where the page sends the browser back.
		tokens := make(chan string, 4)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cb := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tokens <- r.URL.Query().Get("loginToken")
			_, _ = w.Write([]byte("<html><body id=done>back in the client</body></html>"))
		})}
		go func() { _ = cb.Serve(ln) }()
		t.Cleanup(func() { cb.Close() })
		redirect := "http://" + ln.Addr().String() + "/callback?state=element"

		opts := append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.DisableGPU,
			chromedp.Flag("disable-background-networking", true),
			chromedp.Flag("disable-dev-shm-usage", true),
		)
		actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
		defer cancel()
		ctx, cancel := chromedp.NewContext(actx)
		defer cancel()
		ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
		defer cancel()

		start := c.base() + "/_matrix/client/v3/login/sso/redirect/machi?redirectUrl=" + url.QueryEscape(redirect)
		id := func(s string) chromedp.ID { return chromedp.ID(s) }
		text := func(sel string) string {
			t.Helper()
			v, err := chromedp.Run(ctx, chromedp.Text(id(sel)))
			if err != nil {
				t.Fatalf("read #%s: %v", sel, err)
			}
			return v
		}
		fill := func(user, password, code string) {
			t.Helper()
			err := chromedp.Do(ctx,
				chromedp.Navigate(start),
				chromedp.WaitVisible(id("code")),
				chromedp.SendKeys(id("user"), user),
				chromedp.SendKeys(id("password"), password),
				chromedp.SendKeys(id("code"), code),
				chromedp.Click(id("submit")),
			)
			if err != nil {
				t.Fatalf("sign-in page: %v", err)
			}
		}
		// The page names the code step and where the browser goes back to.
		if err := chromedp.Do(ctx, chromedp.Navigate(start), chromedp.WaitVisible(id("code"))); err != nil {
			t.Fatalf("open the sign-in page: %v", err)
		}
		page, err := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html")))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(page, "端末認証コード") || !strings.Contains(page, ln.Addr().String()) {
			t.Fatalf("the page lacks the code step or the destination:\n%s", page)
		}
		// A wrong code: the page says why, in both languages.
		fill(suzuki.UserID.Localpart(), "secret-suzuki", "WXYZ-WXYZ-WXYZ")
		if err := chromedp.Do(ctx, chromedp.WaitVisible(id("error"))); err != nil {
			t.Fatal(err)
		}
		if e := text("error"); !strings.Contains(e, "端末認証コードが正しくありません") || !strings.Contains(e, "not valid") {
			t.Fatalf("error shown: %q", e)
		}
		// The right code, typed loosely: back to the client with a login token.
		fill(suzuki.UserID.Localpart(), "secret-suzuki", strings.ToLower(code))
		if err := chromedp.Do(ctx, chromedp.WaitVisible(id("done"))); err != nil {
			t.Fatalf("sign in with the code: %v", err)
		}
		var tok string
		select {
		case tok = <-tokens:
		case <-time.After(10 * time.Second):
			t.Fatal("the browser never came back to the client")
		}
		if !strings.HasPrefix(tok, "mlt_") {
			t.Fatalf("loginToken = %q", tok)
		}
		// The client logs in with it, once.
		mc, status, me := c.loginBody(http.DefaultClient, map[string]any{"type": "m.login.token", "token": tok, "initial_device_display_name": "Element (phone)"})
		if status != 200 || mc.UserID != suzuki.UserID {
			t.Fatalf("m.login.token: %d %+v", status, me)
		}
		if _, status, _ := c.loginBody(http.DefaultClient, map[string]any{"type": "m.login.token", "token": tok}); status != 403 {
			t.Fatalf("a login token worked twice: %d", status)
		}
		// The code was spent: the same sign-in again fails.
		fill(string(suzuki.UserID), "secret-suzuki", code)
		if err := chromedp.Do(ctx, chromedp.WaitVisible(id("error"))); err != nil {
			t.Fatal(err)
		}
		if e := text("error"); !strings.Contains(e, "使用済み") {
			t.Fatalf("reused code on the page: %q", e)
		}
	})
}
