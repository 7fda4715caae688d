package caddytest

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// rate_limit 3 1m: a key's 4th rapid call gets 429 with Retry-After and
// nothing forwarded, while another key still works; every answer to a
// scoped key says where its bucket stands, as Zulip's do; a reload keeps
// the buckets; a key made with its own limit uses it.
func TestRateLimitPerKey(t *testing.T) {
	store := newStore(t)
	key, keyID := scopedKey(t, store, "general")
	other, _ := scopedKey(t, store, "general")
	admin, _ := adminKey(t, store)
	start(t, config{store: store, extra: "rate_limit 3 1m"})
	send := func(k string) reply {
		body, ct := form("content", "limited")
		return request(t, "POST", "/send_message?topic=limits", body, withKey(k), ct)
	}
	for i := range 3 {
		r := send(key)
		if r.Status != 200 {
			t.Fatalf("call %d: %d %s", i+1, r.Status, r.Body)
		}
		if r.Header.Get("X-RateLimit-Limit") != "3" || r.Header.Get("X-RateLimit-Remaining") != strconv.Itoa(2-i) {
			t.Errorf("call %d: X-RateLimit-Limit %q Remaining %q", i+1, r.Header.Get("X-RateLimit-Limit"), r.Header.Get("X-RateLimit-Remaining"))
		}
		if reset, err := strconv.ParseInt(r.Header.Get("X-RateLimit-Reset"), 10, 64); err != nil || reset <= 0 {
			t.Errorf("call %d: X-RateLimit-Reset %q", i+1, r.Header.Get("X-RateLimit-Reset"))
		}
	}
	mark := zulipMark()
	r := send(key)
	assertError(t, r, 429, "rate limit")
	if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 60 {
		t.Errorf("Retry-After %q, want whole seconds up to a minute", r.Header.Get("Retry-After"))
	}
	if r.Header.Get("X-RateLimit-Limit") != "3" || r.Header.Get("X-RateLimit-Remaining") != "0" {
		t.Errorf("429: X-RateLimit-Limit %q Remaining %q", r.Header.Get("X-RateLimit-Limit"), r.Header.Get("X-RateLimit-Remaining"))
	}
	// Zulip's API gets Zulip's float Retry-After.
	zr := zreq(t, "POST", "/api/v1/messages", key, "type=stream&to=general&topic=limits&content=x")
	assertError(t, zr, 429, "rate limit")
	if ra := zr.Header.Get("Retry-After"); !strings.Contains(ra, ".") {
		t.Errorf("Zulip API Retry-After %q, want a float", ra)
	}
	assertNothingReachedZulip(t, mark)
	if r := send(other); r.Status != 200 {
		t.Errorf("another key: %d %s", r.Status, r.Body)
	}
	if r := request(t, "GET", "/clients", nil, withKey(admin)); r.Status != 200 || r.Header.Get("X-RateLimit-Limit") != "" {
		t.Errorf("admin calls are not limited: %d %v", r.Status, r.Header)
	}

	// The counts are published in Caddy's storage, where other instances
	// sharing it take them from their own buckets for the key.
	eventually(t, 10*time.Second, "the key's count published in Caddy's storage", func() bool {
		files, _ := filepath.Glob(filepath.Join(caddy.DefaultStorage.Path, "zulip_proxy", "ratelimit", "*.json"))
		for _, f := range files {
			if raw, err := os.ReadFile(f); err == nil && strings.Contains(string(raw), `"`+keyID+`":{"taken":3,`) {
				return true
			}
		}
		return false
	})

	// A reload keeps the buckets.
	start(t, config{store: store, extra: "rate_limit 3 1m\n\t\tmax_upload 10MiB"})
	assertError(t, send(key), 429, "rate limit")

	// A key with a limit of its own.
	cr := request(t, "POST", "/create_client?stream=general&rate_limit=1/1h", nil, withKey(admin))
	if cr.Status != 200 {
		t.Fatalf("create_client with rate_limit: %d %s", cr.Status, cr.Body)
	}
	m := cr.JSON(t)
	own := m["key"].(string)
	addSecret(own)
	if m["rate_limit"] != "1/1h" {
		t.Errorf("the key's rate_limit: %v", m["rate_limit"])
	}
	// Made by this server, the key works at once (a /me would spend its
	// one call).
	if r := send(own); r.Status != 200 || r.Header.Get("X-RateLimit-Limit") != "1" {
		t.Errorf("own limit, first call: %d %v", r.Status, r.Header.Get("X-RateLimit-Limit"))
	}
	assertError(t, send(own), 429, "1/1h")
	assertError(t, request(t, "POST", "/create_client?stream=general&rate_limit=lots", nil, withKey(admin)), 400, "rate_limit")
}
