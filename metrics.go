package zulipproxy

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
	"github.com/zwop/caddy-zulip-proxy/internal/outbox"
	"github.com/zwop/caddy-zulip-proxy/zulip"
)

// The module's metrics, in Caddy's registry (served by Caddy's admin
// /metrics, no global option needed). Labels are bounded: a route name,
// an outcome class, a bot's or a store's configured name, a reason; never
// a key id, a stream or a topic. The collectors are made once, as Caddy's own
// modules do, and registered with each config's registry.
var metrics = struct {
	requests     *prometheus.CounterVec
	zulipSeconds *prometheus.HistogramVec
	limited      *prometheus.CounterVec
	botBudget    *prometheus.GaugeVec
	storeErrors  *prometheus.CounterVec
	uploadBytes  prometheus.Counter
	idempotency  *prometheus.CounterVec
	queued       *prometheus.CounterVec
	queueRefused prometheus.Counter
	delivered    prometheus.Counter
	failed       *prometheus.CounterVec
	botUp        *prometheus.GaugeVec
}{
	requests: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "zulip_proxy", Name: "requests_total",
		Help: "Requests answered, by route and outcome (ok, refused, rate_limited, zulip_error, error).",
	}, []string{"endpoint", "outcome"}),
	zulipSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "caddy", Subsystem: "zulip_proxy", Name: "zulip_request_duration_seconds",
		Help:    "Time from a request's arrival to Zulip's last answer for it, for requests that reached Zulip, by route.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"endpoint"}),
	limited: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "zulip_proxy", Name: "limited_total",
		Help: "Calls the proxy refused with 429 itself, by reason (key_limit: the key's rate_limit; bot_budget: the key's share of its bot's Zulip budget is spent; zulip_backoff: Zulip said 429 and its Retry-After runs; uploads: max_uploads_per_key).",
	}, []string{"reason"}),
	botBudget: prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "zulip_proxy", Name: "bot_budget_remaining",
		Help: "Each bot's Zulip rate-limit budget left, from Zulip's last X-RateLimit-Remaining.",
	}, []string{"bot"}),
	storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "zulip_proxy", Name: "store_errors_total",
		Help: "Key store failures, by kind (reload: the document could not be read or adopted; write: a change could not be written).",
	}, []string{"kind"}),
	uploadBytes: prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "zulip_proxy", Name: "upload_bytes_total",
		Help: "Bytes of files streamed to Zulip.",
	}),
	idempotency: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "zulip_proxy", Name: "idempotent_requests_total",
		Help: "Writes with an Idempotency-Key answered from what was kept, by outcome (replayed: the first answer again, nothing reached Zulip; found: an uncertain write found in Zulip; reused: the key was used for another request; in_use: the first request was still being served).",
	}, []string{"outcome"}),
	queued: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "zulip_proxy", Name: "queue_queued_total",
		Help: "Sends queued for later delivery, by reason (zulip: Zulip was unreachable, failing, slow or said 429; budget: the bot's budget or the key's share was spent; behind: the key had sends queued already).",
	}, []string{"reason"}),
	queueRefused: prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "zulip_proxy", Name: "queue_full_total",
		Help: "Sends refused with 503 QUEUE_FULL: their key's queue was at a bound.",
	}),
	delivered: prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "zulip_proxy", Name: "queue_delivered_total",
		Help: "Queued sends delivered to Zulip (found there after an uncertain attempt included).",
	}),
	failed: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "zulip_proxy", Name: "queue_failed_total",
		Help: "Queued sends that failed, by reason (refused: Zulip refused the send; expired: older than the queue's max_age; key_unusable: the key was revoked or expired meanwhile).",
	}, []string{"reason"}),
	botUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "zulip_proxy", Name: "bot_up",
		Help: "1 when the bot's Zulip answers and takes its credentials, 0 when it cannot be reached or refuses them (see /health); absent until first checked.",
	}, []string{"bot"}),
}

// keysCollector reports the keys of every store a config's handlers use,
// by state, at each scrape; one per metrics registry, which every handler
// of the config adds its store to.
type keysCollector struct {
	mu     sync.Mutex
	stores map[string]*keystore.Store // by label: the file, or "storage"
}

var keysDesc = prometheus.NewDesc("caddy_zulip_proxy_keys", "Keys in each store, by state (active, admin, expired, revoked).", []string{"store", "state"}, nil)

// keysUsedDesc tells active keys in use from forgotten ones (candidates
// for revoking), from the last-used times the store keeps.
var keysUsedDesc = prometheus.NewDesc("caddy_zulip_proxy_keys_last_used",
	"Active scoped keys in each store by when they were last used: within 1h, 24h, 7d, 30d, longer ago, or never.", []string{"store", "within"}, nil)

// lastUsedBuckets are keysUsedDesc's labels, nearest first.
var lastUsedBuckets = []struct {
	label string
	age   time.Duration
}{{"1h", time.Hour}, {"24h", 24 * time.Hour}, {"7d", 7 * 24 * time.Hour}, {"30d", 30 * 24 * time.Hour}}

func (kc *keysCollector) add(label string, s *keystore.Store) {
	kc.mu.Lock()
	defer kc.mu.Unlock()
	kc.stores[label] = s
}

func (kc *keysCollector) Describe(ch chan<- *prometheus.Desc) { ch <- keysDesc; ch <- keysUsedDesc }

func (kc *keysCollector) Collect(ch chan<- prometheus.Metric) {
	kc.mu.Lock()
	stores := maps.Clone(kc.stores)
	kc.mu.Unlock()
	now := time.Now()
	for label, s := range stores {
		counts := map[string]float64{"active": 0, "admin": 0, "expired": 0, "revoked": 0}
		used := map[string]float64{"1h": 0, "24h": 0, "7d": 0, "30d": 0, "longer": 0, "never": 0}
		// Each, not List: a scrape of a store of 100,000 keys then
		// copies nothing (List made 24 MB of garbage a scrape there).
		s.Each(func(e *keystore.Entry, lastUsed time.Time) {
			switch err := e.Usable(now); {
			case errors.Is(err, keystore.ErrKeyRevoked):
				counts["revoked"]++
			case errors.Is(err, keystore.ErrKeyExpired):
				counts["expired"]++
			case e.Admin:
				counts["admin"]++
			default:
				counts["active"]++
				used[lastUsedLabel(lastUsed, now)]++
			}
		})
		for state, n := range counts {
			ch <- prometheus.MustNewConstMetric(keysDesc, prometheus.GaugeValue, n, label, state)
		}
		for within, n := range used {
			ch <- prometheus.MustNewConstMetric(keysUsedDesc, prometheus.GaugeValue, n, label, within)
		}
	}
}

func lastUsedLabel(t time.Time, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	for _, b := range lastUsedBuckets {
		if now.Sub(t) <= b.age {
			return b.label
		}
	}
	return "longer"
}

// queueCollector reports the queued sends of every outbox a config's
// handlers use, at each scrape.
type queueCollector struct {
	mu       sync.Mutex
	outboxes map[string]*outbox.Outbox // by store label
}

var (
	queueSendsDesc  = prometheus.NewDesc("caddy_zulip_proxy_queue_sends", "Sends waiting in each store's queue.", []string{"store"}, nil)
	queueBytesDesc  = prometheus.NewDesc("caddy_zulip_proxy_queue_bytes", "Bytes the sends waiting in each store's queue hold (topics, contents, files).", []string{"store"}, nil)
	queueOldestDesc = prometheus.NewDesc("caddy_zulip_proxy_queue_oldest_age_seconds", "Age of the oldest send waiting in each store's queue; 0 when none waits.", []string{"store"}, nil)
)

func (qc *queueCollector) add(label string, o *outbox.Outbox) {
	qc.mu.Lock()
	defer qc.mu.Unlock()
	qc.outboxes[label] = o
}

func (qc *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueSendsDesc
	ch <- queueBytesDesc
	ch <- queueOldestDesc
}

func (qc *queueCollector) Collect(ch chan<- prometheus.Metric) {
	qc.mu.Lock()
	obs := maps.Clone(qc.outboxes)
	qc.mu.Unlock()
	for label, o := range obs {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := o.QueueStats(ctx)
		cancel()
		if err != nil {
			continue
		}
		age := 0.0
		if !st.Oldest.IsZero() {
			age = max(time.Since(st.Oldest).Seconds(), 0)
		}
		ch <- prometheus.MustNewConstMetric(queueSendsDesc, prometheus.GaugeValue, float64(st.Count), label)
		ch <- prometheus.MustNewConstMetric(queueBytesDesc, prometheus.GaugeValue, float64(st.Bytes), label)
		ch <- prometheus.MustNewConstMetric(queueOldestDesc, prometheus.GaugeValue, age, label)
	}
}

// registerMetrics adds the module's collectors to this config's registry.
func registerMetrics(reg *prometheus.Registry, storeLabel string, store *keystore.Store, ob *outbox.Outbox) error {
	if reg == nil {
		return nil
	}
	// Shown at 0 from the start, so an alert can be written before the
	// first failure.
	for _, kind := range []string{"reload", "write"} {
		metrics.storeErrors.WithLabelValues(kind)
	}
	for _, reason := range []string{"key_limit", "bot_budget", "zulip_backoff", "uploads"} {
		metrics.limited.WithLabelValues(reason)
	}
	for _, reason := range []string{"zulip", "budget", "behind"} {
		metrics.queued.WithLabelValues(reason)
	}
	for _, reason := range failReasons {
		metrics.failed.WithLabelValues(reason)
	}
	for _, c := range []prometheus.Collector{metrics.requests, metrics.zulipSeconds, metrics.limited,
		metrics.botBudget, metrics.storeErrors, metrics.uploadBytes, metrics.idempotency,
		metrics.queued, metrics.queueRefused, metrics.delivered, metrics.failed, metrics.botUp} {
		if err := reg.Register(c); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
			return err
		}
	}
	// Another handler of this config may have registered the keys'
	// collector: its store joins that one.
	kc := &keysCollector{stores: map[string]*keystore.Store{storeLabel: store}}
	if err := reg.Register(kc); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return err
		}
		if existing, ok := are.ExistingCollector.(*keysCollector); ok {
			existing.add(storeLabel, store)
		}
	}
	qc := &queueCollector{outboxes: map[string]*outbox.Outbox{storeLabel: ob}}
	if err := reg.Register(qc); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return err
		}
		if existing, ok := are.ExistingCollector.(*queueCollector); ok {
			existing.add(storeLabel, ob)
		}
	}
	return nil
}

// observe counts one answered request.
func observe(c *call, err error) {
	metrics.requests.WithLabelValues(c.route.name, outcome(err)).Inc()
	if c.zulipStatus != 0 {
		metrics.zulipSeconds.WithLabelValues(c.route.name).Observe(time.Since(c.start).Seconds())
	}
}

func outcome(err error) string {
	if err == nil {
		// Before the declarations below: errors.As makes them escape, and
		// an escaping variable is allocated where it is declared.
		return "ok"
	}
	return failureOutcome(err)
}

func failureOutcome(err error) string {
	var aerr *apiError
	var zerr *zulip.Error
	switch {
	case errors.As(err, &aerr) && aerr.Status == http.StatusTooManyRequests:
		return "rate_limited"
	case errors.As(err, &aerr) && aerr.Status < 500:
		return "refused"
	case errors.As(err, &zerr):
		return "zulip_error"
	}
	return "error"
}

// observeBudget records what Zulip says is left of a bot's budget.
func observeBudget(bot string, resp *zulip.Response) {
	v := resp.Header["X-Ratelimit-Remaining"]
	if len(v) == 0 {
		return
	}
	if n, err := strconv.ParseFloat(v[0], 64); err == nil && n >= 0 {
		metrics.botBudget.WithLabelValues(bot).Set(n)
	}
}
