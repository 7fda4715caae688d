package zulipproxy

import (
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// A bucket refills at events per window, and is forgotten once it is full
// and idle, so memory follows the keys in use.
func TestKeyBuckets(t *testing.T) {
	kb := &keyBuckets{m: map[string]*bucket{}}
	spec := RateLimit{Events: 2, Window: caddy.Duration(time.Minute)}
	now := time.Unix(1_800_000_000, 0)
	for i, want := range []bool{true, true, false} {
		if st := kb.take("k", spec, now); st.ok != want {
			t.Fatalf("call %d: ok %v", i+1, st.ok)
		}
	}
	st := kb.take("k", spec, now)
	if st.remaining != 0 || st.retryAfter < 29*time.Second || st.retryAfter > 30*time.Second {
		t.Errorf("empty bucket: remaining %d, retry after %v (want 30s: one token a half minute)", st.remaining, st.retryAfter)
	}
	if st := kb.take("k", spec, now.Add(30*time.Second)); !st.ok {
		t.Error("no token after half a window")
	}
	kb.take("idle", spec, now)
	kb.drop(now.Add(30 * time.Second))
	if len(kb.m) != 2 {
		t.Errorf("%d buckets dropped too early", 2-len(kb.m))
	}
	kb.drop(now.Add(3 * time.Minute))
	if len(kb.m) != 0 {
		t.Errorf("%d full, idle buckets kept", len(kb.m))
	}
	// A changed limit (a reload, the key's own) applies to the bucket.
	kb.take("k", spec, now)
	if st := kb.take("k", RateLimit{Events: 10, Window: caddy.Duration(time.Minute)}, now); st.limit != 10 || !st.ok {
		t.Errorf("after the limit changed: %+v", st)
	}
}

// BenchmarkRateLimitKeys: the cost of a call's limit check, and the
// memory of 100,000 active keys' buckets.
func BenchmarkRateLimitKeys(b *testing.B) {
	kb := &keyBuckets{m: map[string]*bucket{}}
	spec := RateLimit{Events: 120, Window: caddy.Duration(time.Minute)}
	ids := make([]string, 100_000)
	for i := range ids {
		ids[i] = strconv.Itoa(1_000_000_000_000 + i)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	now := time.Now()
	for _, id := range ids {
		kb.take(id, spec, now)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perKey := float64(after.HeapAlloc-before.HeapAlloc) / float64(len(ids))
	i := 0
	for b.Loop() {
		kb.take(ids[i%len(ids)], spec, now)
		i++
	}
	b.ReportMetric(perKey, "heap-B/key")
}

func TestRateLimitString(t *testing.T) {
	for in, want := range map[string]string{"10/1m": "10/1m", "120/60s": "120/1m", "5/1h": "5/1h", "3/90m": "3/1h30m", "2/1500ms": "2/1.5s", "7/30s": "7/30s", "1/24h": "1/24h"} {
		rl, err := parseRateLimit(in)
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if got := rl.String(); got != want {
			t.Errorf("%s written as %q, want %q", in, got, want)
		}
		if back, err := parseRateLimit(rl.String()); err != nil || back != rl {
			t.Errorf("%s does not read back: %v %v", rl, back, err)
		}
	}
}
