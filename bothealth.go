package zulipproxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/zwop/caddy-zulip-proxy/zulip"
)

// A bot's standing with its Zulip, so that an operator learns of a wrong
// site or a refused bot key from /health, a metric and one log line, not
// from the scripts that fail. It is checked (GET /users/me) when a config
// that has the bot starts running, and again while it is bad; every call
// the bot makes between checks tells too: a 401 to the bot's credentials
// turns it bad at once, an answer from Zulip turns it well, and a call
// that got no answer has it checked.

// botState is what /health says of a bot.
type botState string

const (
	// botChecking: not known yet (the first check is under way).
	botChecking botState = "checking"
	botOK       botState = "ok"
	// botUnreachable: no answer from Zulip, or not Zulip's API.
	botUnreachable botState = "unreachable"
	// botRejected: Zulip refused the bot's email and key.
	botRejected botState = "credentials_rejected"
)

func (s botState) bad() bool { return s == botUnreachable || s == botRejected }

// botHealth is one bot's state; it lives with the bot (botPool), so a
// reload that keeps the bot keeps what is known of it.
type botHealth struct {
	name, site string
	// logger is the newest config's: bots outlive configs.
	logger atomic.Pointer[zap.Logger]
	// check asks Zulip; set by newBot, replaced in tests.
	check func(ctx context.Context) (botState, string)

	mu     sync.Mutex
	state  botState
	since  time.Time
	reason string
	// failures counts bad checks in a row: the wait before the next.
	failures int
	started  bool
	wake     chan struct{}
	stop     chan struct{}
	done     chan struct{}
}

func newBotHealth(name, site string) *botHealth {
	return &botHealth{name: name, site: site, state: botChecking, since: time.Now(),
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
}

// botHealthView is a bot's state as /health gives it.
type botHealthView struct {
	State botState `json:"state"`
	// Since is when it turned bad; Reason says how, in the proxy's words
	// (never Zulip's, which may echo what it was sent).
	Since  *time.Time `json:"since,omitempty"`
	Reason string     `json:"reason,omitempty"`
}

func (bh *botHealth) view() botHealthView {
	bh.mu.Lock()
	defer bh.mu.Unlock()
	v := botHealthView{State: bh.state}
	if bh.state.bad() {
		since := bh.since.UTC()
		v.Since, v.Reason = &since, bh.reason
	}
	return v
}

// recheckAfter is the wait before the next check of a bot that failed n
// checks in a row: 2 s doubling, at most 30 s, so a fixed Zulip is seen
// soon and a broken one is not asked more than twice a minute.
func recheckAfter(n int) time.Duration {
	if n > 4 {
		return 30 * time.Second
	}
	return min(2*time.Second<<max(n-1, 0), 30*time.Second)
}

// run checks the bot now, and again while it is bad or when a call
// cast doubt on it, until stopped.
func (bh *botHealth) run() {
	defer close(bh.done)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-bh.stop:
			return
		case <-bh.wake:
		case <-timer.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		state, reason := bh.check(ctx)
		cancel()
		bh.set(state, reason, time.Now())
		bh.mu.Lock()
		if state.bad() {
			bh.failures++
			timer.Reset(recheckAfter(bh.failures))
		} else {
			bh.failures = 0
		}
		bh.mu.Unlock()
	}
}

// checkSoon has the bot checked now; the first call starts its checker.
func (bh *botHealth) checkSoon(logger *zap.Logger) {
	if logger != nil {
		bh.logger.Store(logger)
	}
	bh.mu.Lock()
	if !bh.started {
		bh.started = true
		go bh.run()
	} else {
		select {
		case bh.wake <- struct{}{}:
		default:
		}
	}
	bh.mu.Unlock()
}

// close stops the checker.
func (bh *botHealth) close() {
	bh.mu.Lock()
	started := bh.started
	bh.started = true // none starts after
	bh.mu.Unlock()
	close(bh.stop)
	if started {
		<-bh.done
	}
}

// set records the bot's state at now, and says so in the log and the
// metric when it changes: once when it turns bad, once when well again.
func (bh *botHealth) set(state botState, reason string, now time.Time) {
	bh.mu.Lock()
	was, since := bh.state, bh.since
	if was == state && bh.reason == reason {
		bh.mu.Unlock()
		return
	}
	bh.state, bh.reason = state, reason
	if was != state {
		bh.since = now
	}
	bh.mu.Unlock()
	up := 1.0
	if state.bad() {
		up = 0
	}
	metrics.botUp.WithLabelValues(bh.name).Set(up)
	logger := bh.logger.Load()
	if logger == nil || was == state {
		return
	}
	fields := []zap.Field{zap.String("bot", bh.name), zap.String("site", bh.site)}
	switch state {
	case botRejected:
		logger.Error("Zulip refuses the bot's credentials: check its email and api_key (or zuliprc); its keys' calls fail with 502 until fixed",
			append(fields, zap.String("reason", reason))...)
	case botUnreachable:
		logger.Warn("the bot's Zulip cannot be reached: check the bot's site and the network; sends of keys with queued delivery wait",
			append(fields, zap.String("reason", reason))...)
	case botOK:
		if was.bad() {
			logger.Info("the bot's Zulip answers again", append(fields, zap.String("was", string(was)),
				zap.Duration("for", now.Sub(since).Round(time.Second)))...)
		}
	}
}

// observe learns from one of the bot's calls: Zulip refusing its
// credentials turns it bad at once, any answer from Zulip well, and no
// answer (or a 5xx) has it checked. Anonymous calls say nothing of
// the bot's credentials.
func (bh *botHealth) observe(zc zulip.Call, now time.Time) {
	if zc.Anonymous {
		return
	}
	resp := zc.Response
	switch {
	case resp != nil && resp.Status == http.StatusUnauthorized:
		bh.set(botRejected, "Zulip answered 401 to the bot's email and api_key", now)
	case resp != nil && resp.Status < 500 && isZulipJSON(resp):
		bh.mu.Lock()
		bad := bh.state != botOK
		bh.mu.Unlock()
		if bad {
			bh.set(botOK, "", now)
		}
	case resp == nil || resp.Status >= 500:
		// No answer, or a failing Zulip (or whatever answers in its
		// place): worth a check. A 4xx page says nothing of the bot.
		bh.mu.Lock()
		ok := bh.state == botOK && bh.started
		bh.mu.Unlock()
		if ok {
			select {
			case bh.wake <- struct{}{}:
			default:
			}
		}
	}
}

func isZulipJSON(resp *zulip.Response) bool {
	return strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json")
}

// checkMe asks Zulip who the bot is: the check of a bot's site and
// credentials.
func checkMe(c *zulip.Client) func(ctx context.Context) (botState, string) {
	return func(ctx context.Context) (botState, string) {
		_, _, err := c.Me(ctx)
		return stateOf(err)
	}
}

// stateOf says what the answer to GET /users/me says of the bot.
func stateOf(err error) (botState, string) {
	var zerr *zulip.Error
	var bad *zulip.BadResponseError
	switch {
	case err == nil:
		return botOK, ""
	case errors.As(err, &zerr) && zerr.Status == http.StatusUnauthorized:
		return botRejected, "Zulip answered 401 to the bot's email and api_key"
	case errors.As(err, &zerr):
		// Zulip's API answered (a 429, say): the site is right and the
		// credentials were not refused.
		return botOK, ""
	case errors.As(err, &bad):
		return botUnreachable, fmt.Sprintf("the site answered HTTP %d, not Zulip's API", bad.Status)
	case errors.Is(err, zulip.ErrTimeout):
		return botUnreachable, "Zulip did not answer in time"
	case errors.Is(err, zulip.ErrUnreachable):
		return botUnreachable, "no connection to the site could be made, or it was lost"
	}
	return botUnreachable, "the check failed"
}
