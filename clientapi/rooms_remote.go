package clientapi

// Joining and inviting across servers: the client API side of federation
// for memberships.

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/policy"
)

// joinRemote joins a room this server is not in (or has left) through the
// servers the client named (server_name, via), the alias's, the room's
// last known ones, or the one in the room ID. The city's
// policy decides first, as for any join.
func (s *Server) joinRemote(r *http.Request, dev *Device, roomID, reason string, via []string) error {
	content, err := s.memberContent(r.Context(), dev.UserID, spec.Join, reason)
	if err != nil {
		return err
	}
	if d := s.policy.CheckEvent(r.Context(), policy.EventInput{Sender: dev.UserID, RoomID: roomID, Type: spec.MRoomMember,
		StateKey: &dev.UserID, Content: content, Actor: dev.actor()}); d != nil {
		return d
	}
	servers := s.remote.InviteServers(r.Context(), dev.UserID, roomID)
	q := r.URL.Query()
	// Then the servers the client named, those of the alias, and those
	// in the room when this server was last in it.
	for _, sv := range slices.Concat(q["server_name"], q["via"], via, s.rooms.Servers(r.Context(), roomID)) {
		if !slices.Contains(servers, sv) {
			servers = append(servers, sv)
		}
	}
	if _, server, ok := strings.Cut(roomID, ":"); ok && !slices.Contains(servers, server) {
		servers = append(servers, server)
	}
	var c map[string]any
	if err := json.Unmarshal(content, &c); err != nil {
		return err
	}
	return s.remote.JoinRoom(r.Context(), dev.UserID, roomID, servers, c)
}

// inviteRemote invites another server's user: their server signs the
// invite before it is committed.
func (s *Server) inviteRemote(r *http.Request, dev *Device, roomID, target, reason string) error {
	if s.remote == nil {
		return errForbidden("%s is on another server, and this server does not federate", target)
	}
	content, err := s.memberContent(r.Context(), target, spec.Invite, reason)
	if err != nil {
		return err
	}
	return s.remote.Invite(r.Context(), dev.actor(), roomID, dev.UserID, target, content)
}

func (s *Server) knowsRoom(r *http.Request, roomID string) bool {
	_, err := s.rooms.Version(r.Context(), roomID)
	return err == nil
}
