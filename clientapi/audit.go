package clientapi

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/machi-chat/machi/policy"
	"github.com/machi-chat/machi/storage"
)

// AuditLog writes the audit log: every admin action (synchronously, before
// the action is acknowledged) and every policy denial (queued, because a
// denial can happen inside the write path, which must not wait on another
// database write; the queue is drained on Close).
type AuditLog struct {
	store storage.Policy
	log   *slog.Logger
	now   func() time.Time
	queue chan auditItem
	wg    sync.WaitGroup
}

// auditItem is a queued entry, or a flush marker (done set).
type auditItem struct {
	entry storage.AuditEntry
	done  chan struct{}
}

// NewAuditLog starts the audit log writer.
func NewAuditLog(store storage.Policy, now func() time.Time, log *slog.Logger) *AuditLog {
	a := &AuditLog{store: store, log: log, now: now, queue: make(chan auditItem, 4096)}
	a.wg.Add(1)
	go a.run()
	return a
}

func (a *AuditLog) run() {
	defer a.wg.Done()
	for it := range a.queue {
		if it.done != nil {
			close(it.done)
			continue
		}
		e := it.entry
		if err := a.store.AppendAudit(context.Background(), e); err != nil {
			a.log.Error("audit log write failed", "action", e.Action, "actor", e.Actor, "err", err)
		}
	}
}

// Flush waits until every denial queued before it is written, so that a
// query of the log sees them.
func (a *AuditLog) Flush(ctx context.Context) error {
	done := make(chan struct{})
	select {
	case a.queue <- auditItem{done: done}:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close writes what is queued and stops the writer.
func (a *AuditLog) Close() {
	close(a.queue)
	a.wg.Wait()
}

// Denied records a policy denial; it is the policy engine's onDeny hook.
func (a *AuditLog) Denied(_ context.Context, s policy.Subject, d *policy.Denial) {
	detail, _ := json.Marshal(map[string]string{"what": s.What, "message_en": d.EN})
	e := storage.AuditEntry{TS: a.now().UnixMilli(), Actor: s.UserID, DeviceID: s.DeviceID, Action: "policy.denied",
		Rule: d.RuleID, Target: s.Target, Detail: string(detail)}
	a.log.Info("policy denied", "rule", d.RuleID, "user", s.UserID, "device", s.DeviceID, "what", s.What, "target", s.Target)
	select {
	case a.queue <- auditItem{entry: e}:
	default:
		a.log.Error("audit queue full: denial not recorded", "rule", d.RuleID, "user", s.UserID)
	}
}

// Record writes an admin action before it is acknowledged.
func (a *AuditLog) Record(ctx context.Context, actor, deviceID, action, target string, detail map[string]any) error {
	b, _ := json.Marshal(detail)
	if detail == nil {
		b = []byte("{}")
	}
	return a.store.AppendAudit(ctx, storage.AuditEntry{TS: a.now().UnixMilli(), Actor: actor, DeviceID: deviceID,
		Action: action, Target: target, Detail: string(b)})
}

// auditJSON is an audit entry as the admin API shows it.
type auditJSON struct {
	ID       int64           `json:"id"`
	TS       int64           `json:"ts"`
	Time     string          `json:"time"`
	Actor    string          `json:"actor"`
	DeviceID string          `json:"device_id,omitempty"`
	Action   string          `json:"action"`
	Rule     string          `json:"rule,omitempty"`
	Target   string          `json:"target,omitempty"`
	Detail   json.RawMessage `json:"detail"`
}

func toAuditJSON(e storage.AuditEntry) auditJSON {
	detail := json.RawMessage(e.Detail)
	if !json.Valid(detail) {
		detail = json.RawMessage("{}")
	}
	return auditJSON{ID: e.ID, TS: e.TS, Time: time.UnixMilli(e.TS).UTC().Format(time.RFC3339), Actor: e.Actor,
		DeviceID: e.DeviceID, Action: e.Action, Rule: e.Rule, Target: e.Target, Detail: detail}
}

// writeAuditCSV writes entries as CSV with a header line (UTF-8 with a
// byte-order mark, so that Excel opens Japanese text correctly).
func writeAuditCSV(w io.Writer, entries []storage.AuditEntry) error {
	if _, err := io.WriteString(w, "\uFEFF"); err != nil {
		return err
	}
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"id", "time", "actor", "device_id", "action", "rule", "target", "detail"})
	for _, e := range entries {
		_ = cw.Write([]string{strconv.FormatInt(e.ID, 10), time.UnixMilli(e.TS).UTC().Format(time.RFC3339),
			csvSafe(e.Actor), csvSafe(e.DeviceID), e.Action, e.Rule, csvSafe(e.Target), csvSafe(e.Detail)})
	}
	cw.Flush()
	return cw.Error()
}

// csvSafe keeps a spreadsheet from reading a user-chosen value (a device
// name, a room) as a formula.
func csvSafe(v string) string {
	if v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])) {
		return "'" + v
	}
	return v
}
