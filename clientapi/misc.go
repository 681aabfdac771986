package clientapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/machi-chat/machi/internal/config"
	"github.com/machi-chat/machi/storage"
)

// handleVersions serves GET /_matrix/client/versions.
func (s *Server) handleVersions(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, 200, map[string]any{
		"versions": []string{"r0.0.1", "r0.1.0", "r0.2.0", "r0.3.0", "r0.4.0", "r0.5.0", "r0.6.0", "r0.6.1",
			"v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12", "v1.13", "v1.14", "v1.15", "v1.16"},
		"unstable_features": map[string]bool{},
	})
}

// handleWellKnown serves GET /.well-known/matrix/client. Without a
// configured public URL it names the host the client reached: the
// listener's own address may be 0.0.0.0 or port 0.
func (s *Server) handleWellKnown(w http.ResponseWriter, r *http.Request) {
	base := strings.TrimRight(s.cfg.Listen.PublicBaseURL, "/")
	if base == "" {
		host := r.Host
		if host == "" {
			host = s.cfg.Listen.Client
		}
		base = "http://" + host
	}
	writeJSON(w, 200, map[string]any{"m.homeserver": map[string]string{"base_url": base}})
}

// handleCapabilities serves GET /_matrix/client/v3/capabilities.
func (s *Server) handleCapabilities(w http.ResponseWriter, r *http.Request) {
	available := map[string]string{}
	for _, v := range config.SupportedRoomVersions {
		available[v] = "stable"
	}
	writeJSON(w, 200, map[string]any{"capabilities": map[string]any{
		"m.change_password": map[string]bool{"enabled": true},
		"m.room_versions":   map[string]any{"default": s.cfg.Rooms.DefaultVersion, "available": available},
		"m.set_displayname": map[string]bool{"enabled": true},
		"m.set_avatar_url":  map[string]bool{"enabled": true},
		"m.3pid_changes":    map[string]bool{"enabled": false},
		"m.get_login_token": map[string]bool{"enabled": false},
		"m.profile_fields":  map[string]any{"enabled": true, "allowed": []string{"displayname", "avatar_url"}},
	}})
}

// handleSendToDevice serves PUT /sendToDevice/{eventType}/{txnId}: local
// devices get the messages at once, other servers' users through the
// federation outbox (durable before the 200). Idempotent per device and
// txnId for the last 10,000 transactions.
func (s *Server) handleSendToDevice(w http.ResponseWriter, r *http.Request) {
	dev := DeviceFrom(r.Context())
	v := vars(r)
	var req struct {
		Messages map[string]map[string]jsonObject `json:"messages"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	key := dev.key() + "|" + v["txnId"]
	if !s.toDeviceTxns.First(key) {
		writeJSON(w, 200, map[string]any{})
		return
	}
	local := map[string]map[string]json.RawMessage{}
	remote := map[string]map[string]map[string]json.RawMessage{}
	for userID, byDevice := range req.Messages {
		msgs := make(map[string]json.RawMessage, len(byDevice))
		for d, content := range byDevice {
			msgs[d] = json.RawMessage(content)
		}
		if s.rooms.IsLocal(userID) {
			local[userID] = msgs
		} else if _, server, ok := strings.Cut(userID, ":"); ok && strings.HasPrefix(userID, "@") && s.remote != nil {
			if remote[server] == nil {
				remote[server] = map[string]map[string]json.RawMessage{}
			}
			remote[server][userID] = msgs
		}
	}
	err := s.DeliverToDevice(r.Context(), dev.UserID, v["eventType"], local)
	if err == nil && len(remote) > 0 {
		err = s.remote.SendToDevice(r.Context(), dev.UserID, v["eventType"], dev.DeviceID+"."+v["txnId"], remote)
	}
	if err != nil {
		s.toDeviceTxns.Forget(key)
		writeError(w, err)
		return
	}
	writeJSON(w, 200, map[string]any{})
}

// DeliverToDevice stores to-device messages for local devices (user →
// device, "*" for all of the user's devices) and wakes their long-polls.
func (s *Server) DeliverToDevice(ctx context.Context, sender, eventType string, messages map[string]map[string]json.RawMessage) error {
	var msgs []storage.ToDevice
	var wake []string
	for userID, byDevice := range messages {
		for deviceID, content := range byDevice {
			targets := []string{deviceID}
			if deviceID == "*" {
				list, err := s.store.ListDevices(ctx, userID)
				if err != nil {
					return err
				}
				targets = targets[:0]
				for _, d := range list {
					targets = append(targets, d.DeviceID)
				}
			}
			for _, t := range targets {
				msgs = append(msgs, storage.ToDevice{UserID: userID, DeviceID: t, Sender: sender, Type: eventType, Content: content})
			}
		}
		wake = append(wake, userID)
	}
	if len(msgs) == 0 {
		return nil
	}
	positions := make([]int64, len(msgs))
	for i := range msgs {
		positions[i] = s.rooms.Stream().Allocate()
		msgs[i].Pos = positions[i]
	}
	err := s.store.PutToDevice(ctx, msgs)
	if err == nil {
		for _, m := range msgs { // before Complete makes them visible
			s.latest.putToDevice(m.UserID+"|"+m.DeviceID, m.Pos)
		}
	}
	s.rooms.Stream().Complete(positions...)
	if err != nil {
		return err
	}
	s.rooms.Notifier().Wake(wake...)
	return nil
}
