package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/storage"
)

// keyValidity is how long other servers may rely on this server's key
// response before asking again.
const keyValidity = 7 * 24 * time.Hour

// ownKeys is this server's signed key response, made again when half of
// its validity has passed.
type ownKeys struct {
	f       *Federation
	mu      sync.Mutex
	signed  []byte
	validTo time.Time
}

func (k *ownKeys) response(now time.Time) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.signed != nil && now.Add(keyValidity/2).Before(k.validTo) {
		return k.signed, nil
	}
	validTo := now.Add(keyValidity)
	body, err := json.Marshal(gomatrixserverlib.ServerKeyFields{
		ServerName:    k.f.cfg.ServerName,
		VerifyKeys:    map[gomatrixserverlib.KeyID]gomatrixserverlib.VerifyKey{k.f.cfg.KeyID: {Key: spec.Base64Bytes(k.f.public)}},
		ValidUntilTS:  spec.AsTimestamp(validTo),
		OldVerifyKeys: map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey{},
	})
	if err != nil {
		return nil, err
	}
	signed, err := gomatrixserverlib.SignJSON(string(k.f.cfg.ServerName), k.f.cfg.KeyID, k.f.cfg.Key, body)
	if err != nil {
		return nil, fmt.Errorf("sign key response: %w", err)
	}
	k.signed, k.validTo = signed, validTo
	return signed, nil
}

// handleServerKeys serves GET /_matrix/key/v2/server: this server's
// signing keys, signed by itself.
func (f *Federation) handleServerKeys(w http.ResponseWriter, r *http.Request) {
	body, err := f.own.response(f.now())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, json.RawMessage(body))
}

// handleKeyQuery serves POST /_matrix/key/v2/query and GET
// /_matrix/key/v2/query/{serverName}[/{keyId}]: as a notary, the key
// responses of the servers asked for, as those servers signed them,
// countersigned by this server. See keyResponses for which.
func (f *Federation) handleKeyQuery(w http.ResponseWriter, r *http.Request) {
	type query struct {
		keyIDs   []string
		minValid spec.Timestamp
	}
	now := spec.AsTimestamp(f.now())
	want := map[string]*query{}
	if name, ok := vars(r)["serverName"]; ok {
		ts, err := optionalTS(r.URL.Query().Get("minimum_valid_until_ts"), now)
		if err != nil {
			writeError(w, err)
			return
		}
		q := &query{minValid: ts}
		if id := vars(r)["keyId"]; id != "" {
			q.keyIDs = []string{id}
		}
		want[name] = q
	} else {
		var req struct {
			ServerKeys map[string]map[string]struct {
				MinimumValidUntilTS *spec.Timestamp `json:"minimum_valid_until_ts"`
			} `json:"server_keys"`
		}
		if err := readJSON(r, &req); err != nil {
			writeError(w, err)
			return
		}
		if req.ServerKeys == nil {
			writeError(w, errMissingParam("server_keys is required"))
			return
		}
		if len(req.ServerKeys) > 100 {
			writeError(w, errInvalidParam("at most 100 servers per query"))
			return
		}
		for name, keys := range req.ServerKeys {
			q := &query{}
			if len(keys) == 0 {
				q.minValid = now
			}
			for id, c := range keys {
				q.keyIDs = append(q.keyIDs, id)
				ts := now // the spec: the current time when not given
				if c.MinimumValidUntilTS != nil {
					ts = *c.MinimumValidUntilTS
				}
				q.minValid = max(q.minValid, ts)
			}
			sort.Strings(q.keyIDs)
			want[name] = q
		}
	}
	out := []json.RawMessage{}
	for name, q := range want {
		if _, _, ok := spec.ParseAndValidateServerName(spec.ServerName(name)); !ok {
			continue // no such server: nothing to say about it
		}
		responses, err := f.keyResponses(r.Context(), name, q.keyIDs, q.minValid)
		if err != nil {
			f.log.Info("notary: no keys", "server", name, "err", err)
			continue // the spec: servers whose keys can't be had are left out
		}
		for _, resp := range responses {
			signed, err := gomatrixserverlib.SignJSON(string(f.cfg.ServerName), f.cfg.KeyID, f.cfg.Key, resp)
			if err != nil {
				writeError(w, err)
				return
			}
			out = append(out, signed)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"server_keys": out})
}

// optionalTS parses a millisecond timestamp parameter; def when absent.
func optionalTS(v string, def spec.Timestamp) (spec.Timestamp, error) {
	if v == "" {
		return def, nil
	}
	ts, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ts < 0 {
		return 0, errInvalidParam("minimum_valid_until_ts must be a timestamp")
	}
	return spec.Timestamp(ts), nil
}

// keyResponses are the signed key responses of server to hand on for the
// key IDs asked (none: any), valid at minValid if possible. This server's
// own come as they are. Cached responses do when every key asked for is
// cached and valid at minValid; otherwise the server is asked again, and
// its fresh answer comes with the cached responses of the keys asked for
// that it no longer lists (a server that forgets a key cannot make this
// notary forget it). When the server cannot be reached, the cached
// responses come even if they expired: the asker decides what they are
// worth.
func (f *Federation) keyResponses(ctx context.Context, server string, keyIDs []string, minValid spec.Timestamp) ([][]byte, error) {
	if spec.ServerName(server) == f.cfg.ServerName {
		own, err := f.own.response(f.now())
		return [][]byte{own}, err
	}
	cached, err := f.store.GetServerKeys(ctx, []string{server})
	if err != nil {
		return nil, err
	}
	have := cached[server]
	if fresh(have, keyIDs, minValid) {
		return responsesFor(have, keyIDs), nil
	}
	fetched, err := f.fetchKeys(ctx, server)
	if err != nil {
		if old := responsesFor(have, keyIDs); len(old) > 0 {
			f.log.Info("notary: handing on cached keys", "server", server, "err", err)
			return old, nil
		}
		return nil, err
	}
	out := responsesFor(fetched, nil)
	listed := map[string]bool{}
	for _, k := range fetched {
		listed[k.KeyID] = true
	}
	var forgotten []string
	for _, id := range keyIDs {
		if !listed[id] {
			forgotten = append(forgotten, id)
		}
	}
	if len(forgotten) > 0 {
		out = appendDistinct(out, responsesFor(have, forgotten)...)
	}
	return out, nil
}

// fresh reports whether keys hold every key ID asked for (or, none asked,
// any key) valid at ts.
func fresh(keys []storage.ServerKey, keyIDs []string, ts spec.Timestamp) bool {
	valid := func(k storage.ServerKey) bool { return k.ExpiredTS == 0 && k.ValidUntilTS >= int64(ts) }
	if len(keyIDs) == 0 {
		return slices.ContainsFunc(keys, valid)
	}
	for _, id := range keyIDs {
		if !slices.ContainsFunc(keys, func(k storage.ServerKey) bool { return k.KeyID == id && valid(k) }) {
			return false
		}
	}
	return true
}

// responsesFor are the distinct responses carrying the key IDs (none: all).
func responsesFor(keys []storage.ServerKey, keyIDs []string) [][]byte {
	var out [][]byte
	for _, k := range keys {
		if len(keyIDs) == 0 || slices.Contains(keyIDs, k.KeyID) {
			out = appendDistinct(out, k.Response)
		}
	}
	return out
}

func appendDistinct(list [][]byte, more ...[]byte) [][]byte {
	for _, m := range more {
		if !slices.ContainsFunc(list, func(b []byte) bool { return bytes.Equal(b, m) }) {
			list = append(list, m)
		}
	}
	return list
}

// fetchKeys asks server for its keys, checks them (signed by themselves,
// for that server) and caches them.
func (f *Federation) fetchKeys(ctx context.Context, server string) ([]storage.ServerKey, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	sk, err := f.client.GetServerKeys(ctx, spec.ServerName(server))
	if err != nil {
		return nil, fmt.Errorf("fetch keys of %s: %w", server, err)
	}
	if checks, _ := gomatrixserverlib.CheckKeys(spec.ServerName(server), time.Unix(0, 0), sk); !checks.AllChecksOK {
		return nil, fmt.Errorf("the key response of %s fails its checks", server)
	}
	// The spec: a key response is relied on for at most seven days.
	validUntil := min(int64(sk.ValidUntilTS), f.now().Add(keyValidity).UnixMilli())
	now := f.now().UnixMilli()
	var keys []storage.ServerKey
	for id, k := range sk.VerifyKeys {
		keys = append(keys, storage.ServerKey{ServerName: server, KeyID: string(id), PublicKey: k.Key,
			ValidUntilTS: validUntil, FetchedTS: now, Response: sk.Raw})
	}
	for id, k := range sk.OldVerifyKeys {
		keys = append(keys, storage.ServerKey{ServerName: server, KeyID: string(id), PublicKey: k.Key,
			ExpiredTS: int64(k.ExpiredTS), FetchedTS: now, Response: sk.Raw})
	}
	if err := f.store.PutServerKeys(ctx, keys); err != nil {
		return nil, fmt.Errorf("store keys of %s: %w", server, err)
	}
	return keys, nil
}

// keyDB is the key ring's view of the cache: gomatrixserverlib asks it
// first, and fetches (through keyFetcher) what it lacks or what expired.
type keyDB struct{ f *Federation }

func (keyDB) FetcherName() string { return "machi key cache" }

func (d keyDB) FetchKeys(ctx context.Context, reqs map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	out := map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}
	var servers []string
	for req := range reqs {
		if req.ServerName == d.f.cfg.ServerName {
			if req.KeyID == d.f.cfg.KeyID {
				out[req] = gomatrixserverlib.PublicKeyLookupResult{VerifyKey: gomatrixserverlib.VerifyKey{Key: spec.Base64Bytes(d.f.public)},
					ValidUntilTS: spec.AsTimestamp(d.f.now().Add(keyValidity))}
			}
			continue
		}
		servers = append(servers, string(req.ServerName))
	}
	cached, err := d.f.store.GetServerKeys(ctx, servers)
	if err != nil {
		return nil, err
	}
	for req := range reqs {
		for _, k := range cached[string(req.ServerName)] {
			if gomatrixserverlib.KeyID(k.KeyID) == req.KeyID {
				out[req] = lookupResult(k)
			}
		}
	}
	return out, nil
}

// StoreKeys is a no-op: keyFetcher stores what it fetches, with the signed
// response it came in (which the notary hands on).
func (keyDB) StoreKeys(context.Context, map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult) error {
	return nil
}

// keyFetcher fetches keys from the servers themselves.
type keyFetcher struct{ f *Federation }

func (keyFetcher) FetcherName() string { return "direct" }

func (k keyFetcher) FetchKeys(ctx context.Context, reqs map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	byServer := map[spec.ServerName]bool{}
	for req := range reqs {
		if req.ServerName != k.f.cfg.ServerName {
			byServer[req.ServerName] = true
		}
	}
	out := map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}
	for server := range byServer {
		keys, err := k.f.fetchKeys(ctx, string(server))
		if err != nil {
			k.f.log.Info("fetch server keys", "server", server, "err", err)
			continue
		}
		for _, key := range keys {
			req := gomatrixserverlib.PublicKeyLookupRequest{ServerName: server, KeyID: gomatrixserverlib.KeyID(key.KeyID)}
			if _, asked := reqs[req]; asked {
				out[req] = lookupResult(key)
			}
		}
	}
	return out, nil
}

func lookupResult(k storage.ServerKey) gomatrixserverlib.PublicKeyLookupResult {
	return gomatrixserverlib.PublicKeyLookupResult{VerifyKey: gomatrixserverlib.VerifyKey{Key: k.PublicKey},
		ValidUntilTS: spec.Timestamp(k.ValidUntilTS), ExpiredTS: spec.Timestamp(k.ExpiredTS)}
}

// verifySigned checks that message carries a valid signature of server.
func (f *Federation) verifySigned(ctx context.Context, server spec.ServerName, message []byte) error {
	results, err := f.keyRing.VerifyJSONs(ctx, []gomatrixserverlib.VerifyJSONRequest{{
		ServerName: server, AtTS: spec.AsTimestamp(f.now()), Message: message,
		ValidityCheckingFunc: gomatrixserverlib.StrictValiditySignatureCheck,
	}})
	if err != nil {
		return err
	}
	if results[0].Error != nil {
		return errUnauthorized("signature of %s does not verify: %s", server, strings.TrimPrefix(results[0].Error.Error(), "gomatrixserverlib: "))
	}
	return nil
}
