package caddytest

import (
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

// The fair share of a bot's Zulip budget (SPEC.md, "Fair use of a bot's
// Zulip budget"), through a real Caddy, with an emulated Zulip of its own
// enforcing its rate limit over https.

// limitedZulip is a Zulip of the test's own that allows each user n calls
// per window, and a proxy config in front of it. A Zulip of its own: the
// bot (and what the proxy learned of its budget) is not shared with other
// tests.
func limitedZulip(t *testing.T, n int, window time.Duration, store string) (*emulator.Server, config) {
	t.Helper()
	emu := emulator.NewTLSServer(t, emulator.WithRateLimit(n, window))
	ca := filepath.Join(t.TempDir(), "zulip.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: emu.HTTP.Certificate().Raw})
	if err := os.WriteFile(ca, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return emu, config{store: store, site: emu.URL, certBundle: ca}
}

// zulipRefusals counts the calls Zulip answered with 429.
func zulipRefusals(emu *emulator.Server) int {
	n := 0
	for _, r := range emu.Requests() {
		if r.Status == http.StatusTooManyRequests {
			n++
		}
	}
	return n
}

// assertProxy429 checks a refusal of the proxy's own: Retry-After, and
// Zulip's X-RateLimit-* headers with Reset in epoch seconds, so that
// Zulip's clients back off as they do for Zulip.
func assertProxy429(t *testing.T, h http.Header) {
	t.Helper()
	if ra, err := strconv.Atoi(h.Get("Retry-After")); err != nil || ra < 1 {
		t.Errorf("Retry-After %q, want whole seconds", h.Get("Retry-After"))
	}
	if n, err := strconv.Atoi(h.Get("X-RateLimit-Limit")); err != nil || n < 1 {
		t.Errorf("X-RateLimit-Limit %q", h.Get("X-RateLimit-Limit"))
	}
	if h.Get("X-RateLimit-Remaining") != "0" {
		t.Errorf("X-RateLimit-Remaining %q, want 0", h.Get("X-RateLimit-Remaining"))
	}
	reset, err := strconv.ParseInt(h.Get("X-RateLimit-Reset"), 10, 64)
	if now := time.Now().Unix(); err != nil || reset < now || reset > now+3600 {
		t.Errorf("X-RateLimit-Reset %q, want epoch seconds ahead", h.Get("X-RateLimit-Reset"))
	}
}

// warmUp has the proxy look the bot's user id and the stream general up
// (the admin's view of a key's messages: calls charged to the bot), then
// waits for Zulip's window to pass, so a test starts with ids cached and
// the whole budget free, as a bot in steady use does.
func warmUp(t *testing.T, admin, keyID string, window time.Duration) {
	t.Helper()
	if r := request(t, "GET", "/clients/"+keyID+"/messages", nil, withKey(admin)); r.Status != 200 {
		t.Fatalf("warming up: %d %s", r.Status, r.Body)
	}
	time.Sleep(window + 500*time.Millisecond)
}

// Idle keys reserve nothing. A bot with 42 keys, of which two are busy,
// and Zulip allowing 20 calls in 10 s: each busy key gets its equal part
// with one part held back for a key that starts calling, 6 calls, and
// none is refused. (Before, the share was 20/42 for everyone: 10 of 12
// refused while the budget sat unused.)
func TestIdleKeysDoNotStarveBusyOnes(t *testing.T) {
	store := newStore(t)
	admin, _ := adminKey(t, store)
	busy := make([]string, 2)
	var busyID string
	for i := range busy {
		busy[i], busyID = scopedKey(t, store, "general")
	}
	for range 40 {
		scopedKey(t, store, "general")
	}
	const window = 10 * time.Second
	emu, cfg := limitedZulip(t, 20, window, store)
	start(t, cfg)
	warmUp(t, admin, busyID, window)
	for i := range 6 {
		for _, k := range busy {
			if st, _ := sendAsync(t, k, "busy"); st != 200 {
				t.Fatalf("busy key's call %d: %d", i+1, st)
			}
		}
	}
	if n := zulipRefusals(emu); n != 0 {
		t.Errorf("Zulip refused %d calls", n)
	}
}

// A noisy key firing 40 calls at once gets at least half of the window;
// three keys that start calling after it still get two calls each, and
// Zulip refuses nothing: the proxy refused the noisy key's excess itself,
// with the headers Zulip's clients back off by.
func TestNoisyKeyLeavesRoomForKeysThatStartCalling(t *testing.T) {
	store := newStore(t)
	admin, _ := adminKey(t, store)
	noisy, noisyID := scopedKey(t, store, "general")
	quiet := make([]string, 3)
	for i := range quiet {
		quiet[i], _ = scopedKey(t, store, "general")
	}
	const window = 10 * time.Second
	emu, cfg := limitedZulip(t, 20, window, store)
	start(t, cfg)
	warmUp(t, admin, noisyID, window)
	var wg sync.WaitGroup
	var ok, refused atomic.Int32
	var once sync.Once
	for range 40 {
		wg.Go(func() {
			switch st, hdr := sendAsync(t, noisy, "noisy"); st {
			case 200:
				ok.Add(1)
			case 429:
				refused.Add(1)
				once.Do(func() { assertProxy429(t, hdr) })
			default:
				t.Errorf("noisy key: %d", st)
			}
		})
	}
	wg.Wait()
	t.Logf("the burst of 40: %d sent, %d refused by the proxy", ok.Load(), refused.Load())
	if ok.Load() < 10 {
		t.Errorf("the noisy key got %d calls, want at least half the window (10)", ok.Load())
	}
	for round := range 2 {
		for i, k := range quiet {
			if st, _ := sendAsync(t, k, "quiet"); st != 200 {
				t.Errorf("quiet key %d, call %d: %d", i+1, round+1, st)
			}
		}
	}
	if n := zulipRefusals(emu); n != 0 {
		t.Errorf("Zulip refused %d calls: the proxy forwarded more than the budget", n)
	}
}

// After an idle spell, the proxy's window is Zulip's whole window, not a
// second: a noisy key that bursts, obeys Retry-After and bursts again does
// not get a second share of the same Zulip window, and a key that starts
// calling then still gets its call.
func TestIdleSpellGivesNoSecondShare(t *testing.T) {
	store := newStore(t)
	noisy, _ := scopedKey(t, store, "general")
	quiet, _ := scopedKey(t, store, "general")
	const window = 4 * time.Second
	emu, cfg := limitedZulip(t, 20, window, store)
	start(t, cfg)
	if st, _ := sendAsync(t, noisy, "learn"); st != 200 {
		t.Fatalf("first call: %d", st)
	}
	time.Sleep(window + 500*time.Millisecond) // the idle spell
	burst := func() (sent int, retry time.Duration) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for range 20 {
			wg.Go(func() {
				st, hdr := sendAsync(t, noisy, "burst")
				mu.Lock()
				defer mu.Unlock()
				switch st {
				case 200:
					sent++
				case 429:
					if ra, err := strconv.Atoi(hdr.Get("Retry-After")); err == nil && time.Duration(ra)*time.Second > retry {
						retry = time.Duration(ra) * time.Second
					}
				default:
					t.Errorf("burst: %d", st)
				}
			})
		}
		wg.Wait()
		return sent, retry
	}
	first, retry := burst()
	if retry <= 0 || retry >= window {
		t.Fatalf("after the first burst (%d sent): Retry-After %s", first, retry)
	}
	time.Sleep(retry)
	second, _ := burst()
	t.Logf("first burst %d sent, Retry-After %s, second burst %d sent", first, retry, second)
	if st, _ := sendAsync(t, quiet, "quiet"); st != 200 {
		t.Errorf("a key that starts calling after the bursts: %d", st)
	}
	if n := zulipRefusals(emu); n != 0 {
		t.Errorf("Zulip refused %d calls", n)
	}
}

// Every call to Zulip a request causes is charged to its key. A send
// with a file followed by a field the endpoint refuses costs three calls
// (the upload, and the clean-up's GET /attachments and DELETE): five of
// them must not spend a window of 13 for Zulip to refuse, and every file
// must be cleaned up again.
func TestEveryZulipCallIsCharged(t *testing.T) {
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	emu, cfg := limitedZulip(t, 13, time.Minute, store)
	start(t, cfg)
	statuses := map[int]int{}
	for range 5 {
		body, ct := multipartBody(t,
			part{name: "content", data: []byte("with a file")},
			part{name: "image", filename: "plot.png", contentType: "image/png", data: []byte("png bytes")},
			part{name: "bogus", data: []byte("a field send_message does not take")})
		r := request(t, "POST", "/send_message?topic=charged", body, withKey(key), ct)
		statuses[r.Status]++
		if r.Status == 429 {
			assertProxy429(t, r.Header)
		}
	}
	t.Logf("answers by status: %v", statuses)
	if n := zulipRefusals(emu); n != 0 {
		t.Errorf("Zulip refused %d calls", n)
	}
	if statuses[429] == 0 {
		t.Errorf("no request was refused: each was charged less than it cost")
	}
	if n := emu.UploadCount(); n != 0 {
		t.Errorf("%d file(s) left in Zulip by requests answered with an error", n)
	}
}

// Only authenticated calls feed a bot's budget: a 429 answered to the
// anonymous server_settings (a per-address limit, a CDN in front of
// Zulip) pauses none of the bot's keys.
func TestAnonymous429PausesNothing(t *testing.T) {
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	emu, cfg := limitedZulip(t, 200, time.Minute, store)
	start(t, cfg)
	if st, _ := sendAsync(t, key, "before"); st != 200 {
		t.Fatalf("first send: %d", st)
	}
	if err := emu.SetFault(emulator.Fault{RateLimited: true, RetryAfter: 30, Count: 1, PathPrefix: "/api/v1/server_settings"}); err != nil {
		t.Fatal(err)
	}
	if r := request(t, "GET", "/api/v1/server_settings", nil); r.Status != 429 {
		t.Fatalf("server_settings under the fault: %d %s", r.Status, r.Body)
	}
	if st, _ := sendAsync(t, key, "after"); st != 200 {
		t.Errorf("a key's send after an anonymous 429: %d", st)
	}
}
