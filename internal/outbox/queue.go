package outbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// The send queue: sends a key asked to have delivered later rather than
// fail (SPEC.md, "Queued delivery"). Each is stored durably before the
// proxy answers 202, with its file when it has one, and delivered in the
// order its key made them. A queued send lives in one place while it is
// queued and moves to the finished ones when it is delivered or failed,
// so that what counts against a key's bounds, and what a deliverer looks
// at, is the queued ones only.

// SendState is where a queued send stands.
type SendState string

const (
	Queued    SendState = "queued"
	Delivered SendState = "delivered"
	Failed    SendState = "failed"
)

// Send is one queued send. It never holds the caller's key: what it
// holds was scrubbed of it before it was queued.
type Send struct {
	// ID is the queue id: the key entry's id, a dot, then the time it
	// was queued and a random part, in hex, so that ids sort in the
	// order they were made.
	ID     string `json:"queue_id"`
	Entry  string `json:"entry"`
	Stream string `json:"stream"`
	// Bot is the bot that was to send it (its email at its site):
	// configs sharing a store may each have a bot of the key's bot name.
	Bot string `json:"bot,omitempty"`
	// StreamID is the stream id the client named, when it named one:
	// the key's stream must have it.
	StreamID int64 `json:"stream_id,omitempty"`
	// Topic and Content are what goes to Zulip; a finished send keeps
	// neither.
	Topic   string `json:"topic,omitempty"`
	Content string `json:"content,omitempty"`
	// File is a file to upload and link at the end of the content; it
	// is stored beside the record until it is uploaded. UploadURI is
	// where it went, once it did.
	File      *File  `json:"file,omitempty"`
	UploadURI string `json:"upload_uri,omitempty"`
	// Size is what the send counts against its key's byte bound.
	Size     int64     `json:"size"`
	QueuedAt time.Time `json:"queued_at"`
	State    SendState `json:"state"`
	Attempts int       `json:"attempts"`
	// NextAttempt: not before then (a backoff, Zulip's Retry-After).
	NextAttempt time.Time `json:"next_attempt_at,omitzero"`
	// InFlight is when the attempt under way began; it is written before
	// anything goes to Zulip, so that an attempt a crash ended is known.
	InFlight time.Time `json:"in_flight,omitzero"`
	// UncertainSince: an attempt that began then may have landed (it
	// timed out, lost its connection, or died with its instance); the
	// next looks in Zulip first for what it made since.
	UncertainSince time.Time `json:"uncertain_since,omitzero"`
	// The outcome: the message's id, or why it failed.
	MessageID int64      `json:"message_id,omitempty"`
	Error     *SendError `json:"error,omitempty"`
	Finished  time.Time  `json:"finished,omitzero"`
}

// File is the file of a queued send.
type File struct {
	Name        string `json:"name"`
	ContentType string `json:"content_type"`
	Size        int64  `json:"size"`
}

// SendError is why a send failed: Zulip's answer, or the proxy's.
type SendError struct {
	Status int    `json:"status"`
	Msg    string `json:"msg"`
	Code   string `json:"code"`
}

// Bounds limit one key's queued sends.
type Bounds struct {
	MaxCount int
	MaxBytes int64
}

// QueueStats sum up the queued sends.
type QueueStats struct {
	Count  int
	Bytes  int64
	Oldest time.Time // zero when none is queued
}

// Errors of the queue.
var (
	ErrNotFound = errors.New("no such queued send")
	// ErrFull: the send would take its key past a bound; nothing was
	// stored. It is a *FullError.
	ErrFull = errors.New("queue full")
	// ErrDelivered: a delivered send cannot be cancelled.
	ErrDelivered = errors.New("send already delivered")
	// ErrInFlight: the send is being delivered at this moment.
	ErrInFlight = errors.New("send is being delivered")
)

// FullError says which bound a send would pass.
type FullError struct {
	Bytes bool // the byte bound, else the count
	Limit int64
}

func (e *FullError) Error() string {
	if e.Bytes {
		return fmt.Sprintf("queue full: the key's queued sends would pass %d bytes", e.Limit)
	}
	return fmt.Sprintf("queue full: the key has %d sends queued", e.Limit)
}

func (e *FullError) Is(target error) bool { return target == ErrFull }

// queueBackend keeps queued sends: beside the key store file, or in
// Caddy's storage.
type queueBackend interface {
	// spool makes a temporary file for a send's file, where enqueue
	// can take it from.
	spool() (*os.File, error)
	// enqueue stores s and its file (spooled, or nil), unless that
	// takes its key past b; durably, before it returns.
	enqueue(ctx context.Context, s *Send, file *os.File, b Bounds) error
	get(ctx context.Context, id string) (*Send, error)
	// list is a key's sends, queued then finished, each in order.
	list(ctx context.Context, entry string) ([]Send, error)
	// head is the key's oldest queued send; nil when none is.
	head(ctx context.Context, entry string) (*Send, error)
	// update changes a send by f, atomically; a send f finishes moves
	// to the finished ones and its file is removed. remove with f's
	// verdict drops it.
	update(ctx context.Context, id string, f func(s *Send) (remove bool, err error)) (*Send, error)
	openFile(ctx context.Context, id string) (io.ReadCloser, error)
	// entries are the keys with queued sends.
	entries(ctx context.Context) ([]string, error)
	count(ctx context.Context, entry string) (int, error)
	// tryLock takes the right to deliver a key's sends, if no one else
	// has it.
	tryLock(ctx context.Context, entry string) (unlock func(), ok bool, err error)
	stats(ctx context.Context) (QueueStats, error)
	// pruneFinished drops finished sends finished before t.
	pruneFinished(ctx context.Context, before time.Time) (int, error)
}

// queueIDs makes queue ids that sort in the order this process made
// them, even within one clock tick.
type queueIDs struct {
	mu   sync.Mutex
	last int64
}

func (q *queueIDs) next(entry string, now time.Time) (string, error) {
	q.mu.Lock()
	t := max(now.UnixNano(), q.last+1)
	q.last = t
	q.mu.Unlock()
	var r [4]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s.%016x%s", entry, t, hex.EncodeToString(r[:])), nil
}

// EntryOf is the key entry a queue id belongs to; ok is false for what
// is not a queue id.
func EntryOf(id string) (entry string, ok bool) {
	i := strings.LastIndexByte(id, '.')
	if i <= 0 || len(id)-i-1 != 24 || !safeName(id[:i]) {
		return "", false
	}
	for _, b := range []byte(id[i+1:]) {
		if !(b >= '0' && b <= '9' || b >= 'a' && b <= 'f') {
			return "", false
		}
	}
	return id[:i], true
}

// safeName: a key entry id may become a file or storage name.
func safeName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, b := range []byte(s) {
		if !(b >= '0' && b <= '9' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b == '_' || b == '-') {
			return false
		}
	}
	return true
}

// Enqueue stores a send for s.Entry, durably, and returns it with its
// queue id; file is its file, spooled by Spool (or nil), which Enqueue
// takes over. Over a bound it stores nothing and returns a *FullError.
func (o *Outbox) Enqueue(ctx context.Context, s Send, file *os.File, b Bounds) (*Send, error) {
	if file != nil {
		defer func() { file.Close(); os.Remove(file.Name()) }()
	}
	if !safeName(s.Entry) {
		return nil, fmt.Errorf("%s: key id %q cannot name a queued send", o, s.Entry)
	}
	id, err := o.ids.next(s.Entry, s.QueuedAt)
	if err != nil {
		return nil, err
	}
	s.ID, s.State = id, Queued
	s.Size = int64(len(s.Topic) + len(s.Content))
	if s.File != nil {
		s.Size += s.File.Size
	}
	if err := o.q.enqueue(ctx, &s, file, b); err != nil {
		return nil, err
	}
	return &s, nil
}

// Spool makes a temporary file to hold a send's file until it is queued
// or sent; the caller removes it if Enqueue does not take it.
func (o *Outbox) Spool() (*os.File, error) { return o.q.spool() }

// GetSend is the send with that queue id.
func (o *Outbox) GetSend(ctx context.Context, id string) (*Send, error) {
	if _, ok := EntryOf(id); !ok {
		return nil, ErrNotFound
	}
	return o.q.get(ctx, id)
}

// ListSends are a key's sends: queued, then finished, each oldest first.
func (o *Outbox) ListSends(ctx context.Context, entry string) ([]Send, error) {
	if !safeName(entry) {
		return nil, nil
	}
	return o.q.list(ctx, entry)
}

// QueuedCount is how many sends a key has queued.
func (o *Outbox) QueuedCount(ctx context.Context, entry string) (int, error) {
	if !safeName(entry) {
		return 0, nil
	}
	return o.q.count(ctx, entry)
}

// HeadSend is a key's oldest queued send, nil when it has none.
func (o *Outbox) HeadSend(ctx context.Context, entry string) (*Send, error) {
	return o.q.head(ctx, entry)
}

// UpdateSend changes a queued send by f, atomically; f's error leaves
// it as it was. A send f marks delivered or failed is finished: it
// leaves the queue, and its file is removed.
func (o *Outbox) UpdateSend(ctx context.Context, id string, f func(s *Send) error) (*Send, error) {
	return o.q.update(ctx, id, func(s *Send) (bool, error) { return false, f(s) })
}

// CancelSend removes a send that is not delivered: a queued one that no
// attempt is delivering now, or a failed one.
func (o *Outbox) CancelSend(ctx context.Context, id string) (*Send, error) {
	if _, ok := EntryOf(id); !ok {
		return nil, ErrNotFound
	}
	return o.q.update(ctx, id, func(s *Send) (bool, error) {
		switch {
		case s.State == Delivered:
			return false, ErrDelivered
		case !s.InFlight.IsZero():
			return false, ErrInFlight
		}
		return true, nil
	})
}

// OpenSendFile reads a queued send's file.
func (o *Outbox) OpenSendFile(ctx context.Context, id string) (io.ReadCloser, error) {
	return o.q.openFile(ctx, id)
}

// QueuedEntries are the keys with queued sends.
func (o *Outbox) QueuedEntries(ctx context.Context) ([]string, error) { return o.q.entries(ctx) }

// TryLockEntry takes the right to deliver a key's sends, unless another
// deliverer (of this process, or of another instance sharing the store)
// has it; unlock gives it back. A lock its holder stops renewing (the
// instance died) is taken over after a while.
func (o *Outbox) TryLockEntry(ctx context.Context, entry string) (unlock func(), ok bool, err error) {
	return o.q.tryLock(ctx, entry)
}

// QueueStats sums up the queued sends.
func (o *Outbox) QueueStats(ctx context.Context) (QueueStats, error) { return o.q.stats(ctx) }

// PruneSends drops the finished sends finished before t.
func (o *Outbox) PruneSends(ctx context.Context, before time.Time) (int, error) {
	return o.q.pruneFinished(ctx, before)
}

// Finish marks s delivered as message id, or failed with e, at now.
func (s *Send) Finish(now time.Time, messageID int64, e *SendError) {
	s.State, s.MessageID, s.Error = Delivered, messageID, e
	if e != nil {
		s.State = Failed
	}
	s.Finished, s.InFlight, s.NextAttempt = now, time.Time{}, time.Time{}
	s.Topic, s.Content = "", ""
}

// finished says whether the send left the queue.
func (s *Send) finished() bool { return s.State == Delivered || s.State == Failed }
