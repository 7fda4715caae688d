package keystore

import (
	"context"
	"encoding/json"
	"slices"
	"sort"
	"time"

	"go.uber.org/zap"
)

// The audit trail is kept in the store document itself, written in the
// same locked read-modify-write as the change it records: a change and
// its record land together or not at all (a crash cannot keep one
// without the other), every instance and the CLI append under the lock
// that already keeps them from losing each other's entries, and the
// trail lives wherever the keys do without a second place to back up.

// Actor is who makes a change, for the audit trail.
type Actor struct {
	// By is the admin key's id, or "cli:<os user>".
	By string
	// Name is the admin key's name, if it has one.
	Name string
	// From is where the change came from: the client's address, or the
	// CLI's host.
	From string
}

type actorKey struct{}

// WithActor makes the store's changes made with ctx record a as who
// made them.
func WithActor(ctx context.Context, a Actor) context.Context {
	return context.WithValue(ctx, actorKey{}, a)
}

func actorOf(ctx context.Context) Actor {
	a, _ := ctx.Value(actorKey{}).(Actor)
	if a.By == "" {
		a.By = "unknown"
	}
	return a
}

// AuditRecord is one change to one key. It never holds a key or a key
// hash.
type AuditRecord struct {
	// Seq numbers the trail's records in the order they were written;
	// it never goes back, so it pages the trail.
	Seq int64     `json:"seq"`
	At  time.Time `json:"at"`
	// Action is create, import, rotate, revoke, expiry, permissions,
	// topic_scope, or update (several fields at once).
	Action  string `json:"action"`
	KeyID   string `json:"key_id"`
	KeyName string `json:"key_name,omitempty"`
	Stream  string `json:"stream,omitempty"`
	By      string `json:"by"`
	ByName  string `json:"by_name,omitempty"`
	From    string `json:"from,omitempty"`
	// Changes are the fields that changed, before and after.
	Changes []AuditChange `json:"changes"`
}

// AuditChange is one field a change changed; Before is null for a key
// just made.
type AuditChange struct {
	Field  string          `json:"field"`
	Before json.RawMessage `json:"before"`
	After  json.RawMessage `json:"after"`
}

// Audit actions.
const (
	ActionCreate      = "create"
	ActionImport      = "import"
	ActionRotate      = "rotate"
	ActionRevoke      = "revoke"
	ActionExpiry      = "expiry"
	ActionPermissions = "permissions"
	ActionTopicScope  = "topic_scope"
	ActionUpdate      = "update"
)

// DefaultAuditRetention keeps the trail for a year.
const DefaultAuditRetention = 365 * 24 * time.Hour

// SetAuditRetention sets how long records are kept: older ones are no
// longer shown and are dropped at the next change. 0 keeps them all
// (the CLI, which does not know the server's setting).
func (s *Store) SetAuditRetention(d time.Duration) { s.retention.Store(int64(d)) }

// auditField is a field of an entry as the trail shows it.
type auditField struct {
	name  string
	value func(e *Entry) any
}

// auditFields are what the trail compares; never the key hash (a
// rotation shows as the time its old secret stops working).
var auditFields = []auditField{
	{"name", func(e *Entry) any { return e.Name }},
	{"stream", func(e *Entry) any { return e.Stream }},
	{"proposal_no", func(e *Entry) any { return e.ProposalNo }},
	{"bot", func(e *Entry) any { return e.Bot }},
	{"admin", func(e *Entry) any { return e.Admin }},
	{"legacy", func(e *Entry) any { return e.Legacy }},
	{"expires_at", func(e *Entry) any { return e.ExpiresAt }},
	{"revoked_at", func(e *Entry) any { return e.RevokedAt }},
	{"rotated_at", func(e *Entry) any { return e.RotatedAt }},
	{"old_secret_until", func(e *Entry) any {
		if len(e.Retired) == 0 {
			return nil
		}
		return e.Retired[len(e.Retired)-1].Until
	}},
	{"rate_limit", func(e *Entry) any { return e.RateLimit }},
	{"delivery", func(e *Entry) any { return e.Delivery }},
	{"permissions", func(e *Entry) any { return e.Granted() }},
	{"topic_prefix", func(e *Entry) any { return e.TopicPrefix }},
}

// sameAudited is a cheap test that nothing the trail shows differs, so
// that a change to one key of 100,000 encodes only that one.
func sameAudited(a, b *Entry) bool {
	return a.Name == b.Name && a.Stream == b.Stream && a.ProposalNo == b.ProposalNo && a.Bot == b.Bot &&
		a.Admin == b.Admin && a.Legacy == b.Legacy && a.KeyHash == b.KeyHash &&
		sameTime(a.ExpiresAt, b.ExpiresAt) && sameTime(a.RevokedAt, b.RevokedAt) && sameTime(a.RotatedAt, b.RotatedAt) &&
		a.RateLimit == b.RateLimit && a.Delivery == b.Delivery && slices.Equal(a.Permissions, b.Permissions) &&
		(a.Permissions == nil) == (b.Permissions == nil) && a.TopicPrefix == b.TopicPrefix &&
		slices.Equal(a.Retired, b.Retired)
}

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

// isZero says how an empty field shows: null, not "" or false, so the
// trail of a new key lists only what it was given.
func isZero(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case string:
		return v == ""
	case int64:
		return v == 0
	case bool:
		return !v
	case *time.Time:
		return v == nil
	}
	return false
}

func rawOf(v any) json.RawMessage {
	if isZero(v) {
		return json.RawMessage("null")
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return json.RawMessage("null")
	}
	return raw
}

// diff is what changed from before (nil for a new key) to after.
func diff(before, after *Entry) []AuditChange {
	var out []AuditChange
	for _, f := range auditFields {
		var b json.RawMessage = json.RawMessage("null")
		if before != nil {
			b = rawOf(f.value(before))
		}
		a := rawOf(f.value(after))
		if string(a) != string(b) {
			out = append(out, AuditChange{Field: f.name, Before: b, After: a})
		}
	}
	return out
}

// actionOf names a change by what it did.
func actionOf(before, after *Entry, changes []AuditChange) string {
	switch {
	case before == nil && after.Legacy:
		return ActionImport
	case before == nil:
		return ActionCreate
	case before.RevokedAt == nil && after.RevokedAt != nil:
		return ActionRevoke
	case before.KeyHash != after.KeyHash:
		return ActionRotate
	case len(changes) == 1:
		switch changes[0].Field {
		case "expires_at":
			return ActionExpiry
		case "permissions":
			return ActionPermissions
		case "topic_prefix":
			return ActionTopicScope
		}
	}
	return ActionUpdate
}

// audit appends to doc the records of what changed from before (the
// entries as read, in the document's order: entries are only ever
// appended) and drops records past the retention.
func (s *Store) audit(ctx context.Context, doc *document, before []Entry, now time.Time) {
	who := actorOf(ctx)
	next := int64(1)
	if n := len(doc.Audit); n > 0 {
		next = doc.Audit[n-1].Seq + 1
	}
	var added []AuditRecord
	for i := range doc.Clients {
		after := &doc.Clients[i]
		var prev *Entry
		if i < len(before) {
			prev = &before[i]
			if sameAudited(prev, after) {
				continue
			}
		}
		changes := diff(prev, after)
		if len(changes) == 0 {
			continue
		}
		added = append(added, AuditRecord{
			Seq: next, At: now, Action: actionOf(prev, after, changes),
			KeyID: after.ID, KeyName: after.Name, Stream: after.Stream,
			By: who.By, ByName: who.Name, From: who.From, Changes: changes,
		})
		next++
	}
	if len(added) == 0 {
		return
	}
	// Only ever appended to, and only the oldest dropped: a record is
	// never changed once written.
	kept := doc.Audit
	if r := time.Duration(s.retention.Load()); r > 0 {
		cut := now.Add(-r)
		i := 0
		for i < len(kept) && kept[i].At.Before(cut) {
			i++
		}
		kept = kept[i:]
	}
	doc.Audit = append(slices.Clip(kept), added...)
}

// noteAudit logs the records of the trail newer than those seen, once
// the first document is loaded: one line per change, made here or
// elsewhere (the CLI, another instance), in each server's log. It runs
// under s.mu.
func (s *Store) noteAudit(recs []AuditRecord) {
	var newest int64
	if n := len(recs); n > 0 {
		newest = recs[n-1].Seq
	}
	if s.auditLoaded && newest > s.auditSeen {
		seen := s.auditSeen
		i := sort.Search(len(recs), func(i int) bool { return recs[i].Seq > seen })
		s.logAudit(recs[i:])
	}
	s.auditSeen, s.auditLoaded = newest, true
}

// logAudit writes one line per change.
func (s *Store) logAudit(records []AuditRecord) {
	for i := range records {
		r := &records[i]
		fields := make([]string, len(r.Changes))
		for j, c := range r.Changes {
			fields[j] = c.Field
		}
		s.opt.Logger.Info("key changed", zap.String("action", r.Action), zap.String("key_id", r.KeyID),
			zap.String("by", r.By), zap.String("by_name", r.ByName), zap.String("from", r.From),
			zap.Strings("fields", fields), zap.Int64("seq", r.Seq))
	}
}

// AuditQuery picks records from the trail.
type AuditQuery struct {
	// KeyID: only this key's records; "": all.
	KeyID string
	// Since and Until bound the records' times; zero: unbounded.
	Since, Until time.Time
	// Before: only records with a smaller Seq (the next page); 0: from
	// the newest.
	Before int64
	// Limit is the most records returned; 0: 100.
	Limit int
}

// Audit returns the records q picks, newest first, and whether there are
// more past them (the next page starts Before the last one's Seq).
// Records past the retention are not shown, even while they are still in
// the document.
func (s *Store) Audit(q AuditQuery) (records []AuditRecord, more bool) {
	if q.Limit <= 0 {
		q.Limit = 100
	}
	all := s.idx.Load().audit
	var cut time.Time
	if r := time.Duration(s.retention.Load()); r > 0 {
		cut = time.Now().Add(-r)
	}
	for i := len(all) - 1; i >= 0; i-- {
		r := &all[i]
		if (q.Before > 0 && r.Seq >= q.Before) || (q.KeyID != "" && r.KeyID != q.KeyID) ||
			(!q.Until.IsZero() && r.At.After(q.Until)) {
			continue
		}
		// Not a break: instances' clocks differ a little, so times need
		// not fall in the order of Seq.
		if (!q.Since.IsZero() && r.At.Before(q.Since)) || (!cut.IsZero() && r.At.Before(cut)) {
			continue
		}
		if len(records) == q.Limit {
			return records, true
		}
		records = append(records, cloneRecord(r))
	}
	return records, false
}

func cloneRecord(r *AuditRecord) AuditRecord {
	c := *r
	c.Changes = slices.Clone(r.Changes)
	return c
}
