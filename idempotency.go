package zulipproxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"hash"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"go.uber.org/zap"

	"github.com/zwop/caddy-zulip-proxy/internal/outbox"
	"github.com/zwop/caddy-zulip-proxy/zulip"
)

// A scoped key's write may carry an Idempotency-Key (SPEC.md, "Dependable
// delivery"): the first request with it is served and its outcome kept
// in the outbox, where the keys live; the same request again gets the
// first answer, replayed, and nothing reaches Zulip. A write whose outcome
// is uncertain (sent, and no answer came) is looked for in Zulip before it
// is made again.

const (
	idempotencyHeader = "Idempotency-Key"
	replayedHeader    = "Idempotent-Replayed"
	// maxKeptAnswer bounds the answer kept to replay: Zulip's answers to
	// writes are a few hundred bytes.
	maxKeptAnswer = 64 << 10
)

// idemWrite is a write made with an Idempotency-Key.
type idemWrite struct {
	id  string
	rec outbox.Record
	// resolving: an earlier attempt with the key had an uncertain
	// outcome, begun at since; what it wrote is looked for in Zulip
	// before anything is written again.
	resolving bool
	since     time.Time
	// body hashes the request's body as it is read; bodySum is set once
	// it is known.
	body    *bodyHash
	bodySum string
	answer  *answerCapture
	// The parts a first request needs, kept here rather than each made
	// on its own: a send with a key should cost little more than one
	// without.
	hashState bodyHash
	reader    hashedBody
	capture   answerCapture
	// spool holds the body of a request that resolves an uncertain one,
	// read whole first to compare it with the first.
	spool *os.File
	// foundWrite: the first attempt's write was found in Zulip, and is
	// the answer. foundUpload is its upload, found.
	foundWrite  bool
	foundUpload *zulip.UploadResult
}

// found notes that the first attempt's write was found, and is the
// answer.
func (iw *idemWrite) found() {
	iw.foundWrite = true
	metrics.idempotency.WithLabelValues("found").Inc()
}

// idempotencyKey reads the header: one value of 1 to 255 visible ASCII
// characters; ok is false when the request has none.
func idempotencyKey(r *http.Request) (key string, ok bool, aerr *apiError) {
	vals, ok := r.Header[idempotencyHeader]
	if !ok {
		return "", false, nil
	}
	if len(vals) != 1 || len(vals[0]) == 0 || len(vals[0]) > 255 {
		return "", true, errBadIdempotencyKey()
	}
	for i := 0; i < len(vals[0]); i++ {
		if b := vals[0][i]; b < 0x21 || b > 0x7e {
			return "", true, errBadIdempotencyKey()
		}
	}
	return vals[0], true, nil
}

// requestOf names what a request asks, but for its body: method, route,
// path argument and query parameters in a fixed order.
func requestOf(r *http.Request, c *call) string {
	return r.Method + " " + c.route.name + " " + c.arg + "?" + canonicalQuery(r.URL.RawQuery)
}

// canonicalQuery is url.Values.Encode of the query: the parameters in
// order, each escaped one way. A query of one parameter that needs no
// escaping (topic=bench) is that already, and is not parsed for it.
func canonicalQuery(raw string) string {
	eq := 0
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; {
		case c == '=':
			eq++
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.', c == '~':
		default:
			eq = 2 // anything else: parse and encode
		}
	}
	if eq == 1 && raw[0] != '=' {
		return raw
	}
	v, _ := url.ParseQuery(raw)
	return v.Encode()
}

// beginIdempotent applies the key's record to a write before it is
// served. It returns the writer to serve through (which keeps the answer),
// or answered when it answered itself (a replay).
func (c *call) beginIdempotent(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, bool, error) {
	key, ok, aerr := idempotencyKey(r)
	if !ok || aerr != nil || c.h.outbox == nil {
		if aerr != nil {
			return w, false, aerr
		}
		return w, false, nil
	}
	now := time.Now().UTC()
	// The claim is made from the write's own record, which a first
	// request keeps: one allocation, not two.
	iw := &idemWrite{id: outbox.ID(c.entry.ID, key), rec: outbox.Record{State: outbox.InProgress,
		Request: requestOf(r, c), Started: now, Updated: now,
		// Long enough for the slowest request the config allows: an
		// attempt that outlives it has died.
		Lease: now.Add(max(10*time.Duration(c.h.Timeout), 5*time.Minute))}}
	id, req := iw.id, iw.rec.Request
	ctx := r.Context()
	existing, stored, err := c.h.outbox.Take(ctx, id, func(e *outbox.Record) *outbox.Record {
		switch {
		case e == nil:
			return &iw.rec
		case e.Request != req:
			return nil
		case e.State == outbox.Uncertain, e.State == outbox.InProgress && now.After(e.Lease):
			// This request resolves the earlier one: its write is
			// looked for from when that began.
			resumed := iw.rec
			resumed.Started = e.Started
			return &resumed
		}
		return nil
	})
	if err != nil {
		return w, false, err
	}
	switch {
	case existing != nil && existing.Request != req:
		metrics.idempotency.WithLabelValues("reused").Inc()
		return w, false, errKeyReused()
	case existing == nil:
		iw.hashState.init(r)
		iw.body = &iw.hashState
		iw.reader = hashedBody{ReadCloser: r.Body, h: iw.body}
		r.Body = &iw.reader
	case stored:
		// An uncertain write: the whole body first, to tell it is the
		// same request, then served from the spool.
		sum, spool, err := c.spoolBody(w, r)
		if err != nil {
			c.restore(ctx, id, *existing)
			return w, false, err
		}
		if existing.Body != "" && sum != existing.Body {
			spool.Close()
			os.Remove(spool.Name())
			c.restore(ctx, id, *existing)
			metrics.idempotency.WithLabelValues("reused").Inc()
			return w, false, errKeyReused()
		}
		iw.rec.Started, iw.resolving, iw.since = existing.Started, true, existing.Started
		iw.bodySum, iw.spool = sum, spool
		r.Body = spool
	case existing.State == outbox.InProgress:
		metrics.idempotency.WithLabelValues("in_use").Inc()
		return w, false, newError(http.StatusConflict, "IDEMPOTENCY_KEY_IN_USE",
			"a request with this Idempotency-Key is still being processed; retry when it is done").setHeader("Retry-After", "1")
	default:
		// Done: the same request gets the first answer again.
		sum, err := c.hashBody(w, r)
		if err != nil {
			return w, false, err
		}
		if existing.Body != "" && sum != existing.Body {
			metrics.idempotency.WithLabelValues("reused").Inc()
			return w, false, errKeyReused()
		}
		metrics.idempotency.WithLabelValues("replayed").Inc()
		hdr := w.Header()
		hdr.Set(replayedHeader, "true")
		hdr.Set("Content-Type", existing.ContentType)
		hdr.Set("Content-Length", strconv.Itoa(len(existing.Answer)))
		w.WriteHeader(existing.Status)
		_, _ = w.Write(existing.Answer)
		return w, true, nil
	}
	c.idem = iw
	iw.capture.ResponseWriter = w
	iw.answer = &iw.capture
	return iw.answer, false, nil
}

func errBadIdempotencyKey() *apiError {
	return errBadParam(idempotencyHeader, "the Idempotency-Key header must be one value of 1 to 255 visible ASCII characters")
}

func errKeyReused() *apiError {
	return newError(http.StatusUnprocessableEntity, "IDEMPOTENCY_KEY_REUSED",
		"this Idempotency-Key was used for another request; use a new key for a new request")
}

// restore puts back the record a resolving request took, when it turns
// out not to resolve it.
func (c *call) restore(ctx context.Context, id string, rec outbox.Record) {
	if err := c.h.outbox.Put(ctx, id, rec); err != nil {
		c.h.logger.Error("idempotency record could not be restored", zap.String("key_id", c.entry.ID), zap.Error(err))
	}
}

// hashBody reads the request's whole body, within the config's bounds,
// into its hash only.
func (c *call) hashBody(w http.ResponseWriter, r *http.Request) (string, error) {
	if aerr := c.h.body.limitBody(w, r); aerr != nil {
		return "", aerr
	}
	h := newBodyHash(r)
	if _, err := io.Copy(h, r.Body); err != nil {
		return "", c.h.body.bodyError(err)
	}
	return h.sum(), nil
}

// spoolBody reads the request's whole body, within the config's bounds,
// into a temporary file and its hash; the file is read from the start.
func (c *call) spoolBody(w http.ResponseWriter, r *http.Request) (string, *os.File, error) {
	if aerr := c.h.body.limitBody(w, r); aerr != nil {
		return "", nil, aerr
	}
	f, err := os.CreateTemp("", "zwop-retry-*")
	if err != nil {
		return "", nil, err
	}
	h := newBodyHash(r)
	if _, err := io.Copy(io.MultiWriter(f, h), r.Body); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", nil, c.h.body.bodyError(err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", nil, err
	}
	return h.sum(), f, nil
}

// endIdempotent keeps what the write came to: its answer when the outcome
// is definite, a mark when it is uncertain, nothing when nothing reached
// Zulip.
func (c *call) endIdempotent(ctx context.Context, err error) {
	iw := c.idem
	if iw.spool != nil {
		iw.spool.Close()
		os.Remove(iw.spool.Name())
	}
	// The backend bounds its own time, and outlives the client's
	// cancel: the bbolt one keeps the outcome in memory for its next
	// commit, and a timer here would cost a send more than that.
	rec := iw.rec
	rec.Updated = time.Now().UTC()
	rec.Lease = time.Time{}
	rec.Body = iw.bodySum
	if rec.Body == "" && iw.body != nil && iw.body.complete {
		rec.Body = iw.body.sum()
	}
	var zerr *zulip.Error
	var werr error
	switch {
	case err == nil && iw.answer.status < 300,
		errors.As(err, &zerr) && zerr.Status >= 400 && zerr.Status < 500 && zerr.Status != http.StatusTooManyRequests:
		if len(iw.answer.body) > maxKeptAnswer {
			werr = c.h.outbox.Delete(ctx, iw.id)
			break
		}
		rec.State, rec.Status, rec.Answer = outbox.Done, iw.answer.status, iw.answer.body
		rec.ContentType = iw.answer.Header().Get("Content-Type")
		werr = c.h.outbox.Put(ctx, iw.id, rec)
	case c.uncertainWrite(err):
		rec.State = outbox.Uncertain
		werr = c.h.outbox.Put(ctx, iw.id, rec)
	default:
		werr = c.h.outbox.Delete(ctx, iw.id)
	}
	if werr != nil {
		c.h.logger.Error("idempotency record could not be written", zap.String("key_id", c.entry.ID), zap.Error(werr))
	}
}

// uncertainWrite says the request failed with err on a write to Zulip
// that went out with no definite answer: none came, or an error page that
// does not say whether Zulip took it (500, 502 and 504; a 503 is
// maintenance, which takes nothing), or a success that is not Zulip's
// JSON.
func (c *call) uncertainWrite(err error) bool {
	lc := c.lastZulip
	if err == nil || lc.Method == "" || lc.Method == http.MethodGet || !lc.Sent {
		return false
	}
	if lc.Response == nil {
		return true
	}
	switch s := lc.Response.Status; {
	case s == http.StatusServiceUnavailable:
		return false
	case s >= 500:
		return true
	case s >= 200 && s < 300:
		return errors.Is(err, zulip.ErrBadResponse)
	}
	return false
}

// answerCapture passes an answer on and keeps a copy, to replay.
type answerCapture struct {
	http.ResponseWriter
	status int
	body   []byte
}

func (a *answerCapture) WriteHeader(status int) {
	if a.status == 0 {
		a.status = status
	}
	a.ResponseWriter.WriteHeader(status)
}

func (a *answerCapture) Write(p []byte) (int, error) {
	if a.status == 0 {
		a.status = http.StatusOK
	}
	if len(a.body) <= maxKeptAnswer {
		a.body = append(a.body, p...)
	}
	return a.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection (read
// deadlines while the body is read).
func (a *answerCapture) Unwrap() http.ResponseWriter { return a.ResponseWriter }

// bodyHash is the SHA-256 of a request body as it is read. A multipart
// body's boundary, which a client makes anew for each attempt, is left
// out, so that a retry of the same parts is the same request.
type bodyHash struct {
	h        hash.Hash
	boundary []byte // "--" + the boundary; nil for other bodies
	tail     []byte
	complete bool
}

var boundaryMark = []byte("--<boundary>")

func newBodyHash(r *http.Request) *bodyHash {
	b := new(bodyHash)
	b.init(r)
	return b
}

func (b *bodyHash) init(r *http.Request) {
	b.h = sha256.New()
	// Only a multipart body has a boundary: other types are not parsed.
	ct := r.Header.Get("Content-Type")
	if len(ct) < len(mtMultipart) || !strings.EqualFold(ct[:len(mtMultipart)], mtMultipart) {
		return
	}
	if mt, params, err := mime.ParseMediaType(ct); err == nil && mt == mtMultipart && params["boundary"] != "" {
		b.boundary = []byte("--" + params["boundary"])
	}
}

func (b *bodyHash) Write(p []byte) (int, error) {
	if b.boundary == nil {
		return b.h.Write(p)
	}
	data := append(b.tail, p...)
	for {
		i := bytes.Index(data, b.boundary)
		if i < 0 {
			break
		}
		b.h.Write(data[:i])
		b.h.Write(boundaryMark)
		data = data[i+len(b.boundary):]
	}
	// What could be the start of a boundary waits for the next write.
	keep := min(len(data), len(b.boundary)-1)
	b.h.Write(data[:len(data)-keep])
	b.tail = append(b.tail[:0], data[len(data)-keep:]...)
	return len(p), nil
}

func (b *bodyHash) sum() string {
	b.h.Write(b.tail)
	b.tail = b.tail[:0]
	var sum [sha256.Size]byte
	var h [2 * sha256.Size]byte
	hex.Encode(h[:], b.h.Sum(sum[:0]))
	return string(h[:])
}

// hashedBody feeds the body to its hash as the request reads it.
type hashedBody struct {
	io.ReadCloser
	h *bodyHash
}

func (hb hashedBody) Read(p []byte) (int, error) {
	n, err := hb.ReadCloser.Read(p)
	hb.h.Write(p[:n])
	if err == io.EOF {
		hb.h.complete = true
	}
	return n, err
}

// The first attempt of a write whose outcome is uncertain may have
// landed. Before it is made again, it is looked for in Zulip, among what
// the bot did since that attempt began; found, it is the answer.

// findSent looks for a message the bot sent to the stream and topic with
// the content since the time given, newer than message after.
func (b *bot) findSent(ctx context.Context, streamID int64, topic, content string, since time.Time, after int64) (*zulip.SendResult, error) {
	uid, err := b.userID(ctx)
	if err != nil {
		return nil, err
	}
	raw := false
	msgs, err := b.client.Messages(ctx, zulip.GetMessages{Anchor: "newest", NumBefore: 100,
		Narrow: []zulip.NarrowTerm{
			{Operator: "channel", Operand: streamID},
			{Operator: "topic", Operand: topic},
			{Operator: "sender", Operand: uid},
		},
		ReadOptions: zulip.ReadOptions{ApplyMarkdown: &raw}})
	if err != nil {
		return nil, err
	}
	from := since.Unix() - 2 // Zulip's clock, in whole seconds
	want := strings.TrimRightFunc(content, unicode.IsSpace)
	for i := len(msgs) - 1; i >= 0; i-- {
		m := msgs[i]
		if m.Timestamp >= from && m.ID > after && strings.TrimRightFunc(m.Content, unicode.IsSpace) == want {
			return &zulip.SendResult{ID: m.ID, Raw: foundAnswer(`{"result":"success","msg":"","id":` + strconv.FormatInt(m.ID, 10) + `}`)}, nil
		}
	}
	return nil, nil
}

// findUpload looks for a file the bot uploaded with the name and size
// since the time given.
func (b *bot) findUpload(ctx context.Context, name string, size int64, since time.Time) (*zulip.UploadResult, error) {
	list, err := b.client.Attachments(ctx)
	if err != nil {
		return nil, err
	}
	from := since.UnixMilli() - 2000
	for i := len(list) - 1; i >= 0; i-- {
		a := list[i]
		if a.Size != size || a.CreateTime < from || !sameFileName(a.Name, name) {
			continue
		}
		body, err := json.Marshal(map[string]string{"result": "success", "msg": "", "uri": a.URI(), "url": a.URI(), "filename": a.Name})
		if err != nil {
			return nil, err
		}
		return &zulip.UploadResult{URI: a.URI(), URL: a.URI(), Filename: a.Name, Raw: foundAnswer(string(body))}, nil
	}
	return nil, nil
}

// sameFileName compares a name as uploaded with the name Zulip kept,
// which it may have cleaned of some characters.
func sameFileName(kept, sent string) bool {
	if kept == sent {
		return true
	}
	norm := func(s string) string {
		return strings.Map(func(r rune) rune {
			if unicode.IsLetter(r) || unicode.IsDigit(r) || r == '.' {
				return unicode.ToLower(r)
			}
			return -1
		}, s)
	}
	return norm(kept) == norm(sent)
}

// editMade says the message already is as the edit would make it.
func editMade(m *zulip.Message, u zulip.UpdateMessage) bool {
	return (u.Content == nil || strings.TrimRightFunc(m.Content, unicode.IsSpace) == strings.TrimRightFunc(*u.Content, unicode.IsSpace)) &&
		(u.Topic == nil || m.Topic == *u.Topic)
}

// foundAnswer is Zulip's answer to a write, made for one found.
func foundAnswer(body string) *zulip.Response {
	return &zulip.Response{Status: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(body)}
}

// writeFound answers with what was found of the first attempt's write.
func writeFound(w http.ResponseWriter, body []byte) {
	w.Header().Set(replayedHeader, "true")
	writeRawJSON(w, http.StatusOK, body)
}
