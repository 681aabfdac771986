package e2e

import (
	"crypto/ed25519"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/machi-chat/machi/internal/testrig"
)

// fakeKeyServer is another server whose key responses the test chooses:
// a key response (or an HTTP error) per request, counted.
type fakeKeyServer struct {
	name    string
	addr    string
	mu      sync.Mutex
	respond func() (int, []byte)
	fetches atomic.Int32
}

func startFakeKeyServer(t *testing.T, ca *testrig.CA, name, ip string) *fakeKeyServer {
	t.Helper()
	certPath, keyPath := ca.Issue(t, name, net.ParseIP(ip))
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", ip+":0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	fk := &fakeKeyServer{name: name, addr: ln.Addr().String()}
	mux := http.NewServeMux()
	mux.HandleFunc("/_matrix/key/v2/server", func(w http.ResponseWriter, r *http.Request) {
		fk.fetches.Add(1)
		fk.mu.Lock()
		respond := fk.respond
		fk.mu.Unlock()
		code, body := respond()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = w.Write(body)
	})
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return fk
}

func (fk *fakeKeyServer) serve(code int, body []byte) {
	fk.mu.Lock()
	fk.respond = func() (int, []byte) { return code, body }
	fk.mu.Unlock()
}

// keyResponse is server's key response with one key, signed by it.
func keyResponse(t *testing.T, server, keyID string, key ed25519.PrivateKey, validUntil int64) []byte {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"server_name": server, "valid_until_ts": validUntil, "old_verify_keys": map[string]any{},
		"verify_keys": map[string]any{keyID: map[string]string{"key": base64.RawStdEncoding.EncodeToString(key.Public().(ed25519.PublicKey))}}})
	signed, err := gomatrixserverlib.SignJSON(server, gomatrixserverlib.KeyID(keyID), key, body)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// TestKeyNotary: as a notary, machi hands on another server's key
// responses, countersigned: from its cache while they hold the keys asked
// for valid long enough, fetched again when not; an expired key when the
// server cannot be reached or answers the same; and a key the server has
// since forgotten is not forgotten here.
func TestKeyNotary(t *testing.T) {
	testrig.ForEachEngine(t, func(t *testing.T, engine string) {
		const notary, origin = "notary.test", "origin.test"
		ca := testrig.NewCA(t)
		fk := startFakeKeyServer(t, ca, origin, "127.0.0.31")
		cities := startFederationCA(t, engine, ca, []string{notary}, map[string][]string{notary: {origin}},
			map[string]map[string]string{notary: {origin: fk.addr}})
		n := cities[notary]
		client := insecureFed(notary)
		var notaryKeys gomatrixserverlib.ServerKeys
		getJSON(t, client, "https://"+n.addr+"/_matrix/key/v2/server", &notaryKeys)

		type answer struct {
			ServerName   string                     `json:"server_name"`
			ValidUntilTS int64                      `json:"valid_until_ts"`
			VerifyKeys   map[string]json.RawMessage `json:"verify_keys"`
		}
		check := func(raw []json.RawMessage) []answer {
			t.Helper()
			var out []answer
			for _, r := range raw {
				for id, k := range notaryKeys.VerifyKeys {
					if err := gomatrixserverlib.VerifyJSON(notary, id, ed25519.PublicKey(k.Key), r); err != nil {
						t.Fatalf("not countersigned by the notary: %v\n%s", err, r)
					}
				}
				var a answer
				_ = json.Unmarshal(r, &a)
				out = append(out, a)
			}
			return out
		}
		query := func(keyID string, minValid int64) []answer {
			t.Helper()
			var res struct {
				ServerKeys []json.RawMessage `json:"server_keys"`
			}
			postJSON(t, client, "https://"+n.addr+"/_matrix/key/v2/query",
				fmt.Sprintf(`{"server_keys":{%q:{%q:{"minimum_valid_until_ts":%d}}}}`, origin, keyID, minValid), 200, &res)
			return check(res.ServerKeys)
		}
		has := func(answers []answer, keyID string, validUntil int64) bool {
			for _, a := range answers {
				if _, ok := a.VerifyKeys[keyID]; ok && a.ServerName == origin && a.ValidUntilTS == validUntil {
					return true
				}
			}
			return false
		}

		_, key0, _ := ed25519.GenerateKey(nil)
		expired := time.Now().Add(-24 * time.Hour).UnixMilli()
		fk.serve(200, keyResponse(t, origin, "ed25519:key_0", key0, expired))
		if got := query("ed25519:key_0", 0); !has(got, "ed25519:key_0", expired) || fk.fetches.Load() != 1 {
			t.Fatalf("first query: %+v (%d fetches)", got, fk.fetches.Load())
		}
		// Wanted valid later than it is: fetched again, and the same
		// (expired) answer handed on.
		if got := query("ed25519:key_0", expired+1000); !has(got, "ed25519:key_0", expired) || fk.fetches.Load() != 2 {
			t.Fatalf("query for a later validity: %+v (%d fetches)", got, fk.fetches.Load())
		}
		// The server fails: the cached key, expired as it is.
		fk.serve(400, []byte(`{}`))
		if got := query("ed25519:key_0", expired+1000); !has(got, "ed25519:key_0", expired) || fk.fetches.Load() != 3 {
			t.Fatalf("query with the server failing: %+v (%d fetches)", got, fk.fetches.Load())
		}
		// The server forgets key_0 for key_2: both are handed on, and
		// key_0 is still there for an asker content with its validity.
		_, key2, _ := ed25519.GenerateKey(nil)
		fk.serve(200, keyResponse(t, origin, "ed25519:key_2", key2, expired+1000))
		if got := query("ed25519:key_0", time.Now().UnixMilli()); !has(got, "ed25519:key_0", expired) || !has(got, "ed25519:key_2", expired+1000) {
			t.Fatalf("query after the server forgot key_0: %+v", got)
		}
		fetches := fk.fetches.Load()
		if got := query("ed25519:key_0", expired); len(got) != 1 || !has(got, "ed25519:key_0", expired) || fk.fetches.Load() != fetches {
			t.Fatalf("query within key_0's validity: %+v (%d fetches, %d before)", got, fk.fetches.Load(), fetches)
		}
		// A key valid for a day is served from the cache.
		_, key3, _ := ed25519.GenerateKey(nil)
		day := time.Now().Add(24 * time.Hour).UnixMilli()
		fk.serve(200, keyResponse(t, origin, "ed25519:key_3", key3, day))
		if got := query("ed25519:key_3", 0); !has(got, "ed25519:key_3", day) {
			t.Fatalf("query for key_3: %+v", got)
		}
		fetches = fk.fetches.Load()
		fk.serve(500, []byte(`{}`))
		var res struct {
			ServerKeys []json.RawMessage `json:"server_keys"`
		}
		getJSON(t, client, "https://"+n.addr+"/_matrix/key/v2/query/"+origin+"/ed25519:key_3", &res)
		if got := check(res.ServerKeys); len(got) != 1 || !has(got, "ed25519:key_3", day) || fk.fetches.Load() != fetches {
			t.Fatalf("GET query for key_3: %+v (%d fetches, %d before)", got, fk.fetches.Load(), fetches)
		}
		getJSON(t, client, "https://"+n.addr+"/_matrix/key/v2/query/"+origin, &res)
		if got := check(res.ServerKeys); !has(got, "ed25519:key_3", day) || fk.fetches.Load() != fetches {
			t.Fatalf("GET query for any key: %+v", got)
		}
		// Bad input.
		req, _ := http.NewRequest("GET", "https://"+n.addr+"/_matrix/key/v2/query/"+origin+"?minimum_valid_until_ts=soon", nil)
		if code, me := doRaw(t, client, req); code != 400 || me.Code != "M_INVALID_PARAM" {
			t.Fatalf("bad minimum_valid_until_ts: %d %+v", code, me)
		}
	})
}
