package zulipproxy

import (
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
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
				Bots:      map[string]*Bot{"default": {Site: emu.URL, Email: emulator.DemoBotEmail, APIKey: emulator.DemoBotKey, CertBundle: ca}},
				MaxUpload: defaultMaxUpload, Timeout: caddy.Duration(defaultTimeout),
				store: store, logger: zap.NewNop(), router: apiRouter,
			}
			var err error
			if h.bots, h.defaultBot, h.botKeys, err = provisionBots(h.Bots, defaultTimeout); err != nil {
				b.Fatal(err)
			}
			defer h.Cleanup()
			if !share {
				bt := h.bots["default"]
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
			if share && !h.bots["default"].budget.known {
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
