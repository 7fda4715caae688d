package caddytest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

// readmeBlock returns the code block after a `<!-- readme-test: NAME -->`
// marker in README.md, so the examples users copy are the ones tested.
func readmeBlock(t *testing.T, name string) string {
	t.Helper()
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	// A block in a list item is indented; its lines lose the indent.
	re := regexp.MustCompile("(?s)<!-- readme-test: " + regexp.QuoteMeta(name) + " -->\n([ \t]*)```[a-z]*\n(.*?)```")
	m := re.FindSubmatch(raw)
	if m == nil {
		t.Fatalf("README.md has no block marked %q", name)
	}
	indent := string(m[1])
	lines := strings.Split(string(m[2]), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, indent)
	}
	return strings.Join(lines, "\n")
}

// The README's examples, run word for word against the demo's setup: a
// proxy in front of a fresh emulated Zulip (so the first message is 1, as
// in the quick start). Only the ports differ.
func TestReadmeExamples(t *testing.T) {
	emu := emulator.NewServer(t, emulator.WithRateLimit(0, 0))
	emuURL, _ := url.Parse(emu.URL)
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	admin, _ := adminKey(t, store)
	cfg := config{store: store}
	cfg.site = emu.URL
	start(t, cfg)
	work := t.TempDir()
	site := strings.TrimPrefix(base, "http://")
	ports := strings.NewReplacer("localhost:8080", site, "localhost:9991", emuURL.Host)
	environ := append(os.Environ(), "ZWOP_KEY="+key, "ZWOP_ADMIN_KEY="+admin)

	t.Run("curl", func(t *testing.T) {
		if _, err := exec.LookPath("curl"); err != nil {
			t.Fatal("curl is needed for the README's examples")
		}
		out := runScript(t, work, environ, "bash", "-euo", "pipefail", "-c", ports.Replace(readmeBlock(t, "curl")))
		if n := strings.Count(out, `"result":"success"`); n != 8 {
			t.Errorf("%d successful answers, want 8:\n%s", n, out)
		}
		if !strings.Contains(out, `unexpected form field 'to'`) {
			t.Errorf("the out-of-scope example did not fail as the README says:\n%s", out)
		}
		m, ok := emu.Message(1)
		if !ok || m.Topic != "renamed" || m.Content != "Corrected text" {
			t.Errorf("message 1 after the README's edits: %+v", m)
		}
	})
	t.Run("curl-zulip", func(t *testing.T) {
		before := len(emu.Messages())
		out := runScript(t, work, environ, "bash", "-euo", "pipefail", "-c", ports.Replace(readmeBlock(t, "curl-zulip")))
		if n := strings.Count(out, `"result":"success"`); n != 4 {
			t.Errorf("%d successful answers, want 4:\n%s", n, out)
		}
		if !strings.Contains(out, `"result":"error"`) || !strings.Contains(out, "may only use the stream 'general'") {
			t.Errorf("the refused example did not fail as the README says:\n%s", out)
		}
		msgs := emu.Messages()
		if len(msgs) != before+3 {
			t.Fatalf("%d messages reached Zulip, want 3", len(msgs)-before)
		}
		for _, m := range msgs[before:] {
			if s, _ := emu.StreamByName("general"); m.StreamID != s.ID {
				t.Errorf("a message outside the key's stream: %+v", m)
			}
		}
	})
	t.Run("idempotent", func(t *testing.T) {
		before := len(emu.Messages())
		out := runScript(t, work, environ, "bash", "-euo", "pipefail", "-c", ports.Replace(readmeBlock(t, "idempotent")))
		if n := strings.Count(out, " 200 "); n != 2 || strings.Count(strings.ToLower(out), "idempotent-replayed: true") != 1 {
			t.Errorf("the README's idempotent sends:\n%s", out)
		}
		if n := len(emu.Messages()) - before; n != 1 {
			t.Errorf("%d messages reached Zulip, want 1", n)
		}
	})
	t.Run("queued", func(t *testing.T) {
		before := len(emu.Messages())
		out := runScript(t, work, environ, "bash", "-euo", "pipefail", "-c", ports.Replace(readmeBlock(t, "queued")))
		for _, want := range []string{"202 Accepted", `"queued":true`, "Preference-Applied: respond-async", `"state":"queued"`, `"state":"delivered"`} {
			if !strings.Contains(out, want) {
				t.Errorf("the README's queued send says no %q:\n%s", want, out)
			}
		}
		msgs := emu.Messages()
		if n := len(msgs) - before; n != 1 || msgs[len(msgs)-1].Content != "Written while Zulip was down" {
			t.Errorf("%d messages reached Zulip, want the one queued", n)
		}
	})
	t.Run("curl-admin", func(t *testing.T) {
		block := readmeBlock(t, "curl-admin")
		// The README revokes an example id; revoke the key it just made.
		script := ports.Replace(block)
		script = strings.Replace(script, site+"/clients/3f9a27c1e0b4",
			site+`/clients/"$(cat created.json | sed 's/.*"id":"\([0-9a-f]*\)".*/\1/')"`, 1)
		script = strings.Replace(script, `expires_in=90d"`, `expires_in=90d" | tee created.json`, 1)
		out := runScript(t, work, environ, "bash", "-euo", "pipefail", "-c", script)
		if n := strings.Count(out, `"result":"success"`); n != 4 || !strings.Contains(out, `"revoked_at"`) ||
			!strings.Contains(out, `"action":"revoke"`) || !strings.Contains(out, `"action":"create"`) {
			t.Errorf("admin examples:\n%s", out)
		}
		for _, k := range regexp.MustCompile(`zwop_[A-Za-z0-9_-]{43}`).FindAllString(out, -1) {
			addSecret(k)
		}
	})
	t.Run("python", func(t *testing.T) {
		py := pythonWithRequests(t)
		src := filepath.Join(work, "example.py")
		if err := os.WriteFile(src, []byte(ports.Replace(readmeBlock(t, "python"))), 0o600); err != nil {
			t.Fatal(err)
		}
		before := len(emu.Messages())
		out := runScript(t, work, environ, py, src)
		if !strings.Contains(out, "/user_uploads/") {
			t.Errorf("python example output:\n%s", out)
		}
		if after := len(emu.Messages()); after != before+2 {
			t.Errorf("python example sent %d messages, want 2", after-before)
		}
	})
}

func runScript(t *testing.T, dir string, environ []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = environ
	done := make(chan struct{})
	var out []byte
	var err error
	go func() {
		out, err = cmd.CombinedOutput()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
	}
	if err != nil {
		t.Fatalf("%s: %v\n%s", name, err, out)
	}
	return string(out)
}

// pythonWithRequests finds a Python 3 that has requests. CI installs
// Debian's python3-requests and sets ZWOP_REQUIRE_PYTHON=1, so there a
// missing one fails instead of skipping.
func pythonWithRequests(t *testing.T) string {
	t.Helper()
	for _, py := range []string{"python3", "/usr/bin/python3"} {
		if exec.Command(py, "-c", "import requests").Run() == nil {
			return py
		}
	}
	msg := "no python3 with requests: install python3-requests (or pip install requests)"
	if os.Getenv("ZWOP_REQUIRE_PYTHON") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// adminPaths are every admin endpoint /openapi.json describes (each at
// the root and under /api), with id standing for {id}.
func adminPaths(t *testing.T, id string) [][2]string {
	t.Helper()
	r := request(t, "GET", "/openapi.json", nil)
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal([]byte(r.Body), &doc); err != nil {
		t.Fatal(err)
	}
	var out [][2]string
	for path, ops := range doc.Paths {
		for method, raw := range ops {
			var op struct {
				Tags []string `json:"tags"`
			}
			if json.Unmarshal(raw, &op) != nil || !slices.Contains(op.Tags, "admin API") {
				continue
			}
			p := strings.ReplaceAll(path, "{id}", id)
			out = append(out, [2]string{strings.ToUpper(method), p}, [2]string{strings.ToUpper(method), "/api" + p})
		}
	}
	if len(out) < 14 {
		t.Fatalf("only %d admin paths found in /openapi.json", len(out))
	}
	return out
}

// assertScriptsUngated checks that what scripts use is not behind a gate.
func assertScriptsUngated(t *testing.T, key string) {
	t.Helper()
	body, ct := form("content", "scripts are not gated")
	if r := request(t, "POST", "/send_message?topic=gate", body, withKey(key), ct); r.Status != 200 {
		t.Errorf("a script behind the gate: %d %s", r.Status, r.Body)
	}
	if r := request(t, "GET", "/api/me", nil, withKey(key)); r.Status != 200 {
		t.Errorf("/api/me behind the gate: %d %s", r.Status, r.Body)
	}
	if r := zreq(t, "GET", "/api/v1/users/me", key, ""); r.Status != 200 {
		t.Errorf("Zulip's API behind the gate: %d %s", r.Status, r.Body)
	}
	for _, p := range []string{"/health", "/openapi.json"} {
		if r := request(t, "GET", p, nil); r.Status != 200 {
			t.Errorf("%s behind the gate: %d", p, r.Status)
		}
	}
}

// The README's ways to gate the admin page and API, in a real Caddy, for
// every admin path at the root and under /api (a hand-written list of
// paths once left /api/clients open): the password on the page and the
// network rule on the admin API; then forward_auth to an identity
// provider that refuses everyone. Scripts are never gated.
func TestReadmeAdminProtection(t *testing.T) {
	store := newStore(t)
	admin, _ := adminKey(t, store)
	key, id := scopedKey(t, store, "general")
	start(t, config{store: store, siteExtra: readmeBlock(t, "admin-protect")})

	for _, mp := range adminPaths(t, id) {
		if r := request(t, mp[0], mp[1], nil, withKey(admin)); r.Status != 403 || !strings.Contains(r.Body, "office network") {
			t.Errorf("%s %s from loopback, outside the office network: %d %s", mp[0], mp[1], r.Status, r.Body)
		}
	}
	if r := request(t, "GET", "/admin/", nil); r.Status != 401 {
		t.Errorf("the page without the password: %d", r.Status)
	}
	pass := "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("staff:correct horse battery staple"))
	if r := request(t, "GET", "/admin/", nil, pass); r.Status != 200 || !strings.Contains(r.Body, "Admin key") {
		t.Errorf("the page with the password: %d", r.Status)
	}
	assertScriptsUngated(t, key)

	// An identity provider that refuses everyone.
	var asked, sawKey atomic.Int32
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		if r.Header.Get("X-API-key") != "" {
			sawKey.Add(1)
		}
		http.Error(w, "signed out: the identity provider says no", http.StatusUnauthorized)
	}))
	defer idp.Close()
	block := strings.ReplaceAll(readmeBlock(t, "admin-forward-auth"), "auth.example.org:9091", strings.TrimPrefix(idp.URL, "http://"))
	start(t, config{store: store, siteExtra: block})
	for _, mp := range append(adminPaths(t, id), [2]string{"GET", "/admin/"}, [2]string{"GET", "/admin/admin.js"}) {
		if r := request(t, mp[0], mp[1], nil, withKey(admin)); r.Status != 401 || !strings.Contains(r.Body, "identity provider says no") {
			t.Errorf("%s %s behind forward_auth: %d %s", mp[0], mp[1], r.Status, r.Body)
		}
	}
	if n := sawKey.Load(); n != 0 {
		t.Errorf("the identity provider was sent the admin key %d times", n)
	}
	before := asked.Load()
	assertScriptsUngated(t, key)
	if n := asked.Load() - before; n != 0 {
		t.Errorf("scripts' calls went to the identity provider %d times", n)
	}
}

// The README's production Caddyfile, with its paths and name pointed at
// this run, loads without the warning about keys in the access log, and
// serves.
func TestReadmeProductionConfig(t *testing.T) {
	store := newStore(t)
	rc := filepath.Join(t.TempDir(), "zuliprc")
	if err := os.WriteFile(rc, []byte("[api]\nsite="+env.emu.URL+"\nemail="+emulator.DemoBotEmail+"\nkey="+emulator.DemoBotKey+"\ncert_bundle="+env.caFile+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	block := strings.NewReplacer("zwop.example.org", fmt.Sprintf("http://127.0.0.1:%d", port),
		"/etc/zwop/zuliprc", rc, "/var/lib/zwop/clients.json", store).Replace(readmeBlock(t, "production"))
	if !strings.Contains(block, "access_log_filtered") {
		t.Fatalf("the production Caddyfile lacks access_log_filtered:\n%s", block)
	}
	warned, _ := logLines(t, "access logging is on for a server that takes keys")
	key, _ := scopedKey(t, store, "general")
	start(t, config{store: store, sites: block})
	if n, _ := logLines(t, "access logging is on for a server that takes keys"); n != warned {
		t.Errorf("the production Caddyfile warns about keys in its access log")
	}
	if r := sendAt(t, port, key, "production", "through the README's production config"); r.Status != 200 {
		t.Errorf("a send: %d %s", r.Status, r.Body)
	}
}

// The demo listens on loopback only: its bot key is public, and the
// emulator's request log shows the bot's Authorization header.
func TestDemoListensOnLoopbackOnly(t *testing.T) {
	raw, err := os.ReadFile("../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Listen []string `json:"listen"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(adapted, &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Apps.HTTP.Servers) != 2 {
		t.Errorf("%d servers, want the proxy's and the emulator's", len(cfg.Apps.HTTP.Servers))
	}
	for name, srv := range cfg.Apps.HTTP.Servers {
		if len(srv.Listen) == 0 {
			t.Errorf("%s listens on every address", name)
		}
		for _, l := range srv.Listen {
			host, _, err := net.SplitHostPort(strings.TrimPrefix(l, "tcp/"))
			if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
				t.Errorf("%s listens on %s", name, l)
			}
		}
	}
}
