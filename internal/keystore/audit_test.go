package keystore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func changed(r AuditRecord) map[string][2]string {
	m := map[string][2]string{}
	for _, c := range r.Changes {
		m[c.Field] = [2]string{string(c.Before), string(c.After)}
	}
	return m
}

// Every kind of change is one record naming who, from where, and each
// field before and after; never a key or a hash; one log line each.
func TestAuditRecordsEachChange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	core, logs := observer.New(zap.InfoLevel)
	s := mustOpen(t, path, Options{Logger: zap.New(core)})
	admin := WithActor(ctxT(t), Actor{By: "adm1", Name: "ops", From: "192.0.2.7"})
	cli := WithActor(ctxT(t), Actor{By: "cli:alice", From: "beamline-host"})
	var is issued

	k, e, err := s.Add(admin, NewEntry{Stream: "BL3", Name: "ci", Permissions: []string{PermSend}})
	if err != nil {
		t.Fatal(err)
	}
	is.add(k)
	at := time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC)
	if _, err := s.SetExpiry(cli, e.ID, &at); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetPermissions(admin, e.ID, []string{PermSend, PermEdit}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetTopicPrefix(admin, e.ID, "BL3/"); err != nil {
		t.Fatal(err)
	}
	k2, _, err := s.Rotate(cli, e.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	is.add(k2)
	if _, err := s.Revoke(admin, e.ID); err != nil {
		t.Fatal(err)
	}
	// Revoking again changes nothing, and records nothing.
	if _, err := s.Revoke(admin, e.ID); err != nil {
		t.Fatal(err)
	}
	legacyKey := "legacy-plain-key-for-the-audit"
	is.add(legacyKey)
	if n, _, err := s.ImportLegacy(cli, strings.NewReader(`{"`+legacyKey+`": {"stream": "old", "proposal_no": 7}}`), "cli:alice"); err != nil || n != 1 {
		t.Fatalf("import: %d %v", n, err)
	}

	recs, more := s.Audit(AuditQuery{})
	if more || len(recs) != 7 {
		t.Fatalf("%d records (more %v), want 7: %+v", len(recs), more, recs)
	}
	want := []struct{ action, by, from string }{
		{ActionImport, "cli:alice", "beamline-host"},
		{ActionRevoke, "adm1", "192.0.2.7"},
		{ActionRotate, "cli:alice", "beamline-host"},
		{ActionTopicScope, "adm1", "192.0.2.7"},
		{ActionPermissions, "adm1", "192.0.2.7"},
		{ActionExpiry, "cli:alice", "beamline-host"},
		{ActionCreate, "adm1", "192.0.2.7"},
	}
	for i, w := range want {
		r := recs[i]
		if r.Action != w.action || r.By != w.by || r.From != w.from || r.Seq != int64(7-i) {
			t.Errorf("record %d: %s by %s from %s seq %d, want %s by %s from %s", i, r.Action, r.By, r.From, r.Seq, w.action, w.by, w.from)
		}
		if r.At.IsZero() || time.Since(r.At) > time.Minute {
			t.Errorf("record %d: time %v", i, r.At)
		}
	}
	if recs[6].ByName != "ops" || recs[6].KeyID != e.ID || recs[6].KeyName != "ci" || recs[6].Stream != "BL3" {
		t.Errorf("create: %+v", recs[6])
	}
	checks := []struct {
		rec           int
		field, b, a   string
		onlyThisField bool
	}{
		{6, "stream", "null", `"BL3"`, false},
		{6, "permissions", "null", `["send"]`, false},
		{5, "expires_at", "null", `"2027-03-01T00:00:00Z"`, true},
		{4, "permissions", `["send"]`, `["send","edit"]`, true},
		{3, "topic_prefix", "null", `"BL3/"`, true},
		{0, "stream", "null", `"old"`, false},
		{0, "legacy", "null", "true", false},
	}
	for _, c := range checks {
		got := changed(recs[c.rec])
		if g := got[c.field]; g != [2]string{c.b, c.a} {
			t.Errorf("%s record: %s %s → %s, want %s → %s", recs[c.rec].Action, c.field, g[0], g[1], c.b, c.a)
		}
		if c.onlyThisField && len(got) != 1 {
			t.Errorf("%s record changes %v, want only %s", recs[c.rec].Action, got, c.field)
		}
	}
	rot := changed(recs[2])
	if rot["rotated_at"][0] != "null" || rot["old_secret_until"][1] == "null" {
		t.Errorf("rotate record: %v", rot)
	}
	if rev := changed(recs[1]); rev["revoked_at"][0] != "null" || rev["revoked_at"][1] == "null" || len(rev) != 1 {
		t.Errorf("revoke record: %v", rev)
	}
	// A default key shows all it may do, not "null".
	if _, all, err := s.Add(admin, NewEntry{Stream: "x"}); err != nil {
		t.Fatal(err)
	} else if recs, _ := s.Audit(AuditQuery{KeyID: all.ID}); len(recs) != 1 || changed(recs[0])["permissions"][1] != `["send","upload","edit","read","topics"]` {
		t.Errorf("default key's create record: %+v", recs)
	}

	raw, _ := os.ReadFile(path)
	audit := raw[bytes.Index(raw, []byte(`"audit"`)):]
	for _, k := range is.keys {
		if bytes.Contains(audit, []byte(k)) || bytes.Contains(audit, []byte(HashKey(k))) {
			t.Error("the audit trail holds a key or its hash")
		}
	}
	if lines := logs.FilterMessage("key changed").All(); len(lines) != 8 {
		t.Errorf("%d log lines for 8 changes", len(lines))
	} else if f := lines[5].ContextMap(); f["action"] != ActionRevoke || f["key_id"] != e.ID || f["by"] != "adm1" || f["from"] != "192.0.2.7" {
		t.Errorf("the revoke's log line: %v", f)
	}

	// What another process reads is the same trail.
	again, _ := mustOpen(t, path, Options{}).Audit(AuditQuery{})
	if len(again) != 8 || again[2].Action != ActionRevoke {
		t.Errorf("reopened: %d records", len(again))
	}
}

// A change without an actor still records, as unknown; last-used
// times are not changes to a key.
func TestAuditIgnoresUsage(t *testing.T) {
	s := mustOpen(t, filepath.Join(t.TempDir(), "clients.json"), Options{})
	k, _, err := s.Add(context.Background(), NewEntry{Stream: "a"})
	if err != nil {
		t.Fatal(err)
	}
	e, _ := s.Lookup(k)
	s.Touch(e)
	if err := s.flushUsage(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get(e.ID); got.LastUsedAt == nil {
		t.Fatal("the use was not written")
	}
	recs, _ := s.Audit(AuditQuery{})
	if len(recs) != 1 || recs[0].By != "unknown" || recs[0].Action != ActionCreate {
		t.Fatalf("%+v", recs)
	}
}

// Filters, newest first, and pages that neither repeat nor skip.
func TestAuditQuery(t *testing.T) {
	s := mustOpen(t, filepath.Join(t.TempDir(), "clients.json"), Options{})
	ctx := WithActor(ctxT(t), Actor{By: "cli:t"})
	var ids []string
	for range 5 {
		_, e, err := s.Add(ctx, NewEntry{Stream: "a"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.ID)
	}
	mid := time.Now().UTC()
	for _, id := range ids {
		if _, err := s.Revoke(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if recs, _ := s.Audit(AuditQuery{KeyID: ids[2]}); len(recs) != 2 || recs[0].Action != ActionRevoke || recs[1].Action != ActionCreate {
		t.Errorf("one key's history: %+v", recs)
	}
	if recs, _ := s.Audit(AuditQuery{Since: mid}); len(recs) != 5 {
		t.Errorf("since: %d records, want the 5 revocations", len(recs))
	}
	if recs, _ := s.Audit(AuditQuery{Until: mid}); len(recs) != 5 || recs[0].Action != ActionCreate {
		t.Errorf("until: %d records, want the 5 creations", len(recs))
	}
	var seqs []int64
	var before int64
	for pages := 0; ; pages++ {
		recs, more := s.Audit(AuditQuery{Limit: 3, Before: before})
		for _, r := range recs {
			seqs = append(seqs, r.Seq)
		}
		if !more {
			break
		}
		before = recs[len(recs)-1].Seq
		if pages > 5 {
			t.Fatal("paging does not end")
		}
	}
	if len(seqs) != 10 || seqs[0] != 10 || seqs[9] != 1 {
		t.Errorf("pages gave %v", seqs)
	}
}

// Records past the retention are hidden at once and dropped with the
// next change; the numbering goes on.
func TestAuditRetention(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	s := mustOpen(t, path, Options{})
	ctx := WithActor(ctxT(t), Actor{By: "cli:t"})
	for range 3 {
		if _, _, err := s.Add(ctx, NewEntry{Stream: "a"}); err != nil {
			t.Fatal(err)
		}
	}
	// Age the records as a year would.
	doc, err := parseDocument(mustRead(t, path))
	if err != nil {
		t.Fatal(err)
	}
	for i := range doc.Audit {
		doc.Audit[i].At = doc.Audit[i].At.Add(-400 * 24 * time.Hour)
	}
	writeDoc(t, path, doc)
	s2 := mustOpen(t, path, Options{})
	if recs, _ := s2.Audit(AuditQuery{}); len(recs) != 3 {
		t.Fatalf("without a retention (the CLI's) all are shown: %d", len(recs))
	}
	s2.SetAuditRetention(DefaultAuditRetention)
	if recs, _ := s2.Audit(AuditQuery{}); len(recs) != 0 {
		t.Fatalf("past the retention: %d shown", len(recs))
	}
	if _, _, err := s2.Add(ctx, NewEntry{Stream: "b"}); err != nil {
		t.Fatal(err)
	}
	doc, _ = parseDocument(mustRead(t, path))
	if len(doc.Audit) != 1 || doc.Audit[0].Seq != 4 {
		t.Fatalf("after a change the document keeps %+v, want only the new record, seq 4", doc.Audit)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func writeDoc(t *testing.T, path string, doc document) {
	t.Helper()
	raw, err := doc.marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A change that never finished writing leaves no record; every one
// acknowledged is there after the crash.
func TestAuditCrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	s := mustOpen(t, path, Options{})
	ctx := WithActor(ctxT(t), Actor{By: "cli:t"})
	_, e, err := s.Add(ctx, NewEntry{Stream: "a"})
	if err != nil {
		t.Fatal(err)
	}
	s.b.(*fileBackend).afterTempWrite = func(string) error { return errors.New("simulated crash") }
	if _, err := s.Revoke(ctx, e.ID); err == nil {
		t.Fatal("the interrupted write reported success")
	}
	s.b.(*fileBackend).afterTempWrite = nil
	s2 := mustOpen(t, path, Options{})
	if recs, _ := s2.Audit(AuditQuery{}); len(recs) != 1 || recs[0].Action != ActionCreate {
		t.Fatalf("after the crash: %+v", recs)
	}
	if got, _ := s2.Get(e.ID); got.RevokedAt != nil {
		t.Fatal("the key is revoked without a record of it")
	}
	if _, err := s2.Revoke(ctx, e.ID); err != nil {
		t.Fatal(err)
	}
	if recs, _ := mustOpen(t, path, Options{}).Audit(AuditQuery{}); len(recs) != 2 || recs[0].Action != ActionRevoke || recs[0].Seq != 2 {
		t.Fatalf("after the retry: %+v", recs)
	}
}

// A store document from before the trail is version 1, loads, and stays
// version 1 until a record is written; an older build refuses a
// version 2 document by its version.
func TestAuditDocumentVersions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	old := `{"version": 1, "clients": [{"id": "k1", "key_hash": "` + HashKey("old-key") + `", "stream": "a", "created_at": "2025-01-01T00:00:00Z"}]}`
	if err := os.WriteFile(path, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	s := mustOpen(t, path, Options{})
	if _, ok := s.Lookup("old-key"); !ok {
		t.Fatal("the old document's key does not work")
	}
	e, _ := s.Lookup("old-key")
	s.Touch(e)
	if err := s.flushUsage(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	var v struct {
		Version int             `json:"version"`
		Audit   json.RawMessage `json:"audit"`
	}
	_ = json.Unmarshal(mustRead(t, path), &v)
	if v.Version != 1 || v.Audit != nil {
		t.Fatalf("a write of last-used times made version %d with audit %s", v.Version, v.Audit)
	}
	if _, err := s.Revoke(ctxT(t), "k1"); err != nil {
		t.Fatal(err)
	}
	_ = json.Unmarshal(mustRead(t, path), &v)
	if v.Version != 2 || v.Audit == nil {
		t.Fatalf("with a record: version %d, audit %s", v.Version, v.Audit)
	}
	if _, err := parseDocument([]byte(`{"version": 3, "clients": []}`)); err == nil || !strings.Contains(err.Error(), "upgrade the proxy") {
		t.Errorf("version 3: %v", err)
	}
}

// A server logs each change once, whoever made it: its own, and those it
// finds when it reloads the store (the CLI's, another instance's); not
// the history it finds when it opens the store.
func TestAuditLoggedOnceByEachServer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	cli := mustOpen(t, path, Options{})
	ctx := WithActor(ctxT(t), Actor{By: "cli:alice", From: "host"})
	_, e, err := cli.Add(ctx, NewEntry{Stream: "a"})
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	srv := mustOpen(t, path, Options{Logger: zap.New(core), PollInterval: 10 * time.Millisecond})
	srv.Start()
	if _, err := cli.Revoke(ctx, e.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the server sees the revocation", func() bool {
		got, _ := srv.Get(e.ID)
		return got.RevokedAt != nil
	})
	if _, _, err := srv.Add(WithActor(ctxT(t), Actor{By: "adm"}), NewEntry{Stream: "b"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // a second look at the store
	lines := logs.FilterMessage("key changed").All()
	if len(lines) != 2 || lines[0].ContextMap()["action"] != ActionRevoke || lines[0].ContextMap()["by"] != "cli:alice" ||
		lines[1].ContextMap()["action"] != ActionCreate || lines[1].ContextMap()["by"] != "adm" {
		t.Fatalf("the server logged %d lines: %v", len(lines), lines)
	}
}
