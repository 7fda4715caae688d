package zulipproxy

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// RateLimit is a token bucket per scoped key: Events calls per Window,
// in bursts of up to Events.
type RateLimit struct {
	// Events is how many calls a key may make per window.
	Events int `json:"events,omitempty"`
	// Window is the time over which Events are counted, e.g. 1m.
	Window caddy.Duration `json:"window,omitempty"`
}

func (rl RateLimit) set() bool { return rl.Events > 0 && rl.Window > 0 }

// every is the rate at which a bucket of this limit refills.
func (rl RateLimit) every() rate.Limit {
	return rate.Limit(float64(rl.Events) / time.Duration(rl.Window).Seconds())
}

func (rl RateLimit) String() string {
	return strconv.Itoa(rl.Events) + "/" + shortDuration(time.Duration(rl.Window))
}

// shortDuration writes a window as people write it: 1m, 1h30m, 90s, not
// Go's 1m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// parseRateLimit reads a per-key limit as create_client and the CLI take
// it: "<events>/<window>", such as 10/1m.
func parseRateLimit(s string) (RateLimit, error) {
	n, w, ok := strings.Cut(strings.TrimSpace(s), "/")
	events, err := strconv.Atoi(strings.TrimSpace(n))
	if !ok || err != nil || events <= 0 {
		return RateLimit{}, fmt.Errorf("rate limit %q: want <events>/<window>, such as 10/1m", s)
	}
	d, err := caddy.ParseDuration(strings.TrimSpace(w))
	if err != nil || d <= 0 {
		return RateLimit{}, fmt.Errorf("rate limit %q: want <events>/<window>, such as 10/1m", s)
	}
	return RateLimit{Events: events, Window: caddy.Duration(d)}, nil
}

// keyBuckets holds one token bucket per key that called recently. It
// lives in limiterPool, so buckets survive config reloads; buckets that
// are full again and unused for a window are dropped, so memory follows
// the keys in use, not every key ever seen.
type keyBuckets struct {
	mu   sync.Mutex
	m    map[string]*bucket
	stop chan struct{}
	// sh shares the counts with other instances; nil: this one alone.
	sh *sharing
}

type bucket struct {
	lim      *rate.Limiter
	spec     RateLimit
	lastUsed time.Time
	// taken counts the calls this instance let the key make, for the
	// other instances.
	taken uint64
}

func newKeyBuckets() *keyBuckets {
	kb := &keyBuckets{m: map[string]*bucket{}, stop: make(chan struct{})}
	go kb.every(time.Minute, kb.drop)
	return kb
}

// Destruct stops the buckets' goroutines when the last config lets go.
func (kb *keyBuckets) Destruct() error {
	close(kb.stop)
	return nil
}

// every runs f every d until the buckets are destructed.
func (kb *keyBuckets) every(d time.Duration, f func(now time.Time)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-kb.stop:
			return
		case now := <-t.C:
			f(now)
		}
	}
}

// drop forgets the buckets a fresh one would replace: full, and idle.
func (kb *keyBuckets) drop(now time.Time) {
	kb.mu.Lock()
	defer kb.mu.Unlock()
	for id, b := range kb.m {
		if now.Sub(b.lastUsed) > time.Duration(b.spec.Window) && b.lim.TokensAt(now) >= float64(b.spec.Events) {
			delete(kb.m, id)
		}
	}
}

// rateState is a key's bucket after a call, as Zulip reports its own:
// the limit, what is left, and when the bucket is full again.
type rateState struct {
	ok         bool
	limit      int
	remaining  int
	reset      time.Time
	retryAfter time.Duration
}

// take spends one token of key id's bucket, made or updated to spec.
func (kb *keyBuckets) take(id string, spec RateLimit, now time.Time) rateState {
	every := spec.every()
	kb.mu.Lock()
	b, found := kb.m[id]
	if !found {
		b = &bucket{lim: rate.NewLimiter(every, spec.Events), spec: spec}
		kb.m[id] = b
	} else if b.spec != spec {
		// A reload or the key's own limit changed it.
		b.lim.SetLimitAt(now, every)
		b.lim.SetBurstAt(now, spec.Events)
		b.spec = spec
	}
	b.lastUsed = now
	st := rateState{ok: b.lim.AllowN(now, 1), limit: spec.Events}
	if st.ok {
		b.taken++
	}
	kb.mu.Unlock()
	if st.ok && kb.sh != nil {
		kb.sh.dirty.Store(true)
	}
	tokens := b.lim.TokensAt(now)
	st.remaining = max(int(math.Floor(tokens)), 0)
	missing := float64(spec.Events) - tokens
	st.reset = now.Add(time.Duration(missing / float64(every) * float64(time.Second)))
	if !st.ok {
		st.retryAfter = time.Duration((1 - tokens) / float64(every) * float64(time.Second))
	}
	return st
}

// limiterPool shares the buckets between configs of one store.
var limiterPool = caddy.NewUsagePool()

// provisionLimits takes the buckets of the store at storeKey from
// limiterPool. They are shared through Caddy's storage with the other
// instances that use it, so a key's rate_limit holds across them.
func provisionLimits(ctx caddy.Context, storeKey string, server *RateLimit, logger *zap.Logger) (keyLimits, error) {
	v, loaded, err := limiterPool.LoadOrNew(storeKey, func() (caddy.Destructor, error) {
		kb := newKeyBuckets()
		kb.share(ctx.Storage(), logger.Named("ratelimit"))
		return kb, nil
	})
	if err != nil {
		return keyLimits{}, fmt.Errorf("rate limits: %w", err)
	}
	kl := keyLimits{server: server, own: new(sync.Map), buckets: v.(*keyBuckets), poolKey: storeKey}
	if loaded {
		kl.buckets.sh.storage.Store(&storageRef{ctx.Storage()})
	}
	return kl, nil
}

// keyLimits are a config's rate limits of scoped keys: the server's,
// each key's own, and the buckets, kept in limiterPool.
type keyLimits struct {
	server *RateLimit
	// own are the keys' own limits, parsed: text to RateLimit.
	own     *sync.Map
	buckets *keyBuckets
	// poolKey is the buckets' entry in limiterPool, for Cleanup.
	poolKey string
}

// of is the limit that applies to a scoped key: its own, else the
// server's; zero for none.
func (kl keyLimits) of(e *keystore.Entry) RateLimit {
	if own := e.RateLimit; own != "" {
		// Parsed once per distinct limit, not on every call: the store
		// keeps it as text.
		v, ok := kl.own.Load(own)
		if !ok {
			rl, _ := parseRateLimit(own) // zero when unreadable: the server's applies
			v, _ = kl.own.LoadOrStore(own, rl)
		}
		if rl := v.(RateLimit); rl.set() {
			return rl
		}
	}
	if kl.server != nil {
		return *kl.server
	}
	return RateLimit{}
}

// check spends one of the calling key's tokens, says how many are left
// in the headers Zulip uses, and refuses a call over the limit with 429
// before anything is read or forwarded.
func (kl keyLimits) check(w http.ResponseWriter, c *call) *apiError {
	if c.entry == nil || c.entry.Admin || kl.buckets == nil {
		return nil
	}
	spec := kl.of(c.entry)
	if !spec.set() {
		return nil
	}
	st := kl.buckets.take(c.entry.ID, spec, c.start)
	hdr := w.Header()
	hdr.Set("X-RateLimit-Limit", strconv.Itoa(st.limit))
	hdr.Set("X-RateLimit-Remaining", strconv.Itoa(st.remaining))
	hdr.Set("X-RateLimit-Reset", strconv.FormatInt(st.reset.Unix(), 10))
	if st.ok {
		return nil
	}
	metrics.limited.WithLabelValues("key_limit").Inc()
	return errRateLimited(c, "API usage exceeded rate limit: this key may make "+spec.String()+" calls", st.retryAfter, st.limit)
}

// errRateLimited is the proxy's own 429 as Zulip writes its own, so that
// Zulip's clients back off by it: Retry-After (Zulip's float seconds
// under /api/v1, whole seconds, at least 1, for the upstream service's
// clients; and in the body as Zulip's "retry-after"), and X-RateLimit-*
// with the limit that refused the call and Reset in epoch seconds.
func errRateLimited(c *call, msg string, wait time.Duration, limit int) *apiError {
	secs := wait.Seconds()
	retry := strconv.FormatInt(max(int64(math.Ceil(secs)), 1), 10)
	if c.route.key != keyHeader {
		retry = strconv.FormatFloat(secs, 'f', 3, 64)
	}
	e := newError(http.StatusTooManyRequests, codeRateLimited, msg)
	e.RetryAfter = math.Round(secs*1000) / 1000
	reset := time.Now().Add(wait)
	return e.setHeader("Retry-After", retry).
		setHeader("X-RateLimit-Limit", strconv.Itoa(limit)).
		setHeader("X-RateLimit-Remaining", "0").
		setHeader("X-RateLimit-Reset", strconv.FormatInt(int64(math.Ceil(float64(reset.UnixNano())/1e9)), 10))
}
