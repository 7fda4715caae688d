package zulipproxy

import (
	"errors"
	"net/http"
	"time"

	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
)

// apiKeyHeader is the upstream service's authentication header
// (X-API-key), in the canonical form net/http keys headers by, so finding
// it costs a map lookup and not a canonicalization on every request.
const apiKeyHeader = "X-Api-Key"

// wwwAuthenticate tells a client of the bot API how to authenticate.
const wwwAuthenticate = `X-API-key realm="zulip-proxy"`

// zulipAuthenticate is Zulip's own challenge, for its API and webhooks.
const zulipAuthenticate = `Basic realm="zulip"`

// presentedKey reads the caller's key from where the route takes it.
func (h *Handler) presentedKey(w http.ResponseWriter, r *http.Request, c *call) (string, *apiError) {
	switch c.route.key {
	case keyBasic:
		// Any email: the key alone says who is calling.
		if _, key, ok := r.BasicAuth(); ok && key != "" {
			return key, nil
		}
		return "", newError(http.StatusUnauthorized, codeUnauthorized,
			"Missing 'Authorization' header: use HTTP Basic with any email and your scoped key").withHeader("WWW-Authenticate", zulipAuthenticate)
	case keyWebhook:
		return h.webhookKey(w, r, c)
	}
	if vs := r.Header[apiKeyHeader]; len(vs) > 0 && vs[0] != "" {
		return vs[0], nil
	}
	return "", newError(http.StatusUnauthorized, codeUnauthorized,
		"missing API key: send it in the X-API-key header").withHeader("WWW-Authenticate", wwwAuthenticate)
}

// authenticate finds the key's entry. It runs on every request: a hash and
// a map lookup on the store's immutable index, no lock and no I/O.
func (h *Handler) authenticate(key string, now time.Time) (*keystore.Entry, *apiError) {
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
		case errors.Is(err, keystore.ErrKeyRotated):
			msg = "API key was rotated: use the new key"
		}
		return nil, newError(http.StatusUnauthorized, codeInvalidKey, msg)
	}
	h.store.Touch(e)
	return e, nil
}
