package zulipproxy

import (
	"context"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
	"github.com/zwop/caddy-zulip-proxy/internal/outbox"
	"github.com/zwop/caddy-zulip-proxy/zulip"
	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

func TestBackoff(t *testing.T) {
	prev := time.Duration(0)
	for n := 1; n <= 12; n++ {
		lo, hi := backoff(n, 0), backoff(n, 0.999999)
		if lo > hi || hi > maxBackoff || lo < prev/2 {
			t.Errorf("attempt %d: %s to %s", n, lo, hi)
		}
		if n <= 6 && hi < 2*lo-time.Millisecond {
			t.Errorf("attempt %d: jitter spans %s to %s, want the upper half of the step", n, lo, hi)
		}
		prev = lo
	}
	if got := backoff(1, 0); got != 500*time.Millisecond {
		t.Errorf("first wait at least %s, want 500ms", got)
	}
	if got := backoff(50, 0.999999); got > maxBackoff || got < 59*time.Second {
		t.Errorf("after many: %s, want just under a minute", got)
	}
}

// queueFixture is a handler on a file store in front of an emulated
// Zulip over TLS, with a queued key, and its deliverer on a clock the
// test sets.
type queueFixture struct {
	h     *Handler
	d     *deliverer
	emu   *emulator.Server
	entry string
	now   time.Time
}

func newQueueFixture(t *testing.T) *queueFixture {
	t.Helper()
	emu := emulator.NewTLSServer(t)
	ca := filepath.Join(t.TempDir(), "zulip.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: emu.HTTP.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(t.TempDir(), "clients.json")
	h := provisionWith(t, map[string]string{"module": "file_system", "root": t.TempDir()},
		`{"bots": {"default": {"site": "`+emu.URL+`", "email": "`+emulator.DemoBotEmail+`", "api_key": "`+
			emulator.DemoBotKey+`", "cert_bundle": "`+ca+`"}}, "store": "`+store+`"}`)
	_, e, err := h.store.Add(context.Background(), keystore.NewEntry{Stream: emulator.DemoStream, Delivery: keystore.DeliveryQueued})
	if err != nil {
		t.Fatal(err)
	}
	f := &queueFixture{h: h, d: h.deliverer, emu: emu, entry: e.ID, now: time.Now()}
	f.d.now = func() time.Time { return f.now }
	f.d.jitter = func() float64 { return 0 }
	return f
}

func (f *queueFixture) queue(t *testing.T, s outbox.Send, file string) *outbox.Send {
	t.Helper()
	s.Entry, s.Stream = f.entry, emulator.DemoStream
	if s.QueuedAt.IsZero() {
		s.QueuedAt = f.now
	}
	var spool *os.File
	if file != "" {
		var err error
		if spool, err = f.h.outbox.Spool(); err != nil {
			t.Fatal(err)
		}
		spool.WriteString(file)
		spool.Seek(0, io.SeekStart)
		s.File = &outbox.File{Name: "notes.txt", ContentType: "text/plain", Size: int64(len(file))}
	}
	q, err := f.h.outbox.Enqueue(context.Background(), s, spool, f.h.Queue.bounds())
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// attempt tries the key's oldest send as the deliverer would.
func (f *queueFixture) attempt(t *testing.T) time.Duration {
	t.Helper()
	head, err := f.h.outbox.HeadSend(context.Background(), f.entry)
	if err != nil || head == nil {
		t.Fatalf("nothing queued: %v", err)
	}
	return f.d.attempt(f.h, &keyDelivery{}, head)
}

func (f *queueFixture) get(t *testing.T, id string) *outbox.Send {
	t.Helper()
	s, err := f.h.outbox.GetSend(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// sendsToZulip counts the messages sent to Zulip so far.
func (f *queueFixture) sendsToZulip() int {
	n := 0
	for _, r := range f.emu.Requests() {
		if r.Path == "/api/v1/messages" && r.EffectiveMethod == "POST" {
			n++
		}
	}
	return n
}

func TestQueuedSendDelivered(t *testing.T) {
	f := newQueueFixture(t)
	q := f.queue(t, outbox.Send{Topic: "queued", Content: "with a file"}, "the file's text")
	if wait := f.attempt(t); wait != 0 {
		t.Fatalf("waits %s", wait)
	}
	got := f.get(t, q.ID)
	msgs := f.emu.Messages()
	if got.State != outbox.Delivered || got.Attempts != 1 || len(msgs) != 1 || got.MessageID != msgs[0].ID || got.Content != "" {
		t.Fatalf("after delivery: %+v, Zulip holds %d", got, len(msgs))
	}
	if !strings.HasPrefix(msgs[0].Content, "with a file\n\n[notes.txt](/user_uploads/") || msgs[0].Topic != "queued" {
		t.Errorf("Zulip holds %q in %q", msgs[0].Content, msgs[0].Topic)
	}
	if _, err := f.h.outbox.OpenSendFile(context.Background(), q.ID); err == nil {
		t.Error("a delivered send's file is kept")
	}
}

func TestQueuedSendExpires(t *testing.T) {
	f := newQueueFixture(t)
	q := f.queue(t, outbox.Send{Topic: "old", Content: "too late", QueuedAt: f.now.Add(-25 * time.Hour)}, "")
	if wait := f.attempt(t); wait != 0 {
		t.Fatalf("waits %s", wait)
	}
	got := f.get(t, q.ID)
	if got.State != outbox.Failed || got.Error == nil || got.Error.Code != "expired" || f.sendsToZulip() != 0 {
		t.Errorf("an expired send: %+v %+v; %d sends reached Zulip", got, got.Error, f.sendsToZulip())
	}
}

func TestQueuedSendWaitsItsTime(t *testing.T) {
	f := newQueueFixture(t)
	q := f.queue(t, outbox.Send{Topic: "later", Content: "not yet"}, "")
	if _, err := f.h.outbox.UpdateSend(context.Background(), q.ID, func(s *outbox.Send) error {
		s.NextAttempt = f.now.Add(30 * time.Second)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if wait := f.attempt(t); wait != 30*time.Second || f.sendsToZulip() != 0 {
		t.Errorf("waits %s, %d sends reached Zulip", wait, f.sendsToZulip())
	}
	f.now = f.now.Add(30 * time.Second)
	if wait := f.attempt(t); wait != 0 || f.get(t, q.ID).State != outbox.Delivered {
		t.Errorf("when its time came: waits %s, %s", wait, f.get(t, q.ID).State)
	}
}

// Zulip's refusal is final: the send fails after one attempt, with
// Zulip's answer.
func TestQueuedSendRefusedByZulip(t *testing.T) {
	f := newQueueFixture(t)
	q := f.queue(t, outbox.Send{Topic: "refused", Content: "no"}, "")
	if err := f.emu.SetFault(emulator.Fault{Status: 400, Count: 1, PathPrefix: "/api/v1/messages", Method: "POST"}); err != nil {
		t.Fatal(err)
	}
	if wait := f.attempt(t); wait != 0 {
		t.Fatalf("waits %s", wait)
	}
	got := f.get(t, q.ID)
	if got.State != outbox.Failed || got.Attempts != 1 || got.Error == nil || got.Error.Status != 400 || f.sendsToZulip() != 1 {
		t.Errorf("refused: %+v %+v, %d sends reached Zulip", got, got.Error, f.sendsToZulip())
	}
	if head, _ := f.h.outbox.HeadSend(context.Background(), f.entry); head != nil {
		t.Errorf("a refused send is still queued: %+v", head)
	}
}

func TestQueuedSendHonoursRetryAfter(t *testing.T) {
	f := newQueueFixture(t)
	q := f.queue(t, outbox.Send{Topic: "busy", Content: "wait for me"}, "")
	if err := f.emu.SetFault(emulator.Fault{RateLimited: true, RetryAfter: 7.5, Count: 1, PathPrefix: "/api/v1/messages"}); err != nil {
		t.Fatal(err)
	}
	if wait := f.attempt(t); wait != 7500*time.Millisecond {
		t.Errorf("after Zulip's 429: waits %s, want 7.5s", wait)
	}
	got := f.get(t, q.ID)
	if got.State != outbox.Queued || got.Attempts != 1 || !got.NextAttempt.Equal(f.now.Add(7500*time.Millisecond)) || !got.InFlight.IsZero() {
		t.Errorf("after Zulip's 429: %+v", got)
	}
}

// While Zulip is down the waits double, and an attempt Zulip may have
// taken (its nginx's 502) is looked for before the next sends again.
func TestQueuedSendBacksOffWhileZulipIsDown(t *testing.T) {
	f := newQueueFixture(t)
	q := f.queue(t, outbox.Send{Topic: "down", Content: "patience"}, "")
	if err := f.emu.SetFault(emulator.Fault{Status: 502, PathPrefix: "/api/v1/messages"}); err != nil {
		t.Fatal(err)
	}
	k := &keyDelivery{}
	var waits []time.Duration
	for range 4 {
		head, _ := f.h.outbox.HeadSend(context.Background(), f.entry)
		wait := f.d.attempt(f.h, k, head)
		waits = append(waits, wait)
		f.now = f.now.Add(wait)
	}
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second}
	for i := range want {
		if waits[i] != want[i] {
			t.Errorf("waits %v, want %v", waits, want)
			break
		}
	}
	got := f.get(t, q.ID)
	if got.State != outbox.Queued || got.Attempts != 4 || got.UncertainSince.IsZero() {
		t.Errorf("while down: %+v", got)
	}
	f.emu.ClearFault()
	if wait := f.d.attempt(f.h, k, got); wait != 0 || f.get(t, q.ID).State != outbox.Delivered || len(f.emu.Messages()) != 1 {
		t.Errorf("up again: waits %s, %s, Zulip holds %d", wait, f.get(t, q.ID).State, len(f.emu.Messages()))
	}
}

// An attempt a crash ended (its instance killed mid-send) may have
// landed: the next looks for it in Zulip, and finds it, not sending
// again.
func TestQueuedSendAfterCrashIsFoundNotSentAgain(t *testing.T) {
	f := newQueueFixture(t)
	f.d.now = time.Now // Zulip's clock: what it holds is compared by time
	q := f.queue(t, outbox.Send{Topic: "crash", Content: "landed before the crash", QueuedAt: time.Now()}, "")
	started := time.Now()
	if _, err := f.h.outbox.UpdateSend(context.Background(), q.ID, func(s *outbox.Send) error {
		s.InFlight, s.Attempts = started, 1
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sid, err := f.h.bots.fallback.streamID(context.Background(), emulator.DemoStream)
	if err != nil {
		t.Fatal(err)
	}
	landed, err := f.h.bots.fallback.client.SendMessage(context.Background(), zulip.SendMessage{
		StreamID: sid, Topic: "crash", Content: "landed before the crash"})
	if err != nil {
		t.Fatal(err)
	}
	before := f.sendsToZulip()
	if wait := f.d.attempt(f.h, &keyDelivery{}, f.get(t, q.ID)); wait != 0 {
		t.Fatalf("waits %s", wait)
	}
	got := f.get(t, q.ID)
	if got.State != outbox.Delivered || got.MessageID != landed.ID || got.Attempts != 2 {
		t.Errorf("after the crash: %+v, want delivered as message %d", got, landed.ID)
	}
	if n := f.sendsToZulip() - before; n != 0 || len(f.emu.Messages()) != 1 {
		t.Errorf("sent %d more; Zulip holds %d", n, len(f.emu.Messages()))
	}
}

func TestQueuedSendOfRevokedKeyFails(t *testing.T) {
	f := newQueueFixture(t)
	q := f.queue(t, outbox.Send{Topic: "revoked", Content: "never"}, "")
	if _, err := f.h.store.Revoke(context.Background(), f.entry); err != nil {
		t.Fatal(err)
	}
	if wait := f.attempt(t); wait != 0 {
		t.Fatalf("waits %s", wait)
	}
	got := f.get(t, q.ID)
	if got.State != outbox.Failed || got.Error == nil || got.Error.Code != codeInvalidKey || f.sendsToZulip() != 0 {
		t.Errorf("a revoked key's send: %+v %+v, %d reached Zulip", got, got.Error, f.sendsToZulip())
	}
}

// A queued send whose key lost the permission to send, or was held to
// other topics, before it went fails and never reaches Zulip.
func TestQueuedSendOfNarrowedKeyFails(t *testing.T) {
	for name, narrow := range map[string]func(*queueFixture) error{
		"permissions": func(f *queueFixture) error {
			_, err := f.h.store.SetPermissions(context.Background(), f.entry, []string{keystore.PermRead})
			return err
		},
		"topics": func(f *queueFixture) error {
			_, err := f.h.store.SetTopicPrefix(context.Background(), f.entry, "BL3/")
			return err
		},
	} {
		t.Run(name, func(t *testing.T) {
			f := newQueueFixture(t)
			q := f.queue(t, outbox.Send{Topic: "BL2/later", Content: "never"}, "")
			if err := narrow(f); err != nil {
				t.Fatal(err)
			}
			if wait := f.attempt(t); wait != 0 {
				t.Fatalf("waits %s", wait)
			}
			got := f.get(t, q.ID)
			if got.State != outbox.Failed || got.Error == nil || got.Error.Status != 403 || f.sendsToZulip() != 0 {
				t.Errorf("%+v %+v, %d reached Zulip", got, got.Error, f.sendsToZulip())
			}
		})
	}
}
