package federation

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// publicRoomsHandler serves GET and POST /_matrix/federation/v1/publicRooms:
// this server's room directory for another server (on the allow-list, as
// every authenticated request), answered by the client API's own code.
func publicRoomsHandler(local Local) func(w http.ResponseWriter, r *http.Request, origin spec.ServerName) {
	return func(w http.ResponseWriter, r *http.Request, _ spec.ServerName) {
		var body json.RawMessage
		if r.Method == http.MethodPost {
			var req map[string]json.RawMessage
			if err := readJSON(r, &req); err != nil {
				writeError(w, err)
				return
			}
			body, _ = json.Marshal(req)
		} else {
			q := r.URL.Query()
			req := map[string]any{}
			if v := q.Get("limit"); v != "" {
				n, err := strconv.Atoi(v)
				if err != nil {
					writeError(w, errInvalidParam("limit must be an integer"))
					return
				}
				req["limit"] = n
			}
			if v := q.Get("since"); v != "" {
				req["since"] = v
			}
			switch v := q.Get("include_all_networks"); v {
			case "", "false":
			case "true":
				req["include_all_networks"] = true
			default:
				writeError(w, errInvalidParam("include_all_networks must be true or false"))
				return
			}
			if v := q.Get("third_party_instance_id"); v != "" {
				req["third_party_instance_id"] = v
			}
			body, _ = json.Marshal(req)
		}
		resp, err := local.PublicRooms(r.Context(), body)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, resp)
	}
}

// PublicRooms asks server for a page of its room directory (body: the
// POST /publicRooms request).
func (f *Federation) PublicRooms(ctx context.Context, server string, body json.RawMessage) (json.RawMessage, error) {
	var res struct {
		Chunk []json.RawMessage `json:"chunk"`
	}
	var raw json.RawMessage
	if err := f.signedRequest(ctx, http.MethodPost, server, "/_matrix/federation/v1/publicRooms", body, &raw); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(raw, &res); err != nil || res.Chunk == nil {
		return nil, &RemoteError{Server: server, Status: http.StatusBadGateway, Msg: "answered without a list of rooms"}
	}
	return raw, nil
}
