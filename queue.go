package zulipproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
	"github.com/zwop/caddy-zulip-proxy/internal/outbox"
	"github.com/zwop/caddy-zulip-proxy/zulip"
)

// Queued delivery (SPEC.md, "Dependable delivery"): a send of a key made
// with delivery=queued, or one that says Prefer: respond-async, is queued
// instead of failing when Zulip cannot take it now, and answered 202; the
// deliverer (deliver.go) sends it later.

// QueueConfig bounds queued delivery.
type QueueConfig struct {
	// MaxPerKey is how many sends one key may have queued; a send past
	// it gets 503 QUEUE_FULL and is not stored. Default: 10000.
	MaxPerKey int `json:"max_per_key,omitempty"`

	// MaxBytesPerKey bounds what one key's queued sends hold (topics,
	// contents and files), in bytes. Default: 256 MiB.
	MaxBytesPerKey int64 `json:"max_bytes_per_key,omitempty"`

	// MaxAge is how long a send may wait in the queue: one older fails
	// as expired. Default: 24h.
	MaxAge caddy.Duration `json:"max_age,omitempty"`
}

const (
	defaultQueueMaxPerKey = 10000
	defaultQueueMaxBytes  = 256 << 20
	defaultQueueMaxAge    = 24 * time.Hour
	// queueFullRetry is the Retry-After of QUEUE_FULL: a key's queue
	// drains at its bot's pace, a few sends a second at best.
	queueFullRetry = "60"
)

func (q *QueueConfig) setDefaults() {
	if q.MaxPerKey == 0 {
		q.MaxPerKey = defaultQueueMaxPerKey
	}
	if q.MaxBytesPerKey == 0 {
		q.MaxBytesPerKey = defaultQueueMaxBytes
	}
	if q.MaxAge == 0 {
		q.MaxAge = caddy.Duration(defaultQueueMaxAge)
	}
}

func (q *QueueConfig) validate() error {
	switch {
	case q == nil:
		return nil
	case q.MaxPerKey < 0:
		return fmt.Errorf("zulip_proxy: queue: max_per_key must be positive, got %d", q.MaxPerKey)
	case q.MaxBytesPerKey < 0:
		return fmt.Errorf("zulip_proxy: queue: max_bytes_per_key must be positive, got %d", q.MaxBytesPerKey)
	case q.MaxAge < 0:
		return fmt.Errorf("zulip_proxy: queue: max_age must be positive, got %s", time.Duration(q.MaxAge))
	}
	return nil
}

func (q *QueueConfig) bounds() outbox.Bounds {
	return outbox.Bounds{MaxCount: q.MaxPerKey, MaxBytes: q.MaxBytesPerKey}
}

// deliveryOf is a scoped key's delivery as the API shows it.
func deliveryOf(e *keystore.Entry) string {
	if e.Delivery == keystore.DeliveryQueued {
		return keystore.DeliveryQueued
	}
	return "direct"
}

// deliveryParam reads create_client's delivery: queued, or direct (the
// default).
func deliveryParam(q url.Values) (string, error) {
	switch v := strings.TrimSpace(q.Get("delivery")); v {
	case "", "direct":
		return "", nil
	case keystore.DeliveryQueued:
		return keystore.DeliveryQueued, nil
	default:
		return "", errBadParam("delivery", "parameter 'delivery' must be direct or queued, got '"+v+"'")
	}
}

// prefersAsync says whether the request asks for an answer before the
// work is done (RFC 7240's Prefer: respond-async); preferences are
// tokens, any case, in one header or several, maybe with parameters.
func prefersAsync(r *http.Request) bool {
	for _, v := range r.Header.Values("Prefer") {
		for pref := range strings.SplitSeq(v, ",") {
			name, _, _ := strings.Cut(pref, ";")
			name, _, _ = strings.Cut(name, "=")
			if strings.EqualFold(strings.TrimSpace(name), "respond-async") {
				return true
			}
		}
	}
	return false
}

// mayQueue decides, for a send, whether it is queued when Zulip cannot
// take it now: its key's delivery, or its request's Prefer header.
func (c *call) mayQueue(r *http.Request) {
	c.asked = prefersAsync(r)
	c.queueing = c.asked || c.entry.Delivery == keystore.DeliveryQueued
}

// spooledFile is a queueable send's file, held on disk while the send is
// tried, and queued with it when it must wait.
type spooledFile struct {
	f           *os.File
	name, ctype string
	size        int64
}

func (sf *spooledFile) open() (io.ReadCloser, error) {
	if _, err := sf.f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return io.NopCloser(sf.f), nil
}

// take hands the file over to the queue, which removes it.
func (sf *spooledFile) take() *os.File {
	f := sf.f
	sf.f = nil
	return f
}

func (sf *spooledFile) remove() {
	if sf != nil && sf.f != nil {
		sf.f.Close()
		os.Remove(sf.f.Name())
		sf.f = nil
	}
}

// spoolFile reads a send's file part into the queue's spool.
func (c *call) spoolFile(p io.Reader, name, ctype string) (*spooledFile, error) {
	f, err := c.h.outbox.Spool()
	if err != nil {
		return nil, err
	}
	n, err := io.Copy(f, p)
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, c.h.body.bodyError(err)
	}
	return &spooledFile{f: f, name: name, ctype: ctype, size: n}, nil
}

// errBudgetWait: the bot's budget has no room for a queueable send's
// upload now; the send waits in the queue instead.
var errBudgetWait = errors.New("the bot's budget has no room now")

// sendOrQueue makes a queueable send: at once when Zulip takes it, else
// into the queue, answered 202. to, when given, is the stream the client
// named; file is its file, spooled.
func (c *call) sendOrQueue(w http.ResponseWriter, r *http.Request, topic, content string, to *streamRef, file *spooledFile) error {
	defer file.remove()
	ctx := r.Context()
	now := time.Now().UTC()
	// Nothing stored or forwarded carries the caller's key.
	s := outbox.Send{Entry: c.entry.ID, Stream: c.entry.Stream, Bot: c.bot.identity(),
		Topic: scrubString(topic, c.key), Content: scrubString(content, c.key), QueuedAt: now}
	if file != nil {
		s.File = &outbox.File{Name: file.name, ContentType: file.ctype, Size: file.size}
	}
	if to != nil && to.byID {
		if to.id <= 0 {
			return errNotYourStream(c.entry.Stream)
		}
		s.StreamID = to.id
	}
	if c.idem != nil && c.idem.resolving {
		s.UncertainSince = c.idem.since
	}
	reason := c.deferred
	if reason == "" {
		// A key with sends queued queues the next too: order is kept.
		n, err := c.h.outbox.QueuedCount(ctx, c.entry.ID)
		if err != nil {
			return err
		}
		if n > 0 {
			reason = "behind"
		}
	}
	if reason == "" {
		var open func() (io.ReadCloser, error)
		if file != nil {
			open = file.open
		}
		res, found, err := c.deliverSend(ctx, &s, open, true, nil)
		if err == nil {
			if found && c.idem != nil {
				c.idem.found()
				w.Header().Set(replayedHeader, "true")
			}
			writeZulipAnswer(w, res.Raw)
			return nil
		}
		uncertain := c.uncertainWrite(err)
		if !zulipCannotTakeNow(err) {
			if s.UploadURI != "" && !uncertain {
				c.removeUpload(r, s.UploadURI)
			}
			return err
		}
		if uncertain && s.UncertainSince.IsZero() {
			s.UncertainSince = now
		}
		reason = "budget"
		if !errors.Is(err, errBudgetWait) {
			// That was its first attempt; the next waits a little.
			reason, s.Attempts = "zulip", 1
			s.NextAttempt = time.Now().Add(backoff(1, rand.Float64()))
		}
	}
	var f *os.File
	if file != nil && s.UploadURI == "" {
		f = file.take()
	}
	q, err := c.h.outbox.Enqueue(context.WithoutCancel(ctx), s, f, c.h.Queue.bounds())
	if err != nil {
		if s.UploadURI != "" && s.UncertainSince.IsZero() {
			// The message will not be sent: its file goes too.
			c.removeUpload(r, s.UploadURI)
		}
		var full *outbox.FullError
		if errors.As(err, &full) {
			metrics.queueRefused.Inc()
			return newError(http.StatusServiceUnavailable, "QUEUE_FULL",
				"Zulip cannot take this send now, and this key's queue is full ("+full.Error()+"); nothing was stored: retry later").setHeader("Retry-After", queueFullRetry)
		}
		return err
	}
	metrics.queued.WithLabelValues(reason).Inc()
	c.h.deliverer.notify(c.entry.ID)
	c.h.logger.Info("send queued", zap.String("key_id", c.entry.ID), zap.String("queue_id", q.ID), zap.String("reason", reason))
	hdr := w.Header()
	hdr.Set("Location", queueLocation(r, q.ID))
	if c.asked {
		hdr.Set("Preference-Applied", "respond-async")
	}
	writeJSON(w, http.StatusAccepted, queuedBody{Result: "success", Queued: true, QueueID: q.ID})
	return nil
}

type queuedBody struct {
	Result  string `json:"result"`
	Msg     string `json:"msg"`
	Queued  bool   `json:"queued"`
	QueueID string `json:"queue_id"`
}

// queueLocation is where a queued send is looked up: the queue under the
// prefix the request came through (a handle_path's, and /api).
func queueLocation(r *http.Request, id string) string {
	prefix := ""
	if orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok && orig.URL != nil {
		if p, ok := strings.CutSuffix(orig.URL.Path, r.URL.Path); ok {
			prefix = p
		}
	}
	if strings.HasPrefix(r.URL.Path, "/api/") {
		prefix += "/api"
	}
	return prefix + "/queue/" + url.PathEscape(id)
}

// zulipCannotTakeNow says a send failed because Zulip cannot take it now,
// not because of what it is: Zulip is unreachable, failing (5xx), slow,
// or out of budget (its 429, or the bot's budget here).
func zulipCannotTakeNow(err error) bool {
	var zerr *zulip.Error
	var bad *zulip.BadResponseError
	switch {
	case errors.Is(err, errBudgetWait), errors.Is(err, zulip.ErrUnreachable), errors.Is(err, zulip.ErrTimeout),
		errors.Is(err, zulip.ErrBadResponse) && !errors.As(err, &bad):
		return true
	case errors.As(err, &zerr):
		return zerr.Status == http.StatusTooManyRequests || zerr.Status >= 500
	case errors.As(err, &bad):
		return bad.Status >= 500
	}
	return false
}

// deliverSend makes a send in Zulip: its file uploaded (unless it was,
// then UploadURI says where), then the message. A send whose earlier
// attempt may have landed (UncertainSince) is looked for first; found
// says it was. openFile reads the file; chargeUpload reserves the
// upload's call from the budget first; onUpload learns where the file
// went, before the message is sent.
func (c *call) deliverSend(ctx context.Context, s *outbox.Send, openFile func() (io.ReadCloser, error),
	chargeUpload bool, onUpload func(uri string)) (res *zulip.SendResult, found bool, err error) {
	err = c.bot.withStream(ctx, s.Stream, func(id int64) error {
		if s.StreamID != 0 && s.StreamID != id {
			return errNotYourStream(c.entry.Stream)
		}
		if s.File != nil && s.UploadURI == "" {
			up, err := c.uploadQueued(ctx, s, openFile, chargeUpload)
			if err != nil {
				return err
			}
			s.UploadURI = up.URI
			if onUpload != nil {
				onUpload(up.URI)
			}
		}
		content := s.Content
		if s.File != nil {
			content += "\n\n" + markdownLink(s.File.Name, s.UploadURI)
		}
		if !s.UncertainSince.IsZero() {
			r, err := c.bot.findSent(ctx, id, s.Topic, content, s.UncertainSince, c.after)
			if err != nil || r != nil {
				res, found = r, r != nil
				return err
			}
		}
		var err error
		res, err = c.bot.client.SendMessage(ctx, zulip.SendMessage{StreamID: id, Topic: s.Topic, Content: content})
		return err
	})
	return res, found, err
}

// uploadQueued uploads a send's file, unless an earlier attempt's upload
// is found in Zulip.
func (c *call) uploadQueued(ctx context.Context, s *outbox.Send, openFile func() (io.ReadCloser, error), charge bool) (*zulip.UploadResult, error) {
	if !s.UncertainSince.IsZero() {
		if up, err := c.bot.findUpload(ctx, s.File.Name, s.File.Size, s.UncertainSince); err != nil || up != nil {
			return up, err
		}
	}
	if charge && c.spend.bg != nil {
		if v := c.spend.bg.more(&c.spend, 1, time.Now()); !v.ok {
			return nil, errBudgetWait
		}
	}
	release, aerr := c.takeUploadSlot()
	if aerr != nil {
		return nil, aerr
	}
	defer release()
	rc, err := openFile()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	body := &recordingReader{r: rc}
	up, err := c.bot.client.UploadFile(ctx, s.File.Name, s.File.ContentType, body)
	metrics.uploadBytes.Add(float64(body.n))
	if body.err != nil {
		return nil, body.err
	}
	return up, err
}
