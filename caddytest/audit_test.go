package caddytest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zwop/caddy-zulip-proxy/internal/clitest"
	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
)

// auditPage is GET /audit's answer.
type auditPage struct {
	Result     string                 `json:"result"`
	Records    []keystore.AuditRecord `json:"records"`
	NextBefore int64                  `json:"next_before"`
}

func getAudit(t *testing.T, admin, query string) auditPage {
	t.Helper()
	r := request(t, "GET", "/audit?"+query, nil, withKey(admin))
	if r.Status != 200 {
		t.Fatalf("GET /audit?%s: %d %s", query, r.Status, r.Body)
	}
	var p auditPage
	if err := json.Unmarshal([]byte(r.Body), &p); err != nil {
		t.Fatal(err)
	}
	return p
}

func changeOf(r keystore.AuditRecord, field string) (before, after string) {
	for _, c := range r.Changes {
		if c.Field == field {
			return string(c.Before), string(c.After)
		}
	}
	return "", ""
}

func osUser(t *testing.T) string {
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	return u.Username
}

// Every kind of change to a key, by the HTTP API and by the CLI, is in
// the trail with who made it, from where, and what changed; GET /audit
// filters and pages it; the CLI prints it; no key or hash is in it.
func TestAuditTrail(t *testing.T) {
	store := newStore(t)
	admin, adminID := mustKey(t, "add-admin", "--store", store, "--name", "ops desk")
	start(t, config{store: store})
	form := "Content-Type: application/x-www-form-urlencoded"

	// By HTTP: create a send-only key, change its expiry, permissions
	// and topics, rotate it, revoke it.
	r := request(t, "POST", "/create_client", strings.NewReader("stream=general&name=ci&permissions=send"), withKey(admin), form)
	if r.Status != 200 {
		t.Fatalf("create_client: %d %s", r.Status, r.Body)
	}
	created := r.JSON(t)
	id, key := fmt.Sprint(created["id"]), fmt.Sprint(created["key"])
	addSecret(key)
	for _, body := range []string{"expires_in=30d", "permissions=send,edit", "topic_prefix=CI/"} {
		if r := request(t, "PATCH", "/clients/"+id, strings.NewReader(body), withKey(admin), form); r.Status != 200 {
			t.Fatalf("PATCH %s: %d %s", body, r.Status, r.Body)
		}
	}
	r = request(t, "POST", "/api/clients/"+id+"/rotate", strings.NewReader("grace=1h"), withKey(admin), form)
	if r.Status != 200 {
		t.Fatalf("rotate: %d %s", r.Status, r.Body)
	}
	addSecret(fmt.Sprint(r.JSON(t)["key"]))
	// A client's own X-Forwarded-For is not where it is from: Caddy
	// trusts no proxy here.
	if r := request(t, "DELETE", "/clients/"+id, nil, withKey(admin), "X-Forwarded-For: 203.0.113.66"); r.Status != 200 {
		t.Fatalf("revoke: %d %s", r.Status, r.Body)
	}

	// By the CLI, on another key.
	_, cliID := scopedKey(t, store, "general")
	for _, args := range [][]string{
		{"expire", cliID, "--in", "7d"},
		{"allow", cliID, "send,upload"},
		{"topics", cliID, "BL3/"},
		{"rotate", cliID, "--grace", "0"},
		{"revoke", cliID},
	} {
		out, errOut, err := clitest.Run(append(args, "--store", store)...)
		if err != nil {
			t.Fatalf("%v: %v\n%s%s", args, err, out, errOut)
		}
		if args[0] == "rotate" {
			k, _, _ := clitest.PrintedKey(out)
			addSecret(k)
		}
	}
	legacy := filepath.Join(t.TempDir(), "clients.json")
	plain := "audit-legacy-plain-key-0001"
	addSecret(plain)
	os.WriteFile(legacy, []byte(`{"`+plain+`": {"stream": "general", "proposal_no": 42}}`), 0o600)
	if _, errOut, err := clitest.Run("import-legacy", "--store", store, legacy); err != nil {
		t.Fatalf("import-legacy: %v %s", err, errOut)
	}

	// The server sees the CLI's changes as it sees its own (it reloads
	// the store within a second or so).
	var all auditPage
	eventually(t, 10*time.Second, "the CLI's records reach the server", func() bool {
		all = getAudit(t, admin, "")
		return len(all.Records) == 14
	})
	host, _ := os.Hostname()
	want := []struct{ action, key, by, from string }{
		{"import", "", "cli:" + osUser(t), host},
		{"revoke", cliID, "cli:" + osUser(t), host},
		{"rotate", cliID, "cli:" + osUser(t), host},
		{"topic_scope", cliID, "cli:" + osUser(t), host},
		{"permissions", cliID, "cli:" + osUser(t), host},
		{"expiry", cliID, "cli:" + osUser(t), host},
		{"create", cliID, "cli:" + osUser(t), host},
		{"revoke", id, adminID, "127.0.0.1"},
		{"rotate", id, adminID, "127.0.0.1"},
		{"topic_scope", id, adminID, "127.0.0.1"},
		{"permissions", id, adminID, "127.0.0.1"},
		{"expiry", id, adminID, "127.0.0.1"},
		{"create", id, adminID, "127.0.0.1"},
		{"create", adminID, "cli:" + osUser(t), host},
	}
	recs := all.Records
	for i, w := range want {
		got := recs[i]
		if got.Action != w.action || (w.key != "" && got.KeyID != w.key) || got.By != w.by || got.From != w.from {
			t.Errorf("record %d: %s of %s by %s from %s, want %s of %s by %s from %s", i, got.Action, got.KeyID, got.By, got.From, w.action, w.key, w.by, w.from)
		}
	}
	if recs[7].ByName != "ops desk" {
		t.Errorf("the admin's name: %q", recs[7].ByName)
	}
	if b, a := changeOf(recs[10], "permissions"); b != `["send"]` || a != `["send","edit"]` {
		t.Errorf("permissions record: %s → %s", b, a)
	}
	if b, a := changeOf(recs[9], "topic_prefix"); b != "null" || a != `"CI/"` {
		t.Errorf("topic record: %s → %s", b, a)
	}
	if b, a := changeOf(recs[7], "revoked_at"); b != "null" || a == "null" {
		t.Errorf("revoke record: %s → %s", b, a)
	}
	for _, s := range secrets() {
		raw, _ := json.Marshal(all)
		if strings.Contains(string(raw), s) || strings.Contains(string(raw), keystore.HashKey(s)) {
			t.Fatal("the audit trail holds a key or its hash")
		}
	}

	// Filters and pages.
	if p := getAudit(t, admin, "key_id="+id); len(p.Records) != 6 || p.Records[0].Action != "revoke" || p.Records[5].Action != "create" {
		t.Errorf("one key's history: %d records", len(p.Records))
	}
	if p := getAudit(t, admin, "key_id="+id+"&since=1h&until="+url.QueryEscape(recs[9].At.Format(time.RFC3339Nano))); len(p.Records) != 4 || p.Records[0].Action != "topic_scope" {
		t.Errorf("a time range: %d records, first %v", len(p.Records), p.Records)
	}
	var seqs []int64
	for q := "limit=4"; ; {
		p := getAudit(t, admin, q)
		for _, r := range p.Records {
			seqs = append(seqs, r.Seq)
		}
		if p.NextBefore == 0 {
			break
		}
		q = fmt.Sprintf("limit=4&before=%d", p.NextBefore)
	}
	if len(seqs) != 14 || seqs[0] != 14 || seqs[13] != 1 {
		t.Errorf("paged: %v", seqs)
	}
	assertError(t, request(t, "GET", "/audit?since=yesterday", nil, withKey(admin)), 400, "since")
	assertError(t, request(t, "GET", "/audit?key_id=nosuchkey", nil, withKey(admin)), 404, "nosuchkey")
	assertError(t, request(t, "GET", "/audit?limit=0", nil, withKey(admin)), 400, "limit")
	scoped, _ := scopedKey(t, store, "general")
	eventually(t, 10*time.Second, "the server knows the new key", func() bool {
		return request(t, "GET", "/me", nil, withKey(scoped)).Status == 200
	})
	assertError(t, request(t, "GET", "/audit", nil, withKey(scoped)), 403, "admin key")
	assertError(t, request(t, "GET", "/audit", nil), 401, "")

	// The CLI prints the same trail.
	if fromCLI := cliAudit(t, store, "--key", id); len(fromCLI) != 6 || fromCLI[0].Action != "revoke" || fromCLI[0].From != "127.0.0.1" {
		t.Errorf("audit --key %s --json: %+v", id, fromCLI)
	}
	out, _, err := clitest.Run("audit", "--store", store, "--since", "1h")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 16 || !strings.HasPrefix(lines[0], "WHEN") || !strings.Contains(out, "revoke") ||
		!strings.Contains(out, adminID+" (ops desk)") || !strings.Contains(out, `permissions: ["send"] → ["send","edit"]`) {
		t.Errorf("audit table (%d lines, want a header and 15 records):\n%s", len(lines), out)
	}
	if _, errOut, err := clitest.Run("audit", "--store", store, "--key", "nosuch"); err == nil || !strings.Contains(err.Error()+errOut, "nosuch") {
		t.Errorf("audit of an unknown key: %v", err)
	}
	if _, _, err := clitest.Run("audit", "--store", store, "--since", "last week"); err == nil || !strings.Contains(err.Error(), "--since") {
		t.Errorf("a bad --since: %v", err)
	}

	// One log line per change in the server's log: those made through
	// it, and those the CLI made, which it saw when it reloaded the store.
	if n, _ := logLines(t, "key changed", "key_id", id); n != 6 {
		t.Errorf("%d log lines for the 6 changes of key %s", n, id)
	}
	n, last := logLines(t, "key changed", "key_id", cliID)
	if n != 6 || last["action"] != "revoke" || last["by"] != "cli:"+osUser(t) || last["from"] != host {
		t.Errorf("%d log lines for the CLI's 6 changes of key %s; the last: %v", n, cliID, last)
	}
}

// createAt makes a key through the proxy at base with an admin key; it
// returns the answer's status and body (the key a secret from here on),
// or the error of a request that got no answer.
func createAt(base, admin, name string) (int, map[string]any, error) {
	req, _ := http.NewRequest("POST", base+"/create_client", strings.NewReader("stream=general&name="+url.QueryEscape(name)))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-API-key", admin)
	resp, err := fresh.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	if resp.StatusCode == 200 {
		addSecret(fmt.Sprint(m["key"]))
	}
	return resp.StatusCode, m, nil
}

// cliAudit is the trail as the CLI prints it in JSON, with more of its
// flags (--key ID) if given.
func cliAudit(t *testing.T, store string, more ...string) []keystore.AuditRecord {
	t.Helper()
	out, _, err := clitest.Run(append([]string{"audit", "--store", store, "--json"}, more...)...)
	if err != nil {
		t.Fatal(err)
	}
	var recs []keystore.AuditRecord
	if err := json.Unmarshal([]byte(out), &recs); err != nil {
		t.Fatal(err)
	}
	return recs
}

// Two instances sharing a store, and the CLI beside them, change keys
// at once: every change is in the trail once, numbered without a gap.
func TestAuditTwoInstancesAtOnce(t *testing.T) {
	store := newStore(t)
	admin, _ := adminKey(t, store)
	var bases []string
	for range 2 {
		port := freePort(t)
		bases = append(bases, startChild(t, childConfig(t, port, "store "+store, ""), port).base)
	}
	const each = 10
	var wg sync.WaitGroup
	for _, b := range bases {
		for i := range each {
			wg.Go(func() {
				status, m, err := createAt(b, admin, fmt.Sprintf("%s-%d", b, i))
				if err != nil || status != 200 {
					t.Errorf("create_client at %s: %d %v %v", b, status, m, err)
				}
			})
		}
	}
	for range each {
		wg.Go(func() {
			if k, _, _, err := clitest.MakeKey("add-client", "--store", store, "--stream", "general"); err != nil {
				t.Error(err)
			} else {
				addSecret(k)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	recs := cliAudit(t, store)
	const total = 1 + 3*each // the admin key, then each instance's and the CLI's
	keys := map[string]bool{}
	for i, r := range recs {
		if r.Seq != int64(total-i) || r.Action != "create" {
			t.Fatalf("record %d: seq %d %s", i, r.Seq, r.Action)
		}
		keys[r.KeyID] = true
	}
	if len(recs) != total || len(keys) != total {
		t.Fatalf("%d records of %d keys, want %d", len(recs), len(keys), total)
	}
}

// A Caddy killed while admins change keys loses none of the changes it
// acknowledged from its trail.
func TestAuditSurvivesKill9(t *testing.T) {
	store := newStore(t)
	admin, _ := adminKey(t, store)
	port := freePort(t)
	cfg := childConfig(t, port, "store "+store, "")
	c := startChild(t, cfg, port)

	var mu sync.Mutex
	var acked []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				status, m, err := createAt(c.base, admin, fmt.Sprintf("w%d-%d", w, i))
				if err != nil {
					return // the kill
				}
				if status == 200 {
					mu.Lock()
					acked = append(acked, fmt.Sprint(m["id"]))
					mu.Unlock()
				}
			}
		})
	}
	eventually(t, 30*time.Second, "changes under way", func() bool { mu.Lock(); defer mu.Unlock(); return len(acked) >= 20 })
	c.kill()
	close(stop)
	wg.Wait()

	startChild(t, cfg, port)
	recs := cliAudit(t, store)
	have := map[string]bool{}
	for _, r := range recs {
		have[r.KeyID] = true
	}
	for _, id := range acked {
		if !have[id] {
			t.Fatalf("key %s was acknowledged but its creation is not in the trail after the kill", id)
		}
	}
	t.Logf("%d changes acknowledged before the kill, all in the trail of %d records", len(acked), len(recs))
}

// Behind a load balancer Caddy trusts (trusted_proxies), a change is
// recorded as from the client the balancer names, not the balancer.
func TestAuditBehindATrustedProxy(t *testing.T) {
	store := newStore(t)
	admin, _ := adminKey(t, store)
	_, id := scopedKey(t, store, "general")
	start(t, config{store: store, global: "servers {\n\t\ttrusted_proxies static 127.0.0.1/32 ::1/128\n\t}"})
	if r := request(t, "DELETE", "/clients/"+id, nil, withKey(admin), "X-Forwarded-For: 198.51.100.9"); r.Status != 200 {
		t.Fatalf("revoke: %d %s", r.Status, r.Body)
	}
	if p := getAudit(t, admin, "key_id="+id); len(p.Records) != 2 || p.Records[0].Action != "revoke" || p.Records[0].From != "198.51.100.9" {
		t.Fatalf("the revocation behind a trusted proxy: %+v", p.Records)
	}
}
