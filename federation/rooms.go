package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/internal/config"
	"github.com/machi-chat/machi/rooms"
)

// Rooms shared with other servers: joins both ways, events both ways
// (arriving in /send, filled in with get_missing_events where there are
// gaps), and the events other servers may ask for.

// maxMissing bounds how many missing events one gap fetch may bring.
const maxMissing = 50

func userIDForSender(_ spec.RoomID, sender spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(sender), true)
}

// handleMakeJoin serves GET /_matrix/federation/v1/make_join/{roomId}/{userId}:
// a join event for the origin's user to sign, if the room would let them in.
func (f *Federation) handleMakeJoin(w http.ResponseWriter, r *http.Request, origin spec.ServerName) {
	v := vars(r)
	if !ofOrigin(v["userId"], origin) {
		writeError(w, newErr(http.StatusForbidden, "M_FORBIDDEN", "%s may only make joins for its own users", origin))
		return
	}
	proto, version, err := f.rooms.MembershipTemplate(r.Context(), v["roomId"], v["userId"], spec.Join)
	if err != nil {
		writeError(w, err)
		return
	}
	vers := r.URL.Query()["ver"]
	if len(vers) == 0 {
		vers = []string{"1"} // the spec's default: a server that names none supports only version 1
	}
	if !slices.Contains(vers, string(version.Version())) {
		writeError(w, newErr(http.StatusBadRequest, "M_INCOMPATIBLE_ROOM_VERSION", "the room is version %s, which %s did not say it supports", version.Version(), origin).
			with("room_version", string(version.Version())))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"room_version": version.Version(), "event": proto})
}

// handleSendJoin serves PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}:
// the origin's user's signed join enters the room through the write path
// (and goes on to the room's other servers); the answer is the room's state
// before it and the auth chain.
func (f *Federation) handleSendJoin(w http.ResponseWriter, r *http.Request, origin spec.ServerName) {
	v := vars(r)
	version, err := f.rooms.Version(r.Context(), v["roomId"])
	if err != nil {
		writeError(w, err)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeError(w, err)
		return
	}
	pdu, err := version.NewEventFromUntrustedJSON(body)
	if err != nil {
		writeError(w, newErr(http.StatusBadRequest, "M_BAD_JSON", "not an event of this room's version: %v", err))
		return
	}
	uid, _ := spec.NewUserID(string(pdu.SenderID()), true)
	switch {
	case pdu.EventID() != v["eventId"]:
		writeError(w, newErr(http.StatusBadRequest, "M_BAD_JSON", "the event's ID is %s, not %s", pdu.EventID(), v["eventId"]))
		return
	case pdu.RoomID().String() != v["roomId"] || pdu.Type() != spec.MRoomMember || pdu.StateKey() == nil ||
		*pdu.StateKey() != string(pdu.SenderID()) || membership(pdu) != spec.Join:
		writeError(w, newErr(http.StatusBadRequest, "M_BAD_JSON", "not a join of its sender to this room"))
		return
	case uid == nil || uid.Domain() != origin:
		writeError(w, newErr(http.StatusForbidden, "M_FORBIDDEN", "%s may only send joins of its own users", origin))
		return
	}
	if err := gomatrixserverlib.VerifyEventSignatures(r.Context(), pdu, f.keyRing, userIDForSender); err != nil {
		writeError(w, newErr(http.StatusForbidden, "M_FORBIDDEN", "the join's signatures do not verify: %v", err))
		return
	}
	ev, err := f.rooms.Receive(r.Context(), &rooms.ReceiveRequest{PDU: pdu, Origin: origin, Forward: true})
	if err != nil {
		writeError(w, err)
		return
	}
	state, chain, err := f.rooms.StateAndAuthChain(r.Context(), ev)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"origin": f.cfg.ServerName, "state": pduJSONs(state), "auth_chain": pduJSONs(chain),
		"event": json.RawMessage(ev.PDU.JSON()), "members_omitted": false})
}

func membership(pdu gomatrixserverlib.PDU) string {
	m, _ := pdu.Membership()
	return m
}

func pduJSONs(pdus []gomatrixserverlib.PDU) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(pdus))
	for _, p := range pdus {
		out = append(out, p.JSON())
	}
	return out
}

// JoinRoom joins userID to a room this server is not in, through one of
// the servers (the first that answers), and stores the room here.
func (f *Federation) JoinRoom(ctx context.Context, userID, roomID string, servers []string, content map[string]any) error {
	uid, err := spec.NewUserID(userID, true)
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	rid, err := spec.NewRoomID(roomID)
	if err != nil {
		return errInvalidParam("%q is not a room ID", roomID)
	}
	var lastErr error = errNotFound("no server to join %s through", roomID)
	for _, server := range servers {
		if spec.ServerName(server) == f.cfg.ServerName {
			continue
		}
		if d := f.allowed(ctx, server); d != nil {
			lastErr = d
			continue
		}
		res, ferr := gomatrixserverlib.PerformJoin(ctx, joinClient{f.client}, gomatrixserverlib.PerformJoinInput{
			UserID: uid, RoomID: rid, ServerName: spec.ServerName(server), Content: content,
			PrivateKey: f.cfg.Key, KeyID: f.cfg.KeyID, KeyRing: f.keyRing,
			EventProvider: func(gomatrixserverlib.RoomVersion, []string) ([]gomatrixserverlib.PDU, error) {
				return nil, errors.New("the send_join answer lacks auth events")
			},
			UserIDQuerier: userIDForSender,
		})
		if ferr != nil {
			lastErr = remoteError(spec.ServerName(server), ferr.Err)
			if remote, ok := lastErr.(*RemoteError); ok {
				remote.Pass = true // the other server's refusal of this join, for the client to see
			}
			f.log.Info("federation: join failed", "room", roomID, "via", server, "err", ferr.Err)
			continue
		}
		version, err := gomatrixserverlib.GetRoomVersion(res.JoinEvent.Version())
		if err != nil || !slices.Contains(config.SupportedRoomVersions, string(res.JoinEvent.Version())) {
			return rooms.ErrUnsupportedVersion
		}
		state := res.StateSnapshot.GetStateEvents().TrustedEvents(version.Version(), false)
		chain := res.StateSnapshot.GetAuthEvents().TrustedEvents(version.Version(), false)
		if _, err := f.rooms.ImportJoin(ctx, version, res.JoinEvent, state, chain); err != nil {
			return err
		}
		return nil
	}
	return lastErr
}

// pduResult is one PDU's outcome in a /send answer.
type pduResult struct {
	Error string `json:"error,omitempty"`
}

// receivePDU takes one PDU of a transaction from origin: parsed by its
// room's version, signatures checked, gaps before it filled from origin,
// then through the write path.
func (f *Federation) receivePDU(ctx context.Context, origin spec.ServerName, raw json.RawMessage) (string, error) {
	var head struct {
		RoomID string `json:"room_id"`
	}
	if err := json.Unmarshal(raw, &head); err != nil || head.RoomID == "" {
		return "", errors.New("not an event")
	}
	version, err := f.rooms.Version(ctx, head.RoomID)
	if err != nil {
		return "", fmt.Errorf("this server is not in room %s", head.RoomID)
	}
	pdu, err := version.NewEventFromUntrustedJSON(raw)
	if err != nil {
		return "", fmt.Errorf("bad event: %w", err)
	}
	return pdu.EventID(), f.receive(ctx, origin, pdu, 0)
}

// receive verifies pdu and puts it in its room, fetching what it builds on
// from origin when that is missing (depth bounds the recursion).
func (f *Federation) receive(ctx context.Context, origin spec.ServerName, pdu gomatrixserverlib.PDU, depth int) error {
	sender, err := spec.NewUserID(string(pdu.SenderID()), true)
	if err != nil {
		return fmt.Errorf("bad sender: %w", err)
	}
	if d := f.allowed(ctx, string(sender.Domain())); d != nil {
		return d
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, pdu, f.keyRing, userIDForSender); err != nil {
		return fmt.Errorf("signatures do not verify: %w", err)
	}
	_, err = f.rooms.Receive(ctx, &rooms.ReceiveRequest{PDU: pdu, Origin: origin})
	var missing *rooms.ErrMissingPrev
	if !errors.As(err, &missing) {
		return err
	}
	if depth > 0 {
		// An event /get_missing_events brought, at the start of what it
		// brought: what comes before it is placed by the state at it,
		// asked of origin. (An event sent to this server directly whose
		// history stays out of reach is refused instead.)
		prevs, err := f.missingPrevs(ctx, origin, pdu, missing.IDs)
		if err != nil {
			return fmt.Errorf("the state before a gap: %w", err)
		}
		_, err = f.rooms.Receive(ctx, &rooms.ReceiveRequest{PDU: pdu, Origin: origin, MissingPrevs: prevs})
		return err
	}
	if err := f.fillGap(ctx, origin, pdu); err != nil {
		return fmt.Errorf("fill the gap before it: %w", err)
	}
	_, err = f.rooms.Receive(ctx, &rooms.ReceiveRequest{PDU: pdu, Origin: origin})
	return err
}

// maxGapState bounds how many events one gap's state may make this server
// fetch one by one.
const maxGapState = 500

// missingPrevs fetches, from origin, the prev_events of pdu this server
// lacks and the room's state before each (/state_ids, then each event not
// here), and keeps the state events whose signatures and auth check out.
func (f *Federation) missingPrevs(ctx context.Context, origin spec.ServerName, pdu gomatrixserverlib.PDU, ids []string) ([]rooms.MissingPrev, error) {
	roomID := pdu.RoomID().String()
	version, err := f.rooms.Version(ctx, roomID)
	if err != nil {
		return nil, err
	}
	fetched := 0
	fetch := func(id string) (gomatrixserverlib.PDU, error) {
		if ev, err := f.rooms.Event(ctx, id); err == nil {
			if ev.RoomID() != roomID {
				return nil, fmt.Errorf("%s is of another room", id)
			}
			return ev.PDU, nil
		}
		if fetched++; fetched > maxGapState {
			return nil, fmt.Errorf("more than %d events to fetch", maxGapState)
		}
		var res struct {
			PDUs []json.RawMessage `json:"pdus"`
		}
		if err := f.signedRequest(ctx, http.MethodGet, string(origin), "/_matrix/federation/v1/event/"+pathEscape(id), nil, &res); err != nil {
			return nil, err
		}
		if len(res.PDUs) != 1 {
			return nil, fmt.Errorf("no event %s in the answer", id)
		}
		ev, err := version.NewEventFromUntrustedJSON(res.PDUs[0])
		if err != nil {
			return nil, err
		}
		if ev.EventID() != id || ev.RoomID().String() != roomID {
			return nil, fmt.Errorf("asked for %s, got %s of %s", id, ev.EventID(), ev.RoomID().String())
		}
		return ev, nil
	}
	var out []rooms.MissingPrev
	for _, id := range ids {
		prev, err := fetch(id)
		if err != nil {
			return nil, err
		}
		if err := gomatrixserverlib.VerifyEventSignatures(ctx, prev, f.keyRing, userIDForSender); err != nil {
			return nil, fmt.Errorf("%s: signatures do not verify: %w", id, err)
		}
		var stateIDs struct {
			PDUs  []string `json:"pdu_ids"`
			Chain []string `json:"auth_chain_ids"`
		}
		path := "/_matrix/federation/v1/state_ids/" + pathEscape(roomID) + "?event_id=" + url.QueryEscape(id)
		if err := f.signedRequest(ctx, http.MethodGet, string(origin), path, nil, &stateIDs); err != nil {
			return nil, err
		}
		resp := &fclient.RespState{}
		for _, list := range []struct {
			ids []string
			to  *gomatrixserverlib.EventJSONs
		}{{stateIDs.PDUs, &resp.StateEvents}, {stateIDs.Chain, &resp.AuthEvents}} {
			for _, sid := range list.ids {
				ev, err := fetch(sid)
				if err != nil {
					// Left out (of another room, unreadable, not served): the
					// state is what remains, as with events that fail checks.
					f.log.Info("federation: an event of the state before a gap was left out", "event", sid, "err", err)
					continue
				}
				*list.to = append(*list.to, ev.JSON())
			}
		}
		// Auth events the chain given lacks are fetched too.
		missingAuth := func(_ gomatrixserverlib.RoomVersion, ids []string) ([]gomatrixserverlib.PDU, error) {
			var out []gomatrixserverlib.PDU
			for _, id := range ids {
				if ev, err := fetch(id); err == nil {
					out = append(out, ev)
				}
			}
			return out, nil
		}
		_, state, err := gomatrixserverlib.CheckStateResponse(ctx, resp, version.Version(), f.keyRing, missingAuth, userIDForSender)
		if err != nil {
			return nil, err
		}
		out = append(out, rooms.MissingPrev{Event: prev, StateBefore: state})
	}
	return out, nil
}

// fillGap asks origin for the events between the room's forward
// extremities and pdu, and takes them oldest first.
func (f *Federation) fillGap(ctx context.Context, origin spec.ServerName, pdu gomatrixserverlib.PDU) error {
	roomID := pdu.RoomID().String()
	latest, err := f.rooms.Latest(ctx, roomID)
	if err != nil {
		return err
	}
	version, err := f.rooms.Version(ctx, roomID)
	if err != nil {
		return err
	}
	var res struct {
		Events []json.RawMessage `json:"events"`
	}
	body := map[string]any{"earliest_events": latest, "latest_events": []string{pdu.EventID()}, "limit": maxMissing, "min_depth": 0}
	if err := f.signedRequest(ctx, http.MethodPost, string(origin), "/_matrix/federation/v1/get_missing_events/"+pathEscape(roomID), body, &res); err != nil {
		return err
	}
	var evs []gomatrixserverlib.PDU
	for _, raw := range res.Events {
		ev, err := version.NewEventFromUntrustedJSON(raw)
		if err != nil || ev.RoomID().String() != roomID {
			continue
		}
		evs = append(evs, ev)
	}
	slices.SortFunc(evs, func(a, b gomatrixserverlib.PDU) int { return int(a.Depth() - b.Depth()) })
	for _, ev := range evs {
		if err := f.receive(ctx, origin, ev, 1); err != nil {
			f.log.Info("federation: a missing event was refused", "event", ev.EventID(), "err", err)
		}
	}
	return nil
}

// handleMissingEvents serves POST /_matrix/federation/v1/get_missing_events/{roomId}:
// the events before latest_events back to earliest_events, for a server
// in the room.
func (f *Federation) handleMissingEvents(w http.ResponseWriter, r *http.Request, origin spec.ServerName) {
	roomID := vars(r)["roomId"]
	var req struct {
		Earliest []string `json:"earliest_events"`
		Latest   []string `json:"latest_events"`
		Limit    int      `json:"limit"`
		MinDepth int64    `json:"min_depth"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if !f.rooms.ServerInRoom(r.Context(), roomID, string(origin)) {
		writeError(w, newErr(http.StatusForbidden, "M_FORBIDDEN", "%s is not in this room", origin))
		return
	}
	limit := req.Limit
	if limit <= 0 || limit > maxMissing {
		limit = min(max(limit, 10), maxMissing)
	}
	// The latest events themselves are not sent, only what comes before.
	seen := map[string]bool{}
	var from []string
	for _, id := range slices.Concat(req.Earliest, req.Latest) {
		seen[id] = true
	}
	for _, id := range req.Latest {
		if ev, err := f.rooms.Event(r.Context(), id); err == nil && ev.RoomID() == roomID {
			from = append(from, ev.PDU.PrevEventIDs()...)
		}
	}
	out := pduJSONs(f.walkBack(r.Context(), roomID, from, seen, req.MinDepth, limit))
	slices.Reverse(out)
	writeJSON(w, http.StatusOK, map[string]any{"events": out})
}

// handleEvent serves GET /_matrix/federation/v1/event/{eventId}: one event
// of a room the origin is in.
func (f *Federation) handleEvent(w http.ResponseWriter, r *http.Request, origin spec.ServerName) {
	ev, err := f.rooms.Event(r.Context(), vars(r)["eventId"])
	if err != nil || !f.rooms.ServerInRoom(r.Context(), ev.RoomID(), string(origin)) {
		writeError(w, errNotFound("no such event in a room %s is in", origin))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"origin": f.cfg.ServerName, "origin_server_ts": spec.AsTimestamp(f.now()),
		"pdus": []json.RawMessage{ev.PDU.JSON()}})
}

// joinClient is the federation client as gomatrixserverlib's join wants it.
type joinClient struct{ c fclient.FederationClient }

func (j joinClient) MakeJoin(ctx context.Context, origin, s spec.ServerName, roomID, userID string) (gomatrixserverlib.MakeJoinResponse, error) {
	res, err := j.c.MakeJoin(ctx, origin, s, roomID, userID)
	return &res, err
}

func (j joinClient) SendJoin(ctx context.Context, origin, s spec.ServerName, event gomatrixserverlib.PDU) (gomatrixserverlib.SendJoinResponse, error) {
	res, err := j.c.SendJoin(ctx, origin, s, event)
	return &res, err
}

// handleBackfill serves GET /_matrix/federation/v1/backfill/{roomId}?v=&limit=:
// the events v name and those before them, newest first, for a server in
// the room.
func (f *Federation) handleBackfill(w http.ResponseWriter, r *http.Request, origin spec.ServerName) {
	roomID := vars(r)["roomId"]
	q := r.URL.Query()
	from := q["v"]
	limit, err := strconv.Atoi(q.Get("limit"))
	switch {
	case len(from) == 0:
		writeError(w, errMissingParam("v is required"))
		return
	case err != nil || limit < 1:
		writeError(w, errInvalidParam("limit must be a positive number"))
		return
	}
	if !f.rooms.ServerInRoom(r.Context(), roomID, string(origin)) {
		writeError(w, newErr(http.StatusForbidden, "M_FORBIDDEN", "%s is not in this room", origin))
		return
	}
	out := f.walkBack(r.Context(), roomID, from, map[string]bool{}, 0, min(limit, 100))
	writeJSON(w, http.StatusOK, map[string]any{"origin": f.cfg.ServerName, "origin_server_ts": spec.AsTimestamp(f.now()), "pdus": pduJSONs(out)})
}

// walkBack visits the room's events from ids back through their
// prev_events, breadth first, skipping those in seen and those below
// minDepth, and returns up to limit of them, newest first.
func (f *Federation) walkBack(ctx context.Context, roomID string, ids []string, seen map[string]bool, minDepth int64, limit int) []gomatrixserverlib.PDU {
	var out []gomatrixserverlib.PDU
	for len(ids) > 0 && len(out) < limit {
		var next []string
		for _, id := range ids {
			if seen[id] || len(out) == limit {
				continue
			}
			seen[id] = true
			ev, err := f.rooms.Event(ctx, id)
			if err != nil || ev.RoomID() != roomID || ev.PDU.Depth() < minDepth {
				continue
			}
			out = append(out, ev.PDU)
			next = append(next, ev.PDU.PrevEventIDs()...)
		}
		ids = next
	}
	return out
}

// Backfill fetches up to limit events of the room's history before the
// events named, from a server in the room, and stores those whose
// signatures verify. It returns how many were added.
func (f *Federation) Backfill(ctx context.Context, roomID string, before []string, limit int) (int, error) {
	version, err := f.rooms.Version(ctx, roomID)
	if err != nil {
		return 0, err
	}
	q := url.Values{"limit": {strconv.Itoa(limit)}}
	for _, id := range before {
		q.Add("v", id)
	}
	var lastErr error
	for _, server := range f.rooms.Servers(ctx, roomID) {
		if f.allowed(ctx, server) != nil {
			continue
		}
		var res struct {
			PDUs []json.RawMessage `json:"pdus"`
		}
		if err := f.signedRequest(ctx, http.MethodGet, server, "/_matrix/federation/v1/backfill/"+pathEscape(roomID)+"?"+q.Encode(), nil, &res); err != nil {
			lastErr = err
			continue
		}
		var pdus []gomatrixserverlib.PDU
		for _, raw := range res.PDUs {
			pdu, err := version.NewEventFromUntrustedJSON(raw)
			if err != nil || pdu.RoomID().String() != roomID {
				continue
			}
			if err := gomatrixserverlib.VerifyEventSignatures(ctx, pdu, f.keyRing, userIDForSender); err != nil {
				f.log.Info("federation: backfilled event refused", "event", pdu.EventID(), "err", err)
				continue
			}
			pdus = append(pdus, pdu)
		}
		return f.rooms.StoreBackfill(ctx, roomID, pdus)
	}
	return 0, lastErr
}

// roomEventFor is the event named by a state or auth query, of a room the
// origin is in.
func (f *Federation) roomEventFor(w http.ResponseWriter, r *http.Request, origin spec.ServerName, eventID string) *rooms.Event {
	roomID := vars(r)["roomId"]
	if eventID == "" {
		writeError(w, errMissingParam("event_id is required"))
		return nil
	}
	if !f.rooms.ServerInRoom(r.Context(), roomID, string(origin)) {
		writeError(w, newErr(http.StatusForbidden, "M_FORBIDDEN", "%s is not in this room", origin))
		return nil
	}
	ev, err := f.rooms.Event(r.Context(), eventID)
	if err != nil || ev.RoomID() != roomID {
		writeError(w, errNotFound("no event %s in this room", eventID))
		return nil
	}
	return ev
}

// handleState serves GET /_matrix/federation/v1/state/{roomId}?event_id=
// and /state_ids: the room's state at (before) the event, and its auth
// chain, as events or as IDs.
func (f *Federation) handleState(idsOnly bool) func(http.ResponseWriter, *http.Request, spec.ServerName) {
	return func(w http.ResponseWriter, r *http.Request, origin spec.ServerName) {
		ev := f.roomEventFor(w, r, origin, r.URL.Query().Get("event_id"))
		if ev == nil {
			return
		}
		if ev.Outlier {
			// Not in the room's history here: this server does not know
			// the state at it (or knows only what another server claimed).
			writeError(w, errNotFound("no state known at %s", ev.ID()))
			return
		}
		state, chain, err := f.rooms.StateAndAuthChain(r.Context(), ev)
		if err != nil {
			writeError(w, err)
			return
		}
		if idsOnly {
			writeJSON(w, http.StatusOK, map[string]any{"pdu_ids": pduIDs(state), "auth_chain_ids": pduIDs(chain)})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"pdus": pduJSONs(state), "auth_chain": pduJSONs(chain)})
	}
}

// handleEventAuth serves GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}:
// the event's auth chain.
func (f *Federation) handleEventAuth(w http.ResponseWriter, r *http.Request, origin spec.ServerName) {
	ev := f.roomEventFor(w, r, origin, vars(r)["eventId"])
	if ev == nil {
		return
	}
	chain, err := f.rooms.AuthChain(r.Context(), ev)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"auth_chain": pduJSONs(chain)})
}

func pduIDs(pdus []gomatrixserverlib.PDU) []string {
	out := make([]string, 0, len(pdus))
	for _, p := range pdus {
		out = append(out, p.EventID())
	}
	return out
}
