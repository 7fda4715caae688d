package zulipproxy

import (
	"context"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/zwop/caddy-zulip-proxy/zulip"
)

// All keys of a bot share that bot's Zulip rate limit (Zulip counts per
// user). budget learns the limit from Zulip's own X-RateLimit-* answers
// and shares it between the keys calling now, in windows as long as
// Zulip's:
//
//   - A key that has not called in this window may always make a call
//     while any is left: one share is held back for it.
//   - A key that has called may go on up to its part of what is not held
//     back, (L − held) / n for n keys calling; and it may not eat into the
//     held-back share.
//   - The share held back is L / (n+1) at the start of a window and
//     shrinks in step with the time left, so a lone busy key gets half a
//     window at once and most of it when its calls spread over the
//     window.
//
// Every call a request makes to Zulip is charged to its key: a request
// reserves its usual number of calls when admitted, more calls than that
// are charged as they happen and never refused (a clean-up must run),
// and what it did not make is given back when it ends. The proxy's own
// calls (subscribing a bot to a key's stream) count against the bot.
// When Zulip says 429 to one of the bot's calls, nothing more of the
// bot's is forwarded until Zulip's Retry-After; anonymous calls
// (server_settings) teach the budget nothing. It reads Zulip's counters,
// so what other instances spend is seen in every answer.
type budget struct {
	mu      sync.Mutex
	known   bool
	limit   int           // Zulip's X-RateLimit-Limit
	window  time.Duration // Zulip's window, learned from X-RateLimit-Reset
	reset   time.Time     // Zulip's X-RateLimit-Reset: its window is all free again
	blocked time.Time     // after Zulip's 429: forward nothing until then
	// remaining is Zulip's last X-RateLimit-Remaining, read at asOf;
	// pending the calls admitted and not made yet. What may still go is
	// the difference, and the calls Zulip counted then that have left
	// its window since: Zulip's window slides, so a call is free again a
	// window after the call it counted, not when its whole window is.
	remaining, pending int
	asOf               time.Time
	// sent are the times this process's calls to the bot's Zulip ended,
	// oldest first, back to a window before asOf: when each leaves
	// Zulip's window at the latest.
	sent []time.Time
	// The proxy's window: when it ends, and how many calls each key
	// that called in it was charged; gen counts windows, so a request
	// that outlives one gives back only what it took from the current.
	windowEnd time.Time
	used      map[string]int
	gen       uint64
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

// defaultZulipWindow is used until Zulip's answers show its window:
// Zulip's own default is 200 calls a minute.
const defaultZulipWindow = time.Minute

func newBudget() *budget { return &budget{used: map[string]int{}, learned: make(chan struct{})} }

// spend is one request's account with its bot's budget.
type spend struct {
	bg  *budget
	key string
	// reserved are the calls admitted for this request and not made yet,
	// counted in window gen.
	reserved int
	gen      uint64
	probe    bool
}

// budgetVerdict is admit's answer: ok, or why not, for how long, and the
// key's part of the bot's budget for the 429's X-RateLimit-Limit.
type budgetVerdict struct {
	ok     bool
	reason string // "bot_budget" or "zulip_backoff"
	wait   time.Duration
	limit  int
}

// wake lets the calls waiting to learn the budget go on; once.
func (bg *budget) wake() {
	if !bg.woken {
		bg.woken = true
		close(bg.learned)
	}
}

// admit decides whether sp's key may start a request that usually makes
// cost calls to Zulip, and reserves them.
func (bg *budget) admit(ctx context.Context, sp *spend, cost int, now time.Time) budgetVerdict {
	sp.bg = bg
	bg.mu.Lock()
	if !bg.known && !bg.noLimit {
		if !bg.probing {
			bg.probing, bg.probe, sp.probe = true, sp.key, true
			bg.mu.Unlock()
			return budgetVerdict{ok: true}
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
	}
	defer bg.mu.Unlock()
	return bg.reserveLocked(sp, cost, now)
}

// more reserves n calls more for a request under way, before it makes
// them (the upload of a message's file): refused like a new request.
func (bg *budget) more(sp *spend, n int, now time.Time) budgetVerdict {
	bg.mu.Lock()
	defer bg.mu.Unlock()
	return bg.reserveLocked(sp, n, now)
}

func (bg *budget) reserveLocked(sp *spend, cost int, now time.Time) budgetVerdict {
	if cost == 0 {
		// Nothing to forward, usually (an id the proxy has cached).
		return budgetVerdict{ok: true}
	}
	if now.Before(bg.blocked) {
		return budgetVerdict{reason: "zulip_backoff", wait: bg.blocked.Sub(now), limit: max(bg.limit, 1)}
	}
	if !bg.known {
		return budgetVerdict{ok: true}
	}
	bg.rollLocked(now)
	if sp.reserved > 0 && sp.gen != bg.gen {
		// Calls reserved in a window gone by are still to come: they
		// count in this one.
		bg.used[sp.key] += sp.reserved
	}
	sp.gen = bg.gen
	u := bg.used[sp.key]
	n := len(bg.used)
	if u == 0 {
		n++
	}
	L := float64(bg.limit)
	left := float64(bg.windowEnd.Sub(now)) / float64(bg.window)
	left = min(max(left, 0), 1)
	held := left * L / float64(n+1)
	capacity := (L - held) / float64(n)
	freed := bg.freedLocked(now)
	avail := min(bg.remaining+freed, bg.limit) - bg.pending
	// The share held back is what a key that starts calling may still
	// get in this window: what Zulip has left now, and the calls made
	// before the window that leave Zulip's by its end.
	eventual := min(avail+bg.carriedLocked(freed), bg.limit-bg.pending)
	ok := avail >= cost
	if ok && u > 0 {
		ok = float64(u+cost) <= capacity && float64(eventual-cost) >= held
	}
	if ok {
		bg.used[sp.key] = u + cost
		bg.pending += cost
		sp.reserved += cost
		return budgetVerdict{ok: true}
	}
	v := budgetVerdict{reason: "bot_budget", limit: max(int(capacity), 1)}
	switch {
	case avail < cost && freed+cost-avail <= len(bg.sent):
		// Nothing left of Zulip's count: wait until enough of this
		// process's calls have left its window.
		v.wait = bg.sent[freed+cost-avail-1].Add(bg.window).Sub(now)
		if !bg.reset.IsZero() {
			v.wait = min(v.wait, bg.reset.Sub(now))
		}
	case avail < cost && !bg.reset.IsZero():
		// Nothing left of Zulip's count, and the calls it counted were
		// other instances': wait until its window is free.
		v.wait = bg.reset.Sub(now)
	case avail < cost:
		v.wait = bg.windowEnd.Sub(now)
	default:
		// The share held back shrinks with the time left; the first
		// moment both rules let this call through.
		f := min(float64(eventual-cost), L-float64(n*(u+cost))) * float64(n+1) / L
		if f > 0 {
			v.wait = bg.windowEnd.Add(-time.Duration(f * float64(bg.window))).Sub(now)
		} else {
			v.wait = bg.windowEnd.Sub(now)
		}
	}
	v.wait = max(v.wait, time.Millisecond)
	return v
}

// rollLocked starts the proxy's next window when the last is over, and
// counts Zulip's whole budget as free once Zulip's window is.
func (bg *budget) rollLocked(now time.Time) {
	if !bg.reset.IsZero() && !now.Before(bg.reset) {
		bg.remaining, bg.reset = bg.limit, time.Time{}
		bg.asOf = now
		bg.trimSentLocked()
	}
	if !now.Before(bg.windowEnd) {
		clear(bg.used)
		bg.gen++
		bg.windowEnd = now.Add(bg.window)
	}
}

// observe charges one call to Zulip that is over, to sp's key when the
// call was made for a request (sp may be nil: the proxy's own), and reads
// Zulip's rate-limit headers from its answer.
func (bg *budget) observe(sp *spend, call zulip.Call, now time.Time) {
	if call.Anonymous || !call.Sent {
		// Not the bot's budget, or nothing reached Zulip.
		return
	}
	resp := call.Response
	bg.mu.Lock()
	defer bg.mu.Unlock()
	if sp != nil && sp.bg == bg {
		switch {
		case sp.reserved > 0:
			sp.reserved--
			bg.pending--
			if sp.gen != bg.gen {
				bg.used[sp.key]++
			}
		default:
			bg.used[sp.key]++
		}
	}
	bg.noteSentLocked(now)
	if resp == nil {
		// Zulip may have counted it.
		bg.remaining--
		return
	}
	if resp.Status == http.StatusTooManyRequests {
		wait := time.Second
		if ra, err := strconv.ParseFloat(strings.TrimSpace(resp.Header.Get("Retry-After")), 64); err == nil && ra > 0 && ra < 86400 {
			wait = time.Duration(ra * float64(time.Second))
		}
		bg.blocked = now.Add(wait)
	}
	limit, ok1 := headerInt(resp.Header, "X-Ratelimit-Limit")
	remaining, ok2 := headerInt(resp.Header, "X-Ratelimit-Remaining")
	resetF, ok3 := headerFloat(resp.Header, "X-Ratelimit-Reset")
	if !ok1 || !ok2 || !ok3 || limit <= 0 {
		if !bg.known {
			bg.noLimit = true
			bg.wake()
		}
		return
	}
	bg.limit, bg.remaining, bg.asOf = limit, remaining, now
	bg.trimSentLocked()
	bg.reset = time.Unix(0, int64(resetF*float64(time.Second)))
	if resp.Status != http.StatusTooManyRequests {
		// An answer's Reset is a window after the newest call, to the
		// second: the proxy's window is never shorter.
		if w := time.Duration(math.Ceil(bg.reset.Sub(now).Seconds())) * time.Second; w > bg.window {
			bg.window = w
		}
	}
	if !bg.known {
		bg.known = true
		if bg.window == 0 {
			bg.window = defaultZulipWindow
		}
		bg.windowEnd = now.Add(bg.window)
		bg.wake()
	}
}

// noteSentLocked keeps when a call ended, in order: calls end out of
// order by a little, so the place is found from the end.
func (bg *budget) noteSentLocked(t time.Time) {
	i := len(bg.sent)
	for i > 0 && bg.sent[i-1].After(t) {
		i--
	}
	bg.sent = slices.Insert(bg.sent, i, t)
}

// trimSentLocked forgets the calls that had left Zulip's window when
// remaining was read: it did not count them.
func (bg *budget) trimSentLocked() {
	cut := bg.asOf.Add(-bg.window)
	i, _ := slices.BinarySearchFunc(bg.sent, cut, func(t, cut time.Time) int {
		if t.After(cut) {
			return 1
		}
		return -1
	})
	if i > 0 {
		// Reslicing keeps the array's front; copy when it is most of it.
		if i > len(bg.sent)/2 {
			bg.sent = append(bg.sent[:0], bg.sent[i:]...)
		} else {
			bg.sent = bg.sent[i:]
		}
	}
}

// freedLocked counts the calls Zulip counted in remaining that have left
// its window by now.
func (bg *budget) freedLocked(now time.Time) int {
	if bg.asOf.IsZero() {
		return 0
	}
	cut := now.Add(-bg.window)
	n, _ := slices.BinarySearchFunc(bg.sent, cut, func(t, cut time.Time) int {
		if t.After(cut) {
			return 1
		}
		return -1
	})
	return n
}

// carriedLocked counts this process's calls made before the proxy's
// window began that Zulip still counts (freed of them have left).
func (bg *budget) carriedLocked(freed int) int {
	start := bg.windowEnd.Add(-bg.window)
	n, _ := slices.BinarySearchFunc(bg.sent, start, func(t, start time.Time) int {
		if t.Before(start) {
			return -1
		}
		return 1
	})
	return max(n-freed, 0)
}

// settle ends a request's account: the calls it reserved and did not
// make are given back, and a learning call that learned nothing lets
// the next call learn instead.
func (bg *budget) settle(sp *spend) {
	bg.mu.Lock()
	defer bg.mu.Unlock()
	if sp.probe && !bg.known && !bg.noLimit {
		bg.probing = false
		bg.wake()
		bg.learned, bg.woken = make(chan struct{}), false
	}
	if sp.reserved == 0 {
		return
	}
	bg.pending -= sp.reserved
	if sp.gen == bg.gen {
		if u := bg.used[sp.key] - sp.reserved; u > 0 {
			bg.used[sp.key] = u
		} else {
			delete(bg.used, sp.key)
		}
	}
	sp.reserved = 0
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

// admitToBudget applies the bot's fair share to a scoped request before it
// is served, reserving the calls its route usually makes; each call it
// then makes to Zulip is charged to its key (call.noteZulip).
func (c *call) admitToBudget(r *http.Request) *apiError {
	c.spend.key = c.entry.ID
	if v := c.bot.budget.admit(r.Context(), &c.spend, c.route.calls, time.Now()); !v.ok {
		if c.queueing {
			// Not refused: queued, to go when the budget allows.
			c.deferred = "budget"
			return nil
		}
		return c.budgetRefusal(v)
	}
	return nil
}

// spendMore reserves n more calls for a request under way before it makes
// them: a 429 when the key's share does not stretch to them.
func (c *call) spendMore(n int) *apiError {
	if c.spend.bg == nil {
		return nil
	}
	if v := c.spend.bg.more(&c.spend, n, time.Now()); !v.ok {
		return c.budgetRefusal(v)
	}
	return nil
}

// budgetRefusal is the proxy's 429 for a call the bot's budget does not
// let through, logged and counted by reason.
func (c *call) budgetRefusal(v budgetVerdict) *apiError {
	h := c.h
	metrics.limited.WithLabelValues(v.reason).Inc()
	msg := "this key has made its share of the calls bot '" + c.bot.name + "' may make to Zulip now; other keys share that bot"
	if v.reason == "zulip_backoff" {
		msg = "Zulip asked bot '" + c.bot.name + "' to wait: API usage exceeded rate limit"
	}
	h.logger.Info("call refused to share the bot's Zulip budget", zap.String("key_id", c.entry.ID),
		zap.String("bot", c.bot.name), zap.String("reason", v.reason), zap.Duration("retry_after", v.wait))
	return errRateLimited(c, msg, v.wait, v.limit)
}
