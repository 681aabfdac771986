package clientapi

import (
	"sort"
	"sync"
)

// lazySent is which member events a client holds: room → user → event ID.
// The per-room maps are never changed once shared (copy on write), so a
// sync reads one without a lock.
type lazySent map[string]map[string]string

// has reports whether the client holds the member event eventID of userID
// in roomID.
func (l lazySent) has(roomID, userID, eventID string) bool {
	return l != nil && l[roomID][userID] == eventID
}

// add notes that the client was sent eventID as userID's member event.
func (l lazySent) add(roomID, userID, eventID string) {
	m := l[roomID]
	if m == nil {
		m = map[string]string{}
		l[roomID] = m
	}
	m[userID] = eventID
}

// lazyMembers remembers, per device, which member events lazy-loading
// syncs sent, so that an incremental sync leaves out those the client
// already has (the spec's "redundant" members). It is keyed by the token a
// response carried as next_batch: a sync with since=T gets what the client
// held after the response that carried T, so a client that retries with the
// same since (its last response lost) gets the same members again. Using a
// token as since acknowledges that response: what it sent is folded into
// the device's held set and the other pending responses are dropped.
//
// It lives in memory: after a restart, or once a device falls out of it, a
// sync finds nothing for its token and sends every timeline sender's member
// event again, which is redundant but never wrong.
type lazyMembers struct {
	mu      sync.Mutex
	devices map[string]*lazyDevice
	tick    uint64
}

// Bounds: devices kept, and responses per device not yet acknowledged.
const (
	lazyMaxDevices = 10000
	lazyMaxPending = 8
)

type lazyDevice struct {
	held     lazySent // what the client holds at token heldAt
	heldAt   string
	pending  []lazyResponse
	lastUsed uint64
}

type lazyResponse struct {
	token, since string
	sent         lazySent
}

func newLazyMembers() *lazyMembers { return &lazyMembers{devices: map[string]*lazyDevice{}} }

// held returns what the device holds at token since ("" for an initial or
// full-state sync, which starts afresh). The result must not be changed.
func (lm *lazyMembers) held(device, since string) lazySent {
	lm.mu.Lock()
	defer lm.mu.Unlock()
	lm.tick++
	d := lm.devices[device]
	if d == nil {
		if since == "" {
			return nil
		}
		d = &lazyDevice{held: lazySent{}, heldAt: since}
		lm.put(device, d)
	}
	d.lastUsed = lm.tick
	switch {
	case since == "":
		d.held, d.heldAt, d.pending = lazySent{}, "", nil
	case since == d.heldAt:
	default:
		// The responses from heldAt to since, newest first.
		var chain []*lazyResponse
		for t := since; t != d.heldAt; {
			var r *lazyResponse
			for j := range d.pending {
				if d.pending[j].token == t {
					r = &d.pending[j]
					break
				}
			}
			if r == nil || len(chain) > lazyMaxPending {
				chain = nil
				break
			}
			chain = append(chain, r)
			t = r.since
		}
		if chain == nil {
			// A token this device was never given, or from before a
			// restart: nothing is known to be held.
			d.held, d.heldAt, d.pending = lazySent{}, since, nil
			return d.held
		}
		held := make(lazySent, len(d.held))
		for room, m := range d.held {
			held[room] = m
		}
		copied := map[string]bool{}
		for i := len(chain) - 1; i >= 0; i-- {
			for room, sent := range chain[i].sent {
				m := held[room]
				if !copied[room] {
					n := make(map[string]string, len(m)+len(sent))
					for k, v := range m {
						n[k] = v
					}
					m, held[room], copied[room] = n, n, true
				}
				for u, id := range sent {
					m[u] = id
				}
			}
		}
		d.held, d.heldAt, d.pending = held, since, nil
	}
	return d.held
}

// record notes what the response carrying token next sent, for a sync
// with since.
func (lm *lazyMembers) record(device, since, next string, sent lazySent) {
	if next == since {
		return // nothing new was sent under a token the client has
	}
	lm.mu.Lock()
	defer lm.mu.Unlock()
	d := lm.devices[device]
	if d == nil {
		d = &lazyDevice{held: lazySent{}, heldAt: since}
		lm.put(device, d)
	}
	d.pending = append(d.pending, lazyResponse{token: next, since: since, sent: sent})
	if len(d.pending) > lazyMaxPending {
		d.pending = d.pending[len(d.pending)-lazyMaxPending:]
	}
}

// put adds a device, dropping the least recently used quarter when full;
// call with mu held.
func (lm *lazyMembers) put(device string, d *lazyDevice) {
	if len(lm.devices) >= lazyMaxDevices {
		type aged struct {
			key  string
			used uint64
		}
		all := make([]aged, 0, len(lm.devices))
		for k, v := range lm.devices {
			all = append(all, aged{k, v.lastUsed})
		}
		sort.Slice(all, func(i, j int) bool { return all[i].used < all[j].used })
		for _, a := range all[:len(all)/4+1] {
			delete(lm.devices, a.key)
		}
	}
	d.lastUsed = lm.tick
	lm.devices[device] = d
}
