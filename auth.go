package zulipproxy

import (
	"errors"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
)

// apiKeyHeader is the upstream service's authentication header.
const apiKeyHeader = "X-API-key"

// wwwAuthenticate tells a client of the bot API how to authenticate.
const wwwAuthenticate = `X-API-key realm="zulip-proxy"`

// authenticate finds the key's entry. It runs on every request: a hash and
// a map lookup on the store's immutable index, no lock and no I/O.
func (h *Handler) authenticate(key string, now time.Time) (*keystore.Entry, *apiError) {
	if key == "" {
		return nil, newError(http.StatusUnauthorized, codeUnauthorized, "missing API key: send it in the X-API-key header")
	}
	e, ok := h.store.Lookup(key)
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
		}
		return nil, newError(http.StatusUnauthorized, codeInvalidKey, msg)
	}
	h.store.Touch(e)
	return e, nil
}

// setAuthUser puts the key's id (never the key) on the access log line, in
// the placeholder Caddy's own auth handlers use.
func setAuthUser(r *http.Request, e *keystore.Entry) {
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("http.auth.user.id", e.ID)
	}
}
