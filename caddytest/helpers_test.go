package caddytest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/zwop/caddy-zulip-proxy/internal/clitest"
	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

// base is the proxy's site; adminAddr is Caddy's admin endpoint. Their
// ports are free ones chosen when the run starts (ports), so two runs on
// one machine do not collide.
var base, adminAddr string

// botKeyEnv holds the emulator bot's key, so configs use a placeholder
// the way the README tells operators to.
const botKeyEnv = "ZWOP_TEST_BOT_KEY"

func init() {
	os.Setenv(botKeyEnv, emulator.DemoBotKey)
}

// config is a proxy in front of the emulator. extra goes inside the
// zulip_proxy block, sites after the proxy's site.
type config struct {
	// grace is Caddy's grace_period; tests default to 1ns for speed.
	grace string
	// site is the bot's Zulip; default the shared emulator, over https.
	site string
	// certBundle is the CA file that site's certificate is checked
	// against; for the default site, the run's own CA.
	certBundle string
	store      string
	extra      string
	sites      string
	// logUnchecked leaves out access_log_filtered, which the site's log
	// earns by its filter.
	logUnchecked bool
	// siteExtra goes in the proxy's site block, beside zulip_proxy.
	siteExtra string
	// global goes among the global options.
	global string
	// load marks the config's answers (X-Zwop-Load), so that start can
	// tell when it, not the config before, answers.
	load int
}

func (c config) String() string {
	site, bundle := c.site, c.certBundle
	if site == "" {
		site, bundle = env.emu.URL, env.caFile
	}
	if bundle != "" {
		bundle = "cert_bundle " + bundle
	}
	ack := "access_log_filtered"
	if c.logUnchecked {
		ack = ""
	}
	grace := c.grace
	if grace == "" {
		grace = "1ns"
	}
	return fmt.Sprintf(`{
	admin %[12]s
	http_port %[13]d
	https_port %[14]d
	grace_period %[8]s
	skip_install_trust
	persist_config off
	log {
		output file %[1]s
		level DEBUG
	}
	%[17]s
}

%[15]s {
	header X-Zwop-Load %[16]d
	log {
		output file %[1]s
		format filter {
			wrap json
			request>headers>X-Api-Key delete
			request>uri query {
				delete api_key
			}
		}
	}
	%[11]s
	zulip_proxy {
		bot default {
			site %[2]s
			email %[3]s
			api_key {env.%[4]s}
			%[9]s
		}
		store %[5]s
		%[10]s
		%[6]s
	}
}
%[7]s`, env.logFile, site, emulator.DemoBotEmail, botKeyEnv, c.store, c.extra, c.sites, grace, bundle, ack, c.siteExtra,
		adminAddr, env.httpPort, env.httpsPort, base, c.load, c.global)
}

// loads counts the configs start loaded, to mark each one's answers.
var loads atomic.Int64

// start loads cfg into the test process's Caddy.
func start(t *testing.T, cfg config) *caddytest.Tester {
	t.Helper()
	cfg.load = int(loads.Add(1))
	tc := caddytest.NewTester(t)
	tc.InitServer(cfg.String(), "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	// Caddy stops the old config's servers as the load returns, and with
	// the tests' grace period of 1ns closes the connections they hold, a
	// request in flight included; a POST is not retried. So no connection
	// of theirs stays in the client's pool, and the test starts once new
	// connections reach the new config only.
	client.CloseIdleConnections()
	waitForLoad(t, cfg.load)
	// A request an earlier test left Zulip handling (one the proxy gave
	// up on, whose caller went away mid-body) is logged when it ends: let
	// it end now, not inside this test's "nothing reached Zulip" window.
	// (TestTimeoutsMeasureZulipNotTheClient leaves a 5 s Zulip delay
	// behind; CI once found its upload in the next tests' window.)
	for deadline := time.Now().Add(10 * time.Second); env.emu.InFlight() > 0; {
		if time.Now().After(deadline) {
			t.Logf("Zulip still handles %d request(s) of an earlier test", env.emu.InFlight())
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return tc
}

// fresh reaches Caddy on a new connection every time.
var fresh = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// waitForLoad waits until config number load answers new connections,
// three in a row: the old config's servers no longer take any.
func waitForLoad(t *testing.T, load int) {
	t.Helper()
	want := strconv.Itoa(load)
	for seen, deadline := 0, time.Now().Add(10*time.Second); seen < 3; {
		if time.Now().After(deadline) {
			t.Fatalf("config %d did not answer within 10s", load)
		}
		seen++
		resp, err := fresh.Get(base + "/health")
		if err != nil {
			seen = 0
			continue
		}
		resp.Body.Close()
		if resp.Header.Get("X-Zwop-Load") != want {
			seen = 0
		}
	}
}

// newStore returns a fresh store path in the run's folder.
func newStore(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp(env.dir, "store-")
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(d, "clients.json")
}

// mustKey creates a key with the CLI and returns it and its id; the key
// must never reach a log.
func mustKey(t *testing.T, args ...string) (key, id string) {
	t.Helper()
	key, id, _, err := clitest.MakeKey(args...)
	if err != nil {
		t.Fatal(err)
	}
	addSecret(key)
	return key, id
}

// scopedKey makes a key for stream on store.
func scopedKey(t *testing.T, store, stream string, more ...string) (key, id string) {
	t.Helper()
	return mustKey(t, append([]string{"add-client", "--store", store, "--stream", stream}, more...)...)
}

func adminKey(t *testing.T, store string) (key, id string) {
	t.Helper()
	return mustKey(t, "add-admin", "--store", store)
}

// reply is an answer as tests read it.
type reply struct {
	Status int
	Header http.Header
	Body   string
}

// JSON decodes the body as an object.
func (r reply) JSON(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(r.Body), &m); err != nil {
		t.Fatalf("body is not a JSON object: %v\n%s", err, r.Body)
	}
	return m
}

var client = &http.Client{Timeout: 60 * time.Second}

// request sends one request; header pairs follow as "Name: value".
func request(t *testing.T, method, path string, body io.Reader, headers ...string) reply {
	t.Helper()
	req, err := http.NewRequest(method, base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	checkAnswer(method, path, req.Header, resp.StatusCode, resp.Header, b)
	return reply{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}
}

func withKey(key string) string { return "X-API-key: " + key }

// sendAsync posts a message with key from any goroutine: a failure to get
// an answer is reported with t.Error, and the status is 0 then.
func sendAsync(t *testing.T, key, topic string) (int, http.Header) {
	req, _ := http.NewRequest("POST", base+"/send_message?topic="+url.QueryEscape(topic), strings.NewReader("content=hello"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-API-key", key)
	resp, err := client.Do(req)
	if err != nil {
		t.Error(err)
		return 0, nil
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

// sendAt posts a message with key to the proxy site on port (a test's
// second site), as sendTo does to the main one.
func sendAt(t *testing.T, port int, key, topic, content string) reply {
	t.Helper()
	body, ct := form("content", content)
	req, err := http.NewRequest("POST", fmt.Sprintf("http://127.0.0.1:%d/send_message?topic=%s", port, url.QueryEscape(topic)), body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", strings.TrimPrefix(ct, "Content-Type: "))
	req.Header.Set("X-API-key", key)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return reply{Status: resp.StatusCode, Header: resp.Header, Body: string(raw)}
}

// form encodes an urlencoded body.
func form(pairs ...string) (io.Reader, string) {
	var b strings.Builder
	for i := 0; i+1 < len(pairs); i += 2 {
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(url.QueryEscape(pairs[i]) + "=" + url.QueryEscape(pairs[i+1]))
	}
	return strings.NewReader(b.String()), "Content-Type: application/x-www-form-urlencoded"
}

// assertError checks the combined error shape and status.
func assertError(t *testing.T, r reply, status int, msgPart string) map[string]any {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d; body %s", r.Status, status, r.Body)
	}
	m := r.JSON(t)
	if m["result"] != "error" || m["msg"] == "" || m["code"] == nil || m["detail"] != m["msg"] {
		t.Errorf("not the error shape: %s", r.Body)
	}
	if msg, _ := m["msg"].(string); !strings.Contains(msg, msgPart) {
		t.Errorf("msg %q does not contain %q", msg, msgPart)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	return m
}

// zulipMark remembers where the emulator's request log stands, so a test
// can check what reached Zulip after it.
func zulipMark() uint64 { return env.emu.LastSeq() }

// assertNothingReachedZulip fails if Zulip received any request since
// mark, but the proxy's own check of its bot (GET /users/me, which a
// config makes when it starts and after a call that got no answer).
func assertNothingReachedZulip(t *testing.T, mark uint64) {
	t.Helper()
	var lines []string
	for _, r := range zulipRequests(mark) {
		lines = append(lines, r.Method+" "+r.Path+"?"+r.Query)
	}
	if len(lines) > 0 {
		t.Errorf("Zulip received %d request(s) it should not have:\n%s", len(lines), strings.Join(lines, "\n"))
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func itoa(n int) string { return fmt.Sprint(n) }
