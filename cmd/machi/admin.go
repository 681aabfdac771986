package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/machi-chat/machi/internal/config"
	"github.com/machi-chat/machi/internal/server"
)

// admin runs one admin command through the admin API: over the running
// server's admin socket, so that it takes effect at once, or, when no
// server runs on this data folder, against an in-process machi opened on
// the same database. Either way the same code runs and the audit log
// records it, with "cli" as the actor.
func admin(args []string) error {
	if len(args) == 0 {
		fmt.Print(usage)
		return errors.New("admin: missing command")
	}
	cmd, args := args[0], args[1:]
	if cmd == "emergency" || cmd == "policy" {
		if len(args) == 0 {
			return fmt.Errorf("admin %s: missing subcommand", cmd)
		}
		cmd, args = cmd+" "+args[0], args[1:]
	}
	fs := flag.NewFlagSet("admin "+cmd, flag.ContinueOnError)
	cfgPath := configFlag(fs)
	f := adminFlags{
		admin:    fs.Bool("admin", false, "create-user: make the user a server admin"),
		password: fs.String("password", "", "password (read from standard input if empty)"),
		name:     fs.String("displayname", "", "create-user: display name"),
		groups:   fs.String("groups", "", "create-user: groups (departments), comma-separated"),
		group:    fs.String("group", "", "broadcast: send to this group only"),
		reason:   fs.String("reason", "", "why (kept in the audit log)"),
		ttl:      fs.String("ttl", "", "issue-code: how long the code stays valid (default from the policy)"),
		rooms:    fs.String("rooms", "", "emergency declare: room IDs, comma-separated (default: the whole server)"),
		dur:      fs.String("for", "", "emergency declare: how long, e.g. 6h"),
		until:    fs.String("until", "", "emergency declare: end time, RFC 3339"),
		since:    fs.String("since", "", "audit: from this time (RFC 3339) or this long ago (e.g. 24h)"),
		rule:     fs.String("rule", "", "audit: only denials of this rule"),
		action:   fs.String("action", "", "audit: only this action"),
		actor:    fs.String("actor", "", "audit: only this actor"),
		limit:    fs.Int("limit", 1000, "audit: at most this many entries"),
		csv:      fs.Bool("csv", false, "audit: write CSV"),
		room:     fs.String("room", "", "reports: only reports of this room"),
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	req, err := adminRequest(cmd, fs.Args(), f, cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	status, body, err := callAdmin(ctx, cfg, req)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		var e struct {
			Code string `json:"errcode"`
			Msg  string `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Code != "" {
			return fmt.Errorf("%s: %s", e.Code, e.Msg)
		}
		return fmt.Errorf("admin API answered %d: %s", status, body)
	}
	return req.show(os.Stdout, body)
}

type adminFlags struct {
	admin, csv                                                           *bool
	password, name, groups, group, reason, ttl, rooms, dur, until, since *string
	rule, action, actor, room                                            *string
	limit                                                                *int
}

// apiCall is one admin API request and how to show its answer.
type apiCall struct {
	method, path string
	body         any
	show         func(w io.Writer, body []byte) error
}

// adminRequest turns a command line into an admin API call.
func adminRequest(cmd string, args []string, f adminFlags, cfg *config.Config) (*apiCall, error) {
	need := func(n int, what string) error {
		if len(args) != n {
			return fmt.Errorf("admin %s: want %s", cmd, what)
		}
		return nil
	}
	user := func() string { return "/users/" + url.PathEscape(localUser(args[0], cfg.ServerName)) }
	ok := func(msg string) func(io.Writer, []byte) error {
		return func(w io.Writer, _ []byte) error { _, err := fmt.Fprintln(w, msg); return err }
	}
	switch cmd {
	case "create-user":
		if err := need(1, "one USERNAME"); err != nil {
			return nil, err
		}
		pw, err := readPassword(*f.password)
		if err != nil {
			return nil, err
		}
		body := map[string]any{"username": args[0], "password": pw, "admin": *f.admin, "displayname": *f.name, "groups": splitList(*f.groups)}
		return &apiCall{"POST", "/users", body, func(w io.Writer, b []byte) error {
			var out struct {
				UserID string `json:"user_id"`
			}
			_ = json.Unmarshal(b, &out)
			_, err := fmt.Fprintf(w, "created %s%s\n", out.UserID, map[bool]string{true: " (admin)"}[*f.admin])
			return err
		}}, nil
	case "reset-password":
		if err := need(1, "one USERNAME"); err != nil {
			return nil, err
		}
		pw, err := readPassword(*f.password)
		if err != nil {
			return nil, err
		}
		return &apiCall{"POST", user() + "/password", map[string]any{"password": pw}, func(w io.Writer, b []byte) error {
			var out struct {
				Devices []string `json:"devices_logged_out"`
			}
			_ = json.Unmarshal(b, &out)
			_, err := fmt.Fprintf(w, "password of %s reset; %d device(s) logged out\n", localUser(args[0], cfg.ServerName), len(out.Devices))
			return err
		}}, nil
	case "list-users":
		if err := need(0, "no arguments"); err != nil {
			return nil, err
		}
		return &apiCall{"GET", "/users", nil, showUsers}, nil
	case "show-user":
		if err := need(1, "one USERNAME"); err != nil {
			return nil, err
		}
		return &apiCall{"GET", user(), nil, showJSON}, nil
	case "set-admin":
		if err := need(2, "USERNAME true|false"); err != nil {
			return nil, err
		}
		return &apiCall{"PUT", user() + "/admin", map[string]any{"admin": args[1] == "true"}, ok("done")}, nil
	case "suspend", "unsuspend", "deactivate":
		if err := need(1, "one USERNAME"); err != nil {
			return nil, err
		}
		return &apiCall{"POST", user() + "/" + cmd, map[string]any{"reason": *f.reason}, ok(cmd + ": done")}, nil
	case "set-groups":
		if err := need(2, "USERNAME GROUP[,GROUP…] (\"\" for none)"); err != nil {
			return nil, err
		}
		return &apiCall{"PUT", user() + "/groups", map[string]any{"groups": splitList(args[1])}, showJSON}, nil
	case "devices":
		if err := need(1, "one USERNAME"); err != nil {
			return nil, err
		}
		return &apiCall{"GET", user() + "/devices", nil, showDevices}, nil
	case "revoke-device":
		if err := need(2, "USERNAME DEVICE_ID"); err != nil {
			return nil, err
		}
		return &apiCall{"DELETE", user() + "/devices/" + url.PathEscape(args[1]), nil, ok("device " + args[1] + " revoked: its session ended")}, nil
	case "issue-code":
		if err := need(1, "one USERNAME"); err != nil {
			return nil, err
		}
		return &apiCall{"POST", user() + "/enrollment_codes", map[string]any{"ttl": *f.ttl}, func(w io.Writer, b []byte) error {
			var out struct {
				Code    string `json:"code"`
				Expires int64  `json:"expires_ts"`
			}
			_ = json.Unmarshal(b, &out)
			_, err := fmt.Fprintf(w, "enrollment code for %s: %s (valid until %s, once)\n", localUser(args[0], cfg.ServerName), out.Code,
				time.UnixMilli(out.Expires).Format(time.RFC3339))
			return err
		}}, nil
	case "list-codes":
		if err := need(1, "one USERNAME"); err != nil {
			return nil, err
		}
		return &apiCall{"GET", user() + "/enrollment_codes", nil, showJSON}, nil
	case "delete-code":
		if err := need(2, "USERNAME CODE_ID"); err != nil {
			return nil, err
		}
		return &apiCall{"DELETE", user() + "/enrollment_codes/" + url.PathEscape(args[1]), nil, ok("deleted")}, nil
	case "exempt":
		if err := need(1, "one USERNAME"); err != nil {
			return nil, err
		}
		return &apiCall{"PUT", user() + "/exemption", map[string]any{"reason": *f.reason}, ok("exempt from working hours")}, nil
	case "unexempt":
		if err := need(1, "one USERNAME"); err != nil {
			return nil, err
		}
		return &apiCall{"DELETE", user() + "/exemption", nil, ok("no longer exempt")}, nil
	case "list-exemptions":
		return &apiCall{"GET", "/exemptions", nil, showJSON}, nil
	case "emergency declare":
		body := map[string]any{"reason": *f.reason, "rooms": splitList(*f.rooms), "duration": *f.dur}
		if *f.until != "" {
			t, err := time.Parse(time.RFC3339, *f.until)
			if err != nil {
				return nil, fmt.Errorf("-until: %w", err)
			}
			body["ends_ts"] = t.UnixMilli()
		}
		return &apiCall{"POST", "/emergencies", body, showJSON}, nil
	case "emergency list":
		return &apiCall{"GET", "/emergencies", nil, showJSON}, nil
	case "emergency end":
		if err := need(1, "one EMERGENCY_ID"); err != nil {
			return nil, err
		}
		return &apiCall{"DELETE", "/emergencies/" + url.PathEscape(args[0]), nil, ok("emergency ended")}, nil
	case "policy show":
		return &apiCall{"GET", "/policy", nil, showJSON}, nil
	case "policy set":
		if err := need(1, "one FILE (YAML or JSON, the policy: section's fields)"); err != nil {
			return nil, err
		}
		raw, err := os.ReadFile(args[0])
		if err != nil {
			return nil, err
		}
		var doc map[string]any
		if err := yaml.Unmarshal(raw, &doc); err != nil {
			return nil, fmt.Errorf("%s: %w", args[0], err)
		}
		if inner, ok := doc["policy"].(map[string]any); ok && len(doc) == 1 {
			doc = inner // a copy of the config file's section, heading and all
		}
		return &apiCall{"PUT", "/policy", doc, showJSON}, nil
	case "policy reset":
		return &apiCall{"DELETE", "/policy", nil, ok("the config file's policy is in force again")}, nil
	case "broadcast":
		if len(args) == 0 {
			return nil, errors.New("admin broadcast: want the notice text")
		}
		return &apiCall{"POST", "/broadcasts", map[string]any{"body": strings.Join(args, " "), "group": *f.group}, showJSON}, nil
	case "broadcasts":
		return &apiCall{"GET", "/broadcasts", nil, showJSON}, nil
	case "broadcast-status":
		if err := need(1, "one BROADCAST_ID"); err != nil {
			return nil, err
		}
		return &apiCall{"GET", "/broadcasts/" + url.PathEscape(args[0]), nil, showJSON}, nil
	case "audit":
		q := url.Values{"limit": {fmt.Sprint(*f.limit)}}
		if *f.since != "" {
			t, err := parseSince(*f.since)
			if err != nil {
				return nil, err
			}
			q.Set("since", fmt.Sprint(t.UnixMilli()))
		}
		for k, v := range map[string]string{"rule": *f.rule, "action": *f.action, "actor": *f.actor} {
			if v != "" {
				q.Set(k, v)
			}
		}
		show := showJSON
		if *f.csv {
			q.Set("format", "csv")
			show = func(w io.Writer, b []byte) error { _, err := w.Write(b); return err }
		}
		return &apiCall{"GET", "/audit?" + q.Encode(), nil, show}, nil
	case "reports":
		q := url.Values{"limit": {fmt.Sprint(*f.limit)}}
		if *f.room != "" {
			q.Set("room_id", *f.room)
		}
		return &apiCall{"GET", "/reports?" + q.Encode(), nil, showReports}, nil
	}
	fmt.Print(usage)
	return nil, fmt.Errorf("admin: unknown command %q", cmd)
}

// callAdmin sends the call to the running server's admin socket or, if no
// server answers there, to an in-process machi on the same database.
func callAdmin(ctx context.Context, cfg *config.Config, c *apiCall) (int, []byte, error) {
	var body io.Reader = http.NoBody
	if c.body != nil {
		b, err := json.Marshal(c.body)
		if err != nil {
			return 0, nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, c.method, "http://machi-admin/_machi/admin/v1"+c.path, body)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	sock := cfg.Path(cfg.Listen.AdminSocket)
	if sock != "" {
		if conn, err := net.Dial("unix", sock); err == nil {
			conn.Close()
			client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			}}}
			resp, err := client.Do(req)
			if err != nil {
				return 0, nil, fmt.Errorf("admin socket: %w", err)
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			return resp.StatusCode, b, err
		}
	}
	// No server runs here: open one in-process, without listeners.
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := server.Open(ctx, cfg, log)
	if err != nil {
		return 0, nil, err
	}
	defer srv.Close(ctx)
	rec := httptest.NewRecorder()
	srv.API.AdminSocketHandler().ServeHTTP(rec, req)
	return rec.Code, rec.Body.Bytes(), nil
}

func localUser(arg, serverName string) string {
	name := strings.TrimPrefix(arg, "@")
	if local, _, ok := strings.Cut(name, ":"); ok {
		return "@" + strings.ToLower(local) + ":" + serverName
	}
	return "@" + strings.ToLower(name) + ":" + serverName
}

func splitList(s string) []string {
	out := []string{}
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func parseSince(s string) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return t, fmt.Errorf("-since %q: give RFC 3339 (2026-04-01T00:00:00+09:00) or a duration (24h)", s)
	}
	return t, nil
}

func readPassword(flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	fmt.Fprint(os.Stderr, "Password: ")
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		return "", errors.New("empty password")
	}
	return line, nil
}

func showJSON(w io.Writer, b []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, b, "", "  "); err != nil {
		_, err = w.Write(b)
		return err
	}
	buf.WriteByte('\n')
	_, err := buf.WriteTo(w)
	return err
}

func showUsers(w io.Writer, b []byte) error {
	var out struct {
		Users []struct {
			UserID      string `json:"user_id"`
			Admin       bool   `json:"admin"`
			Suspended   bool   `json:"suspended"`
			Deactivated bool   `json:"deactivated"`
			CreatedTS   int64  `json:"created_ts"`
		} `json:"users"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tADMIN\tSUSPENDED\tDEACTIVATED\tCREATED")
	for _, u := range out.Users {
		fmt.Fprintf(tw, "%s\t%v\t%v\t%v\t%s\n", u.UserID, u.Admin, u.Suspended, u.Deactivated, time.UnixMilli(u.CreatedTS).Format(time.RFC3339))
	}
	return tw.Flush()
}

func showDevices(w io.Writer, b []byte) error {
	var out struct {
		Devices []struct {
			DeviceID   string `json:"device_id"`
			Name       string `json:"display_name"`
			Class      string `json:"class"`
			LastSeenIP string `json:"last_seen_ip"`
			LastSeenTS int64  `json:"last_seen_ts"`
		} `json:"devices"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tCLASS\tLAST SEEN\tLAST IP\tNAME")
	for _, d := range out.Devices {
		seen := "-"
		if d.LastSeenTS > 0 {
			seen = time.UnixMilli(d.LastSeenTS).Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.DeviceID, d.Class, seen, d.LastSeenIP, d.Name)
	}
	return tw.Flush()
}

func showReports(w io.Writer, b []byte) error {
	var out struct {
		Reports []struct {
			ID       int64  `json:"id"`
			Time     string `json:"time"`
			Reporter string `json:"reporter"`
			RoomID   string `json:"room_id"`
			EventID  string `json:"event_id"`
			Reason   string `json:"reason"`
		} `json:"reports"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTIME\tREPORTER\tROOM\tEVENT\tREASON")
	for _, r := range out.Reports {
		ev := r.EventID
		if ev == "" {
			ev = "(room)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Time, r.Reporter, r.RoomID, ev, strings.ReplaceAll(r.Reason, "\n", " "))
	}
	return tw.Flush()
}
