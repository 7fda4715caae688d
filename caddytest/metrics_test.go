package caddytest

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

// The module's metrics are in Caddy's own /metrics on the admin address,
// with no global option, and their labels are bounded: never a key id, a
// stream or a topic.
func TestMetricsInCaddysRegistry(t *testing.T) {
	// An emulator with Zulip's rate limit on, which reports the budget.
	emu := emulator.NewServer(t)
	store := newStore(t)
	key, id := scopedKey(t, store, "general")
	scopedKey(t, store, "general") // never used
	adminKey(t, store)
	start(t, config{store: store, site: emu.URL, extra: "rate_limit 2 1m"})
	body, ct := form("content", "counted")
	if r := request(t, "POST", "/send_message?topic=metrics-topic", body, withKey(key), ct); r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	up, upCT := multipartBody(t, part{name: "file", filename: "m.txt", data: []byte("twelve bytes")})
	request(t, "POST", "/upload_file", up, withKey(key), upCT)
	request(t, "POST", "/send_message?topic=x&to=other", strings.NewReader("content=x"), withKey(key), ct) // limited: the 3rd call
	request(t, "GET", "/nowhere", nil)

	resp, err := http.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(raw)
	for _, want := range []string{
		`caddy_zulip_proxy_requests_total{endpoint="send_message",outcome="ok"} `,
		`caddy_zulip_proxy_requests_total{endpoint="upload_file",outcome="ok"} `,
		`caddy_zulip_proxy_requests_total{endpoint="send_message",outcome="rate_limited"} `,
		`caddy_zulip_proxy_limited_total{reason="key_limit"} `,
		`caddy_zulip_proxy_zulip_request_duration_seconds_bucket{endpoint="send_message",le="`,
		`caddy_zulip_proxy_bot_budget_remaining{bot="default"} `,
		`caddy_zulip_proxy_keys{state="active",store="` + store + `"} `,
		`caddy_zulip_proxy_keys{state="admin",store="` + store + `"} `,
		`caddy_zulip_proxy_keys_last_used{store="` + store + `",within="1h"} 1`,
		`caddy_zulip_proxy_keys_last_used{store="` + store + `",within="never"} 1`,
		`caddy_zulip_proxy_keys_last_used{store="` + store + `",within="30d"} 0`,
		`caddy_zulip_proxy_store_errors_total`,
		`caddy_zulip_proxy_upload_bytes_total `,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	var ours []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, "caddy_zulip_proxy_") {
			ours = append(ours, l)
		}
	}
	joined := strings.Join(ours, "\n")
	for _, leak := range []string{id, "general", "metrics-topic", key} {
		if strings.Contains(joined, leak) {
			t.Errorf("a metric label carries %q", leak)
		}
	}
	if m := regexp.MustCompile(`caddy_zulip_proxy_upload_bytes_total (\d+)`).FindStringSubmatch(joined); m == nil || m[1] == "0" {
		t.Errorf("upload bytes not counted: %v", m)
	}
}
