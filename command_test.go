package zulipproxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/zwop/caddy-zulip-proxy/internal/clitest"
	"github.com/zwop/caddy-zulip-proxy/internal/keystore"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

// cliAdd makes a key with the CLI, which warns that it shows it once.
func cliAdd(t *testing.T, args ...string) (key, id string) {
	t.Helper()
	key, id, errOut, err := clitest.MakeKey(args...)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errOut, "shown only this once") {
		t.Errorf("no warning that the key is shown once: %q", errOut)
	}
	return key, id
}

func TestCLIAddListRevoke(t *testing.T) {
	store := filepath.Join(t.TempDir(), "clients.json")
	key, id := cliAdd(t, "add-client", "--store", store, "--stream", "general", "--name", "beamline 3", "--proposal", "1234", "--expires", "90d")
	adminK, adminID := cliAdd(t, "add-admin", "--store", store, "--name", "ops")

	raw, err := os.ReadFile(store)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{key, adminK} {
		if strings.Contains(string(raw), k) {
			t.Fatal("the store file holds a key")
		}
		if !strings.Contains(string(raw), keystore.HashKey(k)) {
			t.Error("the store file lacks a key's hash")
		}
	}

	out, _, err := clitest.Run("list", "--store", store)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ID", "LAST USED", id, "beamline 3", "general", "(default)", adminID, "ops", "yes"} {
		if !strings.Contains(out, want) {
			t.Errorf("list lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, key) || strings.Contains(out, keystore.HashKey(key)) {
		t.Error("list shows a key or its hash")
	}

	out, _, err = clitest.Run("list", "--json", "--store", store)
	if err != nil {
		t.Fatal(err)
	}
	var rows []map[string]any
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("list --json: %v\n%s", err, out)
	}
	if len(rows) != 2 || rows[0]["id"] != id || rows[0]["proposal_no"] != float64(1234) || rows[0]["expires_at"] == nil || rows[1]["admin"] != true {
		t.Errorf("list --json: %s", out)
	}
	if strings.Contains(out, "key_hash") || strings.Contains(out, key) {
		t.Error("list --json shows a key or its hash")
	}

	out, _, err = clitest.Run("revoke", "--store", store, id)
	if err != nil || !strings.Contains(out, "revoked "+id) {
		t.Fatalf("revoke: %v %s", err, out)
	}
	s, err := keystore.OpenFile(store, keystore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e, ok := s.Lookup(key)
	if !ok || !errors.Is(e.Usable(e.CreatedAt), keystore.ErrKeyRevoked) {
		t.Errorf("revoked key: found %v, %+v", ok, e)
	}
	if a, ok := s.Lookup(adminK); !ok || !a.Admin || a.Usable(a.CreatedAt) != nil {
		t.Errorf("admin key: %+v", a)
	}
}

func TestCLIErrors(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "clients.json")
	corrupt := filepath.Join(dir, "corrupt.json")
	if err := os.WriteFile(corrupt, []byte(`{"version":1,"clients":[`), 0o600); err != nil {
		t.Fatal(err)
	}
	noProxy := filepath.Join(dir, "noproxy.caddyfile")
	if err := os.WriteFile(noProxy, []byte(":8080 {\n\trespond ok\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	twoStores := filepath.Join(dir, "two.caddyfile")
	if err := os.WriteFile(twoStores, []byte(`:8080 {
	zulip_proxy {
		bot default {
			zuliprc /x
		}
		store /a.json
	}
}
:8081 {
	zulip_proxy {
		bot default {
			zuliprc /x
		}
		store /b.json
	}
}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	oneBot := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(oneBot, []byte(":8080 {\n\tzulip_proxy {\n\t\tbot default {\n\t\t\tzuliprc /x\n\t\t}\n\t\tstore "+store+"\n\t}\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no store", []string{"list"}, "no store given"},
		{"both store and config", []string{"list", "--store", store, "--config", oneBot}, "either --store or --config"},
		{"adapter without config", []string{"list", "--store", store, "--adapter", "caddyfile"}, "--adapter goes with --config"},
		{"missing stream", []string{"add-client", "--store", store}, "--stream is required"},
		{"bad expiry", []string{"add-client", "--store", store, "--stream", "s", "--expires", "soon"}, "--expires"},
		{"negative expiry", []string{"add-admin", "--store", store, "--expires", "-1h"}, "--expires must be positive"},
		{"negative proposal", []string{"add-client", "--store", store, "--stream", "s", "--proposal", "-3"}, "--proposal"},
		{"unknown id", []string{"revoke", "--store", store, "nope"}, `no key with id "nope"`},
		{"revoke without id", []string{"revoke", "--store", store}, "accepts 1 arg"},
		{"legacy file missing", []string{"import-legacy", "--store", store, filepath.Join(dir, "absent.json")}, "opening legacy file"},
		{"legacy file not JSON", []string{"import-legacy", "--store", store, noProxy}, "not a legacy clients.json"},
		{"corrupt store", []string{"add-client", "--store", corrupt, "--stream", "s"}, "corrupt"},
		{"config missing", []string{"list", "--config", filepath.Join(dir, "absent.caddyfile")}, "loading config"},
		{"config without the proxy", []string{"list", "--config", noProxy}, "no zulip_proxy handler"},
		{"config with two stores", []string{"list", "--config", twoStores}, "different stores (/a.json, /b.json)"},
		{"bot not in config", []string{"add-client", "--config", oneBot, "--stream", "s", "--bot", "alerts"}, `--bot "alerts" is not configured`},
		{"unknown flag", []string{"list", "--stor", store}, "unknown flag"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before, _ := os.ReadFile(corrupt)
			out, _, err := clitest.Run(c.args...)
			if err == nil {
				t.Fatalf("no error; output:\n%s", out)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not contain %q", err, c.want)
			}
			if strings.Contains(out, "key:") {
				t.Errorf("a key was printed despite the error:\n%s", out)
			}
			if after, _ := os.ReadFile(corrupt); !bytes.Equal(before, after) {
				t.Error("the corrupt store was changed")
			}
		})
	}
	if _, err := os.Stat(store); !os.IsNotExist(err) {
		t.Errorf("failed commands wrote a store: %v", err)
	}
}

func TestCLIConfigFindsStore(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "keys.json")
	cfg := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfg, []byte(":8080 {\n\thandle_path /zwop/* {\n\t\tzulip_proxy {\n\t\t\tbot default {\n\t\t\t\tzuliprc /x\n\t\t\t}\n\t\t\tbot alerts {\n\t\t\t\tzuliprc /y\n\t\t\t}\n\t\t\tstore "+store+"\n\t\t}\n\t}\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	key, _ := cliAdd(t, "add-client", "--config", cfg, "--stream", "alerts", "--bot", "alerts")
	s, err := keystore.OpenFile(store, keystore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if e, ok := s.Lookup(key); !ok || e.Bot != "alerts" {
		t.Errorf("key not in the config's store: %v %+v", ok, e)
	}
}

// With no `store`, the keys live in Caddy's configured storage, and the
// CLI finds that storage in the config too.
func TestCLIConfigCaddyStorage(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "storage")
	cfg := filepath.Join(dir, "caddy.json")
	doc := `{"storage":{"module":"file_system","root":"` + root + `"},"apps":{"http":{"servers":{"s":{"listen":[":8080"],"routes":[{"handle":[{"handler":"zulip_proxy","bots":{"default":{"zuliprc":"/x"}}}]}]}}}}}`
	if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	key, id := cliAdd(t, "add-client", "--config", cfg, "--stream", "general")
	raw, err := os.ReadFile(filepath.Join(root, "zulip_proxy", "clients.json"))
	if err != nil {
		t.Fatalf("store not in the configured storage: %v", err)
	}
	if !strings.Contains(string(raw), id) || strings.Contains(string(raw), key) {
		t.Errorf("storage document: %s", raw)
	}
	out, _, err := clitest.Run("list", "--config", cfg)
	if err != nil || !strings.Contains(out, id) {
		t.Errorf("list from storage: %v\n%s", err, out)
	}
}

func TestCLIImportLegacy(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "clients.json")
	legacy := filepath.Join(dir, "legacy.json")
	if err := os.WriteFile(legacy, []byte(`{"oldkey1": {"proposal_no": 1234, "stream": "p1234"}, "oldadmin": {"admin": true}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := clitest.Run("import-legacy", "--store", store, legacy)
	if err != nil || !strings.Contains(out, "imported 2 keys, skipped 0") || !strings.Contains(errOut, "delete it") {
		t.Fatalf("%v %q %q", err, out, errOut)
	}
	out, _, err = clitest.Run("import-legacy", "--store", store, legacy)
	if err != nil || !strings.Contains(out, "imported 0 keys, skipped 2") {
		t.Fatalf("second import: %v %q", err, out)
	}
	raw, _ := os.ReadFile(store)
	if strings.Contains(string(raw), "oldkey1") || strings.Contains(string(raw), "oldadmin") {
		t.Error("plain legacy keys in the store")
	}
}

// The real `caddy` entry point exits non-zero on an error and prints it.
func TestCLIExitStatus(t *testing.T) {
	if os.Getenv("ZWOP_RUN_CADDY_MAIN") == "1" {
		args := strings.Split(os.Getenv("ZWOP_CADDY_ARGS"), "\x1f")
		os.Args = append([]string{"caddy"}, args...)
		caddycmd.Main()
		return
	}
	store := filepath.Join(t.TempDir(), "clients.json")
	run := func(args ...string) (string, int) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCLIExitStatus$")
		cmd.Env = append(os.Environ(), "ZWOP_RUN_CADDY_MAIN=1", "ZWOP_CADDY_ARGS="+strings.Join(args, "\x1f"))
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	if out, code := run("zulip-proxy", "add-client", "--store", store); code == 0 || !strings.Contains(out, "--stream is required") {
		t.Errorf("missing --stream: exit %d\n%s", code, out)
	}
	if out, code := run("zulip-proxy", "add-client", "--store", store, "--stream", "general"); code != 0 || !printsKey(out) {
		t.Errorf("add-client: exit %d\n%s", code, out)
	}
}

// A key's name is whatever its creator typed: in the table, control
// characters are escaped, so a name cannot forge a row, hide one, or send
// the terminal an escape sequence.
func TestListEscapesNames(t *testing.T) {
	now := time.Now()
	entries := []keystore.Entry{
		{ID: "aaaaaaaaaaaa", Name: "innocent\nbbbbbbbbbbbb  forged  general  (default)  no", Stream: "general", CreatedAt: now},
		{ID: "cccccccccccc", Name: "\x1b[2K\x1b[1Ahidden", Stream: "s\tt", CreatedAt: now},
		{ID: "dddddddddddd", Name: "Beamline 3 — ok ✓", Stream: "general", CreatedAt: now},
	}
	var out bytes.Buffer
	if err := printList(&out, entries, false, now); err != nil {
		t.Fatal(err)
	}
	table := out.String()
	if n := strings.Count(table, "\n"); n != 4 {
		t.Errorf("%d lines for 3 entries and a header:\n%s", n, table)
	}
	if strings.ContainsRune(table, '\x1b') || strings.Contains(table, "s\tt") {
		t.Errorf("a control character reached the terminal: %q", table)
	}
	for _, want := range []string{`innocent\nbbbbbbbbbbbb`, `\x1b[2K`, `s\tt`, "Beamline 3 — ok ✓"} {
		if !strings.Contains(table, want) {
			t.Errorf("%q not in the table:\n%s", want, table)
		}
	}
}

func printsKey(out string) bool {
	_, _, ok := clitest.PrintedKey(out)
	return ok
}

// The CLI reads a config file's format from its name as caddy run does.
func TestIsCaddyfileName(t *testing.T) {
	for name, want := range map[string]bool{
		"Caddyfile": true, "/etc/caddy/Caddyfile": true, "caddyfile.prod": true, "bench/storage.Caddyfile": true,
		"site.caddyfile": true, "Caddyfile.json": false, "caddy.json": false, "config.yaml": false,
	} {
		if got := isCaddyfileName(name); got != want {
			t.Errorf("%s: %v, want %v", name, got, want)
		}
	}
}
