package zulipproxy

import (
	"context"
	"encoding/json"
	"sort"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// instances are n proxies' buckets sharing one storage folder, as Caddy
// instances sharing file_system storage do; their clocks are the test's.
func sharedInstances(t *testing.T, n int, dir string, start time.Time) []*keyBuckets {
	t.Helper()
	st := &certmagic.FileStorage{Path: dir}
	out := make([]*keyBuckets, n)
	for i := range out {
		kb := &keyBuckets{m: map[string]*bucket{}, stop: make(chan struct{})}
		kb.sh = newSharing(st, zap.NewNop(), start)
		out[i] = kb
	}
	return out
}

// mostInAnyWindow is the most calls among times (sorted) that fall in
// any window of length w.
func mostInAnyWindow(times []time.Time, w time.Duration) int {
	most, j := 0, 0
	for i := range times {
		for times[i].Sub(times[j]) >= w {
			j++
		}
		most = max(most, i-j+1)
	}
	return most
}

// hammer has a client call key as fast as every tick, spread over the
// instances in turn, for d, each instance looking at the others' counts
// every syncEvery (their looks spread over the interval). It returns the
// times of the calls let through.
func hammer(t *testing.T, kbs []*keyBuckets, spec RateLimit, start time.Time, d, tick time.Duration) []time.Time {
	t.Helper()
	var ok []time.Time
	nextSync := make([]time.Time, len(kbs))
	for i := range kbs {
		nextSync[i] = start.Add(time.Duration(i+1) * syncEvery / time.Duration(len(kbs)))
	}
	for k, now := 0, start; now.Before(start.Add(d)); k, now = k+1, now.Add(tick) {
		for i, kb := range kbs {
			for !now.Before(nextSync[i]) {
				if err := kb.sync(context.Background(), nextSync[i]); err != nil {
					t.Fatal(err)
				}
				nextSync[i] = nextSync[i].Add(syncEvery)
			}
		}
		if kbs[k%len(kbs)].take("key1", spec, now).ok {
			ok = append(ok, now)
		}
	}
	sort.Slice(ok, func(i, j int) bool { return ok[i].Before(ok[j]) })
	return ok
}

// A key's rate_limit holds across instances that share storage, within
// the bound README states: a client spreading calls over 2 or 3
// instances, 10 a second against a limit of 10/10s, for a minute, gets
// at most 1.5 times what one instance lets it make in any window of the
// key's length, and over the whole minute no more than one instance's
// limit plus what the instances let through in one sync interval each.
func TestRateLimitHoldsAcrossInstances(t *testing.T) {
	spec := RateLimit{Events: 10, Window: caddy.Duration(10 * time.Second)}
	start := time.Unix(1_800_000_000, 0)
	const run, tick = time.Minute, 100 * time.Millisecond
	alone := hammer(t, sharedInstances(t, 1, t.TempDir(), start), spec, start, run, tick)
	aloneMost := mostInAnyWindow(alone, 10*time.Second)
	for _, n := range []int{2, 3} {
		got := hammer(t, sharedInstances(t, n, t.TempDir(), start), spec, start, run, tick)
		most := mostInAnyWindow(got, 10*time.Second)
		ratio := float64(most) / float64(aloneMost)
		t.Logf("%d instances: %d calls in the minute (one instance: %d); at most %d in any 10 s (one instance: %d): %.2fx",
			n, len(got), len(alone), most, aloneMost, ratio)
		if ratio > 1.5 {
			t.Errorf("%d instances let a key make %.2fx what one does in a window", n, ratio)
		}
		if len(got) > len(alone)+n*int(syncEvery/time.Second) {
			t.Errorf("%d instances let %d calls through in a minute, one instance %d", n, len(got), len(alone))
		}
	}
	// Unshared, each instance would let its own limit through.
	var unshared []time.Time
	for i := range 3 {
		kb := &keyBuckets{m: map[string]*bucket{}}
		for now := start; now.Before(start.Add(run)); now = now.Add(3 * tick) {
			if kb.take("key1", spec, now.Add(time.Duration(i)*tick)).ok {
				unshared = append(unshared, now)
			}
		}
	}
	t.Logf("3 instances not sharing: %d calls in the minute", len(unshared))
}

// What is published never holds a key, only key ids and counts, and an
// instance that stopped long ago is forgotten.
func TestRateLimitSharingFiles(t *testing.T) {
	dir := t.TempDir()
	start := time.Unix(1_800_000_000, 0)
	kbs := sharedInstances(t, 2, dir, start)
	spec := RateLimit{Events: 5, Window: caddy.Duration(time.Minute)}
	for range 3 {
		kbs[0].take("abc123", spec, start)
	}
	if err := kbs[0].sync(context.Background(), start.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	st := &certmagic.FileStorage{Path: dir}
	raw, err := st.Load(context.Background(), kbs[0].sh.file(kbs[0].sh.id))
	if err != nil {
		t.Fatal(err)
	}
	var doc limitsDoc
	if err := json.Unmarshal(raw, &doc); err != nil || doc.Keys["abc123"].Taken != 3 || doc.Keys["abc123"].Events != 5 {
		t.Fatalf("published %s (%v)", raw, err)
	}
	// The second instance started at the same time: it takes the three
	// calls from its own bucket for the key.
	if err := kbs[1].sync(context.Background(), start.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if st := kbs[1].take("abc123", spec, start.Add(time.Second)); st.remaining != 1 {
		t.Errorf("the second instance's bucket after the first's 3 calls and its own: %d left, want 1", st.remaining)
	}
	// A day later the first has published nothing: its file goes.
	if err := kbs[1].sync(context.Background(), start.Add(staleAfter+time.Hour)); err != nil {
		t.Fatal(err)
	}
	if st.Exists(context.Background(), kbs[0].sh.file(kbs[0].sh.id)) {
		t.Error("a stopped instance's counts were kept past staleAfter")
	}
}
