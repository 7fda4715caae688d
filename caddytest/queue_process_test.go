package caddytest

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

// childEnv names the Caddyfile a copy of this test binary runs as a
// Caddy of its own (TestMain), so a test can kill it with SIGKILL.
const childEnv = "ZWOP_CADDY_CHILD"

// cliEnv holds the arguments (separated by \x1f) a copy of this test
// binary runs the caddy command with.
const cliEnv = "ZWOP_CADDY_ARGS"

// caddyChild is a Caddy in a process of its own.
type caddyChild struct {
	cmd  *exec.Cmd
	base string
	log  string
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "localhost:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// childConfig is a proxy on port in front of the run's Zulip; where
// says where its keys are (a `store` line, or none for Caddy's storage)
// and global adds global options.
func childConfig(t *testing.T, port int, where, global string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "child.caddyfile")
	log := strings.TrimSuffix(path, ".caddyfile") + ".log"
	text := fmt.Sprintf(`{
	admin off
	persist_config off
	auto_https off
	skip_install_trust
	%s
	log {
		output file %s
		level DEBUG
	}
}

http://localhost:%d {
	zulip_proxy {
		bot default {
			site %s
			email %s
			api_key {env.%s}
			cert_bundle %s
		}
		%s
		access_log_filtered
	}
}
`, global, log, port, env.emu.URL, emulator.DemoBotEmail, botKeyEnv, env.caFile, where)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startChild runs the Caddyfile at path in a process of its own and
// waits until it answers.
func startChild(t *testing.T, path string, port int) *caddyChild {
	t.Helper()
	out, err := os.Create(path + ".out")
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+path)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &caddyChild{cmd: cmd, base: fmt.Sprintf("http://localhost:%d", port), log: strings.TrimSuffix(path, ".caddyfile") + ".log"}
	t.Cleanup(func() {
		c.kill()
		out.Close()
		c.assertNoSecrets(t)
		if t.Failed() {
			raw, _ := os.ReadFile(c.log)
			lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
			var keep []string
			for _, l := range lines {
				if !strings.Contains(l, `"msg":"zulip call"`) && !strings.Contains(l, `"msg":"send queued"`) && !strings.Contains(l, `"msg":"queued send delivered"`) {
					keep = append(keep, l)
				}
			}
			t.Logf("the last lines of %s's log:\n%s", c.base, strings.Join(keep[max(len(keep)-60, 0):], "\n"))
			if d := os.Getenv("ZWOP_KEEP_CHILD_LOGS"); d != "" {
				os.WriteFile(filepath.Join(d, filepath.Base(filepath.Dir(c.log))+".log"), raw, 0o600)
			}
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := fresh.Get(c.base + "/health"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return c
			}
		}
		if time.Now().After(deadline) {
			raw, _ := os.ReadFile(path + ".out")
			t.Fatalf("the child Caddy did not answer within 30s:\n%s", raw)
		}
	}
}

// kill ends the child with SIGKILL: no clean-up runs, as in a crash.
func (c *caddyChild) kill() {
	if c.cmd.ProcessState == nil {
		_ = c.cmd.Process.Signal(syscall.SIGKILL)
		_ = c.cmd.Wait()
	}
}

func (c *caddyChild) assertNoSecrets(t *testing.T) {
	raw, err := os.ReadFile(c.log)
	if err != nil {
		t.Errorf("the child's log: %v", err)
		return
	}
	for _, s := range secrets() {
		if strings.Contains(string(raw), s) {
			t.Errorf("a key reached the child's log")
		}
	}
}

// sendMany queues per sends for each key through base, content
// "<prefix>k<key> #<n>", all at once across keys; each must be 202.
func sendMany(t *testing.T, base string, keys []string, per int, prefix string) {
	t.Helper()
	var wg sync.WaitGroup
	for k, key := range keys {
		wg.Go(func() {
			for i := range per {
				req, _ := http.NewRequest("POST", base+"/send_message?topic="+url.QueryEscape(fmt.Sprintf("%sk%d", prefix, k)),
					strings.NewReader("content="+url.QueryEscape(fmt.Sprintf("%sk%d #%03d", prefix, k, i))))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				req.Header.Set("X-API-key", key)
				resp, err := client.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusAccepted {
					t.Errorf("send %d of key %d: %d, want 202", i, k, resp.StatusCode)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
}

// assertEachOnceInOrder checks that Zulip holds every send of sendMany
// exactly once, each key's in the order it made them.
func assertEachOnceInOrder(t *testing.T, prefix string, keys, per int) {
	t.Helper()
	msgs := messagesWith(prefix)
	if len(msgs) != keys*per {
		seen := map[string]int{}
		for _, m := range msgs {
			if seen[m.Content]++; seen[m.Content] == 2 {
				t.Errorf("%q twice", m.Content)
			}
		}
		t.Fatalf("Zulip holds %d of the sends, want %d", len(msgs), keys*per)
	}
	next := make([]int, keys)
	for _, m := range msgs {
		var k, i int
		if _, err := fmt.Sscanf(strings.TrimPrefix(m.Content, prefix), "k%d #%d", &k, &i); err != nil || k >= keys {
			t.Fatalf("unexpected message %q", m.Content)
		}
		if i != next[k] {
			t.Fatalf("key %d: message #%d came where #%d was due", k, i, next[k])
		}
		next[k]++
	}
}

// slowZulip holds every send's answer back a while, so that a drain is
// under way when an instance dies.
func slowZulip(t *testing.T, d time.Duration) {
	t.Helper()
	if err := env.emu.SetFault(emulator.Fault{Delay: d, PathPrefix: "/api/v1/messages", Method: "POST"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.emu.ClearFault)
}

// kill -9 mid-drain with 500 sends queued in a key store file; the
// restarted instance delivers the rest, each once: the send a kill cut
// short is found in Zulip, not sent again.
func TestQueueSurvivesKill9(t *testing.T) {
	store := newStore(t)
	var keys []string
	for range 4 {
		k, _ := scopedKey(t, store, "general", "--queued")
		keys = append(keys, k)
	}
	port := freePort(t)
	cfg := childConfig(t, port, "store "+store, "")
	first := startChild(t, cfg, port)
	zulipDown(t)
	const per = 125
	sendMany(t, first.base, keys, per, "kill9 ")

	slowZulip(t, 20*time.Millisecond)
	eventually(t, time.Minute, "the drain under way", func() bool { return len(messagesWith("kill9 ")) >= 100 })
	first.kill()
	if n := len(messagesWith("kill9 ")); n >= 4*per {
		t.Fatalf("all %d delivered before the kill: the test proves nothing", n)
	}
	startChild(t, cfg, port)
	eventually(t, 2*time.Minute, "all 500 delivered", func() bool { return len(messagesWith("kill9 ")) >= 4*per })
	time.Sleep(300 * time.Millisecond) // a duplicate would come now
	assertEachOnceInOrder(t, "kill9 ", len(keys), per)
}

// Two instances share Caddy's storage: each queued send is delivered by
// one at a time, and when one dies mid-drain the other takes its keys
// over (the storage's locks go stale), each send landing once.
func TestQueueTakenOverWhenAnInstanceDies(t *testing.T) {
	dir := t.TempDir()
	storage := "storage file_system " + dir
	portA, portB := freePort(t), freePort(t)
	cfgA := childConfig(t, portA, "", storage)
	cfgB := childConfig(t, portB, "", storage)
	var keys []string
	for range 4 {
		k, _ := mustKey(t, "add-client", "--config", cfgA, "--stream", "general", "--queued")
		keys = append(keys, k)
	}
	a := startChild(t, cfgA, portA)
	startChild(t, cfgB, portB)
	zulipDown(t)
	const per = 50
	sendMany(t, a.base, keys, per, "takeover ")

	slowZulip(t, 40*time.Millisecond)
	eventually(t, time.Minute, "the drain under way", func() bool { return len(messagesWith("takeover ")) >= 30 })
	a.kill()
	if n := len(messagesWith("takeover ")); n >= 4*per {
		t.Fatalf("all %d delivered before the kill: the test proves nothing", n)
	}
	eventually(t, 40*time.Second, "all 200 delivered", func() bool { return len(messagesWith("takeover ")) >= 4*per })
	time.Sleep(300 * time.Millisecond)
	assertEachOnceInOrder(t, "takeover ", len(keys), per)
}
