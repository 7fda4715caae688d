package zulipproxy

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
	"github.com/zwop/caddy-zulip-proxy/internal/outbox"
	"github.com/zwop/caddy-zulip-proxy/zulip"
)

// The deliverer sends the queued sends of one store, for this process:
// one per outbox (outboxPool), working through the config that runs now
// (its bots, its store, its queue settings). Each key's sends go in the
// order they were made, by one deliverer at a time (the outbox's lock of
// the key, which an instance sharing Caddy's storage takes over when its
// holder dies), within the bot's budget and the key's fair share of it.
// An attempt is written down before anything goes to Zulip, so that one
// a crash ended is known; the attempt after an uncertain one looks for
// the message in Zulip before it sends again.
type deliverer struct {
	ob *outbox.Outbox
	// now is the clock; tests set it.
	now func() time.Time
	// jitter is a number in [0, 1) for the backoff.
	jitter func() float64
	// rescan is how often the queue is looked at for sends this process
	// was not told of (another instance's, in shared storage).
	rescan time.Duration

	ctx    context.Context
	cancel context.CancelFunc

	mu sync.Mutex
	// handlers are the configs running with this store, newest last.
	handlers []*Handler
	keys     map[string]*keyDelivery
	running  int
	started  bool
	wake     chan struct{}
	workers  sync.WaitGroup
	done     chan struct{}
}

// keyDelivery is what the deliverer knows of one key's queue.
type keyDelivery struct {
	busy bool
	// notBefore: the key's next send waits until then.
	notBefore time.Time
	// failures counts attempts in a row that Zulip could not take: the
	// backoff's step.
	failures int
	// after is the newest message the key's queue sent: an uncertain
	// attempt's message is newer.
	after int64
	bot   string
}

const (
	// maxDeliveries is how many keys' sends go at once, per store.
	maxDeliveries = 8
	// maxBackoff bounds the wait while Zulip is down.
	maxBackoff = time.Minute
	// lockRetry is how soon a key another deliverer holds is tried again:
	// a lock whose holder died goes stale within seconds.
	lockRetry = 2 * time.Second
)

func newDeliverer(ob *outbox.Outbox) *deliverer {
	ctx, cancel := context.WithCancel(context.Background())
	d := &deliverer{ob: ob, now: time.Now, jitter: rand.Float64, rescan: time.Minute,
		ctx: ctx, cancel: cancel, keys: map[string]*keyDelivery{},
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	if ob.Shared() {
		// Other instances queue sends this one hears nothing of.
		d.rescan = lockRetry
	}
	return d
}

// backoff is the wait after n attempts in a row that Zulip could not
// take: doubling from a second, at most maxBackoff, the upper half of it
// at random, so that keys that failed together do not retry together.
func backoff(n int, jitter float64) time.Duration {
	d := maxBackoff
	if n < 7 {
		d = min(time.Second<<max(n-1, 0), maxBackoff)
	}
	return d/2 + time.Duration(jitter*float64(d/2))
}

// attach makes h the config the deliverer works through, and starts it.
func (d *deliverer) attach(h *Handler) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if h.detached {
		return
	}
	d.handlers = append(d.handlers, h)
	if !d.started {
		d.started = true
		go d.loop()
	}
	d.notifyLocked()
}

// detach stops working through h.
func (d *deliverer) detach(h *Handler) {
	d.mu.Lock()
	defer d.mu.Unlock()
	h.detached = true
	for i, x := range d.handlers {
		if x == h {
			d.handlers = append(d.handlers[:i], d.handlers[i+1:]...)
			break
		}
	}
}

// close stops the deliverer and waits for its attempts under way, which
// stop at once: one cut short is found or sent again later.
func (d *deliverer) close() {
	d.cancel()
	d.mu.Lock()
	started := d.started
	d.mu.Unlock()
	if started {
		<-d.done
	}
	d.workers.Wait()
}

func (d *deliverer) current() *Handler {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.handlers) == 0 {
		return nil
	}
	return d.handlers[len(d.handlers)-1]
}

// via is the config a send goes through, and its bot: the newest
// running config whose bot of the key's bot name is the Zulip account
// the send was queued for, since configs sharing a store need not share
// their bots; else the newest with a bot of that name (the bot was
// reconfigured since the send was queued). cur is the newest config; a
// nil bot: no config has one of that name.
func (d *deliverer) via(cur *Handler, s *outbox.Send, e *keystore.Entry) (*Handler, *bot) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var fallback *bot
	fh := cur
	for i := len(d.handlers) - 1; i >= 0; i-- {
		h := d.handlers[i]
		b, ok := h.bots.of(e)
		if !ok {
			continue
		}
		if s.Bot == "" || b.identity() == s.Bot {
			return h, b
		}
		if fallback == nil {
			fh, fallback = h, b
		}
	}
	if fallback == nil {
		if b, ok := cur.bots.of(e); ok {
			return cur, b
		}
	}
	return fh, fallback
}

// notify says a send was queued for a key.
func (d *deliverer) notify(entry string) {
	if d == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if k := d.keys[entry]; k != nil && k.failures == 0 {
		// Its queue was empty when last looked at.
		k.notBefore = time.Time{}
	}
	d.notifyLocked()
}

func (d *deliverer) notifyLocked() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *deliverer) loop() {
	defer close(d.done)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-d.wake:
		case <-timer.C:
		}
		timer.Reset(d.pass())
	}
}

// pass starts a delivery for each key with sends that may go now, and
// says when to look again.
func (d *deliverer) pass() time.Duration {
	h := d.current()
	if h == nil {
		return d.rescan
	}
	ctx, cancel := context.WithTimeout(d.ctx, 30*time.Second)
	entries, err := d.ob.QueuedEntries(ctx)
	cancel()
	if err != nil {
		if d.ctx.Err() == nil {
			h.logger.Warn("queued sends could not be listed", zap.Error(err))
		}
		return 5 * time.Second
	}
	now := d.now()
	wait := d.rescan
	d.mu.Lock()
	defer d.mu.Unlock()
	listed := make(map[string]bool, len(entries))
	for _, e := range entries {
		listed[e] = true
		k := d.keys[e]
		if k == nil {
			k = new(keyDelivery)
			d.keys[e] = k
		}
		switch {
		case k.busy:
		case now.Before(k.notBefore):
			wait = min(wait, k.notBefore.Sub(now))
		case d.running < maxDeliveries:
			k.busy = true
			d.running++
			d.workers.Add(1)
			go d.work(e, k)
		}
	}
	for e, k := range d.keys {
		if !listed[e] && !k.busy {
			delete(d.keys, e)
		}
	}
	return max(wait, time.Millisecond)
}

// work delivers a key's sends while they may go.
func (d *deliverer) work(entry string, k *keyDelivery) {
	defer d.workers.Done()
	wait := time.Duration(0)
	defer func() {
		d.mu.Lock()
		k.busy = false
		k.notBefore = d.now().Add(wait)
		d.running--
		d.notifyLocked()
		d.mu.Unlock()
	}()
	unlock, ok, err := d.ob.TryLockEntry(d.ctx, entry)
	if err != nil || !ok {
		wait = lockRetry
		return
	}
	defer unlock()
	for d.ctx.Err() == nil {
		h := d.current()
		if h == nil {
			return
		}
		ctx, cancel := context.WithTimeout(d.ctx, 30*time.Second)
		s, err := d.ob.HeadSend(ctx, entry)
		cancel()
		if err != nil {
			if d.ctx.Err() == nil {
				h.logger.Warn("a queued send could not be read", zap.String("key_id", entry), zap.Error(err))
			}
			wait = 5 * time.Second
			return
		}
		if s == nil {
			// Nothing queued (Caddy's storage keeps a key's empty
			// folder): looked at again when this process queues for
			// the key, or at the next rescan.
			wait = d.rescan
			return
		}
		if wait = d.attempt(h, k, s); wait > 0 {
			return
		}
	}
}

// sendRoute names a deliverer's calls in what they share with requests.
var sendRoute = &route{name: "queued_send"}

// errSendGone: the send left the queue while it was being looked at
// (cancelled, or delivered by another instance).
var errSendGone = errors.New("queued send gone")

// attempt tries a key's oldest queued send once, and says how long the
// key's sends must wait before the next try (0: go on with the next).
func (d *deliverer) attempt(h *Handler, k *keyDelivery, s *outbox.Send) time.Duration {
	now := d.now()
	e, ok := h.store.Get(s.Entry)
	if !ok || e.Usable(now) != nil {
		d.fail(h, s, now, "key_unusable", &outbox.SendError{Status: http.StatusUnauthorized, Code: codeInvalidKey,
			Msg: "the key that queued this send was revoked or expired before it was delivered"})
		return 0
	}
	if !e.Allows(keystore.PermSend) || (s.File != nil && s.UploadURI == "" && !e.Allows(keystore.PermUpload)) {
		d.fail(h, s, now, "key_unusable", &outbox.SendError{Status: http.StatusForbidden, Code: codeForbidden,
			Msg: "the key that queued this send lost the permission to send it before it was delivered"})
		return 0
	}
	if !e.TopicInScope(s.Topic) {
		d.fail(h, s, now, "key_unusable", &outbox.SendError{Status: http.StatusForbidden, Code: codeForbidden,
			Msg: "the key that queued this send was held to other topics before it was delivered"})
		return 0
	}
	h, b := d.via(h, s, &e)
	if maxAge := time.Duration(h.Queue.MaxAge); now.Sub(s.QueuedAt) > maxAge {
		d.fail(h, s, now, "expired", &outbox.SendError{Status: http.StatusGatewayTimeout, Code: codeExpired,
			Msg: "not delivered within the queue's max_age (" + maxAge.String() + "): Zulip could not take it in time"})
		return 0
	}
	if now.Before(s.NextAttempt) {
		return s.NextAttempt.Sub(now)
	}
	if b == nil {
		h.logger.Error("a queued send's key names a bot that is not configured", zap.String("key_id", e.ID), zap.String("bot", e.Bot))
		return maxBackoff
	}
	d.mu.Lock()
	c := &call{h: h, route: sendRoute, entry: &e, bot: b, start: now, after: k.after}
	k.bot = b.name
	d.mu.Unlock()
	c.spend.key = e.ID
	if b.budget != nil {
		cost := 1
		if s.File != nil && s.UploadURI == "" {
			cost = 2
		}
		if v := b.budget.admit(d.ctx, &c.spend, cost, now); !v.ok {
			return v.wait
		}
		defer b.budget.settle(&c.spend)
	}
	ctx, cancel := context.WithTimeout(d.ctx, 30*time.Second)
	defer cancel()
	// The attempt is on disk before anything goes to Zulip.
	s, err := d.ob.UpdateSend(ctx, s.ID, func(s *outbox.Send) error {
		if s.State != outbox.Queued {
			return errSendGone
		}
		if !s.InFlight.IsZero() && (s.UncertainSince.IsZero() || s.InFlight.Before(s.UncertainSince)) {
			// An attempt that died with its instance may have landed.
			s.UncertainSince = s.InFlight
		}
		s.InFlight = now
		s.Attempts++
		return nil
	})
	if errors.Is(err, errSendGone) || errors.Is(err, outbox.ErrNotFound) {
		return 0
	}
	if err != nil {
		h.logger.Warn("a queued send's attempt could not be recorded", zap.String("key_id", e.ID), zap.Error(err))
		return 5 * time.Second
	}
	zctx, zcancel := context.WithTimeout(context.WithValue(d.ctx, callKey{}, c), 10*time.Duration(h.Timeout))
	res, found, err := c.deliverSend(zctx, s, func() (io.ReadCloser, error) { return d.ob.OpenSendFile(zctx, s.ID) }, false,
		func(uri string) {
			if _, err := d.ob.UpdateSend(ctx, s.ID, func(s *outbox.Send) error { s.UploadURI = uri; return nil }); err != nil {
				h.logger.Warn("a queued send's upload could not be recorded", zap.String("key_id", e.ID), zap.Error(err))
			}
		})
	zcancel()
	end := d.now()
	if err == nil {
		d.finish(h, s, end, res.ID, found)
		d.mu.Lock()
		k.after, k.failures = max(k.after, res.ID), 0
		// Zulip takes sends again: the bot's keys waiting out a backoff
		// go now.
		for _, other := range d.keys {
			if other.bot == b.name && other.failures > 0 {
				other.failures, other.notBefore = 0, end
			}
		}
		d.mu.Unlock()
		return 0
	}
	if se := refusal(err); se != nil {
		d.fail(h, s, end, "refused", se)
		return 0
	}
	d.mu.Lock()
	k.failures++
	wait := backoff(k.failures, d.jitter())
	d.mu.Unlock()
	if ra := retryAfter(err, b, end); ra > 0 {
		wait = ra
	}
	uncertain := c.uncertainWrite(err)
	// Written even when the deliverer is stopping.
	wctx, wcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer wcancel()
	if _, werr := d.ob.UpdateSend(wctx, s.ID, func(s *outbox.Send) error {
		s.InFlight = time.Time{}
		s.NextAttempt = end.Add(wait)
		if uncertain && (s.UncertainSince.IsZero() || now.Before(s.UncertainSince)) {
			s.UncertainSince = now
		}
		return nil
	}); werr != nil && !errors.Is(werr, outbox.ErrNotFound) {
		h.logger.Warn("a queued send's attempt could not be recorded", zap.String("key_id", e.ID), zap.Error(werr))
	}
	if d.ctx.Err() == nil {
		h.logger.Debug("queued send waits: Zulip cannot take it now", append([]zap.Field{zap.String("key_id", e.ID),
			zap.String("queue_id", s.ID), zap.Int("attempts", s.Attempts), zap.Duration("retry_in", wait)}, errorFields(err)...)...)
	}
	return wait
}

// refusal is the failure a send's error is, when it says the send will
// never go as it is: Zulip refused it (a 4xx other than 429, and other
// than 401, which refuses the proxy's bot credentials and is fixed in
// the config, not in the send), or the proxy would refuse it now.
func refusal(err error) *outbox.SendError {
	var zerr *zulip.Error
	var aerr *apiError
	var bad *zulip.BadResponseError
	switch {
	case errors.As(err, &zerr):
		if zerr.Status >= 400 && zerr.Status < 500 && zerr.Status != http.StatusTooManyRequests && zerr.Status != http.StatusUnauthorized {
			return &outbox.SendError{Status: zerr.Status, Msg: zerr.Msg, Code: zerr.Code}
		}
	case errors.As(err, &aerr):
		if aerr.Status == http.StatusForbidden || aerr.Status == http.StatusBadRequest {
			return &outbox.SendError{Status: aerr.Status, Msg: aerr.Msg, Code: aerr.Code}
		}
	case errors.As(err, &bad):
		if bad.Status == http.StatusRequestEntityTooLarge {
			return &outbox.SendError{Status: bad.Status, Msg: "Zulip refused the file as too large", Code: codeTooLarge}
		}
	}
	return nil
}

// retryAfter is how long Zulip asked to wait, if it did: its 429's
// Retry-After (which the bot's budget also keeps), or a maintenance page's.
func retryAfter(err error, b *bot, now time.Time) time.Duration {
	var zerr *zulip.Error
	if errors.As(err, &zerr) && zerr.RetryAfter > 0 {
		return zerr.RetryAfter
	}
	var bad *zulip.BadResponseError
	if errors.As(err, &bad) && bad.Raw != nil {
		if secs, ok := headerFloat(bad.Raw.Header, "Retry-After"); ok && secs > 0 && secs < 86400 {
			return time.Duration(secs * float64(time.Second))
		}
	}
	if b.budget != nil {
		b.budget.mu.Lock()
		defer b.budget.mu.Unlock()
		if now.Before(b.budget.blocked) {
			return b.budget.blocked.Sub(now)
		}
	}
	return 0
}

// finish records a send delivered as message id.
func (d *deliverer) finish(h *Handler, s *outbox.Send, now time.Time, id int64, found bool) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(d.ctx), 10*time.Second)
	defer cancel()
	if _, err := d.ob.UpdateSend(ctx, s.ID, func(s *outbox.Send) error { s.Finish(now, id, nil); return nil }); err != nil {
		h.logger.Error("a delivered queued send could not be recorded as delivered", zap.String("key_id", s.Entry),
			zap.String("queue_id", s.ID), zap.Error(err))
	}
	metrics.delivered.Inc()
	h.logger.Info("queued send delivered", zap.String("key_id", s.Entry), zap.String("queue_id", s.ID),
		zap.Int("attempts", s.Attempts), zap.Int64("message_id", id), zap.Bool("found_in_zulip", found),
		zap.Duration("waited", now.Sub(s.QueuedAt)))
}

// failReasons are the reasons a queued send fails, for the metric.
var failReasons = []string{"refused", "expired", "key_unusable"}

// fail records a send failed for reason, with the error its sender sees.
func (d *deliverer) fail(h *Handler, s *outbox.Send, now time.Time, reason string, se *outbox.SendError) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(d.ctx), 10*time.Second)
	defer cancel()
	uploaded := s.UploadURI
	if _, err := d.ob.UpdateSend(ctx, s.ID, func(s *outbox.Send) error { s.Finish(now, 0, se); return nil }); err != nil {
		h.logger.Error("a failed queued send could not be recorded as failed", zap.String("key_id", s.Entry),
			zap.String("queue_id", s.ID), zap.Error(err))
		return
	}
	metrics.failed.WithLabelValues(reason).Inc()
	// Zulip's own words stay out of the log: they can quote the send.
	h.logger.Warn("queued send failed", zap.String("key_id", s.Entry), zap.String("queue_id", s.ID),
		zap.Int("attempts", s.Attempts), zap.String("reason", reason), zap.Int("status", se.Status), zap.String("code", se.Code))
	if uploaded != "" && s.UncertainSince.IsZero() {
		// The message will never link its file.
		if e, ok := h.store.Get(s.Entry); ok {
			if b, ok := h.bots.of(&e); ok {
				if err := b.client.DeleteUpload(ctx, uploaded); err != nil {
					h.logger.Warn("the upload of a failed queued send could not be removed from Zulip",
						append([]zap.Field{zap.String("key_id", s.Entry)}, errorFields(err)...)...)
				}
			}
		}
	}
}
