package zulipproxy

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
	"github.com/zwop/caddy-zulip-proxy/zulip"
	"go.uber.org/zap"
)

// entryView is what the API shows of a key's entry: never the key, never
// its hash.
type entryView struct {
	ID         string     `json:"id"`
	Name       string     `json:"name,omitempty"`
	ProposalNo int64      `json:"proposal_no,omitempty"`
	Stream     string     `json:"stream,omitempty"`
	Bot        string     `json:"bot,omitempty"`
	Admin      bool       `json:"admin"`
	Legacy     bool       `json:"legacy,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	CreatedBy  string     `json:"created_by,omitempty"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
	// RateLimit is the key's own limit ("10/1m"), or, for a scoped key in
	// the API's answers, the server's rate_limit that applies to it.
	RateLimit string `json:"rate_limit,omitempty"`
	// Delivery is "queued" for a key whose sends wait in the proxy's
	// queue while Zulip cannot take them, else "direct"; scoped keys only.
	Delivery string `json:"delivery,omitempty"`
	// Permissions are what a scoped key may do: a subset of send,
	// upload, edit, read, topics (all of them unless narrowed).
	Permissions []string `json:"permissions,omitempty"`
	// TopicPrefix holds a scoped key to the topics that start with it.
	TopicPrefix string `json:"topic_prefix,omitempty"`
	// RotatedAt is when the key last got a new secret.
	RotatedAt *time.Time `json:"rotated_at,omitempty"`
	// PreviousKeyValidUntil is when the secret the last rotation replaced
	// stops working, while that is ahead.
	PreviousKeyValidUntil *time.Time `json:"previous_key_valid_until,omitempty"`
	// OldKeysValidUntil says, for each replaced secret that still works,
	// until when; oldest first.
	OldKeysValidUntil []time.Time `json:"old_keys_valid_until,omitempty"`
	// KeyValidUntil, in /me only, says the caller's own secret was
	// rotated and stops working then.
	KeyValidUntil *time.Time `json:"key_valid_until,omitempty"`
}

// viewDefaults are what a server fills in where a key names nothing: the
// bot a key without one speaks as, and the server's rate_limit. The CLI,
// which serves nothing, shows the entry as stored, without them.
type viewDefaults struct {
	bot, rateLimit string
}

// viewOf is an entry as the HTTP API and `list --json` show it.
func viewOf(e *keystore.Entry, d viewDefaults) entryView {
	v := entryView{
		ID: e.ID, Name: e.Name, ProposalNo: e.ProposalNo, Stream: e.Stream, Bot: e.Bot,
		Admin: e.Admin, Legacy: e.Legacy, CreatedAt: e.CreatedAt, CreatedBy: e.CreatedBy,
		ExpiresAt: e.ExpiresAt, RevokedAt: e.RevokedAt, LastUsedAt: e.LastUsedAt, RateLimit: e.RateLimit,
		RotatedAt: e.RotatedAt,
	}
	now := time.Now()
	for _, r := range e.Retired {
		if now.Before(r.Until) {
			v.OldKeysValidUntil = append(v.OldKeysValidUntil, r.Until)
		}
	}
	if n := len(e.Retired); n > 0 && now.Before(e.Retired[n-1].Until) {
		t := e.Retired[n-1].Until
		v.PreviousKeyValidUntil = &t
	}
	if !e.Admin && v.Bot == "" {
		v.Bot = d.bot
	}
	if !e.Admin && v.RateLimit == "" {
		v.RateLimit = d.rateLimit
	}
	if !e.Admin {
		v.Delivery = deliveryOf(e)
		v.Permissions = e.Granted()
		v.TopicPrefix = e.TopicPrefix
	}
	return v
}

type healthBody struct {
	Status  string `json:"status"`
	Version string `json:"version"`
	// Store is "ok", "read-only" (keys work, changes fail) or
	// "unreadable" (the last good keys work, the document is damaged).
	Store string `json:"store"`
	// Bots are the config's bots' standing with their Zulip, by name.
	Bots map[string]botHealthView `json:"bots"`
	Msg  string                   `json:"msg,omitempty"`
}

// serveHealth is for load balancers: 503 when the key store cannot be read,
// so traffic moves to an instance that can check keys; "degraded" (still
// 200: the proxy serves, and can queue) when keys work but changes cannot
// be written, or a bot's Zulip cannot be reached or refuses its
// credentials. The body gives each bot's state.
func (h *Handler) serveHealth(w http.ResponseWriter, _ *http.Request, _ *call) error {
	body := healthBody{Status: "OK", Version: zulip.Version, Store: "ok", Bots: make(map[string]botHealthView, len(h.bots.byName))}
	var bad []string
	for _, name := range slices.Sorted(maps.Keys(h.bots.byName)) {
		v := h.bots.byName[name].health.view()
		body.Bots[name] = v
		switch v.State {
		case botRejected:
			bad = append(bad, fmt.Sprintf("bot %q: Zulip refuses its credentials (check its email and api_key)", name))
		case botUnreachable:
			bad = append(bad, fmt.Sprintf("bot %q: its Zulip cannot be reached (%s)", name, v.Reason))
		}
	}
	if err := h.store.Healthy(); err != nil {
		h.health.note(h.logger, err)
		msg := "the key store cannot be read; the last good keys keep working"
		switch {
		case errors.Is(err, keystore.ErrStoreLost):
			msg = "the key store lacks keys it held (emptied, replaced or gone); the last good keys keep working until it is restored"
		case errors.Is(err, keystore.ErrCorruptStore):
			msg = "the key store is corrupt; the last good keys keep working until it is repaired"
		}
		body.Status, body.Store, body.Msg = "error", "unreadable", msg
		writeJSON(w, http.StatusServiceUnavailable, body)
		return nil
	}
	h.health.note(h.logger, nil)
	if len(bad) > 0 {
		body.Status = "degraded"
	}
	switch err := h.store.Writable(); {
	case h.StoreReadOnly:
		// On purpose: no fault.
		body.Store = "read-only"
		bad = append([]string{"the key store is read-only by configuration (store_read_only): keys are managed elsewhere"}, bad...)
	case err != nil:
		body.Status, body.Store = "degraded", "read-only"
		bad = append([]string{"the key store cannot be written: keys work, but cannot be created or revoked"}, bad...)
	}
	body.Msg = strings.Join(bad, "; ")
	writeJSON(w, http.StatusOK, body)
	return nil
}

type meBody struct {
	Result string `json:"result"`
	Msg    string `json:"msg"`
	entryView
}

func (h *Handler) serveMe(w http.ResponseWriter, _ *http.Request, c *call) error {
	v := viewOf(c.entry, h.views)
	v.LastUsedAt = h.store.LastUsed(c.entry)
	body := meBody{Result: "success", entryView: v}
	if until := c.entry.RetiredUntil; until != nil {
		body.KeyValidUntil = until
		body.Msg = "this key was rotated: it stops working at " + until.UTC().Format(time.RFC3339) + "; use the new key"
	}
	writeJSON(w, http.StatusOK, body)
	return nil
}

// healthLog logs when /health's finding changes, not on every probe: a
// load balancer asks every few seconds, and a damaged store would
// otherwise write the same warning each time, for as long as it lasts.
type healthLog struct {
	// said is the key store's problem last logged ("" when it last
	// found none).
	said atomic.Pointer[string]
}

func (hl *healthLog) note(logger *zap.Logger, err error) {
	said := hl.said.Load()
	if err == nil {
		if said != nil && *said != "" && hl.said.CompareAndSwap(said, new(string)) {
			logger.Info("health check passing again: key store readable")
		}
		return
	}
	msg := err.Error()
	if said != nil && *said == msg || !hl.said.CompareAndSwap(said, &msg) {
		return
	}
	logger.Warn("health check failing: key store unreadable", zap.Error(err))
}
