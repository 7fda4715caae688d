package caddytest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/zwop/caddy-zulip-proxy/internal/clitest"
)

// healthOf reads /health's status and body.
func healthOf(t *testing.T) (int, map[string]any) {
	t.Helper()
	r := request(t, "GET", "/health", nil)
	return r.Status, r.JSON(t)
}

// A store file emptied while Caddy runs (': > clients.json', or a backup
// restored with cp, which truncates first) is a damaged store, not an
// empty one: every key keeps working, /health says 503 and why, no change
// is written over it, and once a good document is back all is as before.
func TestEmptiedStoreKeepsKeys(t *testing.T) {
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	admin, _ := adminKey(t, store)
	start(t, config{store: store})
	good, err := os.ReadFile(store)
	if err != nil {
		t.Fatal(err)
	}
	failing, _ := logLines(t, "health check failing")
	passing, _ := logLines(t, "health check passing again")
	if err := os.WriteFile(store, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "/health says 503", func() bool {
		status, _ := healthOf(t)
		return status == 503
	})
	_, h := healthOf(t)
	healthOf(t)
	if msg, _ := h["msg"].(string); h["store"] != "unreadable" || !strings.Contains(msg, "lacks keys it held") {
		t.Errorf("/health: %v", h)
	}
	for _, k := range []string{key, admin} {
		if r := request(t, "GET", "/me", nil, withKey(k)); r.Status != 200 {
			t.Errorf("a key of the emptied store: %d %s", r.Status, r.Body)
		}
	}
	r := request(t, "POST", "/create_client?stream=general", nil, withKey(admin))
	assertError(t, r, 503, "key store is damaged")
	if raw, _ := os.ReadFile(store); len(raw) != 0 {
		t.Errorf("something was written over the emptied store: %s", raw)
	}
	// The CLI will not start a new store over it either.
	_, errOut, err := clitest.Run("add-client", "--store", store, "--stream", "general")
	if err == nil || !strings.Contains(err.Error()+errOut, "--new-store") {
		t.Errorf("the CLI wrote over an emptied store: %v %s", err, errOut)
	}

	if err := os.WriteFile(store, good, 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "/health says 200", func() bool {
		status, _ := healthOf(t)
		return status == 200
	})
	healthOf(t)
	if r := request(t, "POST", "/create_client?stream=general", nil, withKey(admin)); r.Status != 200 {
		t.Errorf("create_client once restored: %d %s", r.Status, r.Body)
	}
	// A load balancer probing all along reads of the damage once in the
	// log, and once that it is over: not a warning a probe.
	if n, w := logLines(t, "health check failing"); n != failing+1 || !strings.Contains(fmt.Sprint(w["error"]), store) {
		t.Errorf("%d warnings for one damaged store (last: %v), want 1 naming it", n-failing, w)
	}
	if n, _ := logLines(t, "health check passing again"); n != passing+1 {
		t.Errorf("%d lines saying the store is back, want 1", n-passing)
	}
}

// A store file that vanished (an unmounted volume, a wrong path, a delete)
// is not a first run: the CLI refuses to begin a new store there, saying
// what to check and how to force it, and the server keeps every key.
func TestVanishedStoreAndTheCLI(t *testing.T) {
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	start(t, config{store: store})
	if err := os.Remove(store); err != nil {
		t.Fatal(err)
	}
	_, errOut, err := clitest.Run("add-client", "--store", store, "--stream", "general")
	if err == nil || !strings.Contains(err.Error(), "mounted") || !strings.Contains(err.Error(), "--new-store") {
		t.Fatalf("add-client where the store vanished: %v %s", err, errOut)
	}
	if _, err := os.Stat(store); err == nil {
		t.Fatal("the CLI began a new store where one vanished")
	}
	if r := request(t, "GET", "/me", nil, withKey(key)); r.Status != 200 {
		t.Errorf("a key of the vanished store: %d %s", r.Status, r.Body)
	}

	// Forced, the CLI starts anew and says so; the server, which held a
	// key that the new document lacks, does not adopt it.
	out, errOut, err := clitest.Run("add-client", "--store", store, "--stream", "general", "--new-store")
	if err != nil || !strings.Contains(errOut, "created new key store") {
		t.Fatalf("forced: %v\n%s\n%s", err, out, errOut)
	}
	if k, _, ok := clitest.PrintedKey(out); ok {
		addSecret(k)
	}
	time.Sleep(1500 * time.Millisecond) // the server looks every second
	if r := request(t, "GET", "/me", nil, withKey(key)); r.Status != 200 {
		t.Errorf("the server dropped a key for a document that lacks it: %d %s", r.Status, r.Body)
	}
	if status, h := healthOf(t); status != 503 {
		t.Errorf("/health with a document that lacks held keys: %d %v", status, h)
	}
}

// A new store is made only where none has been, and the CLI says so.
func TestCLISaysItCreatedAStore(t *testing.T) {
	store := newStore(t)
	_, errOut, err := clitest.Run("add-admin", "--store", store)
	if err != nil || !strings.Contains(errOut, "created new key store") || !strings.Contains(errOut, store) {
		t.Fatalf("first key: %v %s", err, errOut)
	}
	_, errOut, err = clitest.Run("add-admin", "--store", store)
	if err != nil || strings.Contains(errOut, "created") {
		t.Errorf("second key: %v %s", err, errOut)
	}
}

// A store that cannot be written answers changes with 503 saying so, and
// /health reports it degraded while every key keeps working.
func TestUnwritableStore(t *testing.T) {
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	admin, id := adminKey(t, store)
	start(t, config{store: store})
	// A folder where the lock file belongs fails every write, even as root.
	if err := os.Remove(store + ".lock"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(store+".lock", 0o700); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(store + ".lock")
	for _, r := range []reply{
		request(t, "POST", "/create_client?stream=general", nil, withKey(admin)),
		request(t, "DELETE", "/clients/"+id, nil, withKey(admin)),
	} {
		assertError(t, r, 503, "key store cannot be written")
	}
	status, h := healthOf(t)
	if status != 200 || h["status"] != "degraded" || h["store"] != "read-only" {
		t.Errorf("/health of an unwritable store: %d %v", status, h)
	}
	if r := request(t, "GET", "/me", nil, withKey(key)); r.Status != 200 {
		t.Errorf("a key of the unwritable store: %d %s", r.Status, r.Body)
	}
}

// A mistyped command fails, rather than printing the help and exiting 0.
func TestCLIUnknownCommand(t *testing.T) {
	_, _, err := clitest.Run("frobnicate", "--store", newStore(t))
	if err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Errorf("frobnicate: %v", err)
	}
	if _, _, err := clitest.Run(); err == nil {
		t.Error("no command at all exits 0")
	}
}

// create_client takes its parameters from the query, a form body or a
// JSON body alike, and refuses any name it does not take: a typo such as
// expire_in=1h would otherwise make a key that never expires.
func TestCreateClientParamsAreStrict(t *testing.T) {
	store := newStore(t)
	admin, _ := adminKey(t, store)
	start(t, config{store: store})
	for name, call := range map[string]struct {
		path, body, ctype string
	}{
		"a typo in the query":      {"/create_client?stream=general&expire_in=1h", "", ""},
		"a typo in a form body":    {"/create_client?stream=general", "expire_in=1h", "Content-Type: application/x-www-form-urlencoded"},
		"a typo in a JSON body":    {"/create_client", `{"stream":"general","expire_in":"1h"}`, "Content-Type: application/json"},
		"a name in query and body": {"/create_client?stream=general", "stream=other", "Content-Type: application/x-www-form-urlencoded"},
	} {
		t.Run(name, func(t *testing.T) {
			hdrs := []string{withKey(admin)}
			if call.ctype != "" {
				hdrs = append(hdrs, call.ctype)
			}
			r := request(t, "POST", call.path, strings.NewReader(call.body), hdrs...)
			assertError(t, r, 400, "")
			if !strings.Contains(r.Body, "expire_in") && !strings.Contains(r.Body, "more than once") {
				t.Errorf("the error does not name the parameter: %s", r.Body)
			}
		})
	}
	for name, call := range map[string]struct{ body, ctype string }{
		"form": {"stream=general&expires_in=1h", "Content-Type: application/x-www-form-urlencoded"},
		"JSON": {`{"stream":"general","expires_in":"1h"}`, "Content-Type: application/json"},
	} {
		r := request(t, "POST", "/create_client", strings.NewReader(call.body), withKey(admin), call.ctype)
		if r.Status != 200 {
			t.Fatalf("%s body: %d %s", name, r.Status, r.Body)
		}
		m := r.JSON(t)
		addSecret(m["key"].(string))
		exp, err := time.Parse(time.RFC3339, m["expires_at"].(string))
		if err != nil || time.Until(exp) > time.Hour || time.Until(exp) < 50*time.Minute {
			t.Errorf("%s body: expires_at %v (%v), want in an hour", name, m["expires_at"], err)
		}
	}
}

// Config errors found when the config loads name the directive, the
// setting and the file: Caddy hands a module its config as JSON, so the
// Caddyfile line is known only to parsing errors (TestCaddyfileTypoNamesTheLine).
func TestLoadErrorsNameTheSettingAndFile(t *testing.T) {
	corrupt := filepath.Join(t.TempDir(), "clients.json")
	if err := os.WriteFile(corrupt, []byte("{nope"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Setenv("ZWOP_TEST_EMPTY", "")
	for _, tc := range []struct {
		cfg  config
		want string
	}{
		{config{store: newStore(t), extra: "bot other {\n zuliprc /nonexistent/zuliprc\n}"},
			`bot \"other\": reading zuliprc: open /nonexistent/zuliprc`},
		{config{store: newStore(t), extra: "bot e {\n site https://x.org\n email {env.ZWOP_TEST_EMPTY}\n api_key k\n}"},
			`bot \"e\": email: evaluated placeholder {env.ZWOP_TEST_EMPTY} is empty`},
		{config{store: corrupt}, "reading key store file " + corrupt + ": key store is corrupt"},
	} {
		caddytest.AssertLoadError(t, tc.cfg.String(), "caddyfile", tc.want)
	}
}

// add-client with --config refuses, as create_client does, a bot the
// config lacks and a stream its Zulip does not have; with a Zulip that
// cannot be reached it makes the key and says the stream went unchecked.
func TestCLIChecksBotAndStream(t *testing.T) {
	store := newStore(t)
	caddyfile := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(caddyfile, []byte(config{store: store}.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := clitest.Run("add-client", "--config", caddyfile, "--stream", "general", "--bot", "nope"); err == nil || !strings.Contains(err.Error(), "not configured") {
		t.Errorf("an unknown bot: %v", err)
	}
	_, _, err := clitest.Run("add-client", "--config", caddyfile, "--stream", "no such stream")
	if err == nil || !strings.Contains(err.Error(), "no such stream") || !strings.Contains(err.Error(), "Zulip") {
		t.Errorf("a stream Zulip does not have: %v", err)
	}
	if out, errOut, err := clitest.Run("add-client", "--config", caddyfile, "--stream", "general"); err != nil {
		t.Errorf("a stream Zulip has: %v %s", err, errOut)
	} else if k, _, ok := clitest.PrintedKey(out); ok {
		addSecret(k)
	}

	down := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(down, []byte(config{store: store, site: "http://127.0.0.1:1"}.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := clitest.Run("add-client", "--config", down, "--stream", "general")
	if err != nil || !strings.Contains(errOut, "not checked") {
		t.Errorf("an unreachable Zulip: %v %s", err, errOut)
	}
	if k, _, ok := clitest.PrintedKey(out); ok {
		addSecret(k)
	}
}
