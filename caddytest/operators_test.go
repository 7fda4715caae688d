package caddytest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/zwop/caddy-zulip-proxy/internal/clitest"
	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

// A config that cannot load says why first: the module's own error line
// starts with the cause and names the file, before Caddy's long chain of
// module paths.
func TestLoadErrorSaysTheCauseFirst(t *testing.T) {
	rc := filepath.Join(t.TempDir(), "missing-zuliprc")
	msg := validateCaddyfile(t, fmt.Sprintf(`{
	admin off
	log {
		output file %s
	}
}
http://127.0.0.1:%d {
	zulip_proxy {
		bot default {
			zuliprc %s
		}
		store %s
		access_log_filtered
	}
}`, env.logFile, freePort(t), rc, newStore(t)))
	if !strings.Contains(msg, rc) {
		t.Fatalf("validate: %s", msg)
	}
	if !logHas(t, `"msg":"zulip_proxy: config not loaded"`, `"error":"bot \"default\": reading zuliprc: open `+rc) {
		t.Error("no log line that starts with the cause and names the zuliprc")
	}
}

// runAsRoot runs a command that needs root (chattr, mount), skipping the
// test where this machine does not allow it.
func runAsRoot(t *testing.T, name string, args ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("%s needs root", name)
	}
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Skipf("%s %v: %v %s", name, args, err, out)
	}
}

// A store the server could not write is found at start and by `caddy
// validate`, naming the path and the reason, not when someone first
// tries to revoke a key: a missing folder (never made), an immutable
// file, a read-only mount. Unless the config says the store is read-only
// on purpose: then the server runs, /health says so, and the admin API
// answers that keys are managed elsewhere.
func TestStoreThatCannotBeWritten(t *testing.T) {
	t.Run("missing folder", func(t *testing.T) {
		dir := filepath.Join(filepath.Dir(newStore(t)), "missing")
		msg := validateConfig(t, config{store: filepath.Join(dir, "clients.json")})
		if !strings.Contains(msg, "folder "+dir+" does not exist") || !strings.Contains(msg, "store_read_only") {
			t.Errorf("validate: %q", msg)
		}
		_, stderr, err := clitest.Run("add-client", "--store", filepath.Join(dir, "clients.json"), "--stream", "general")
		if err == nil || !strings.Contains(err.Error()+stderr, "folder "+dir+" does not exist") {
			t.Errorf("the CLI: %v %s", err, stderr)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("the folder was made: %v", err)
		}
	})
	t.Run("immutable file", func(t *testing.T) {
		store := newStore(t)
		key, _ := scopedKey(t, store, "general")
		admin, _ := adminKey(t, store)
		runAsRoot(t, "chattr", "+i", store)
		t.Cleanup(func() { _ = exec.Command("chattr", "-i", store).Run() })
		msg := validateConfig(t, config{store: store})
		if !strings.Contains(msg, "cannot write "+store+": operation not permitted") || !strings.Contains(msg, "immutable") {
			t.Errorf("validate: %q", msg)
		}

		// Read-only on purpose: served, and said so.
		start(t, config{store: store, extra: "store_read_only"})
		st, m := healthOf(t)
		if st != 200 || m["status"] != "OK" || m["store"] != "read-only" || !strings.Contains(fmt.Sprint(m["msg"]), "managed elsewhere") {
			t.Errorf("/health: %d %v", st, m)
		}
		if r := sendTo(t, key, "ro", "a store managed elsewhere still serves its keys"); r.Status != 200 {
			t.Errorf("a send: %d %s", r.Status, r.Body)
		}
		body, ct := form("stream", "general")
		r := request(t, "POST", "/create_client", body, withKey(admin), ct)
		if e := assertError(t, r, 403, "managed elsewhere"); e["code"] != "STORE_READ_ONLY" {
			t.Errorf("create_client: %v", e)
		}
		if r := request(t, "GET", "/clients", nil, withKey(admin)); r.Status != 200 {
			t.Errorf("listing keys: %d", r.Status)
		}
	})
	t.Run("read-only mount", func(t *testing.T) {
		store := newStore(t)
		scopedKey(t, store, "general")
		dir := filepath.Dir(store)
		runAsRoot(t, "mount", "--bind", dir, dir)
		t.Cleanup(func() { _ = exec.Command("umount", dir).Run() })
		runAsRoot(t, "mount", "-o", "remount,ro,bind", dir)
		msg := validateConfig(t, config{store: store})
		if !strings.Contains(msg, "cannot create files in "+dir+": read-only file system") {
			t.Errorf("validate: %q", msg)
		}
	})
}

// The bot's key from a file, as systemd's LoadCredential hands it over
// (contrib/systemd/caddy.service): the proxy speaks with it, and neither
// `caddy adapt` nor any log line holds it (the run's log is checked for
// every bot key after all tests).
func TestBotKeyFromFile(t *testing.T) {
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	cred := filepath.Join(t.TempDir(), "zulip-bot-key")
	if err := os.WriteFile(cred, []byte(emulator.DemoBotKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	site := botSite(port, "fromfile", env.emu.URL, env.caFile, "{file."+cred+"}", store)
	adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(config{store: store, sites: site}.String()), nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(adapted), emulator.DemoBotKey) || !strings.Contains(string(adapted), "{file."+cred+"}") {
		t.Errorf("caddy adapt: the key, or not the placeholder:\n%s", adapted)
	}
	start(t, config{store: store, sites: site})
	if r := sendAt(t, port, key, "credential", "sent with a key read from a file"); r.Status != 200 {
		t.Fatalf("a send through the bot whose key is in a file: %d %s", r.Status, r.Body)
	}
	eventually(t, 20*time.Second, "the bot checked", func() bool {
		_, m := healthOfPort(t, port)
		return botState(m, "fromfile")["state"] == "ok"
	})
}

// runCaddy runs the caddy command (this test binary as caddy) with args,
// and returns its standard output and error apart.
func runCaddy(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), cliEnv+"="+strings.Join(args, "\x1f"))
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// The CLI's output is for a person: no Caddy log lines between the key
// and its id, unless asked for with --verbose.
func TestCLIOutputIsQuiet(t *testing.T) {
	raw, err := os.ReadFile("../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	store := newStore(t)
	cfg := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(cfg, []byte(strings.ReplaceAll(string(raw), "./zwop-demo-keys.json", store)), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, err := runCaddy(t, "zulip-proxy", "add-client", "--config", cfg, "--stream", "general")
	if err != nil {
		t.Fatalf("add-client: %v\n%s%s", err, stdout, stderr)
	}
	key, _, ok := clitest.PrintedKey(stdout)
	if !ok {
		t.Fatalf("no key printed:\n%s", stdout)
	}
	addSecret(key)
	if strings.Contains(stdout+stderr, `"level":`) {
		t.Errorf("log lines in what a person reads:\n%s\n%s", stdout, stderr)
	}
	stdout, stderr, err = runCaddy(t, "zulip-proxy", "list", "--config", cfg)
	if err != nil || strings.Contains(stdout+stderr, `"level":`) || !strings.Contains(stdout, "general") {
		t.Errorf("list: %v\n%s\n%s", err, stdout, stderr)
	}
}

// The CLI, checking a stream with the bot, says the bot's credentials
// were refused (the proxy's configuration), not Zulip's "Invalid API key";
// and with store_read_only it changes nothing, saying keys are managed
// elsewhere.
func TestCLIWithWrongBotKeyOrReadOnlyStore(t *testing.T) {
	store := newStore(t)
	t.Setenv("ZWOP_TEST_WRONG_KEY", "wrongbotkey0123456789abcdefghijk")
	cfg := filepath.Join(t.TempDir(), "Caddyfile")
	write := func(extra string) {
		t.Helper()
		text := fmt.Sprintf(`http://127.0.0.1:%d {
	zulip_proxy {
		bot default {
			site %s
			email %s
			api_key {env.ZWOP_TEST_WRONG_KEY}
			cert_bundle %s
		}
		store %s
		%s
	}
}
`, freePort(t), env.emu.URL, emulator.DemoBotEmail, env.caFile, store, extra)
		if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("")
	_, stderr, err := clitest.Run("add-client", "--config", cfg, "--stream", "general")
	if err == nil || !strings.Contains(err.Error(), `refused the proxy's credentials for bot "default"`) || strings.Contains(err.Error()+stderr, "Invalid API key") {
		t.Errorf("add-client with a bot key Zulip refuses: %v %s", err, stderr)
	}
	write("store_read_only")
	_, stderr, err = clitest.Run("add-admin", "--config", cfg)
	if err == nil || !strings.Contains(err.Error(), "managed elsewhere") {
		t.Errorf("add-admin on a store read-only by config: %v %s", err, stderr)
	}
	if _, err := os.Stat(store); !os.IsNotExist(err) {
		t.Errorf("the store was written: %v", err)
	}
}
