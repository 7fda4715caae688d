package caddytest

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/zwop/caddy-zulip-proxy/internal/clitest"
	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

func TestHealth(t *testing.T) {
	start(t, config{store: newStore(t)})
	for _, p := range []string{"/health", "/api/health"} {
		r := request(t, "GET", p, nil)
		if r.Status != 200 {
			t.Fatalf("%s: %d %s", p, r.Status, r.Body)
		}
		m := r.JSON(t)
		if m["status"] != "OK" || m["version"] == "" || m["version"] == nil {
			t.Errorf("%s: %s", p, r.Body)
		}
	}
}

func TestUnknownKeyIsRefused(t *testing.T) {
	store := newStore(t)
	start(t, config{store: store})
	mark := zulipMark()
	for name, hdr := range map[string][]string{
		"no key":      nil,
		"unknown key": {withKey("zwop_notakeyatall")},
		"empty key":   {"X-API-key:"},
	} {
		t.Run(name, func(t *testing.T) {
			r := request(t, "GET", "/me", nil, hdr...)
			assertError(t, r, 401, "")
			if r.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
	assertNothingReachedZulip(t, mark)
}

func TestMeWithCLIKey(t *testing.T) {
	store := newStore(t)
	start(t, config{store: store})
	key, id := scopedKey(t, store, "general", "--name", "beamline 3", "--proposal", "1234")
	admin, adminID := adminKey(t, store)

	// The CLI wrote the file; the running server picks it up.
	var r reply
	eventually(t, 5*time.Second, "new key accepted", func() bool {
		r = request(t, "GET", "/me", nil, withKey(key))
		return r.Status == 200
	})
	m := r.JSON(t)
	if m["id"] != id || m["stream"] != "general" || m["name"] != "beamline 3" || m["proposal_no"] != float64(1234) || m["admin"] != false {
		t.Errorf("/me: %s", r.Body)
	}
	if strings.Contains(r.Body, key) || strings.Contains(r.Body, "hash") {
		t.Errorf("/me shows the key or its hash: %s", r.Body)
	}
	r = request(t, "GET", "/api/me", nil, withKey(admin))
	if m := r.JSON(t); r.Status != 200 || m["id"] != adminID || m["admin"] != true || m["stream"] != nil {
		t.Errorf("admin /me: %d %s", r.Status, r.Body)
	}
}

func TestRevokedKeyFailsWithinFiveSeconds(t *testing.T) {
	store := newStore(t)
	start(t, config{store: store})
	key, id := scopedKey(t, store, "general")
	eventually(t, 5*time.Second, "key accepted", func() bool {
		return request(t, "GET", "/me", nil, withKey(key)).Status == 200
	})
	if out, errOut, err := clitest.Run("revoke", "--store", store, id); err != nil || !strings.Contains(out, "revoked "+id) {
		t.Fatalf("revoke: %v %s %s", err, out, errOut)
	}
	revokedAt := time.Now()
	eventually(t, 5*time.Second, "revoked key refused", func() bool {
		return request(t, "GET", "/me", nil, withKey(key)).Status == 401
	})
	t.Logf("revocation took effect after %s", time.Since(revokedAt).Round(10*time.Millisecond))
	assertError(t, request(t, "GET", "/me", nil, withKey(key)), 401, "revoked")
}

func TestExpiredKeyIsRefused(t *testing.T) {
	store := newStore(t)
	start(t, config{store: store})
	key, _ := scopedKey(t, store, "general", "--expires", "1s")
	time.Sleep(1100 * time.Millisecond)
	eventually(t, 5*time.Second, "store reloaded", func() bool {
		return request(t, "GET", "/me", nil, withKey(key)).Status == 401
	})
	assertError(t, request(t, "GET", "/me", nil, withKey(key)), 401, "expired")
}

// A reload (as `caddy reload` does) keeps the store and every key, and a
// request in flight during it completes.
func TestReloadKeepsKeys(t *testing.T) {
	store := newStore(t)
	var keys []string
	for range 5 {
		k, _ := scopedKey(t, store, "general")
		keys = append(keys, k)
	}
	// A real grace period, as in production: requests in flight finish.
	start(t, config{store: store, grace: "10s"})
	if r := request(t, "POST", "/send_message?topic=reload", strings.NewReader("content=warm"), withKey(keys[0]),
		"Content-Type: application/x-www-form-urlencoded"); r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}

	// One send held by Zulip for 2 s while the config is reloaded.
	if err := env.emu.SetFault(emulator.Fault{Delay: 2 * time.Second, Count: 1, PathPrefix: sendPath}); err != nil {
		t.Fatal(err)
	}
	defer env.emu.ClearFault()
	slow := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("POST", base+"/send_message?topic=reload", strings.NewReader("content=in+flight"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-API-key", keys[1])
		resp, err := client.Do(req)
		if err != nil {
			slow <- 0
			return
		}
		resp.Body.Close()
		slow <- resp.StatusCode
	}()
	time.Sleep(300 * time.Millisecond)

	// Meanwhile, clients keep asking. Every answer must accept the key.
	// (A connection the kernel queued on the old listener can be reset by
	// the listener swap; that is Caddy's and the kernel's, not an answer,
	// so it is counted, not failed.)
	var stop atomic.Bool
	var answers, refused, resets atomic.Int64
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				req, _ := http.NewRequest("GET", base+"/me", nil)
				req.Header.Set("X-API-key", keys[(w+i)%len(keys)])
				resp, err := client.Do(req)
				if err != nil {
					resets.Add(1)
					continue
				}
				resp.Body.Close()
				answers.Add(1)
				if resp.StatusCode != 200 {
					refused.Add(1)
				}
			}
		}()
	}
	for i := range 3 {
		start(t, config{store: store, grace: "10s", extra: "timeout " + []string{"20s", "25s", "30s"}[i]})
	}
	time.Sleep(200 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	t.Logf("during 3 reloads: %d answers, %d refused, %d connection resets", answers.Load(), refused.Load(), resets.Load())
	if answers.Load() == 0 || refused.Load() != 0 {
		t.Errorf("keys refused during reload: %d of %d", refused.Load(), answers.Load())
	}
	if st := <-slow; st != 200 {
		t.Errorf("request in flight during the reload: status %d", st)
	}
	for _, k := range keys {
		if r := request(t, "GET", "/me", nil, withKey(k)); r.Status != 200 {
			t.Errorf("after reload: %d %s", r.Status, r.Body)
		}
	}
}

func TestCaddyfileTypoNamesTheLine(t *testing.T) {
	cfg := config{store: newStore(t), extra: "stor /tmp/x"}.String()
	line := 0
	for i, l := range strings.Split(cfg, "\n") {
		if strings.Contains(l, "stor /tmp/x") {
			line = i + 1
		}
	}
	caddytest.AssertLoadError(t, cfg, "caddyfile", "zulip_proxy: unrecognized subdirective 'stor', at Caddyfile:"+itoa(line))
}

func TestUnknownPathAndWrongMethod(t *testing.T) {
	store := newStore(t)
	start(t, config{store: store})
	key, _ := scopedKey(t, store, "general")
	mark := zulipMark()
	assertError(t, request(t, "GET", "/nothing_here", nil, withKey(key)), 404, "no such endpoint")
	assertError(t, request(t, "GET", "/api/v2/messages", nil, withKey(key)), 404, "no such endpoint")
	r := request(t, "GET", "/send_message?topic=x", nil, withKey(key))
	assertError(t, r, 405, "POST")
	if r.Header.Get("Allow") != "POST" {
		t.Errorf("Allow: %q", r.Header.Get("Allow"))
	}
	assertNothingReachedZulip(t, mark)
}

// The CLI finds the store through the config, as the server does.
func TestCLIFindsStoreInConfig(t *testing.T) {
	store := newStore(t)
	cfg := config{store: store}
	start(t, cfg)
	cfgFile := filepath.Join(filepath.Dir(store), "Caddyfile")
	if err := os.WriteFile(cfgFile, []byte(cfg.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	key, id := mustKey(t, "add-client", "--config", cfgFile, "--stream", "general")
	eventually(t, 5*time.Second, "key made through --config accepted", func() bool {
		return request(t, "GET", "/me", nil, withKey(key)).Status == 200
	})
	out, _, err := clitest.Run("list", "--store", store)
	if err != nil || !strings.Contains(out, id) || strings.Contains(out, key) {
		t.Errorf("list: %v\n%s", err, out)
	}
}

// countPath counts the requests Zulip received on path since mark.
func countPath(mark uint64, path string) int {
	n := 0
	for _, r := range env.emu.RequestsAfter(mark) {
		if r.Path == path {
			n++
		}
	}
	return n
}

// A reload keeps what the proxy learned from Zulip: a stream's id is
// looked up once, not once per stream per reload.
func TestReloadKeepsStreamIDs(t *testing.T) {
	if _, err := env.emu.AddStream("reload-cache"); err != nil && !strings.Contains(err.Error(), "exists") {
		t.Fatal(err)
	}
	store := newStore(t)
	key, _ := scopedKey(t, store, "reload-cache")
	send := func() {
		t.Helper()
		// The reload closed the old server's connections.
		client.CloseIdleConnections()
		body, ct := form("content", "cached")
		if r := request(t, "POST", "/send_message?topic=cache", body, withKey(key), ct); r.Status != 200 {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
	}
	start(t, config{store: store})
	mark := zulipMark()
	send()
	if n := countPath(mark, "/api/v1/get_stream_id"); n != 1 {
		t.Fatalf("first send: %d stream lookups, want 1", n)
	}
	mark = zulipMark()
	for _, size := range []string{"10MiB", "11MiB", "12MiB"} {
		// A changed config, or Caddy would not reload at all.
		start(t, config{store: store, extra: "max_upload " + size})
		send()
	}
	if n := countPath(mark, "/api/v1/get_stream_id"); n != 0 {
		t.Errorf("3 reloads and sends: %d stream lookups, want 0", n)
	}
}

// Sends that arrive together for a stream whose id is not known yet make
// one lookup between them.
func TestConcurrentStreamLookupsMerged(t *testing.T) {
	if _, err := env.emu.AddStream("lookup-merge"); err != nil && !strings.Contains(err.Error(), "exists") {
		t.Fatal(err)
	}
	store := newStore(t)
	key, _ := scopedKey(t, store, "lookup-merge")
	// Its own timeout makes its own bot, with nothing learned yet.
	start(t, config{store: store, extra: "timeout 17s"})
	if err := env.emu.SetFault(emulator.Fault{Delay: 300 * time.Millisecond, Count: 1, PathPrefix: "/api/v1/get_stream_id"}); err != nil {
		t.Fatal(err)
	}
	defer env.emu.ClearFault()
	mark := zulipMark()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if st, _ := sendAsync(t, key, "merge"); st != 200 {
				t.Errorf("status %d", st)
			}
		}()
	}
	wg.Wait()
	if n := countPath(mark, "/api/v1/get_stream_id"); n != 1 {
		t.Errorf("8 sends at once: %d stream lookups, want 1", n)
	}
}
