package zulipproxy

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
	"go.uber.org/zap"
)

// role says which keys may call an endpoint.
type role uint8

const (
	rolePublic role = iota // no key needed
	roleAnyKey             // scoped or admin
	roleScoped             // scoped keys only: admin keys never post
	roleAdmin              // admin keys only
)

// call is one authenticated request on its way through an endpoint.
type call struct {
	entry *keystore.Entry
	bot   *bot // nil for admin keys
	arg   string
	start time.Time
	// zulipStatus is the HTTP status of the last call to Zulip, for the
	// log line; 0 when Zulip was not reached.
	zulipStatus int
}

// record notes the status of a call to Zulip and passes its error on.
func (c *call) record(status int, err error) error {
	if status != 0 {
		c.zulipStatus = status
	}
	return err
}

type endpointFunc func(h *Handler, w http.ResponseWriter, r *http.Request, c *call) error

type endpoint struct {
	name   string // bounded label for logs and metrics
	method string
	role   role
	serve  endpointFunc
}

// botEndpoint finds the endpoint of the upstream-compatible API for a path
// with any `/api` prefix removed. arg is the path's trailing parameter.
func botEndpoint(path string) (ep endpoint, arg string, ok bool) {
	switch path {
	case "/health":
		return endpoint{"health", http.MethodGet, rolePublic, (*Handler).serveHealth}, "", true
	case "/me":
		return endpoint{"me", http.MethodGet, roleAnyKey, (*Handler).serveMe}, "", true
	case "/send_message":
		return endpoint{"send_message", http.MethodPost, roleScoped, (*Handler).serveSendMessage}, "", true
	case "/upload_file":
		return endpoint{"upload_file", http.MethodPost, roleScoped, (*Handler).serveUploadFile}, "", true
	case "/get_stream_topics":
		return endpoint{"get_stream_topics", http.MethodGet, roleScoped, (*Handler).serveStreamTopics}, "", true
	case "/update_message":
		return endpoint{"update_message", http.MethodPatch, roleScoped, (*Handler).serveUpdateMessage}, "", true
	case "/get_messages":
		return endpoint{"get_messages", http.MethodGet, roleScoped, (*Handler).serveGetMessages}, "", true
	case "/create_client":
		return endpoint{"create_client", http.MethodPost, roleAdmin, (*Handler).serveCreateClient}, "", true
	case "/clients":
		return endpoint{"clients", http.MethodGet, roleAdmin, (*Handler).serveListClients}, "", true
	}
	if id, found := strings.CutPrefix(path, "/clients/"); found && id != "" && !strings.Contains(id, "/") {
		return endpoint{"revoke_client", http.MethodDelete, roleAdmin, (*Handler).serveRevokeClient}, id, true
	}
	return endpoint{}, "", false
}

// ServeHTTP answers the bot API. It is terminal: every request gets an
// answer here, unknown paths a JSON 404.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	path := r.URL.Path
	if strings.HasPrefix(path, "/api/v1/") {
		return h.serveZulipAPI(w, r)
	}
	if p, found := strings.CutPrefix(path, "/api"); found && strings.HasPrefix(p, "/") {
		path = p
	}
	ep, arg, ok := botEndpoint(path)
	if !ok {
		writeError(w, newError(http.StatusNotFound, codeNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path))
		return nil
	}
	if r.Method != ep.method && !(ep.method == http.MethodGet && r.Method == http.MethodHead) {
		writeError(w, errMethod(ep.method))
		return nil
	}
	c := &call{arg: arg, start: time.Now()}
	if ep.role != rolePublic {
		e, aerr := h.authenticate(r.Header.Get(apiKeyHeader), c.start)
		if aerr != nil {
			writeError(w, aerr.withHeader("WWW-Authenticate", wwwAuthenticate))
			return nil
		}
		setAuthUser(r, e)
		c.entry = e
		switch {
		case ep.role == roleScoped && e.Admin:
			writeError(w, newError(http.StatusForbidden, codeForbidden, "admin keys cannot use "+ep.name+"; use a scoped key"))
			return nil
		case ep.role == roleAdmin && !e.Admin:
			writeError(w, newError(http.StatusForbidden, codeForbidden, ep.name+" needs an admin key"))
			return nil
		}
		if ep.role == roleScoped {
			if aerr := h.bindBot(c); aerr != nil {
				writeError(w, aerr)
				return nil
			}
		}
	}
	err := ep.serve(h, w, r, c)
	if err != nil {
		h.writeCallError(w, ep, c, err)
	}
	if c.bot != nil {
		h.logCall(ep, c, err)
	}
	return nil
}

// logCall writes the one line per forwarded call: who, where, how Zulip
// answered and how long it took. Never the key, never bot credentials.
func (h *Handler) logCall(ep endpoint, c *call, err error) {
	ce := h.logger.Check(zap.InfoLevel, "zulip call")
	if ce == nil {
		return
	}
	fields := []zap.Field{
		zap.String("key_id", c.entry.ID),
		zap.String("stream", c.entry.Stream),
		zap.String("bot", c.bot.name),
		zap.String("endpoint", ep.name),
		zap.Int("zulip_status", c.zulipStatus),
		zap.Duration("duration", time.Since(c.start)),
	}
	var aerr *apiError
	if err != nil && errors.As(err, &aerr) {
		fields = append(fields, zap.Int("status", aerr.Status), zap.String("error", aerr.Msg))
	} else if err != nil {
		fields = append(fields, zap.String("error", err.Error()))
	}
	ce.Write(fields...)
}

// bindBot finds the bot a scoped key speaks as.
func (h *Handler) bindBot(c *call) *apiError {
	b, ok := h.botFor(c.entry)
	if !ok {
		h.logger.Error("key names a bot that is not configured", zap.String("key_id", c.entry.ID), zap.String("bot", c.entry.Bot))
		return newError(http.StatusServiceUnavailable, codeUnavailable, "this key's bot is not configured on this server")
	}
	c.bot = b
	return nil
}

// writeCallError answers an endpoint's error. Our own errors carry their
// status; anything else is a bug or an I/O failure, logged and answered
// with a generic 500 so no internal detail reaches the client.
func (h *Handler) writeCallError(w http.ResponseWriter, ep endpoint, c *call, err error) {
	var aerr *apiError
	if errors.As(err, &aerr) {
		writeError(w, aerr)
		return
	}
	if resp, aerr, ok := h.upstreamFailure(err); ok {
		if resp != nil {
			writeUpstream(w, resp)
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
	fields := []zap.Field{zap.String("endpoint", ep.name), zap.Error(err)}
	if c.entry != nil {
		fields = append(fields, zap.String("key_id", c.entry.ID))
	}
	h.logger.Error("request failed", fields...)
	writeError(w, newError(http.StatusInternalServerError, codeInternal, "internal error"))
}
