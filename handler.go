package zulipproxy

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
	"github.com/zwop/caddy-zulip-proxy/zulip"
	"go.uber.org/zap"
)

// call is one request on its way through the dispatch, and the work
// that belongs to it.
type call struct {
	// h is the config serving it.
	h     *Handler
	route *route
	// arg is the path's wildcard segment: a message or stream id, a key
	// id, an integration name.
	arg   string
	entry *keystore.Entry // nil on public routes
	// key is the caller's own key, kept for this request only so that
	// nothing forwarded carries it.
	key   string
	bot   *bot // the bot a scoped key speaks as
	start time.Time
	// zulipStatus is the HTTP status of the last call to Zulip, for the
	// log line; 0 when Zulip was not reached. The bot's client observer
	// sets it (noteZulip).
	zulipStatus int
	// hook is a webhook's request as read to find its key.
	hook *webhookRequest
	// spend is the request's account with its bot's Zulip budget.
	spend spend
	// lastZulip is the request's last call to Zulip, as the client's
	// observer saw it.
	lastZulip zulip.Call
	// idem is the request's Idempotency-Key record, for a write that
	// has one.
	idem *idemWrite
	// queueing: a send that is queued when Zulip cannot take it now;
	// asked: because the request said Prefer: respond-async. deferred
	// says why it is queued without trying Zulip ("budget"), if it is.
	queueing, asked bool
	deferred        string
	// after is the newest message a deliverer knows its key's queue
	// sent: an uncertain attempt's message is newer.
	after int64
}

// callKey finds, in a request's context, the call it belongs to: the
// zulip client's observer learns from it whose call to Zulip is over.
type callKey struct{}

func callOf(ctx context.Context) *call {
	c, _ := ctx.Value(callKey{}).(*call)
	return c
}

// noteZulip records a call to Zulip made for c: its status for the log
// line and the metrics, and its cost to the key's share of bot's budget.
func (c *call) noteZulip(b *bot, zc zulip.Call, now time.Time) {
	if zc.Response != nil {
		c.zulipStatus = zc.Response.Status
	}
	c.lastZulip = zc
	b.budget.observe(&c.spend, zc, now)
}

// ServeHTTP answers every path the module knows, and a JSON 404 for the
// rest: the handler is terminal.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	rt, arg, aerr := h.router.match(r.Method, r.URL.Path)
	if aerr != nil {
		writeError(w, aerr)
		return nil
	}
	c := &call{h: h, route: rt, arg: arg, start: time.Now()}
	err := h.authorize(w, r, c)
	if err != nil && r.ProtoMajor == 1 && r.ContentLength != 0 {
		// A caller refused before its body is read never makes the proxy
		// wait for it: net/http would read what is left of it before
		// answering (Caddy wraps the body, so net/http cannot tell that
		// it is large), and a client that stalls would hold its own
		// answer back. Closing the connection after the answer lets it
		// go at once.
		w.Header().Set("Connection", "close")
	}
	// The caller is known; nothing is read or forwarded yet. From here
	// on, every call to Zulip made for the request is noted on it.
	if c.entry != nil {
		ctx := context.WithValue(r.Context(), callKey{}, c)
		if c.entry.Admin {
			// What an admin call changes is recorded as theirs.
			ctx = keystore.WithActor(ctx, keystore.Actor{By: c.entry.ID, Name: c.entry.Name, From: clientAddress(r)})
		}
		r = r.WithContext(ctx)
	}
	if err == nil {
		if aerr := h.limits.check(w, c); aerr != nil {
			err = aerr
		}
	}
	if err == nil && rt.effect == sends && c.bot != nil {
		c.mayQueue(r)
	}
	if err == nil && c.bot != nil && c.bot.budget != nil {
		if aerr := c.admitToBudget(r); aerr != nil {
			err = aerr
		}
		defer c.bot.budget.settle(&c.spend)
	}
	replayed := false
	if err == nil && rt.effect >= writes && c.bot != nil {
		w, replayed, err = c.beginIdempotent(w, r)
	}
	if err == nil && !replayed {
		err = rt.serve(h, w, r, c)
	}
	if err != nil {
		h.writeCallError(w, c, err)
	}
	if c.idem != nil {
		c.endIdempotent(r.Context(), err)
	}
	observe(c, err)
	if c.bot != nil {
		h.logCall(c, err)
	}
	return nil
}

// authorize finds the caller's key where the route says it is presented,
// checks that the key may call the route, and binds the bot a scoped key
// speaks as.
func (h *Handler) authorize(w http.ResponseWriter, r *http.Request, c *call) error {
	rt := c.route
	if rt.access == public {
		return nil
	}
	key, aerr := c.presentedKey(w, r)
	if aerr != nil {
		return aerr
	}
	e, aerr := authenticate(h.store, key, c.start)
	if aerr != nil {
		if rt.key == keyBasic || rt.key == keyWebhook {
			aerr.Code = codeUnauthorized // what Zulip answers for a bad API key
			return aerr.setHeader("WWW-Authenticate", zulipAuthenticate)
		}
		return aerr.setHeader("WWW-Authenticate", wwwAuthenticate)
	}
	setAuthUser(r, e)
	c.entry, c.key = e, key
	switch {
	case rt.access == scoped && e.Admin:
		return newError(http.StatusForbidden, codeForbidden, "admin keys cannot use "+rt.name+"; use a scoped key")
	case rt.access == admin && !e.Admin:
		return newError(http.StatusForbidden, codeForbidden, rt.name+" needs an admin key")
	case rt.access == admin && rt.method != http.MethodGet && h.StoreReadOnly:
		return errStoreReadOnly()
	case rt.access == scoped && rt.perm != "" && !e.Allows(rt.perm):
		return errLacksPermission(e, rt.perm, rt.name)
	case rt.access == scoped:
		b, ok := h.bots.of(e)
		if !ok {
			h.logger.Error("key names a bot that is not configured", zap.String("key_id", e.ID), zap.String("bot", e.Bot))
			return newError(http.StatusServiceUnavailable, codeUnavailable, "this key's bot is not configured on this server")
		}
		c.bot = b
	}
	return nil
}

// logCall writes the one line per forwarded call: who, where, how Zulip
// answered and how long it took. Never a key, a credential, a URL's query
// or anything Zulip wrote.
func (h *Handler) logCall(c *call, err error) {
	ce := h.logger.Check(zap.InfoLevel, "zulip call")
	if ce == nil {
		return
	}
	fields := []zap.Field{
		zap.String("key_id", c.entry.ID),
		zap.String("stream", c.entry.Stream),
		zap.String("bot", c.bot.name),
		zap.String("endpoint", c.route.name),
		zap.Int("zulip_status", c.zulipStatus),
		zap.Duration("duration", time.Since(c.start)),
	}
	if err != nil {
		fields = append(fields, errorFields(err)...)
	}
	ce.Write(fields...)
}

// errorFields describes an error for a log line. Zulip's own message is
// left out: it can quote what the request carried.
func errorFields(err error) []zap.Field {
	var aerr *apiError
	var zerr *zulip.Error
	switch {
	case errors.As(err, &aerr):
		return []zap.Field{zap.Int("status", aerr.Status), zap.String("error", aerr.Msg)}
	case errors.As(err, &zerr):
		return []zap.Field{zap.String("error", "zulip answered with an error"), zap.String("zulip_code", zerr.Code)}
	}
	return []zap.Field{zap.String("error", err.Error())}
}

// writeCallError answers a route's error. Our own errors carry their
// status and Zulip's are passed on; anything else is a bug or an I/O
// failure, logged and answered with a generic 500 so no internal detail
// reaches the client.
func (h *Handler) writeCallError(w http.ResponseWriter, c *call, err error) {
	var aerr *apiError
	if errors.As(err, &aerr) {
		writeError(w, aerr)
		return
	}
	if aerr := credentialsRefused(c, err); aerr != nil {
		writeError(w, aerr)
		return
	}
	if resp, aerr, ok := zulipFailure(err, time.Duration(h.Timeout)); ok {
		if resp != nil {
			writeZulipAnswer(w, resp)
		} else {
			writeError(w, aerr)
		}
		return
	}
	if errors.Is(err, context.Canceled) {
		// The client went away; nobody is left to answer.
		writeError(w, newError(499, "CLIENT_CLOSED_REQUEST", "client closed the request"))
		return
	}
	fields := append([]zap.Field{zap.String("endpoint", c.route.name)}, errorFields(err)...)
	if c.entry != nil {
		fields = append(fields, zap.String("key_id", c.entry.ID))
	}
	h.logger.Error("request failed", fields...)
	writeError(w, newError(http.StatusInternalServerError, codeInternal, "internal error"))
}

// setAuthUser puts the key's id (never the key) on the access log line, in
// the placeholder Caddy's own auth handlers use.
func setAuthUser(r *http.Request, e *keystore.Entry) {
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("http.auth.user.id", e.ID)
	}
}

// apiKeyHeader is the upstream service's authentication header
// (X-API-key), in the canonical form net/http keys headers by, so finding
// it costs a map lookup and not a canonicalization on every request.
const apiKeyHeader = "X-Api-Key"

// wwwAuthenticate tells a client of the bot API how to authenticate.
const wwwAuthenticate = `X-API-key realm="zulip-proxy"`

// zulipAuthenticate is Zulip's own challenge, for its API and webhooks.
const zulipAuthenticate = `Basic realm="zulip"`

// presentedKey reads the caller's key from where the route takes it.
func (c *call) presentedKey(w http.ResponseWriter, r *http.Request) (string, *apiError) {
	switch c.route.key {
	case keyBasic:
		// Any email: the key alone says who is calling.
		if _, key, ok := r.BasicAuth(); ok && key != "" {
			return key, nil
		}
		return "", newError(http.StatusUnauthorized, codeUnauthorized,
			"Missing 'Authorization' header: use HTTP Basic with any email and your scoped key").setHeader("WWW-Authenticate", zulipAuthenticate)
	case keyWebhook:
		return c.webhookKey(w, r)
	}
	if vs := r.Header[apiKeyHeader]; len(vs) > 0 && vs[0] != "" {
		return vs[0], nil
	}
	if c.route.key == keyEither {
		if _, key, ok := r.BasicAuth(); ok && key != "" {
			return key, nil
		}
	}
	return "", newError(http.StatusUnauthorized, codeUnauthorized,
		"missing API key: send it in the X-API-key header").setHeader("WWW-Authenticate", wwwAuthenticate)
}

// authenticate finds the key's entry. It runs on every request: a hash and
// a map lookup on the store's immutable index, no lock and no I/O.
func authenticate(s *keystore.Store, key string, now time.Time) (*keystore.Entry, *apiError) {
	e, ok := s.Lookup(key)
	if !ok {
		return nil, newError(http.StatusUnauthorized, codeInvalidKey, "invalid API key")
	}
	if err := e.Usable(now); err != nil {
		msg := "API key is not valid"
		switch {
		case errors.Is(err, keystore.ErrKeyRevoked):
			msg = "API key has been revoked"
		case errors.Is(err, keystore.ErrKeyExpired):
			msg = "API key has expired"
		case errors.Is(err, keystore.ErrKeyRotated):
			msg = "API key was rotated: use the new key"
		}
		return nil, newError(http.StatusUnauthorized, codeInvalidKey, msg)
	}
	s.Touch(e)
	return e, nil
}
