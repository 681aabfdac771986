package federation

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/storage"
)

// txnHandler receives transactions: PUT /_matrix/federation/v1/send/{txnId}.
type txnHandler struct {
	f     *Federation
	local Local
}

type edu struct {
	Type    string          `json:"edu_type"`
	Content json.RawMessage `json:"content"`
}

// send serves PUT /_matrix/federation/v1/send/{txnId}. Idempotent per
// origin and transaction ID: a retried transaction is answered again
// without being processed twice.
//
// PDUs enter their rooms through the write path, in the order given, each
// answered with its outcome. EDUs: to-device messages are delivered to
// local devices; typing, receipts, presence and device list updates are not
// taken yet (see docs/federation.md).
func (h txnHandler) send(w http.ResponseWriter, r *http.Request, origin spec.ServerName) {
	txnID := vars(r)["txnId"]
	var txn struct {
		Origin spec.ServerName   `json:"origin"`
		PDUs   []json.RawMessage `json:"pdus"`
		EDUs   []edu             `json:"edus"`
	}
	if err := readJSONMax(r, &txn, maxTxnBytes); err != nil {
		writeError(w, err)
		return
	}
	switch {
	case txn.Origin != origin:
		writeError(w, newErr(http.StatusBadRequest, "M_BAD_JSON", "the transaction's origin %q is not the signing server %q", txn.Origin, origin))
		return
	case txn.PDUs == nil:
		writeError(w, errMissingParam("pdus is required"))
		return
	case len(txn.PDUs) > maxTxnPDUs || len(txn.EDUs) > maxTxnEDUs:
		writeError(w, newErr(http.StatusBadRequest, "M_TOO_LARGE", "a transaction holds at most %d PDUs and %d EDUs", maxTxnPDUs, maxTxnEDUs))
		return
	}
	key := string(origin) + "|" + txnID
	if !h.f.txns.First(key) {
		writeJSON(w, http.StatusOK, map[string]any{"pdus": map[string]any{}})
		return
	}
	for _, e := range txn.EDUs {
		if err := h.edu(r.Context(), origin, e); err != nil {
			h.f.txns.Forget(key) // let the origin retry what failed here
			writeError(w, err)
			return
		}
	}
	results := map[string]pduResult{}
	for _, raw := range txn.PDUs {
		id, err := h.f.receivePDU(r.Context(), origin, raw)
		if id == "" {
			h.f.log.Info("federation: unreadable PDU", "origin", origin, "err", err)
			continue
		}
		results[id] = pduResult{}
		if err != nil {
			results[id] = pduResult{Error: err.Error()}
			h.f.log.Info("federation: PDU refused", "origin", origin, "event", id, "err", err)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"pdus": results})
}

func (h txnHandler) edu(ctx context.Context, origin spec.ServerName, e edu) error {
	if e.Type != "m.direct_to_device" {
		return nil
	}
	var c struct {
		Sender    string                                `json:"sender"`
		Type      string                                `json:"type"`
		MessageID string                                `json:"message_id"`
		Messages  map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := json.Unmarshal(e.Content, &c); err != nil || c.Type == "" {
		h.f.log.Info("federation: malformed to-device EDU", "origin", origin)
		return nil // one bad EDU does not fail the transaction
	}
	if uid, err := spec.NewUserID(c.Sender, true); err != nil || uid.Domain() != origin {
		h.f.log.Info("federation: to-device EDU from a user not of its origin", "origin", origin, "sender", c.Sender)
		return nil
	}
	if c.MessageID != "" && !h.f.txns.First(string(origin)+"|msg|"+c.MessageID) {
		return nil // already delivered (the same message in a retried transaction)
	}
	mine := map[string]map[string]json.RawMessage{}
	for u, byDevice := range c.Messages {
		if uid, err := spec.NewUserID(u, true); err == nil && uid.Domain() == h.f.cfg.ServerName {
			mine[u] = byDevice
		}
	}
	if len(mine) == 0 {
		return nil
	}
	if err := h.local.DeliverToDevice(ctx, c.Sender, c.Type, mine); err != nil {
		h.f.txns.Forget(string(origin) + "|msg|" + c.MessageID)
		return err
	}
	return nil
}

// SendToDevice queues to-device messages for other servers' users (server
// → user → device → content); durable on return. Servers off the
// allow-list get nothing.
func (f *Federation) SendToDevice(ctx context.Context, sender, eventType, messageID string, byServer map[string]map[string]map[string]json.RawMessage) error {
	var items []storage.OutboundItem
	for server, msgs := range byServer {
		if d := f.allowed(ctx, server); d != nil {
			continue
		}
		content, err := json.Marshal(map[string]any{"sender": sender, "type": eventType, "message_id": messageID, "messages": msgs})
		if err != nil {
			return err
		}
		payload, err := json.Marshal(edu{Type: "m.direct_to_device", Content: content})
		if err != nil {
			return err
		}
		items = append(items, storage.OutboundItem{Destination: server, Kind: "edu", Payload: payload})
	}
	return f.sender.enqueue(ctx, items)
}
