package e2e

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"
)

// Every JSON answer machi gives the Go clients of these tests is checked
// against the Matrix specification's OpenAPI definitions
// (../shared/matrix-spec/data/api/client-server, beside the repository;
// MACHI_MATRIX_SPEC names another folder): the response schema of the
// operation and status, and for every error the standard error shape. The
// check sits in http.DefaultTransport, so mautrix-go clients and plain
// requests alike are covered; a mismatch fails the package.

func TestMain(m *testing.M) {
	v, err := loadSpec()
	switch {
	case err != nil && os.Getenv("MACHI_REQUIRE_SPEC") != "":
		fmt.Fprintln(os.Stderr, "spec check:", err)
		os.Exit(1)
	case err != nil:
		fmt.Fprintln(os.Stderr, "spec check not run:", err)
	default:
		specCheck = v
		http.DefaultTransport = &specTransport{next: http.DefaultTransport, v: v}
	}
	code := m.Run()
	if v != nil {
		report, failed := v.report()
		fmt.Fprint(os.Stderr, report)
		if failed && code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// specCheck is the running validator, for tests that hand-build transports.
var specCheck *specValidator

// specOp is one operation of the spec: a method on a path template.
type specOp struct {
	file     string // file:// URL of its OpenAPI document
	method   string
	template string   // e.g. /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}
	segs     []string // the template split on "/"
	statuses map[int]string
}

type specValidator struct {
	ops      []*specOp
	compiler *jsonschema.Compiler

	mu         sync.Mutex
	schemas    map[string]*jsonschema.Schema
	checked    map[string]int
	violations []string
	seen       map[string]bool // what a violation is about, reported once
}

// specDir finds the spec's client-server API folder.
func specDir() (string, error) {
	if d := os.Getenv("MACHI_MATRIX_SPEC"); d != "" {
		return filepath.Join(d, "data", "api", "client-server"), nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			d := filepath.Join(dir, "..", "shared", "matrix-spec", "data", "api", "client-server")
			if _, err := os.Stat(d); err != nil {
				return "", fmt.Errorf("no Matrix spec beside the repository (set MACHI_MATRIX_SPEC): %w", err)
			}
			return d, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the test's folder")
		}
		dir = parent
	}
}

func loadSpec() (*specValidator, error) {
	dir, err := specDir()
	if err != nil {
		return nil, err
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no OpenAPI files in %s", dir)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(yamlLoader{})
	v := &specValidator{compiler: c, schemas: map[string]*jsonschema.Schema{}, checked: map[string]int{}, seen: map[string]bool{}}
	for _, f := range files {
		doc, err := readYAML(f)
		if err != nil {
			return nil, err
		}
		if err := v.addOps(f, doc); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
	}
	// Literal segments before templated ones, so /rooms/{roomId}/members
	// never shadows a fixed path of the same length.
	sort.SliceStable(v.ops, func(i, j int) bool {
		return strings.Count(v.ops[i].template, "{") < strings.Count(v.ops[j].template, "{")
	})
	return v, nil
}

func (v *specValidator) addOps(file string, doc any) error {
	root, _ := doc.(map[string]any)
	base := ""
	if servers, _ := root["servers"].([]any); len(servers) > 0 {
		s, _ := servers[0].(map[string]any)
		vars, _ := s["variables"].(map[string]any)
		bp, _ := vars["basePath"].(map[string]any)
		base, _ = bp["default"].(string)
	}
	paths, _ := root["paths"].(map[string]any)
	for p, item := range paths {
		methods, _ := item.(map[string]any)
		for method, op := range methods {
			o, _ := op.(map[string]any)
			responses, _ := o["responses"].(map[string]any)
			if responses == nil {
				continue
			}
			sop := &specOp{file: fileURL(file), method: strings.ToUpper(method), template: base + p, statuses: map[int]string{}}
			sop.segs = strings.Split(sop.template, "/")
			for code, r := range responses {
				n, err := strconv.Atoi(code)
				if err != nil {
					continue
				}
				resp, _ := r.(map[string]any)
				content, _ := resp["content"].(map[string]any)
				ptr := ""
				if jsonBody, ok := content["application/json"].(map[string]any); ok && jsonBody["schema"] != nil {
					ptr = "#/paths/" + escapePointer(p) + "/" + method + "/responses/" + code + "/content/application~1json/schema"
				}
				sop.statuses[n] = ptr
			}
			v.ops = append(v.ops, sop)
		}
	}
	return nil
}

func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

func fileURL(path string) string {
	abs, _ := filepath.Abs(path)
	return "file://" + filepath.ToSlash(abs)
}

// match finds the operation for a request: /r0 is the spec's /v3.
func (v *specValidator) match(method, escapedPath string) *specOp {
	p := escapedPath
	if rest, ok := strings.CutPrefix(p, "/_matrix/client/r0/"); ok {
		p = "/_matrix/client/v3/" + rest
	} else if rest, ok := strings.CutPrefix(p, "/_matrix/media/r0/"); ok {
		p = "/_matrix/media/v3/" + rest
	}
	segs := strings.Split(p, "/")
next:
	for _, op := range v.ops {
		if op.method != method || len(op.segs) != len(segs) {
			continue
		}
		for i, s := range op.segs {
			if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") {
				if segs[i] == "" && s != "{stateKey}" { // the empty state key is a state key
					continue next
				}
			} else if s != segs[i] {
				continue next
			}
		}
		return op
	}
	return nil
}

func (v *specValidator) schema(loc string) (*jsonschema.Schema, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if s, ok := v.schemas[loc]; ok {
		return s, nil
	}
	s, err := v.compiler.Compile(loc)
	if err != nil {
		return nil, err
	}
	v.schemas[loc] = s
	return s, nil
}

// fail records a violation; about names what it concerns, so that one
// mistake seen in a hundred answers is reported once.
func (v *specValidator) fail(about, format string, args ...any) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.seen[about] {
		return
	}
	v.seen[about] = true
	if len(v.violations) < 200 {
		v.violations = append(v.violations, fmt.Sprintf(format, args...))
	}
}

// check validates one answer machi gave.
func (v *specValidator) check(req *http.Request, status int, contentType string, body []byte) {
	path := req.URL.EscapedPath()
	if !strings.HasPrefix(path, "/_matrix/client/") && !strings.HasPrefix(path, "/_matrix/media/") && !strings.HasPrefix(path, "/.well-known/matrix/") {
		return
	}
	isJSON := strings.HasPrefix(contentType, "application/json")
	what := req.Method + " " + path
	var doc any
	if isJSON {
		var err error
		if doc, err = jsonschema.UnmarshalJSON(bytes.NewReader(body)); err != nil {
			v.fail(what+" not JSON", "%s: %d answer is not JSON: %v", what, status, err)
			return
		}
	}
	if status >= 400 {
		v.checkError(what, status, isJSON, doc)
	}
	op := v.match(req.Method, path)
	if op == nil {
		return // not a spec endpoint (machi's own, or a bad path a test sends)
	}
	key := op.method + " " + op.template
	ptr, documented := op.statuses[status]
	switch {
	case !documented && status < 300:
		v.fail(key+" status "+strconv.Itoa(status), "%s: status %d is not one the spec gives for %s", what, status, key)
		return
	case !documented, ptr == "" || !isJSON:
		v.count(key)
		return
	}
	if unspecifiedAnswer(key, status, doc) {
		v.count(key)
		return
	}
	doc = withoutLegacyEDUs(key, doc)
	s, err := v.schema(op.file + ptr)
	if err != nil {
		v.fail(key+" compile "+ptr, "%s: compile the spec's schema for %s %d: %v", what, key, status, err)
		return
	}
	if err := s.Validate(doc); err != nil {
		v.fail(key+" "+strconv.Itoa(status)+" "+firstLine(err), "%s → %d does not match the spec (%s):\n%v\nbody: %.600s", what, status, key, err, body)
		return
	}
	v.count(key)
}

// checkError holds every error answer to the spec's standard error shape.
func (v *specValidator) checkError(what string, status int, isJSON bool, doc any) {
	if !isJSON {
		v.fail(what+" error not JSON", "%s: error %d is not JSON", what, status)
		return
	}
	m, _ := doc.(map[string]any)
	if _, uia := m["flows"]; uia && status == http.StatusUnauthorized {
		return // a user-interactive auth challenge: its schema is the operation's
	}
	code, _ := m["errcode"].(string)
	if !strings.HasPrefix(code, "M_") && !strings.Contains(code, ".") {
		v.fail(what+" errcode", "%s: error %d has no Matrix errcode: %v", what, status, doc)
	}
	if _, ok := m["error"].(string); !ok && status != http.StatusUnauthorized {
		v.fail(what+" error message", "%s: error %d has no error message: %v", what, status, doc)
	}
}

// unspecifiedAnswer recognises the answers to cases the spec leaves open,
// which its schemas therefore do not describe: a server with no TURN
// server answers GET /voip/turnServer with {} (matrix-spec#1795, open; it
// is what clients handle).
func unspecifiedAnswer(key string, status int, doc any) bool {
	m, ok := doc.(map[string]any)
	return key == "GET /_matrix/client/v3/voip/turnServer" && status == http.StatusOK && ok && len(m) == 0
}

// withoutLegacyEDUs leaves out of a GET /events answer the typing,
// receipt, presence and account data events its chunk carries besides
// room events, as the event stream always did (Synapse, and SyTest's
// fixtures, rely on it) while old_sync.yaml's schema lists room events
// only; the room events are still checked.
func withoutLegacyEDUs(key string, doc any) any {
	m, ok := doc.(map[string]any)
	if !ok || (key != "GET /_matrix/client/v3/events" && key != "GET /_matrix/client/r0/events") {
		return doc
	}
	chunk, _ := m["chunk"].([]any)
	kept := []any{}
	for _, ev := range chunk {
		if e, ok := ev.(map[string]any); ok && e["event_id"] == nil {
			continue
		}
		kept = append(kept, ev)
	}
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	out["chunk"] = kept
	return out
}

// firstLine is where a validation error starts saying what is wrong.
func firstLine(err error) string {
	lines := strings.Split(err.Error(), "\n")
	if len(lines) > 1 {
		return lines[1]
	}
	return lines[0]
}

func (v *specValidator) count(key string) {
	v.mu.Lock()
	v.checked[key]++
	v.mu.Unlock()
}

// report says what did not match (failed) and, with MACHI_SPEC_COVERAGE
// set, which operations were validated.
func (v *specValidator) report() (text string, failed bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if os.Getenv("MACHI_SPEC_COVERAGE") != "" {
		keys := make([]string, 0, len(v.checked))
		for k := range v.checked {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		text = fmt.Sprintf("spec check: %d operations validated:\n  %s\n", len(keys), strings.Join(keys, "\n  "))
	}
	if len(v.violations) > 0 {
		text += fmt.Sprintf("spec check: %d answers do not match the Matrix spec:\n- %s\n", len(v.violations), strings.Join(v.violations, "\n- "))
	}
	return text, len(v.violations) > 0
}

// specTransport validates each response it carries.
type specTransport struct {
	next http.RoundTripper
	v    *specValidator
}

func (t *specTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") && resp.StatusCode < 400 {
		return resp, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	t.v.check(req, resp.StatusCode, resp.Header.Get("Content-Type"), body)
	return resp, nil
}

// wrapSpec puts the spec check on a hand-built transport.
func wrapSpec(rt http.RoundTripper) http.RoundTripper {
	if specCheck == nil {
		return rt
	}
	return &specTransport{next: rt, v: specCheck}
}

// yamlLoader reads the spec's YAML files as JSON values.
type yamlLoader struct{}

func (yamlLoader) Load(url string) (any, error) {
	path, ok := strings.CutPrefix(url, "file://")
	if !ok {
		return nil, fmt.Errorf("spec check loads local files only, not %s", url)
	}
	return readYAML(filepath.FromSlash(path))
}

func readYAML(path string) (any, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	return jsonValue(doc), nil
}

// jsonValue turns YAML's values into the ones JSON decoding gives.
func jsonValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = jsonValue(e)
		}
		return x
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[fmt.Sprint(k)] = jsonValue(e)
		}
		return m
	case []any:
		for i, e := range x {
			x[i] = jsonValue(e)
		}
		return x
	case int:
		return float64(x)
	case time.Time:
		return x.Format(time.RFC3339)
	default:
		return v
	}
}

// specProxy puts a reverse proxy that runs the spec check in front of
// machi, for clients in other processes (matrix-js-sdk, nio); without the
// spec it returns target itself.
func specProxy(t *testing.T, target string) string {
	t.Helper()
	if specCheck == nil {
		return target
	}
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.Transport = &specTransport{next: &http.Transport{}, v: specCheck}
	proxy.FlushInterval = -1
	proxy.ErrorLog = log.New(io.Discard, "", 0) // a client hanging up a long-poll is not news
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}
