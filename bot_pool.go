package zulipproxy

import (
	"crypto/sha256"
	"encoding/hex"
	"os"

	"github.com/caddyserver/caddy/v2"

	"github.com/zwop/caddy-zulip-proxy/zulip"
)

// botPool shares a bot between the configs that define it alike, so a
// reload keeps its open connections to Zulip and what it learned there
// (its user id, its streams' ids) instead of asking Zulip again.
var botPool = caddy.NewUsagePool()

// Destruct closes the bot's idle connections when no config uses it.
func (b *bot) Destruct() error {
	b.client.CloseIdleConnections()
	return nil
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
