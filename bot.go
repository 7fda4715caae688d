package zulipproxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
	"github.com/zwop/caddy-zulip-proxy/zulip"
	"golang.org/x/sync/singleflight"
)

// Bot is a real Zulip bot whose credentials the proxy uses on behalf of
// scoped keys. Give either site, email and api_key, or a zuliprc file.
type Bot struct {
	// Site is the Zulip server's base URL, for example
	// `https://chat.example.org`. Placeholders such as `{env.ZULIP_SITE}`
	// are replaced when the config loads.
	Site string `json:"site,omitempty"`

	// Email is the bot's Zulip email address. Placeholders are replaced.
	Email string `json:"email,omitempty"`

	// APIKey is the bot's Zulip API key. Use a placeholder such as
	// `{env.ZULIP_BOT_API_KEY}` to keep it out of the config file.
	APIKey string `json:"api_key,omitempty"`

	// Zuliprc is the path of a zuliprc file (Zulip's INI format, section
	// `[api]` with `email`, `key` and `site`), as Zulip offers for download
	// in a bot's settings. Exclusive with site, email and api_key.
	Zuliprc string `json:"zuliprc,omitempty"`

	// CertBundle is the path of a PEM file with the certificate
	// authorities that a Zulip with a private CA is checked against,
	// instead of the system's roots. A zuliprc's own `cert_bundle` is
	// used when this is empty; a relative path there is relative to the
	// zuliprc's folder. Default: the system's roots.
	CertBundle string `json:"cert_bundle,omitempty"`
}

// bot is a configured bot ready to serve: its client, and what the proxy
// learns from Zulip about it (its user id, its streams' ids), cached so the
// request path asks Zulip once.
type bot struct {
	name   string
	client *zulip.Client

	// uid is the bot's Zulip user id, 0 until first learned.
	uid atomic.Int64
	// streamIDs maps a stream name to its id; read on every send, written
	// rarely, which is what sync.Map is for.
	streamIDs sync.Map
	// lookups merges concurrent lookups of one stream's id into one call.
	lookups singleflight.Group
	// budget is the bot's Zulip rate limit, shared fairly by its keys.
	budget *budget
	// health is its standing with its Zulip (bothealth.go).
	health *botHealth
}

// identity names the Zulip account the bot speaks as.
func (b *bot) identity() string { return b.client.Email() + " at " + b.client.Site() }

// resolveBot turns a bot's config into credentials, replacing global
// placeholders (env variables) so secrets can stay outside the config.
func resolveBot(name string, b *Bot) (zulip.Config, error) {
	if b == nil {
		return zulip.Config{}, fmt.Errorf("bot %q: empty definition", name)
	}
	repl := caddy.NewReplacer()
	expand := func(field, v string) (string, error) {
		out, err := repl.ReplaceOrErr(v, true, true)
		if err != nil {
			return "", fmt.Errorf("bot %q: %s: %w", name, field, err)
		}
		return out, nil
	}
	if b.Zuliprc != "" {
		if b.Site != "" || b.Email != "" || b.APIKey != "" {
			return zulip.Config{}, fmt.Errorf("bot %q: zuliprc cannot be combined with site, email or api_key", name)
		}
		path, err := expand("zuliprc", b.Zuliprc)
		if err != nil {
			return zulip.Config{}, err
		}
		cfg, err := zulip.LoadZuliprc(path)
		if err != nil {
			return zulip.Config{}, fmt.Errorf("bot %q: %w", name, err)
		}
		if b.CertBundle != "" {
			if cfg.CertBundle, err = expand("cert_bundle", b.CertBundle); err != nil {
				return zulip.Config{}, err
			}
		}
		return cfg, nil
	}
	var cfg zulip.Config
	var err error
	for _, f := range []struct {
		name string
		in   string
		out  *string
	}{
		{"site", b.Site, &cfg.Site},
		{"email", b.Email, &cfg.Email},
		{"api_key", b.APIKey, &cfg.APIKey},
	} {
		if f.in == "" {
			return zulip.Config{}, fmt.Errorf("bot %q: missing %s (or give a zuliprc file)", name, f.name)
		}
		if *f.out, err = expand(f.name, f.in); err != nil {
			return zulip.Config{}, err
		}
	}
	if b.CertBundle != "" {
		if cfg.CertBundle, err = expand("cert_bundle", b.CertBundle); err != nil {
			return zulip.Config{}, err
		}
	}
	return cfg, nil
}

// botSet is a config's bots, and the one keys that name no bot speak as.
type botSet struct {
	byName map[string]*bot
	// def names the default bot ("" when there is none to pick).
	def string
	// fallback answers what needs a bot when no key names one
	// (server_settings): the default bot, else the first by name.
	fallback *bot
	// poolKeys are this config's entries in botPool, for Cleanup.
	poolKeys []string
}

// of is the bot a key speaks as.
func (bs botSet) of(e *keystore.Entry) (*bot, bool) {
	name := e.Bot
	if name == "" {
		name = bs.def
	}
	b, ok := bs.byName[name]
	return b, ok
}

// defaultBotOf is the bot that keys naming none speak as: the one called
// "default", else the only one; "" when neither is.
func defaultBotOf[V any](bots map[string]V) string {
	if _, ok := bots[defaultBotName]; ok {
		return defaultBotName
	}
	if len(bots) == 1 {
		for name := range bots {
			return name
		}
	}
	return ""
}

// provisionBots takes a bot for every configured one from the bot pool.
// timeout bounds each call to Zulip. The pool entries taken are returned
// even on error, so that what was taken is released.
func provisionBots(cfgs map[string]*Bot, timeout time.Duration) (botSet, error) {
	bs := botSet{byName: make(map[string]*bot, len(cfgs)), def: defaultBotOf(cfgs)}
	if len(cfgs) == 0 {
		return bs, fmt.Errorf("zulip_proxy: no bot configured; add a `bot default { ... }` block")
	}
	names := slices.Sorted(maps.Keys(cfgs))
	for _, name := range names {
		cfg, err := resolveBot(name, cfgs[name])
		if err != nil {
			return bs, err
		}
		cfg.Timeout = timeout
		key := botPoolKey(name, cfg)
		b, err := loadPooledBot(key, func() (*bot, error) {
			c, err := zulip.NewClient(cfg)
			if err != nil {
				return nil, fmt.Errorf("bot %q: %w", name, err)
			}
			return newBot(name, c), nil
		})
		if err != nil {
			return bs, err
		}
		bs.poolKeys = append(bs.poolKeys, key)
		bs.byName[name] = b
	}
	bs.fallback = bs.byName[bs.def]
	if bs.fallback == nil {
		bs.fallback = bs.byName[names[0]]
	}
	return bs, nil
}

// newBot is a bot ready to serve through c, learning its Zulip budget
// from every answer.
func newBot(name string, c *zulip.Client) *bot {
	b := &bot{name: name, client: c, budget: newBudget(), health: newBotHealth(name, logSite(c.Site()))}
	b.health.check = checkMe(c)
	c.Observe(func(ctx context.Context, zc zulip.Call) {
		b.health.observe(zc, time.Now())
		if c := callOf(ctx); c != nil {
			c.noteZulip(b, zc, time.Now())
		} else {
			// The proxy's own call: the bot's budget, no key's.
			b.budget.observe(nil, zc, time.Now())
		}
		if !zc.Anonymous && zc.Response != nil {
			observeBudget(name, zc.Response)
		}
	})
	return b
}

// botPool shares a bot between the configs that define it alike, so a
// reload keeps its open connections to Zulip and what it learned there
// (its user id, its streams' ids) instead of asking Zulip again.
var botPool = caddy.NewUsagePool()

// Destruct closes the bot's idle connections when no config uses it.
func (b *bot) Destruct() error {
	b.health.close()
	b.client.CloseIdleConnections()
	return nil
}

// logSite is a bot's site as logs and /health may show it: no user
// info, query or fragment, whatever the config held.
func logSite(site string) string {
	u, err := url.Parse(site)
	if err != nil {
		return "(unparsable site)"
	}
	u.User, u.RawQuery, u.ForceQuery, u.Fragment = nil, "", false, ""
	return u.String()
}

// botPoolKey names a bot by everything its client is built from: a change
// of any of them (a new key, another CA file's content) makes a new bot.
// The API key enters only hashed.
func botPoolKey(name string, cfg zulip.Config) string {
	h := sha256.New()
	for _, v := range []string{name, cfg.Site, cfg.Email, cfg.APIKey, cfg.CertBundle, cfg.Timeout.String()} {
		h.Write([]byte(v))
		h.Write([]byte{0})
	}
	if cfg.CertBundle != "" {
		if pem, err := os.ReadFile(cfg.CertBundle); err == nil {
			h.Write(pem)
		}
	}
	return "bot:" + hex.EncodeToString(h.Sum(nil))
}

func loadPooledBot(key string, open func() (*bot, error)) (*bot, error) {
	v, _, err := botPool.LoadOrNew(key, func() (caddy.Destructor, error) {
		return open()
	})
	if err != nil {
		return nil, err
	}
	return v.(*bot), nil
}

// isStreamGone says whether Zulip answered that a stream id is not (or no
// longer) valid, so a cached id must be looked up again.
func isStreamGone(err error) bool {
	var zerr *zulip.Error
	if !errors.As(err, &zerr) {
		return false
	}
	if zerr.Code == "STREAM_DOES_NOT_EXIST" {
		return true
	}
	msg := strings.ToLower(zerr.Msg)
	return zerr.Status == http.StatusBadRequest &&
		(strings.Contains(msg, "invalid channel id") || strings.Contains(msg, "invalid stream id"))
}

// isNoSuchStream says whether Zulip answered a stream's name that it has
// no stream of that name (get_stream_id: "Invalid channel name 'x'").
func isNoSuchStream(err error) bool {
	var zerr *zulip.Error
	if !errors.As(err, &zerr) || zerr.Status != http.StatusBadRequest {
		return false
	}
	msg := strings.ToLower(zerr.Msg)
	return strings.Contains(msg, "invalid channel name") || strings.Contains(msg, "invalid stream name")
}

// streamID returns a stream's id, asking Zulip once per bot and stream.
func (b *bot) streamID(ctx context.Context, name string) (int64, error) {
	if id, ok := b.streamIDs.Load(name); ok {
		return id.(int64), nil
	}
	// One call for all who ask at once; it is not cancelled with the
	// first caller, whose lookup serves the others too.
	v, err, _ := b.lookups.Do(name, func() (any, error) {
		id, _, err := b.client.GetStreamID(context.WithoutCancel(ctx), name)
		if err != nil {
			return int64(0), err
		}
		b.streamIDs.Store(name, id)
		return id, nil
	})
	return v.(int64), err
}

// withStream runs fn with the id of the key's stream. When Zulip says the
// cached id is gone (the stream was deleted and made again, say), the id is
// looked up once more and fn retried once.
func (b *bot) withStream(ctx context.Context, name string, fn func(id int64) error) error {
	id, err := b.streamID(ctx, name)
	if err != nil {
		return err
	}
	err = fn(id)
	if err == nil || !isStreamGone(err) {
		return err
	}
	b.streamIDs.CompareAndDelete(name, id)
	newID, lerr := b.streamID(ctx, name)
	if lerr != nil {
		return lerr
	}
	if newID == id {
		return err
	}
	return fn(newID)
}

// botUserID returns the bot's own Zulip user id, asked once.
func (b *bot) userID(ctx context.Context) (int64, error) {
	if id := b.uid.Load(); id != 0 {
		return id, nil
	}
	u, _, err := b.client.Me(ctx)
	if err != nil {
		return 0, err
	}
	b.uid.Store(u.UserID)
	return u.UserID, nil
}
