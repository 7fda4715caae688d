package zulipproxy

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/zwop/caddy-zulip-proxy/zulip"
)

// All keys of a bot share that bot's Zulip rate limit (Zulip counts per
// user). budget learns the limit from Zulip's own X-RateLimit-* answers
// and keeps any one key from using it up while other keys of the bot
// exist: in each of Zulip's windows a key may make its share, the limit
// over the bot's keys, and a key over its share gets the proxy's 429
// instead of being forwarded for Zulip to refuse. When Zulip does say 429,
// nothing more of the bot's is forwarded until Zulip's Retry-After. It
// reads Zulip's counters, so it holds with several Caddy instances too.
type budget struct {
	mu        sync.Mutex
	known     bool
	limit     int       // Zulip's X-RateLimit-Limit
	remaining int       // Zulip's last X-RateLimit-Remaining, less calls admitted since
	reset     time.Time // Zulip's X-RateLimit-Reset: the window has room again
	blocked   time.Time // after Zulip's 429: forward nothing until then
	used      map[string]int
	windowEnd time.Time
	// probe is the key whose call went out to learn the budget; the
	// calls that come meanwhile wait for learned.
	probing bool
	probe   string
	learned chan struct{}
	woken   bool
	// noLimit: Zulip answered without rate-limit headers (a Zulip with
	// limits off): nothing to share, and no reason to wait.
	noLimit bool
}

// wake lets the calls waiting to learn the budget go on; once.
func (bg *budget) wake() {
	if !bg.woken {
		bg.woken = true
		close(bg.learned)
	}
}

func newBudget() *budget { return &budget{used: map[string]int{}, learned: make(chan struct{})} }

// observe reads a Zulip answer's rate-limit headers.
func (bg *budget) observe(resp *zulip.Response, now time.Time) {
	limit, ok1 := headerInt(resp.Header, "X-Ratelimit-Limit")
	remaining, ok2 := headerInt(resp.Header, "X-Ratelimit-Remaining")
	resetF, ok3 := headerFloat(resp.Header, "X-Ratelimit-Reset")
	bg.mu.Lock()
	defer bg.mu.Unlock()
	if resp.Status == http.StatusTooManyRequests {
		wait := time.Second
		if ra, err := strconv.ParseFloat(strings.TrimSpace(resp.Header.Get("Retry-After")), 64); err == nil && ra > 0 && ra < 86400 {
			wait = time.Duration(ra * float64(time.Second))
		}
		bg.blocked = now.Add(wait)
	}
	if !ok1 || !ok2 || !ok3 || limit <= 0 {
		if !bg.known {
			bg.noLimit = true
			bg.wake()
		}
		return
	}
	bg.limit, bg.remaining = limit, remaining
	bg.reset = time.Unix(0, int64(resetF*float64(time.Second)))
	if !bg.known {
		bg.known = true
		bg.windowEnd = bg.reset
		if bg.probe != "" && !bg.noLimit {
			bg.used[bg.probe]++
		}
		bg.wake()
	}
}

// headerInt and headerFloat read a number from a header; a missing one is
// not parsed, since a failed parse allocates its error, and a Zulip with no
// rate limit sends none of these on every answer.
func headerInt(h http.Header, name string) (int, bool) {
	v := h[name]
	if len(v) == 0 || v[0] == "" {
		return 0, false
	}
	n, err := strconv.Atoi(v[0])
	return n, err == nil
}

func headerFloat(h http.Header, name string) (float64, bool) {
	v := h[name]
	if len(v) == 0 || v[0] == "" {
		return 0, false
	}
	f, err := strconv.ParseFloat(v[0], 64)
	return f, err == nil
}

// probeDone ends a learning call that brought no budget (no headers, or
// nothing reached Zulip): the others stop waiting.
func (bg *budget) probeDone(key string) {
	bg.mu.Lock()
	defer bg.mu.Unlock()
	if bg.probing && bg.probe == key && !bg.known && !bg.noLimit {
		// Nothing reached Zulip: the next call learns instead.
		bg.probing = false
		bg.wake()
		bg.learned, bg.woken = make(chan struct{}), false
	}
}

// budgetVerdict is admit's answer: ok, or why not and for how long.
type budgetVerdict struct {
	ok     bool
	probe  bool
	reason string // "bot_budget" or "zulip_backoff"
	wait   time.Duration
}

// admit decides whether key may spend one of the bot's calls now; keys is
// how many scoped keys speak as this bot.
func (bg *budget) admit(ctx context.Context, key string, keys int, now time.Time) budgetVerdict {
	bg.mu.Lock()
	if now.Before(bg.blocked) {
		wait := bg.blocked.Sub(now)
		bg.mu.Unlock()
		return budgetVerdict{reason: "zulip_backoff", wait: wait}
	}
	if !bg.known && bg.noLimit {
		bg.mu.Unlock()
		return budgetVerdict{ok: true}
	}
	if !bg.known {
		if !bg.probing {
			bg.probing, bg.probe = true, key
			bg.mu.Unlock()
			return budgetVerdict{ok: true, probe: true}
		}
		learned := bg.learned
		bg.mu.Unlock()
		select {
		case <-learned:
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
		now = time.Now()
		bg.mu.Lock()
		if !bg.known {
			bg.mu.Unlock()
			return budgetVerdict{ok: true}
		}
	}
	defer bg.mu.Unlock()
	if !now.Before(bg.windowEnd) {
		// A new window: Zulip's counters have moved on; so do ours.
		clear(bg.used)
		bg.windowEnd = now.Add(max(bg.reset.Sub(now), time.Second))
		if bg.remaining <= 0 && !now.Before(bg.reset) {
			bg.remaining = bg.limit
		}
	}
	if bg.remaining <= 0 && now.Before(bg.reset) {
		return budgetVerdict{reason: "bot_budget", wait: bg.reset.Sub(now)}
	}
	share := bg.limit
	if keys > 1 {
		share = max(bg.limit/keys, 1)
	}
	if bg.used[key] >= share {
		return budgetVerdict{reason: "bot_budget", wait: max(bg.windowEnd.Sub(now), time.Second)}
	}
	bg.used[key]++
	bg.remaining--
	return budgetVerdict{ok: true}
}

// keysOf is how many scoped keys speak as bot b: those naming it, and,
// for the default bot, those naming none.
func (h *Handler) keysOf(b *bot) int {
	n := h.store.ScopedKeys(b.name)
	if b.name == h.defaultBot {
		n += h.store.ScopedKeys("")
	}
	return n
}

// spendBotBudget applies the bot's fair share to a scoped call, after the
// key's own rate limit. release ends a learning call.
func (h *Handler) spendBotBudget(r *http.Request, c *call) (release func(), aerr *apiError) {
	if c.bot == nil || c.bot.budget == nil {
		return func() {}, nil
	}
	v := c.bot.budget.admit(r.Context(), c.entry.ID, h.keysOf(c.bot), time.Now())
	if v.ok {
		if v.probe {
			return func() { c.bot.budget.probeDone(c.entry.ID) }, nil
		}
		return func() {}, nil
	}
	metrics.limited.WithLabelValues(v.reason).Inc()
	msg := "this key has made its share of the calls bot '" + c.bot.name + "' may make to Zulip now; other keys share that bot"
	if v.reason == "zulip_backoff" {
		msg = "Zulip asked bot '" + c.bot.name + "' to wait: API usage exceeded rate limit"
	}
	h.logger.Info("call refused to share the bot's Zulip budget", zap.String("key_id", c.entry.ID),
		zap.String("bot", c.bot.name), zap.String("reason", v.reason), zap.Duration("retry_after", v.wait))
	return nil, errRateLimited(c, msg, v.wait)
}
