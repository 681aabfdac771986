package rooms

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/machi-chat/machi/storage"
)

// Event is a persisted room event as machi serves it: the PDU, its stream
// position, and its client-format JSON prepared once.
// An Event is immutable once published; a redaction replaces it.
type Event struct {
	PDU        gomatrixserverlib.PDU
	Pos        int64
	StateGroup int64 // room state before the event
	TxnDevice  string
	TxnID      string
	RedactedBy string
	// Outlier is an event known for its state or as a reference (a
	// soft-failed one, the state of a join, history before a gap) that is
	// in no timeline here; set when it is read from storage.
	Outlier bool
	// prefix is the client-format JSON without its closing brace and
	// without "unsigned"; extra is unsigned fields other than age and
	// transaction_id, with a leading comma, or empty.
	prefix []byte
	extra  []byte
	// rel is content."m.relates_to", parsed once when the event is made.
	rel *storage.Relation
}

// ID is the event ID.
func (e *Event) ID() string { return e.PDU.EventID() }

// RoomID is the room's ID.
func (e *Event) RoomID() string { return e.PDU.RoomID().String() }

// Type is the event type.
func (e *Event) Type() string { return e.PDU.Type() }

// Sender is the sender's user ID.
func (e *Event) Sender() string { return string(e.PDU.SenderID()) }

// StateKey is the state key, nil for a message event.
func (e *Event) StateKey() *string { return e.PDU.StateKey() }

// IsState reports whether the event is a state event.
func (e *Event) IsState() bool { return e.PDU.StateKey() != nil }

// Membership is content.membership of a member event, or "".
// PrevMembership is the membership a member event replaced, as its
// unsigned prev_content gives it ("" if none).
func (e *Event) PrevMembership() string {
	var u struct {
		PrevContent struct {
			Membership string `json:"membership"`
		} `json:"prev_content"`
	}
	if raw := e.PDU.Unsigned(); len(raw) > 0 {
		_ = json.Unmarshal(raw, &u)
	}
	return u.PrevContent.Membership
}

func (e *Event) Membership() string {
	m, _ := e.PDU.Membership()
	return m
}

// clientFields is the client-server event format (ClientEvent) without
// unsigned.
type clientFields struct {
	Content        json.RawMessage `json:"content"`
	EventID        string          `json:"event_id"`
	OriginServerTS int64           `json:"origin_server_ts"`
	RoomID         string          `json:"room_id"`
	Sender         string          `json:"sender"`
	StateKey       *string         `json:"state_key,omitempty"`
	Type           string          `json:"type"`
	Redacts        string          `json:"redacts,omitempty"`
}

// unsignedExtra is what the server adds under unsigned besides age and
// transaction_id.
type unsignedExtra struct {
	PrevContent     json.RawMessage `json:"prev_content,omitempty"`
	PrevSender      string          `json:"prev_sender,omitempty"`
	ReplacesState   string          `json:"replaces_state,omitempty"`
	RedactedBecause json.RawMessage `json:"redacted_because,omitempty"`
	// RedactedBy is the redaction's ID beside it: not the spec's, but what
	// Synapse and Dendrite give and some clients read.
	RedactedBy string `json:"redacted_by,omitempty"`
}

// newEvent prepares the client JSON of pdu. redaction is the redaction
// event that redacted it, if any.
func newEvent(pdu gomatrixserverlib.PDU, pos, group int64, redaction *Event) (*Event, error) {
	ev := &Event{PDU: pdu, Pos: pos, StateGroup: group}
	cf := clientFields{
		Content:        pdu.Content(),
		EventID:        pdu.EventID(),
		OriginServerTS: int64(pdu.OriginServerTS()),
		RoomID:         pdu.RoomID().String(),
		Sender:         string(pdu.SenderID()),
		StateKey:       pdu.StateKey(),
		Type:           pdu.Type(),
		Redacts:        pdu.Redacts(),
	}
	if len(cf.Content) == 0 {
		cf.Content = json.RawMessage("{}")
	}
	if cf.Type == "m.room.redaction" && cf.Redacts == "" {
		// Room v11+ carries redacts in content only; clients read either.
		var c struct {
			Redacts string `json:"redacts"`
		}
		_ = json.Unmarshal(cf.Content, &c)
		cf.Redacts = c.Redacts
	}
	b, err := json.Marshal(cf)
	if err != nil {
		return nil, fmt.Errorf("encode client event: %w", err)
	}
	ev.prefix = b[:len(b)-1]
	ev.rel = parseRelation(cf.Content)
	var ux unsignedExtra
	if u := pdu.Unsigned(); len(u) > 0 {
		// prev_content and friends were put in the PDU's unsigned when
		// it was built, so they survive a reload.
		_ = json.Unmarshal(u, &ux)
		ux.RedactedBecause, ux.RedactedBy = nil, ""
	}
	if redaction != nil {
		ev.RedactedBy = redaction.ID()
		ux.RedactedBecause = redaction.ClientJSON(time.Now(), "")
		ux.RedactedBy = redaction.ID()
	}
	if ux.PrevContent != nil || ux.PrevSender != "" || ux.ReplacesState != "" || ux.RedactedBecause != nil {
		x, err := json.Marshal(ux)
		if err != nil {
			return nil, fmt.Errorf("encode unsigned: %w", err)
		}
		if len(x) > 2 {
			ev.extra = append([]byte{','}, x[1:len(x)-1]...)
		}
	}
	return ev, nil
}

// ClientJSON is the event in the client-server format, as seen by the
// device forDevice ("user|device": the transaction ID is shown only to the
// device that sent it).
func (e *Event) ClientJSON(now time.Time, forDevice string) []byte {
	b := make([]byte, 0, len(e.prefix)+len(e.extra)+64)
	return e.AppendClientJSON(b, now, forDevice)
}

// AppendClientJSON appends ClientJSON to b.
func (e *Event) AppendClientJSON(b []byte, now time.Time, forDevice string) []byte {
	return append(e.appendClientJSONOpen(b, now, forDevice), "}}"...)
}

// appendClientJSONOpen appends the client JSON up to the last unsigned
// field, leaving unsigned and the event open for more.
func (e *Event) appendClientJSONOpen(b []byte, now time.Time, forDevice string) []byte {
	b = append(b, e.prefix...)
	b = append(b, `,"unsigned":{"age":`...)
	age := now.UnixMilli() - int64(e.PDU.OriginServerTS())
	if age < 0 {
		age = 0
	}
	b = strconv.AppendInt(b, age, 10)
	if e.TxnID != "" && forDevice != "" && forDevice == e.Sender()+"|"+e.TxnDevice {
		b = append(b, `,"transaction_id":`...)
		b = strconv.AppendQuote(b, e.TxnID)
	}
	return append(b, e.extra...)
}

// StrippedJSON is the stripped state form used in invite_state.
func (e *Event) StrippedJSON() json.RawMessage {
	b, _ := json.Marshal(struct {
		Content  json.RawMessage `json:"content"`
		Sender   string          `json:"sender"`
		StateKey string          `json:"state_key"`
		Type     string          `json:"type"`
	}{e.PDU.Content(), e.Sender(), deref(e.StateKey()), e.Type()})
	return b
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// row is the event's storage row.
func (e *Event) row() storage.Event {
	return storage.Event{
		Pos:        e.Pos,
		EventID:    e.ID(),
		RoomID:     e.RoomID(),
		Type:       e.Type(),
		StateKey:   e.StateKey(),
		Sender:     e.Sender(),
		Depth:      e.PDU.Depth(),
		StateGroup: e.StateGroup,
		JSON:       e.PDU.JSON(),
		RedactedBy: e.RedactedBy,
		TxnDevice:  e.TxnDevice,
		TxnID:      e.TxnID,
		OriginTS:   int64(e.PDU.OriginServerTS()),
	}
}
