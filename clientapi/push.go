package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/machi-chat/machi/policy"
	"github.com/machi-chat/machi/rooms"
	"github.com/machi-chat/machi/storage"
)

// Push notifications: pushers (POST /pushers/set) name an HTTP push
// gateway; each committed event's push rule evaluation (notify.go, once
// per member) is handed here, and a notification for a member with
// pushers goes to the gateway (push gateway API,
// /_matrix/push/v1/notify). Outside working hours, pushes to devices the
// working-hours rule holds back are not sent: the person sees the messages
// when they next open their client.

const (
	pushQueueSize = 4096
	pushWorkers   = 2
)

type pushJob struct {
	ev   *rooms.Event
	eval *evaluation
}

// pusher delivers push notifications in the background.
type pusher struct {
	s      *Server
	queue  chan pushJob
	client *http.Client
	wg     sync.WaitGroup

	closeMu sync.RWMutex
	closed  bool

	mu    sync.Mutex
	cache map[string][]storage.Pusher // user → pushers (nil slice: none)
}

func newPusher(s *Server) *pusher {
	p := &pusher{s: s, queue: make(chan pushJob, pushQueueSize), client: &http.Client{Timeout: 10 * time.Second},
		cache: map[string][]storage.Pusher{}}
	for range pushWorkers {
		p.wg.Add(1)
		go p.run()
	}
	return p
}

// committed is handed each committed event's evaluation (notify.go); it
// never blocks.
func (p *pusher) committed(ev *rooms.Event, eval *evaluation) {
	p.closeMu.RLock()
	defer p.closeMu.RUnlock()
	if p.closed { // shutting down: the rooms writer drains after us
		return
	}
	select {
	case p.queue <- pushJob{ev: ev, eval: eval}:
	default:
		p.s.log.Warn("push queue full: notification dropped", "event", ev.ID())
	}
}

func (p *pusher) close() {
	p.closeMu.Lock()
	p.closed = true
	close(p.queue)
	p.closeMu.Unlock()
	p.wg.Wait()
}

func (p *pusher) forget(userID string) {
	p.mu.Lock()
	delete(p.cache, userID)
	p.mu.Unlock()
}

func (p *pusher) pushers(ctx context.Context, userID string) ([]storage.Pusher, error) {
	p.mu.Lock()
	list, ok := p.cache[userID]
	p.mu.Unlock()
	if ok {
		return list, nil
	}
	list, err := p.s.store.UserPushers(ctx, userID)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.cache[userID] = list
	p.mu.Unlock()
	return list, nil
}

func (p *pusher) run() {
	defer p.wg.Done()
	for job := range p.queue {
		for _, n := range job.eval.users {
			if err := p.notify(context.Background(), n, job.ev); err != nil {
				p.s.log.Warn("push notification failed", "user", n.user, "event", job.ev.ID(), "err", err)
			}
		}
	}
}

// notify sends ev to the user's pushers, with the user's unread count
// over all their rooms.
func (p *pusher) notify(ctx context.Context, n noted, ev *rooms.Event) error {
	list, err := p.pushers(ctx, n.user)
	if err != nil || len(list) == 0 {
		return err
	}
	tweaks := map[string]any{}
	if n.info.highlight {
		tweaks["highlight"] = true
	}
	if n.info.sound != "" {
		tweaks["sound"] = n.info.sound
	}
	unread, err := p.s.userTotals(ctx, n.user)
	if err != nil {
		return err
	}
	for _, pu := range list {
		if p.held(ctx, pu) {
			continue
		}
		if err := p.send(ctx, pu, ev, tweaks, unread); err != nil {
			p.s.log.Warn("push gateway", "user", n.user, "app", pu.AppID, "err", err)
		}
	}
	return nil
}

// held reports whether the working-hours rule holds back pushes to the
// device that registered pu.
func (p *pusher) held(ctx context.Context, pu storage.Pusher) bool {
	class := policy.ClassMobile
	if d, err := p.s.store.GetDevice(ctx, pu.UserID, pu.DeviceID); err == nil && d.Class != "" {
		class = policy.DeviceClass(d.Class)
	}
	return p.s.policy.HoldPush(pu.UserID, class)
}

// send posts one notification to pu's gateway; a rejected push key is
// removed, as the push gateway spec asks.
func (p *pusher) send(ctx context.Context, pu storage.Pusher, ev *rooms.Event, tweaks map[string]any, unread int) error {
	var data map[string]any
	if err := json.Unmarshal(pu.Data, &data); err != nil {
		return err
	}
	gateway, _ := data["url"].(string)
	delete(data, "url")
	device := map[string]any{"app_id": pu.AppID, "pushkey": pu.PushKey, "pushkey_ts": pu.CreatedTS / 1000, "data": data, "tweaks": tweaks}
	n := map[string]any{"event_id": ev.ID(), "room_id": ev.RoomID(), "counts": map[string]int{"unread": unread},
		"devices": []any{device}, "prio": "high"}
	if format, _ := data["format"].(string); format != "event_id_only" {
		n["type"] = ev.Type()
		n["sender"] = ev.Sender()
		var c struct {
			Content json.RawMessage `json:"content"`
		}
		_ = json.Unmarshal(ev.ClientJSON(time.Now(), ""), &c)
		n["content"] = c.Content
		if u, err := p.s.store.GetUser(ctx, ev.Sender()); err == nil && u.DisplayName != "" {
			n["sender_display_name"] = u.DisplayName
		}
	}
	body, _ := json.Marshal(map[string]any{"notification": n})
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		if attempt > 0 {
			time.Sleep(time.Duration(attempt) * 500 * time.Millisecond)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, gateway, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := p.client.Do(req)
		if err != nil {
			lastErr = err
			continue
		}
		var out struct {
			Rejected []string `json:"rejected"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			lastErr = &gatewayError{status: resp.StatusCode}
			continue
		}
		for _, key := range out.Rejected {
			if key == pu.PushKey {
				if err := p.s.store.DeletePushKey(ctx, pu.AppID, pu.PushKey); err != nil {
					return err
				}
				p.forget(pu.UserID)
			}
		}
		return nil
	}
	return lastErr
}

type gatewayError struct{ status int }

func (e *gatewayError) Error() string { return "push gateway answered " + http.StatusText(e.status) }

type pusherJSON struct {
	AppDisplayName    string          `json:"app_display_name"`
	AppID             string          `json:"app_id"`
	Data              json.RawMessage `json:"data"`
	DeviceDisplayName string          `json:"device_display_name"`
	Kind              string          `json:"kind"`
	Lang              string          `json:"lang"`
	ProfileTag        string          `json:"profile_tag,omitempty"`
	PushKey           string          `json:"pushkey"`
}

// handleGetPushers serves GET /pushers.
func (s *Server) handleGetPushers(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	list, err := s.store.UserPushers(r.Context(), dev.UserID)
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]pusherJSON, 0, len(list))
	for _, p := range list {
		out = append(out, pusherJSON{AppDisplayName: p.AppDisplayName, AppID: p.AppID, Data: p.Data, DeviceDisplayName: p.DeviceDisplayName,
			Kind: p.Kind, Lang: p.Lang, ProfileTag: p.ProfileTag, PushKey: p.PushKey})
	}
	writeJSON(w, http.StatusOK, map[string]any{"pushers": out})
}

// handleSetPusher serves POST /pushers/set.
func (s *Server) handleSetPusher(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	var req struct {
		AppID             string          `json:"app_id"`
		PushKey           string          `json:"pushkey"`
		Kind              *string         `json:"kind"`
		AppDisplayName    string          `json:"app_display_name"`
		DeviceDisplayName string          `json:"device_display_name"`
		ProfileTag        string          `json:"profile_tag"`
		Lang              string          `json:"lang"`
		Data              json.RawMessage `json:"data"`
		Append            bool            `json:"append"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.AppID == "" || req.PushKey == "" {
		writeError(w, errMissingParam("app_id and pushkey are required"))
		return
	}
	if len(req.AppID) > 64 || len(req.PushKey) > 512 {
		writeError(w, errInvalidParam("app_id is at most 64 characters, pushkey at most 512 bytes"))
		return
	}
	ctx := r.Context()
	defer s.push.forget(dev.UserID)
	if req.Kind == nil {
		if err := s.store.DeletePusher(ctx, dev.UserID, req.AppID, req.PushKey); err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{})
		return
	}
	if *req.Kind != "http" {
		writeError(w, errInvalidParam("only kind \"http\" pushers are supported"))
		return
	}
	if req.AppDisplayName == "" || req.DeviceDisplayName == "" || req.Lang == "" || len(req.Data) == 0 {
		writeError(w, errMissingParam("app_display_name, device_display_name, lang and data are required"))
		return
	}
	var data struct {
		URL string `json:"url"`
	}
	if err := json.Unmarshal(req.Data, &data); err != nil || !rawObject(req.Data) {
		writeError(w, errBadJSON("data must be an object"))
		return
	}
	u, err := url.Parse(data.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || !strings.HasSuffix(u.Path, "/_matrix/push/v1/notify") {
		writeError(w, errInvalidParam("data.url must be an http(s) URL ending in /_matrix/push/v1/notify"))
		return
	}
	err = s.store.PutPusher(ctx, storage.Pusher{UserID: dev.UserID, DeviceID: dev.DeviceID, AppID: req.AppID, PushKey: req.PushKey,
		Kind: *req.Kind, AppDisplayName: req.AppDisplayName, DeviceDisplayName: req.DeviceDisplayName, ProfileTag: req.ProfileTag,
		Lang: req.Lang, Data: req.Data, CreatedTS: time.Now().UnixMilli()}, req.Append)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{})
}
