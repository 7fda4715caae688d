package zulipproxy

import (
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

// sendThrough sends a message through h with an Idempotency-Key.
func sendThrough(h *Handler, key, idem, content string) *httptest.ResponseRecorder {
	req := httptest.NewRequest("POST", "/send_message?topic=instances", strings.NewReader("content="+content))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-API-key", key)
	req.Header.Set("Idempotency-Key", idem)
	req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
	rec := httptest.NewRecorder()
	_ = h.ServeHTTP(rec, req, nil)
	return rec
}

// Two instances sharing Caddy's storage (the same folder, each with its
// own key store, outbox and watcher, as two processes would have): a
// retry that reaches the other instance gets the first answer, and while
// the first is served there, a 409.
func TestIdempotencyAcrossInstances(t *testing.T) {
	emu := emulator.NewTLSServer(t)
	ca := filepath.Join(t.TempDir(), "zulip.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: emu.HTTP.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := `{"bots": {"default": {"site": "` + emu.URL + `", "email": "` + emulator.DemoBotEmail + `", "api_key": "` +
		emulator.DemoBotKey + `", "cert_bundle": "` + ca + `"}}}`
	dir := t.TempDir()
	// One folder under two names: two instances, not one shared in
	// this process's pools.
	one := provisionWith(t, map[string]string{"module": "file_system", "root": dir}, cfg)
	two := provisionWith(t, map[string]string{"module": "file_system", "root": dir + "/."}, cfg)
	if one.store == two.store || one.outbox == two.outbox {
		t.Fatal("the two instances share this process's store or outbox")
	}
	key, _, err := one.store.Add(context.Background(), keystore.NewEntry{Stream: emulator.DemoStream})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, ok := two.store.Lookup(key); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the second instance did not pick the key up")
		}
	}

	first := sendThrough(one, key, "across-1", "once+only")
	if first.Code != 200 {
		t.Fatalf("first, on one: %d %s", first.Code, first.Body)
	}
	before := len(emu.Messages())
	again := sendThrough(two, key, "across-1", "once+only")
	if again.Code != 200 || again.Body.String() != first.Body.String() || again.Header().Get("Idempotent-Replayed") != "true" {
		t.Errorf("the retry, on two: %d %s", again.Code, again.Body)
	}
	if n := len(emu.Messages()) - before; n != 0 {
		t.Errorf("%d more messages in Zulip", n)
	}

	// While one serves a slow request, two says 409.
	if err := emu.SetFault(emulator.Fault{Delay: time.Second, Count: 1, PathPrefix: "/api/v1/messages", Method: "POST"}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if r := sendThrough(one, key, "across-2", "slow"); r.Code != 200 {
			t.Errorf("the slow one: %d %s", r.Code, r.Body)
		}
	})
	time.Sleep(300 * time.Millisecond)
	if r := sendThrough(two, key, "across-2", "slow"); r.Code != http.StatusConflict || !strings.Contains(r.Body.String(), "IDEMPOTENCY_KEY_IN_USE") {
		t.Errorf("during the first, on two: %d %s", r.Code, r.Body)
	}
	wg.Wait()
}

// A request's query is described as url.Values.Encode describes it,
// whether or not it is parsed for that: a retry sending its parameters
// in another order or escaped another way is the same request.
func TestCanonicalQuery(t *testing.T) {
	for _, raw := range []string{"", "topic=bench", "topic=", "topic", "=x", "topic=a+b", "topic=a%20b", "b=1&a=2",
		"topic=bench&topic=other", "topic=BL3%2Fscan", "t=a;b", "t=%zz", "t=é", "t==", "t=a=b", "ä=1", "topic=x.y-z_~"} {
		v, _ := url.ParseQuery(raw)
		if got, want := canonicalQuery(raw), v.Encode(); got != want {
			t.Errorf("%q: %q, want %q", raw, got, want)
		}
	}
	if canonicalQuery("b=1&a=2") != canonicalQuery("a=2&b=1") || canonicalQuery("t=a+b") != canonicalQuery("t=a%20b") {
		t.Error("one request described two ways")
	}
}
