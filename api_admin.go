package zulipproxy

import (
	"errors"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
	"github.com/zwop/caddy-zulip-proxy/zulip"
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
	names := []string{"proposal_no", "name", "stream", "bot", "expires_in", "rate_limit", "delivery", "permissions", "topic_prefix"}
	q, err := h.body.adminParams(w, r, c, names...)
	if err != nil {
		return err
	}
	var n keystore.NewEntry
	if q.Has("permissions") {
		if n.Permissions, err = permissionsParam(q.Get("permissions")); err != nil {
			return err
		}
	}
	if q.Has("topic_prefix") {
		if n.TopicPrefix, err = topicPrefixParam(q.Get("topic_prefix")); err != nil {
			return err
		}
	}
	if v := strings.TrimSpace(q.Get("rate_limit")); v != "" {
		rl, err := parseRateLimit(v)
		if err != nil {
			return errBadParam("rate_limit", "parameter 'rate_limit' must be <events>/<window>, such as 10/1m")
		}
		n.RateLimit = rl.String()
	}
	if n.Delivery, err = deliveryParam(q.Values); err != nil {
		return err
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
			return errMissingParam("stream").setMsg("missing 'stream' argument (or give 'proposal_no' to use the stream template)")
		}
		return errMissingParam("stream")
	}
	n.Stream = stream
	n.Name = name
	if n.Name == "" && n.ProposalNo != 0 {
		n.Name = "proposal " + strconv.FormatInt(n.ProposalNo, 10)
	}
	if botName != "" {
		if _, ok := h.bots.byName[botName]; !ok {
			return errBadParam("bot", "unknown bot '"+botName+"'")
		}
		n.Bot = botName
	}
	b, ok := h.bots.of(&keystore.Entry{Bot: n.Bot})
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
	// bot's first message; then the bot joins the stream (which, when
	// create_streams allows, makes it).
	if !h.CreateStreams {
		if _, err := b.streamID(r.Context(), stream); err != nil {
			if isStreamGone(err) || isNoSuchStream(err) {
				return errBadParam("stream", "no such stream '"+stream+"' in bot '"+b.name+"''s Zulip: check its name, create it in Zulip, "+
					"or add create_streams to the proxy's config to have keys' streams made")
			}
			return err
		}
	}
	sub, err := b.client.Subscribe(r.Context(), stream)
	if err != nil {
		return err
	}
	n.CreatedBy = "admin:" + c.entry.ID
	key, e, err := h.store.Add(r.Context(), n)
	if err != nil {
		return storeFailure(h.logger, err)
	}
	h.logger.Debug("bot subscribed to a new key's stream", zap.String("key_id", e.ID), zap.Bool("bot_subscribed_now", sub.Subscribed))
	writeJSON(w, http.StatusOK, createdBody{Result: "success", Key: key, entryView: viewOf(&e, h.views)})
	return nil
}

type clientsBody struct {
	Result  string      `json:"result"`
	Msg     string      `json:"msg"`
	Clients []entryView `json:"clients"`
}

func (h *Handler) serveListClients(w http.ResponseWriter, r *http.Request, c *call) error {
	if _, err := h.body.adminParams(w, r, c); err != nil {
		return err
	}
	entries := h.store.List()
	views := make([]entryView, len(entries))
	for i := range entries {
		views[i] = viewOf(&entries[i], h.views)
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
	if _, err := h.body.adminParams(w, r, c); err != nil {
		return err
	}
	e, err := h.store.Revoke(r.Context(), c.arg)
	if errors.Is(err, keystore.ErrNotFound) {
		return errNoClient(c.arg)
	}
	if err != nil {
		return storeFailure(h.logger, err)
	}
	writeJSON(w, http.StatusOK, revokedBody{Result: "success", Client: viewOf(&e, h.views)})
	return nil
}

// errStoreReadOnly answers a change to keys a config says are managed
// elsewhere.
func errStoreReadOnly() *apiError {
	return newError(http.StatusForbidden, codeStoreReadOnly,
		"keys are managed elsewhere: this proxy's key store is read-only by its configuration (store_read_only); create, change and revoke keys where they are managed")
}

// storeFailure answers a change the key store could not take: the
// store's fault, not the caller's, and not an internal error. The details
// (paths, the system's error) go to the log only.
func storeFailure(logger *zap.Logger, err error) error {
	switch {
	case errors.Is(err, keystore.ErrReadOnly):
		return errStoreReadOnly()
	case errors.Is(err, keystore.ErrNotWritable):
		logger.Error("key store cannot be written", zap.Error(err))
		return newError(http.StatusServiceUnavailable, codeUnavailable,
			"the key store cannot be written, so keys cannot be created or revoked now; existing keys keep working, and the server's log says why")
	case errors.Is(err, keystore.ErrStoreLost), errors.Is(err, keystore.ErrCorruptStore):
		logger.Error("key store is damaged", zap.Error(err))
		return newError(http.StatusServiceUnavailable, codeUnavailable,
			"the key store is damaged, so keys cannot be created or revoked now; the keys it held keep working, and the server's log says why")
	}
	return err
}

// adminArgs are an admin call's parameters; null names those a JSON body
// gave as null.
type adminArgs struct {
	url.Values
	null map[string]bool
}

// adminParams reads an admin call's parameters from the query and from an
// urlencoded or JSON body alike, strictly, before the call does anything:
// a name the call does not take is a 400 naming it, so a typo
// (expire_in=1h) cannot make a key that never expires, nor dry_run=true
// pass unnoticed on a revocation; a name given twice, anywhere (a JSON
// member too), is a 400 too.
func (br bodyReader) adminParams(w http.ResponseWriter, r *http.Request, c *call, allowed ...string) (adminArgs, error) {
	a := adminArgs{null: map[string]bool{}}
	var err error
	a.Values, err = br.readParams(w, r, paramSpec{
		allowed: allowed,
		unknown: func(name string) *apiError {
			if len(allowed) == 0 {
				return errBadParam(name, "unknown parameter '"+name+"': "+c.route.name+" takes no parameters")
			}
			return errBadParam(name, "unknown parameter '"+name+"': "+c.route.name+" takes "+strings.Join(allowed, ", "))
		},
		jsonBody: true,
		bodyHint: "send parameters in the query, or as a form or JSON body",
		null:     func(name string) { a.null[name] = true },
	})
	return a, err
}

// defaultRotateGrace is how long a rotated key's old secret keeps working
// unless the call says otherwise: a day, for scripts to pick up the new.
const defaultRotateGrace = 24 * time.Hour

// parseGrace reads how long a rotated key's old secret keeps working, as
// the admin API and the CLI take it: a duration, 0 for not at all.
func parseGrace(s string) (time.Duration, bool) {
	d, err := caddy.ParseDuration(s)
	return d, err == nil && d >= 0
}

// serveRotateClient gives a key a new secret; the old one works for the
// grace period.
func (h *Handler) serveRotateClient(w http.ResponseWriter, r *http.Request, c *call) error {
	q, err := h.body.adminParams(w, r, c, "grace")
	if err != nil {
		return err
	}
	grace := defaultRotateGrace
	if v := strings.TrimSpace(q.Get("grace")); v != "" {
		var ok bool
		if grace, ok = parseGrace(v); !ok {
			return errBadParam("grace", "parameter 'grace' must be a duration such as 24h, or 0 to stop the old key now")
		}
	}
	key, e, err := h.store.Rotate(r.Context(), c.arg, grace)
	if err != nil {
		return lifecycleFailure(h.logger, c.arg, err)
	}
	writeJSON(w, http.StatusOK, createdBody{Result: "success", Key: key, entryView: viewOf(&e, h.views)})
	return nil
}

// serveUpdateClient changes a key's expiry: expires_in from now, or
// expires_at a time, or JSON null for never. An empty or blank value is
// refused, never read as "never": a script whose date variable came out
// empty must not make an expiring key permanent.
func (h *Handler) serveUpdateClient(w http.ResponseWriter, r *http.Request, c *call) error {
	q, err := h.body.adminParams(w, r, c, "expires_in", "expires_at", "permissions", "topic_prefix")
	if err != nil {
		return err
	}
	if q.Has("topic_prefix") || q.null["topic_prefix"] {
		if q.Has("permissions") || q.Has("expires_in") || q.Has("expires_at") || q.null["expires_at"] {
			return errBadParam("topic_prefix", "change a key's topics on their own, not with its permissions or expiry")
		}
		prefix := ""
		if !q.null["topic_prefix"] {
			if prefix, err = topicPrefixParam(q.Get("topic_prefix")); err != nil {
				return err
			}
		}
		e, err := h.store.SetTopicPrefix(r.Context(), c.arg, prefix)
		return h.changed(w, c, &e, err)
	}
	var perms []string
	if q.Has("permissions") {
		if perms, err = permissionsParam(q.Get("permissions")); err != nil {
			return err
		}
		if !q.Has("expires_in") && !q.Has("expires_at") && !q.null["expires_at"] {
			return h.setPermissions(w, r, c, perms)
		}
	}
	var at *time.Time
	switch {
	case q.Has("expires_in") && q.Has("expires_at"):
		return errBadParam("expires_at", "give 'expires_in' or 'expires_at', not both")
	case q.Has("expires_in"):
		d, err := caddy.ParseDuration(strings.TrimSpace(q.Get("expires_in")))
		if err != nil || d <= 0 {
			return errBadParam("expires_in", "parameter 'expires_in' must be a positive duration such as 90d or 12h")
		}
		t := time.Now().Add(d)
		at = &t
	case q.null["expires_at"]:
		// Never expires.
	case q.Has("expires_at"):
		v := strings.TrimSpace(q.Get("expires_at"))
		if v == "" {
			return errBadParam("expires_at", "parameter 'expires_at' is empty: give a time such as 2027-01-31T00:00:00Z, or JSON null ({\"expires_at\": null}) to remove the expiry")
		}
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return errBadParam("expires_at", "parameter 'expires_at' must be a time such as 2027-01-31T00:00:00Z, or JSON null ({\"expires_at\": null}) to remove the expiry")
		}
		at = &t
	default:
		return errMissingParam("expires_in").setMsg("give 'expires_in' (a duration from now) or 'expires_at' (a time, or JSON null for never), or 'permissions'")
	}
	if q.Has("permissions") {
		// Both asked: the permissions first, refused for an admin key
		// before the expiry changes.
		if _, err := h.store.SetPermissions(r.Context(), c.arg, perms); err != nil {
			return lifecycleFailure(h.logger, c.arg, err)
		}
	}
	e, err := h.store.SetExpiry(r.Context(), c.arg, at)
	return h.changed(w, c, &e, err)
}

// changed answers a change to the key of the path: the key as it is now,
// or why it could not change. The store logs the change, as it records it
// in the audit trail.
func (h *Handler) changed(w http.ResponseWriter, c *call, e *keystore.Entry, err error) error {
	if err != nil {
		return lifecycleFailure(h.logger, c.arg, err)
	}
	writeJSON(w, http.StatusOK, revokedBody{Result: "success", Client: viewOf(e, h.views)})
	return nil
}

// setPermissions changes what a scoped key may do.
func (h *Handler) setPermissions(w http.ResponseWriter, r *http.Request, c *call, perms []string) error {
	e, err := h.store.SetPermissions(r.Context(), c.arg, perms)
	return h.changed(w, c, &e, err)
}

// topicPrefixParam reads a key's topic prefix.
func topicPrefixParam(v string) (string, error) {
	p, err := keystore.ParseTopicPrefix(v)
	if err != nil {
		return "", errBadParam("topic_prefix", "parameter 'topic_prefix': "+err.Error()+" (JSON null lifts the scope)")
	}
	return p, nil
}

// permissionsParam reads a key's permissions: "send,edit" (or a JSON
// array of them).
func permissionsParam(v string) ([]string, error) {
	perms, err := keystore.ParsePermissions([]string{v})
	if err != nil {
		return nil, errBadParam("permissions", "parameter 'permissions': "+err.Error())
	}
	return perms, nil
}

// serveClientMessages shows an admin the last messages a key's bot posted
// in the key's stream, as the key itself would read them back.
func (h *Handler) serveClientMessages(w http.ResponseWriter, r *http.Request, c *call) error {
	q, err := h.body.adminParams(w, r, c, "num_before")
	if err != nil {
		return err
	}
	n, aerr := intParam(q.Values, "num_before", 20, 1, 100)
	if aerr != nil {
		return aerr
	}
	e, ok := h.store.Get(c.arg)
	if !ok {
		return errNoClient(c.arg)
	}
	if e.Admin {
		return errBadParam("id", "an admin key posts nothing; pick a scoped key")
	}
	b, ok := h.bots.of(&e)
	if !ok {
		return newError(http.StatusServiceUnavailable, codeUnavailable, "this key's bot is not configured on this server")
	}
	c.bot = b
	// Raw Markdown: the page shows messages as text, never as HTML.
	raw := false
	return c.writeBotMessages(w, r, e.Stream, zulip.GetMessages{
		Anchor: "newest", NumBefore: n, ReadOptions: zulip.ReadOptions{ApplyMarkdown: &raw},
	}, nil)
}

func errNoClient(id string) *apiError {
	return newError(http.StatusNotFound, codeNotFound, "no client with id '"+id+"'")
}

// lifecycleFailure answers a rotation or expiry change the store refused.
func lifecycleFailure(logger *zap.Logger, id string, err error) error {
	switch {
	case errors.Is(err, keystore.ErrNotFound):
		return errNoClient(id)
	case errors.Is(err, keystore.ErrKeyRevoked):
		return newError(http.StatusConflict, codeBadRequest, "client '"+id+"' is revoked; a revoked key stays revoked")
	case errors.Is(err, keystore.ErrAdminPermissions):
		return errBadParam("permissions", "client '"+id+"' is an admin key: it manages keys and never posts, so it has no permissions to change")
	}
	return storeFailure(logger, err)
}

type botView struct {
	Name    string `json:"name"`
	Site    string `json:"site"`
	Email   string `json:"email"`
	Default bool   `json:"default"`
}

type botsBody struct {
	Result string    `json:"result"`
	Msg    string    `json:"msg"`
	Bots   []botView `json:"bots"`
}

// serveListBots names the configured bots a key may speak as, for the
// admin page's choice; never their credentials.
func (h *Handler) serveListBots(w http.ResponseWriter, r *http.Request, c *call) error {
	if _, err := h.body.adminParams(w, r, c); err != nil {
		return err
	}
	views := make([]botView, 0, len(h.bots.byName))
	for _, name := range slices.Sorted(maps.Keys(h.bots.byName)) {
		b := h.bots.byName[name]
		views = append(views, botView{Name: name, Site: b.client.Site(), Email: b.client.Email(), Default: name == h.bots.def})
	}
	writeJSON(w, http.StatusOK, botsBody{Result: "success", Bots: views})
	return nil
}
