package rooms

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"sort"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// fastBuild makes the same PDU as gomatrixserverlib's EventBuilder.Build —
// byte for byte, which build_test.go checks — for the event format of room
// versions 3 to 12 (event IDs are the event's hash), with fewer passes over the
// JSON: Build marshals by reflection, then parses and re-encodes the event
// three more times to add the hash and the signature. Here the fields are
// assembled once, in canonical key order; the content hash, the redaction
// for the signature and the final canonical check are one pass each.
//
// ok is false for anything else (the caller falls back to Build).
func fastBuild(version gomatrixserverlib.IRoomVersion, proto *gomatrixserverlib.ProtoEvent, now time.Time,
	origin spec.ServerName, keyID gomatrixserverlib.KeyID, key ed25519.PrivateKey) (pdu gomatrixserverlib.PDU, ok bool, err error) {
	if version.EventFormat() != gomatrixserverlib.EventFormatV2 || version.StateDAGs() ||
		proto.PrevStateEvents != nil || len(proto.Signature) > 0 {
		return nil, false, nil
	}
	prev, ok1 := proto.PrevEvents.([]string)
	auth, ok2 := proto.AuthEvents.([]string)
	if !ok1 || !ok2 || prev == nil || auth == nil {
		return nil, false, nil // Build's own nil and type handling applies
	}
	if version.DomainlessRoomIDs() && proto.Type == spec.MRoomCreate && proto.StateKey != nil && proto.RoomID != "" {
		return nil, false, nil // Build reports this error
	}
	content, err := gomatrixserverlib.CanonicalJSON(proto.Content)
	if err != nil {
		return nil, true, err
	}

	fields := make([]field, 0, 16)
	add := func(k string, v any) {
		b, e := json.Marshal(v)
		if e != nil && err == nil {
			err = e
		}
		fields = append(fields, field{k, b})
	}
	add("auth_events", auth)
	fields = append(fields, field{"content", content})
	add("depth", proto.Depth)
	add("origin", origin)
	add("origin_server_ts", spec.AsTimestamp(now))
	add("prev_events", prev)
	if proto.StateKey != nil {
		fields = append(fields, field{"prev_state", []byte("[]")})
		add("state_key", *proto.StateKey)
	}
	if proto.Redacts != "" {
		add("redacts", proto.Redacts)
	}
	if proto.RoomID != "" {
		add("room_id", proto.RoomID)
	}
	add("sender", proto.SenderID)
	add("type", proto.Type)
	if err != nil {
		return nil, true, err
	}

	// Content hash: over everything but hashes, signatures and unsigned.
	hashable, err := gomatrixserverlib.CanonicalJSON(assemble(fields))
	if err != nil {
		return nil, true, err
	}
	sum := sha256.Sum256(hashable)
	fields = append(fields, field{"hashes", []byte(`{"sha256":"` + base64.RawStdEncoding.EncodeToString(sum[:]) + `"}`)})

	// Signature: over the redacted event, so it survives redaction.
	redacted, err := version.RedactEventJSON(assemble(fields))
	if err != nil {
		return nil, true, err
	}
	if redacted, err = gomatrixserverlib.CanonicalJSON(redacted); err != nil {
		return nil, true, err
	}
	sig := ed25519.Sign(key, redacted)
	sigs, err := json.Marshal(map[spec.ServerName]map[gomatrixserverlib.KeyID]string{
		origin: {keyID: base64.RawStdEncoding.EncodeToString(sig)},
	})
	if err != nil {
		return nil, true, err
	}
	fields = append(fields, field{"signatures", sigs})
	if len(proto.Unsigned) > 0 {
		fields = append(fields, field{"unsigned", proto.Unsigned})
	}

	eventJSON, err := gomatrixserverlib.EnforcedCanonicalJSON(assemble(fields), version.Version())
	if err != nil {
		return nil, true, err
	}
	if pdu, err = version.NewEventFromTrustedJSON(eventJSON, false); err != nil {
		return nil, true, err
	}
	return pdu, true, gomatrixserverlib.CheckFields(pdu)
}

type field struct {
	key   string
	value []byte
}

// assemble writes fields as a JSON object, keys sorted (the keys are plain
// ASCII, so they need no escaping).
func assemble(fields []field) []byte {
	sort.Slice(fields, func(i, j int) bool { return fields[i].key < fields[j].key })
	n := 2
	for _, f := range fields {
		n += len(f.key) + len(f.value) + 4
	}
	b := make([]byte, 0, n)
	b = append(b, '{')
	for i, f := range fields {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, f.key...)
		b = append(b, '"', ':')
		b = append(b, f.value...)
	}
	return append(b, '}')
}
