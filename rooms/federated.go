package rooms

import (
	"slices"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/machi-chat/machi/storage"
)

// Rooms shared with other servers. Each server sends its own events to
// every other server in the room; this server's events are queued for them
// in the same transaction that commits the event (storage.EventCommit's
// Outbox), so an event acknowledged to a client always reaches them. The
// federation package delivers the queue.

// remoteServers lists the other servers with members joined in snap.
func (s *Service) remoteServers(snap *Snapshot) []string {
	var out []string
	snap.Each(func(ev *Event) {
		if ev.Type() != spec.MRoomMember || ev.Membership() != spec.Join {
			return
		}
		uid, err := spec.NewUserID(*ev.StateKey(), true)
		if err != nil || uid.Domain() == s.cfg.ServerName {
			return
		}
		if d := string(uid.Domain()); !slices.Contains(out, d) {
			out = append(out, d)
		}
	})
	slices.Sort(out)
	return out
}

// outboxFor queues ev for the servers in the room before or after it (a
// server whose last member leaves still hears of the leave), except
// exclude (the server that sent it to us).
func (s *Service) outboxFor(ev *Event, before, after []string, exclude string) []storage.OutboundItem {
	if len(before) == 0 && len(after) == 0 {
		return nil
	}
	var out []storage.OutboundItem
	now := time.Now().UnixMilli()
	add := func(dest string) {
		if dest == exclude {
			return
		}
		for _, it := range out {
			if it.Destination == dest {
				return
			}
		}
		out = append(out, storage.OutboundItem{ID: s.outboxSeq.Add(1), Destination: dest, Kind: "pdu", Payload: ev.PDU.JSON(), CreatedTS: now})
	}
	for _, d := range before {
		add(d)
	}
	for _, d := range after {
		add(d)
	}
	return out
}

// NextOutboxID allocates an ID for an item of the federation outbox: one
// sequence for the events queued here and what federation queues itself.
func (s *Service) NextOutboxID() int64 { return s.outboxSeq.Add(1) }

// OnOutbox registers fn to be told, after each commit, which servers were
// queued events. Like OnCommit it runs on the writer: fn must not block.
func (s *Service) OnOutbox(fn func(destinations []string)) {
	s.outboxed = append(s.outboxed, fn)
}
