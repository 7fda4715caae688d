package zulipproxy

import (
	"bytes"
	"context"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
	"github.com/zwop/caddy-zulip-proxy/internal/outbox"
	"github.com/zwop/caddy-zulip-proxy/zulip"
	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
	"go.uber.org/zap"
)

// BenchmarkSendMessage is one send_message through the handler to an
// emulated Zulip on loopback over https, as production reaches Zulip:
// the proxy's hot path, allocations included (the emulator's too: it
// shares the process). Side by side, the same Zulip with its rate limit
// on: the fair share of the bot's budget off (a bot without a budget,
// which production never builds) and on, learned.
func BenchmarkSendMessage(b *testing.B) {
	emu := emulator.NewTLSServer(b, emulator.WithRateLimit(1<<20, time.Hour), emulator.WithMaxMessages(1000), emulator.WithMaxLogEntries(1000))
	ca := filepath.Join(b.TempDir(), "zulip.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: emu.HTTP.Certificate().Raw}), 0o600); err != nil {
		b.Fatal(err)
	}
	for _, share := range []bool{false, true} {
		name := "budget=off"
		if share {
			name = "budget=learned"
		}
		b.Run(name, func(b *testing.B) {
			store, key := benchStore(b)
			h := &Handler{
				Bots: map[string]*Bot{"default": {Site: emu.URL, Email: emulator.DemoBotEmail, APIKey: emulator.DemoBotKey, CertBundle: ca}},
				body: bodyReader{maxUpload: defaultMaxUpload}, Timeout: caddy.Duration(defaultTimeout),
				store: store, logger: zap.NewNop(), router: apiRouter,
			}
			var err error
			if h.bots, err = provisionBots(h.Bots, defaultTimeout); err != nil {
				b.Fatal(err)
			}
			defer h.Cleanup()
			if !share {
				bt := h.bots.byName["default"]
				bt.client.Observe(nil)
				bt.budget = nil
			}
			send := func() int {
				req := httptest.NewRequest("POST", "/send_message?topic=bench", strings.NewReader("content=hello+from+the+benchmark"))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				req.Header.Set("X-API-key", key)
				repl := caddy.NewReplacer()
				req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, repl))
				rec := httptest.NewRecorder()
				_ = h.ServeHTTP(rec, req, nil)
				return rec.Code
			}
			if code := send(); code != http.StatusOK {
				b.Fatalf("status %d", code)
			}
			if share && !h.bots.byName["default"].budget.known {
				b.Fatal("the budget was not learned")
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if code := send(); code != http.StatusOK {
					b.Fatalf("status %d", code)
				}
			}
		})
	}
}

// benchStore is a key store in a temporary folder with one key for the
// stream "general".
func benchStore(b *testing.B) (*keystore.Store, string) {
	store, err := keystore.OpenFile(filepath.Join(b.TempDir(), "clients.json"), keystore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	key, _, err := store.Add(context.Background(), keystore.NewEntry{Stream: "general"})
	if err != nil {
		b.Fatal(err)
	}
	return store, key
}

// cannedZulip answers a send with a fixed success and nothing else: what
// is left in BenchmarkSendMessageOwnWork is the proxy's own work. With
// limit set, the answer carries Zulip's rate-limit headers, as a Zulip
// with its limits on sends (its window's end an hour ahead).
type cannedZulip struct {
	limit, reset string
}

var cannedSent = []byte(`{"result":"success","msg":"","id":42,"automatic_new_visibility_policy":2}`)

func (z cannedZulip) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	h := http.Header{"Content-Type": {"application/json"}}
	if z.limit != "" {
		h["X-Ratelimit-Limit"] = []string{z.limit}
		h["X-Ratelimit-Remaining"] = []string{z.limit}
		h["X-Ratelimit-Reset"] = []string{z.reset}
	}
	return &http.Response{StatusCode: 200, ContentLength: int64(len(cannedSent)), Request: r,
		Header: h, Body: io.NopCloser(bytes.NewReader(cannedSent))}, nil
}

// BenchmarkSendMessageOwnWork is one send_message through the handler
// with Zulip's answer canned in process (no sockets, no net/http client):
// the proxy's own share of a request, which is what the bench's CPU
// ratio leaves to cut. Side by side, with the same answer (Zulip's
// rate-limit headers included): the fair share off (a bot without a
// budget, which production never builds), and on with the budget learned
// (each request admitted, its call charged, its account settled).
func BenchmarkSendMessageOwnWork(b *testing.B) {
	z := cannedZulip{limit: "1000000000", reset: strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)}
	b.Run("budget=off", func(b *testing.B) { benchOwnWork(b, z, false) })
	b.Run("budget=learned", func(b *testing.B) { benchOwnWork(b, z, true) })
}

// BenchmarkIdempotentSend is the proxy's own work for a send (Zulip's
// answer canned), 32 sends at a time as a busy proxy serves them, each
// with a new Idempotency-Key whose record is kept where the keys are:
// beside a key store file (bbolt; the changes of sends made at the same
// moment share one commit and its fsync), or in Caddy's file_system
// storage; beside the same sends without a key. cpu-ns/op is the
// process's user and system CPU a send: what the kernel does for an
// fsync counts, the wait for the disk does not.
func BenchmarkIdempotentSend(b *testing.B) {
	z := cannedZulip{limit: "1000000000", reset: strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)}
	b.Run("key=none", func(b *testing.B) { benchIdempotent(b, z, nil) })
	b.Run("key=file", func(b *testing.B) {
		ob := outbox.OpenFile(filepath.Join(b.TempDir(), "clients.outbox.db"))
		defer ob.Close()
		benchIdempotent(b, z, ob)
	})
	b.Run("key=storage", func(b *testing.B) {
		benchIdempotent(b, z, outbox.OpenStorage(&certmagic.FileStorage{Path: b.TempDir()}))
	})
}

func benchIdempotent(b *testing.B, z cannedZulip, ob *outbox.Outbox) {
	store, key := benchStore(b)
	c, err := zulip.NewClient(zulip.Config{Site: "https://zulip.invalid", Email: "bot@zulip.invalid", APIKey: "k", Transport: z})
	if err != nil {
		b.Fatal(err)
	}
	bt := newBot("default", c)
	bt.streamIDs.Store("general", int64(7))
	h := &Handler{body: bodyReader{maxUpload: defaultMaxUpload}, Timeout: caddy.Duration(defaultTimeout),
		store: store, logger: zap.NewNop(), router: apiRouter, outbox: ob,
		bots: botSet{byName: map[string]*bot{"default": bt}, def: "default", fallback: bt}}
	const body = "content=hello+from+the+benchmark"
	var n atomic.Int64
	send := func() int {
		req := httptest.NewRequest("POST", "/send_message?topic=bench", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-API-key", key)
		if ob != nil {
			req.Header.Set("Idempotency-Key", "bench-"+strconv.FormatInt(n.Add(1), 10))
		}
		req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
		w := &discardWriter{h: http.Header{}}
		_ = h.ServeHTTP(w, req, nil)
		return w.code
	}
	if code := send(); code != http.StatusOK {
		b.Fatalf("status %d", code)
	}
	b.ReportAllocs()
	b.SetParallelism(16) // 32 senders on 2 cores
	cpu := cpuTime()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if code := send(); code != http.StatusOK {
				b.Errorf("status %d", code)
				return
			}
		}
	})
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
}

// cpuTime is the process's user and system CPU so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchOwnWork(b *testing.B, z cannedZulip, share bool) {
	store, key := benchStore(b)
	c, err := zulip.NewClient(zulip.Config{Site: "https://zulip.invalid", Email: "bot@zulip.invalid", APIKey: "k", Transport: z})
	if err != nil {
		b.Fatal(err)
	}
	bt := newBot("default", c)
	if !share {
		bt = &bot{name: "default", client: c.Observe(nil)}
	}
	bt.streamIDs.Store("general", int64(7))
	h := &Handler{body: bodyReader{maxUpload: defaultMaxUpload}, Timeout: caddy.Duration(defaultTimeout),
		store: store, logger: zap.NewNop(), router: apiRouter,
		bots: botSet{byName: map[string]*bot{"default": bt}, def: "default", fallback: bt}}
	body := "content=hello+from+the+benchmark"
	req := httptest.NewRequest("POST", "/send_message?topic=bench", nil)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-API-key", key)
	req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
	rd := strings.NewReader(body)
	w := &discardWriter{h: http.Header{}}
	send := func() int {
		rd.Reset(body)
		req.Body = io.NopCloser(rd)
		req.ContentLength = int64(len(body))
		clear(w.h)
		w.code = 0
		_ = h.ServeHTTP(w, req, nil)
		return w.code
	}
	if code := send(); code != http.StatusOK {
		b.Fatalf("status %d", code)
	}
	if share && !bt.budget.known {
		b.Fatal("the budget was not learned")
	}
	b.ReportAllocs()
	for b.Loop() {
		if code := send(); code != http.StatusOK {
			b.Fatalf("status %d", code)
		}
	}
}

type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}
func (w *discardWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = 200
	}
	return len(p), nil
}
