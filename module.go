package zulipproxy

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
	"github.com/zwop/caddy-zulip-proxy/internal/outbox"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(Handler{})
}

const (
	defaultMaxUpload = 25 << 20 // Zulip 10's nginx caps /user_uploads at 25 MiB
	maxMaxUpload     = 1 << 40
	defaultTimeout   = 30 * time.Second
	// defaultClientIdleTimeout: a client on a slow link still sends
	// something every few seconds; one silent for 30 s has stalled.
	defaultClientIdleTimeout = 30 * time.Second
	// defaultMaxUploadsPerKey lets a script upload a few files at once,
	// but not hold the proxy's connections to Zulip with a hundred.
	defaultMaxUploadsPerKey = 4
	defaultBotName          = "default"
	// defaultIdempotencyWindow keeps a write's outcome for a day: a
	// script retrying after an outage or the next morning still gets it.
	defaultIdempotencyWindow = 24 * time.Hour
)

// Handler is a write-only proxy to Zulip. It holds real Zulip bot
// credentials and hands out scoped keys: each key may write to one stream
// only (send, upload, edit its own messages, list that stream's topics) and
// read nothing else. Admin keys create, list and revoke scoped keys. Its
// Caddyfile syntax is on UnmarshalCaddyfile.
type Handler struct {
	// Bots are the real Zulip bots the proxy speaks as, by name. A key
	// that names no bot uses the bot called "default" (or the only bot,
	// when exactly one is configured). Credentials stay here and never go
	// into the key store.
	Bots map[string]*Bot `json:"bots,omitempty"`

	// Store is the path of the JSON key store. When empty, the store is the
	// document `zulip_proxy/clients.json` in Caddy's configured storage, so
	// Caddy instances that share storage share keys.
	Store string `json:"store,omitempty"`

	// StoreReadOnly says the key store is managed elsewhere (another
	// instance, a deployment tool, a read-only mount): the server does not
	// require it to be writable at start, never writes it (last-used
	// times stay in memory), and the admin API answers 403 to changes.
	// Without it, a store the server cannot write is an error at start
	// and in `caddy validate`.
	StoreReadOnly bool `json:"store_read_only,omitempty"`

	// MaxUpload is the largest request body accepted, in bytes. Larger
	// bodies are refused with 413, even part-way through a stream.
	// Default: 25 MiB, Zulip's own upload limit.
	MaxUpload int64 `json:"max_upload,omitempty"`

	// Timeout bounds how long Zulip takes to answer a call once the call
	// has been sent to it; a slower answer gives 504. Default: 30s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// ClientIdleTimeout bounds how long a client may send nothing while
	// the proxy reads its request body; a client that stalls longer gets
	// 408, and nothing it sent is kept. Default: 30s.
	ClientIdleTimeout caddy.Duration `json:"client_idle_timeout,omitempty"`

	// RateLimit bounds each scoped key's calls: a token bucket of
	// `events` calls per `window` (Caddyfile: `rate_limit 120 1m`). A call
	// over it gets 429 with Retry-After and is not forwarded; every answer
	// to a scoped key carries X-RateLimit-Limit, -Remaining and -Reset for
	// that key. A key created with its own rate_limit uses that instead.
	// Default: no limit of the proxy's own.
	RateLimit *RateLimit `json:"rate_limit,omitempty"`

	// MaxUploadsPerKey is how many uploads one key may have in flight at
	// once (upload_file, a send_message image, Zulip's user_uploads); the
	// next gets 429. Default: 4.
	MaxUploadsPerKey int `json:"max_uploads_per_key,omitempty"`

	// StreamTemplate is the stream of a key created with a proposal number
	// and no stream; `{proposal_no}` is replaced by the number, for example
	// "proposal {proposal_no}".
	StreamTemplate string `json:"stream_template,omitempty"`

	// AllowPropagate lets scoped keys rename a topic with propagate_mode
	// change_later or change_all. Off by default: those modes also move
	// messages that other people sent to that topic, which a write-only key
	// should not be able to do.
	AllowPropagate bool `json:"allow_propagate,omitempty"`

	// AccessLogFiltered says that the access log of the site already
	// deletes the X-API-key header and the api_key query parameter.
	// Without it the module warns at provision about every server that
	// logs and routes to it: a handler cannot see log formats, so it
	// cannot check the filter itself.
	AccessLogFiltered bool `json:"access_log_filtered,omitempty"`

	// CreateStreams lets create_client make a stream that does not exist
	// yet (the bot must be allowed to create streams in Zulip). Off by
	// default: an unknown stream is refused, so a typo cannot create one.
	// Either way, creating a key subscribes its bot to the stream.
	CreateStreams bool `json:"create_streams,omitempty"`

	// AdminPage is the path of the admin web page, where staff holding an
	// admin key list, create, rotate and revoke keys; "off" serves none.
	// Default: /admin/.
	AdminPage string `json:"admin_page,omitempty"`

	// IdempotencyWindow is how long the outcome of a write made with an
	// Idempotency-Key is kept where the keys are, so that a retry of it
	// is answered with the first answer instead of writing again.
	// Default: 24h.
	IdempotencyWindow caddy.Duration `json:"idempotency_window,omitempty"`

	// AuditRetention is how long the audit trail of changes to keys
	// (who created, changed or revoked which key, when, from where) is
	// kept, where the keys are. Default: 1 year (365d).
	AuditRetention caddy.Duration `json:"audit_retention,omitempty"`

	// Queue bounds queued delivery: the sends of keys created with
	// `delivery=queued`, or made with `Prefer: respond-async`, that wait
	// in the proxy while Zulip cannot take them.
	Queue *QueueConfig `json:"queue,omitempty"`

	// APIDocs is "off" to stop serving /openapi.json (the API's OpenAPI
	// 3.1 description) and /docs (a page rendering it). Both are public,
	// as the service this module replaces served them. Default: on.
	APIDocs string `json:"api_docs,omitempty"`

	// body reads request bodies within max_upload and
	// client_idle_timeout.
	body   bodyReader
	bots   botSet
	limits keyLimits
	// uploads counts each key's uploads in flight, by key id.
	uploads *sync.Map
	// store is the key store, shared by the configs that use it through
	// storePool; storeKey is its entry there.
	store    *keystore.Store
	storeKey string
	// outbox keeps the outcomes of writes made with an Idempotency-Key,
	// and queued sends, where the keys are; shared through outboxPool,
	// with the deliverer of its queue.
	outbox    *outbox.Outbox
	deliverer *deliverer
	// detached: this config no longer delivers queued sends.
	detached bool
	// views fill in what a key names nothing of, as this server sees it.
	views  viewDefaults
	health *healthLog
	logger *zap.Logger
	// router is the route table with this config's pages.
	router *router
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.zulip_proxy",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision resolves bot credentials and opens the shared key store.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if err := h.provision(ctx); err != nil {
		// Caddy puts its whole module path before the cause; this line
		// says the cause first.
		h.logger.Error("zulip_proxy: config not loaded", zap.Error(err))
		return err
	}
	return nil
}

func (h *Handler) provision(ctx caddy.Context) error {
	if h.MaxUpload == 0 {
		h.MaxUpload = defaultMaxUpload
	}
	if h.Timeout == 0 {
		h.Timeout = caddy.Duration(defaultTimeout)
	}
	if h.ClientIdleTimeout == 0 {
		h.ClientIdleTimeout = caddy.Duration(defaultClientIdleTimeout)
	}
	if h.MaxUploadsPerKey == 0 {
		h.MaxUploadsPerKey = defaultMaxUploadsPerKey
	}
	h.body = bodyReader{maxUpload: h.MaxUpload, idle: time.Duration(h.ClientIdleTimeout)}
	h.uploads = new(sync.Map)
	h.health = new(healthLog)

	var err error
	if h.bots, err = provisionBots(h.Bots, time.Duration(h.Timeout)); err != nil {
		return err
	}
	h.views = viewDefaults{bot: h.bots.def}
	if h.RateLimit != nil {
		h.views.rateLimit = h.RateLimit.String()
	}
	pages, err := pageRoutes(h.AdminPage, h.APIDocs)
	if err != nil {
		return err
	}
	if h.router, err = newHandlerRouter(pages); err != nil {
		return fmt.Errorf("admin_page: %w", err)
	}

	var storeLabel string
	if h.store, h.storeKey, storeLabel, err = openStore(ctx, h.Store, h.StoreReadOnly, h.logger); err != nil {
		return err
	}
	if h.AuditRetention == 0 {
		h.AuditRetention = caddy.Duration(keystore.DefaultAuditRetention)
	}
	h.store.SetAuditRetention(time.Duration(h.AuditRetention))
	if h.limits, err = provisionLimits(ctx, h.storeKey, h.RateLimit, h.logger); err != nil {
		return err
	}
	if h.IdempotencyWindow == 0 {
		h.IdempotencyWindow = caddy.Duration(defaultIdempotencyWindow)
	}
	if h.Queue == nil {
		h.Queue = new(QueueConfig)
	}
	h.Queue.setDefaults()
	if h.outbox, h.deliverer, err = openOutbox(ctx, h.Store, h.storeKey, time.Duration(h.IdempotencyWindow), h.logger); err != nil {
		return err
	}
	// Queued sends are delivered, and the bots checked, once this
	// config runs; a config that is only validated does neither.
	go whenRunning(ctx, func() {
		h.deliverer.attach(h)
		for _, b := range h.bots.byName {
			b.health.checkSoon(h.logger)
		}
	})
	if err := registerMetrics(ctx.GetMetricsRegistry(), storeLabel, h.store, h.outbox); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	if !h.AccessLogFiltered {
		warnAccessLog(ctx, h.logger)
	}
	return nil
}

// whenRunning calls f once ctx's config is the one Caddy runs (not one
// only validated, which never runs), unless it is cleaned up first.
func whenRunning(ctx caddy.Context, f func()) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if active := caddy.ActiveContext(); active.Context != nil && active.Done() == ctx.Done() {
			f()
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Validate rejects a config that could not serve requests, so that a bad
// reload fails as a whole and the running config stays.
func (h *Handler) Validate() error {
	if h.MaxUpload < 0 || h.MaxUpload > maxMaxUpload {
		return fmt.Errorf("zulip_proxy: max_upload must be from 1 byte to 1 TiB, got %d", h.MaxUpload)
	}
	if h.IdempotencyWindow < 0 {
		return fmt.Errorf("zulip_proxy: idempotency_window must be positive, got %s", time.Duration(h.IdempotencyWindow))
	}
	if h.AuditRetention < 0 {
		return fmt.Errorf("zulip_proxy: audit_retention must be positive, got %s", time.Duration(h.AuditRetention))
	}
	if err := h.Queue.validate(); err != nil {
		return err
	}
	if h.StreamTemplate != "" && !strings.Contains(h.StreamTemplate, "{proposal_no}") {
		return fmt.Errorf("zulip_proxy: stream_template must contain {proposal_no}, got %q", h.StreamTemplate)
	}
	if h.Timeout < 0 {
		return fmt.Errorf("zulip_proxy: timeout must be positive, got %s", time.Duration(h.Timeout))
	}
	if h.ClientIdleTimeout < 0 {
		return fmt.Errorf("zulip_proxy: client_idle_timeout must be positive, got %s", time.Duration(h.ClientIdleTimeout))
	}
	if h.RateLimit != nil && !h.RateLimit.set() {
		return errors.New("zulip_proxy: rate_limit needs a positive number of events and a positive window")
	}
	if h.MaxUploadsPerKey < 0 {
		return fmt.Errorf("zulip_proxy: max_uploads_per_key must be positive, got %d", h.MaxUploadsPerKey)
	}
	if h.store == nil {
		return errors.New("zulip_proxy: key store not opened")
	}
	if err := h.store.Healthy(); err != nil {
		return fmt.Errorf("zulip_proxy: key store %s: %w", h.store, err)
	}
	return nil
}

// Cleanup releases this config's hold on the shared bots and store; the
// last config to let go of one closes it.
func (h *Handler) Cleanup() error {
	for _, key := range h.bots.poolKeys {
		_, _ = botPool.Delete(key)
	}
	if h.limits.poolKey != "" {
		_, _ = limiterPool.Delete(h.limits.poolKey)
	}
	if h.outbox != nil {
		h.deliverer.detach(h)
		_, _ = outboxPool.Delete(outboxKey(h.storeKey))
	}
	if h.storeKey == "" {
		return nil
	}
	return releasePooledStore(h.storeKey)
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
