package clientapi

// Keys asked of this server for other servers, and of other servers for
// local clients: the lookups both APIs share and the fan-out to servers.

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/machi-chat/machi/federation"
	"github.com/machi-chat/machi/storage"
)

// LocalKeys looks up local users' keys (want: user → devices, none listed
// meaning all). requester sees their own user-signing key, nobody else's;
// requester "" (another server) sees none.
func (s *Server) LocalKeys(ctx context.Context, want map[string][]string, requester string) (federation.KeysResult, error) {
	res := federation.KeysResult{DeviceKeys: map[string]map[string]json.RawMessage{}, MasterKeys: map[string]json.RawMessage{},
		SelfSigningKeys: map[string]json.RawMessage{}, UserSigningKeys: map[string]json.RawMessage{}}
	users := make([]string, 0, len(want))
	for u := range want {
		if s.isLocal(u) {
			users = append(users, u)
		}
	}
	found, err := s.store.DeviceKeys(ctx, want)
	if err != nil {
		return res, err
	}
	for u, devs := range found {
		names := map[string]string{}
		if list, err := s.store.ListDevices(ctx, u); err == nil {
			for _, d := range list {
				names[d.DeviceID] = d.DisplayName
			}
		}
		res.DeviceKeys[u] = map[string]json.RawMessage{}
		for d, js := range devs {
			res.DeviceKeys[u][d] = withDisplayName(js, names[d])
		}
	}
	cs, err := s.store.CrossSigningKeys(ctx, users)
	if err != nil {
		return res, err
	}
	for u, types := range cs {
		if k := types["master"]; k != nil {
			res.MasterKeys[u] = signaturesSeenBy(k, u, requester)
		}
		if k := types["self_signing"]; k != nil {
			res.SelfSigningKeys[u] = k
		}
		if k := types["user_signing"]; k != nil && u == requester { // only one's own
			res.UserSigningKeys[u] = k
		}
	}
	return res, nil
}

// remoteTimeout is how long to wait for other servers: the request's
// timeout (ms), 10 s by default, at most a minute.
func remoteTimeout(ms *int64) time.Duration {
	if ms == nil || *ms <= 0 {
		return 10 * time.Second
	}
	return min(time.Duration(*ms)*time.Millisecond, time.Minute)
}

// askServers runs ask for each server in parallel within timeout and
// returns the failures by server, as /keys/query and /keys/claim report
// them. Without federation, every server fails.
func (s *Server) askServers(ctx context.Context, timeout time.Duration, servers []string, ask func(ctx context.Context, server string) error) map[string]any {
	failures := map[string]any{}
	if len(servers) == 0 {
		return failures
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, server := range servers {
		if s.remote == nil {
			failures[server] = map[string]string{"errcode": "M_UNKNOWN", "error": "this server does not federate"}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := ask(ctx, server); err != nil {
				e := toMatrixError(err)
				mu.Lock()
				failures[server] = map[string]string{"errcode": e.Code, "error": e.Msg}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return failures
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// ClaimLocalKeys claims one key of the algorithm asked for each local
// device (user → device → algorithm).
func (s *Server) ClaimLocalKeys(ctx context.Context, want map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	out := map[string]map[string]map[string]json.RawMessage{}
	for u, devices := range want {
		if !s.isLocal(u) {
			continue
		}
		for d, alg := range devices {
			k, err := s.store.ClaimKey(ctx, u, d, alg)
			if errors.Is(err, storage.ErrNotFound) {
				continue
			} else if err != nil {
				return nil, err
			}
			s.keyCounts.forget(u + "|" + d)
			if out[u] == nil {
				out[u] = map[string]map[string]json.RawMessage{}
			}
			out[u][d] = map[string]json.RawMessage{k.KeyID: k.JSON}
		}
	}
	return out, nil
}

// LocalDevices lists a local user's devices for another server.
func (s *Server) LocalDevices(ctx context.Context, userID string) (federation.DeviceList, error) {
	out := federation.DeviceList{UserID: userID, StreamID: s.rooms.Stream().Current(), Devices: []federation.DeviceListEntry{}}
	devices, err := s.store.ListDevices(ctx, userID)
	if err != nil {
		return out, err
	}
	found, err := s.store.DeviceKeys(ctx, map[string][]string{userID: nil})
	if err != nil {
		return out, err
	}
	for _, d := range devices {
		out.Devices = append(out.Devices, federation.DeviceListEntry{DeviceID: d.DeviceID, DisplayName: d.DisplayName, Keys: found[userID][d.DeviceID]})
	}
	cs, err := s.store.CrossSigningKeys(ctx, []string{userID})
	if err != nil {
		return out, err
	}
	out.Master, out.Self = cs[userID]["master"], cs[userID]["self_signing"]
	return out, nil
}

// signaturesSeenBy is a master key with only the signatures its owner and
// requester made: a signature by another user's user-signing key is that
// user's business (their verification of the owner), shown to them alone.
func signaturesSeenBy(js []byte, owner, requester string) json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal(js, &m) != nil {
		return js
	}
	var sigs map[string]json.RawMessage
	if json.Unmarshal(m["signatures"], &sigs) != nil || sigs == nil {
		return js
	}
	hidden := false
	for signer := range sigs {
		if signer != owner && signer != requester {
			delete(sigs, signer)
			hidden = true
		}
	}
	if !hidden {
		return js
	}
	m["signatures"], _ = json.Marshal(sigs)
	out, _ := json.Marshal(m)
	return out
}
