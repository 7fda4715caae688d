package zulipproxy

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
	"go.uber.org/zap"
)

type createdBody struct {
	Result string `json:"result"`
	Msg    string `json:"msg"`
	// Key is shown this once; only its hash is kept.
	Key string `json:"key"`
	entryView
}

// serveCreateClient makes a scoped key. The stream comes from the request
// or, for a proposal number alone, from the configured stream template.
func (h *Handler) serveCreateClient(w http.ResponseWriter, r *http.Request, c *call) error {
	names := []string{"proposal_no", "name", "stream", "bot", "expires_in", "rate_limit"}
	q, err := h.adminParams(w, r, c, names...)
	if err != nil {
		return err
	}
	var n keystore.NewEntry
	if v := strings.TrimSpace(q.Get("rate_limit")); v != "" {
		rl, err := parseRateLimit(v)
		if err != nil {
			return errBadParam("rate_limit", "parameter 'rate_limit' must be <events>/<window>, such as 10/1m")
		}
		n.RateLimit = rl.String()
	}
	var vals [5]string
	for i, name := range names[:len(vals)] {
		vals[i] = strings.TrimSpace(q.Get(name))
	}
	proposal, name, stream, botName, expiresIn := vals[0], vals[1], vals[2], vals[3], vals[4]
	if proposal != "" {
		p, aerr := parseInt64Param("proposal_no", proposal)
		if aerr != nil {
			return aerr
		}
		if p <= 0 {
			return errBadParam("proposal_no", "parameter 'proposal_no' must be a positive integer")
		}
		n.ProposalNo = p
	}
	if stream == "" && n.ProposalNo != 0 && h.StreamTemplate != "" {
		stream = strings.ReplaceAll(h.StreamTemplate, "{proposal_no}", strconv.FormatInt(n.ProposalNo, 10))
	}
	if stream == "" {
		if h.StreamTemplate != "" {
			return errMissingParam("stream").withMsg("missing 'stream' argument (or give 'proposal_no' to use the stream template)")
		}
		return errMissingParam("stream")
	}
	n.Stream = stream
	n.Name = name
	if n.Name == "" && n.ProposalNo != 0 {
		n.Name = "proposal " + strconv.FormatInt(n.ProposalNo, 10)
	}
	if botName != "" {
		if _, ok := h.bots[botName]; !ok {
			return errBadParam("bot", "unknown bot '"+botName+"'")
		}
		n.Bot = botName
	}
	b, ok := h.botFor(&keystore.Entry{Bot: n.Bot})
	if !ok {
		return errBadParam("bot", "no default bot is configured; name one with 'bot'")
	}
	if expiresIn != "" {
		d, err := caddy.ParseDuration(expiresIn)
		if err != nil || d <= 0 {
			return errBadParam("expires_in", "parameter 'expires_in' must be a positive duration such as 90d or 12h")
		}
		t := time.Now().Add(d).UTC()
		n.ExpiresAt = &t
	}
	// Ask Zulip now, so a typo in the stream fails here rather than on the
	// bot's first message.
	if _, err := h.streamID(r.Context(), b, stream); err != nil {
		return err
	}
	n.CreatedBy = "admin:" + c.entry.ID
	key, e, err := h.store.Add(r.Context(), n)
	if err != nil {
		return h.storeFailure(err)
	}
	h.logger.Info("key created", zap.String("key_id", e.ID), zap.String("stream", e.Stream), zap.String("by", n.CreatedBy))
	writeJSON(w, http.StatusOK, createdBody{Result: "success", Key: key, entryView: h.viewOf(&e)})
	return nil
}

type clientsBody struct {
	Result  string      `json:"result"`
	Msg     string      `json:"msg"`
	Clients []entryView `json:"clients"`
}

func (h *Handler) serveListClients(w http.ResponseWriter, _ *http.Request, _ *call) error {
	entries := h.store.List()
	views := make([]entryView, len(entries))
	for i := range entries {
		views[i] = h.viewOf(&entries[i])
	}
	writeJSON(w, http.StatusOK, clientsBody{Result: "success", Clients: views})
	return nil
}

type revokedBody struct {
	Result string    `json:"result"`
	Msg    string    `json:"msg"`
	Client entryView `json:"client"`
}

func (h *Handler) serveRevokeClient(w http.ResponseWriter, r *http.Request, c *call) error {
	e, err := h.store.Revoke(r.Context(), c.arg)
	if errors.Is(err, keystore.ErrNotFound) {
		return newError(http.StatusNotFound, codeNotFound, "no client with id '"+c.arg+"'")
	}
	if err != nil {
		return h.storeFailure(err)
	}
	h.logger.Info("key revoked", zap.String("key_id", e.ID), zap.String("by", "admin:"+c.entry.ID))
	writeJSON(w, http.StatusOK, revokedBody{Result: "success", Client: h.viewOf(&e)})
	return nil
}

// storeFailure answers a change the key store could not take: the
// store's fault, not the caller's, and not an internal error. The details
// (paths, the system's error) go to the log only.
func (h *Handler) storeFailure(err error) error {
	switch {
	case errors.Is(err, keystore.ErrNotWritable):
		h.logger.Error("key store cannot be written", zap.Error(err))
		return newError(http.StatusServiceUnavailable, codeUnavailable,
			"the key store cannot be written, so keys cannot be created or revoked now; existing keys keep working, and the server's log says why")
	case errors.Is(err, keystore.ErrStoreLost), errors.Is(err, keystore.ErrCorruptStore):
		h.logger.Error("key store is damaged", zap.Error(err))
		return newError(http.StatusServiceUnavailable, codeUnavailable,
			"the key store is damaged, so keys cannot be created or revoked now; the keys it held keep working, and the server's log says why")
	}
	return err
}

// adminParams reads an admin call's parameters from the query and from an
// urlencoded or JSON body alike, strictly: a name the call does not take
// is a 400 naming it, so a typo (expire_in=1h) cannot make a key that
// never expires; a name given twice, anywhere, is a 400 too.
func (h *Handler) adminParams(w http.ResponseWriter, r *http.Request, c *call, allowed ...string) (url.Values, error) {
	return h.readParams(w, r, paramSpec{
		allowed: allowed,
		unknown: func(name string) *apiError {
			return errBadParam(name, "unknown parameter '"+name+"': "+c.route.name+" takes "+strings.Join(allowed, ", "))
		},
		jsonBody: true,
		bodyHint: "send parameters in the query, or as a form or JSON body",
	})
}
