package outbox

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

// spooled is a send's file, spooled as the proxy spools it.
func spooled(t *testing.T, o *Outbox, data string) *os.File {
	t.Helper()
	f, err := o.Spool()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(data); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestQueueKeepsOrderAndBounds(t *testing.T) {
	ctx := context.Background()
	for name, pair := range backends(t) {
		t.Run(name, func(t *testing.T) {
			one, two := pair[0], pair[1]
			entry := "e" + strings.ReplaceAll(name, "bbolt", "b") + "01"
			bounds := Bounds{MaxCount: 3, MaxBytes: 100}
			now := time.Now().UTC()
			var ids []string
			for i, content := range []string{"first", "second"} {
				s, err := one.Enqueue(ctx, Send{Entry: entry, Stream: "general", Topic: "t", Content: content, QueuedAt: now.Add(time.Duration(i))}, nil, bounds)
				if err != nil {
					t.Fatal(err)
				}
				if got, ok := EntryOf(s.ID); !ok || got != entry || s.State != Queued || s.Size != int64(1+len(content)) {
					t.Fatalf("queued: %+v", s)
				}
				ids = append(ids, s.ID)
			}
			// Over the byte bound: nothing is stored.
			_, err := two.Enqueue(ctx, Send{Entry: entry, Topic: "t", Content: strings.Repeat("x", 95), QueuedAt: now}, nil, bounds)
			var full *FullError
			if !errors.As(err, &full) || !full.Bytes || !errors.Is(err, ErrFull) {
				t.Fatalf("over the byte bound: %v", err)
			}
			if n, _ := two.QueuedCount(ctx, entry); n != 2 {
				t.Fatalf("%d queued after a refusal, want 2", n)
			}
			// With a file: stored beside it, read back, counted.
			s, err := two.Enqueue(ctx, Send{Entry: entry, Topic: "t", Content: "third", QueuedAt: now.Add(2),
				File: &File{Name: "a.txt", ContentType: "text/plain", Size: 5}}, spooled(t, two, "hello"), bounds)
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, s.ID)
			rc, err := one.OpenSendFile(ctx, s.ID)
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(rc)
			rc.Close()
			if string(data) != "hello" {
				t.Errorf("the file reads %q", data)
			}
			// Over the count bound.
			if _, err := one.Enqueue(ctx, Send{Entry: entry, Topic: "t", Content: "fourth", QueuedAt: now}, nil, bounds); !errors.As(err, &full) || full.Bytes {
				t.Fatalf("over the count bound: %v", err)
			}
			if ents, _ := two.QueuedEntries(ctx); len(ents) != 1 || ents[0] != entry {
				t.Errorf("entries: %v", ents)
			}
			st, err := one.QueueStats(ctx)
			if err != nil || st.Count != 3 || st.Bytes != 6+7+11 || st.Oldest.IsZero() {
				t.Errorf("stats: %+v %v", st, err)
			}

			// The head is the oldest; finishing it moves it out of the
			// queue, and the next is the head.
			head, err := two.HeadSend(ctx, entry)
			if err != nil || head == nil || head.ID != ids[0] || head.Content != "first" {
				t.Fatalf("head: %+v %v", head, err)
			}
			if _, err := one.UpdateSend(ctx, ids[0], func(s *Send) error { s.Finish(now, 42, nil); return nil }); err != nil {
				t.Fatal(err)
			}
			got, err := two.GetSend(ctx, ids[0])
			if err != nil || got.State != Delivered || got.MessageID != 42 || got.Content != "" {
				t.Errorf("delivered: %+v %v", got, err)
			}
			if head, _ := one.HeadSend(ctx, entry); head == nil || head.ID != ids[1] {
				t.Errorf("next head: %+v", head)
			}
			// A delivered send cannot be cancelled; an in-flight one not
			// now; a queued one can, with its file.
			if _, err := one.CancelSend(ctx, ids[0]); !errors.Is(err, ErrDelivered) {
				t.Errorf("cancel delivered: %v", err)
			}
			if _, err := one.UpdateSend(ctx, ids[1], func(s *Send) error { s.InFlight = now; return nil }); err != nil {
				t.Fatal(err)
			}
			if _, err := two.CancelSend(ctx, ids[1]); !errors.Is(err, ErrInFlight) {
				t.Errorf("cancel in flight: %v", err)
			}
			if _, err := two.CancelSend(ctx, ids[2]); err != nil {
				t.Errorf("cancel queued: %v", err)
			}
			if _, err := one.GetSend(ctx, ids[2]); !errors.Is(err, ErrNotFound) {
				t.Errorf("a cancelled send is still there: %v", err)
			}
			if _, err := one.OpenSendFile(ctx, ids[2]); err == nil {
				t.Error("a cancelled send's file is still there")
			}
			list, err := two.ListSends(ctx, entry)
			if err != nil || len(list) != 2 || list[0].ID != ids[1] || list[1].ID != ids[0] {
				t.Errorf("list: %+v %v", list, err)
			}
			if st, _ := one.QueueStats(ctx); st.Count != 1 || st.Bytes != 7 {
				t.Errorf("stats after: %+v", st)
			}
			// Finished sends are pruned by when they finished.
			if n, err := one.PruneSends(ctx, time.Now().Add(time.Hour)); err != nil || n != 1 {
				t.Errorf("pruned %d: %v", n, err)
			}
			if _, err := one.GetSend(ctx, ids[0]); !errors.Is(err, ErrNotFound) {
				t.Errorf("a pruned send is still there: %v", err)
			}
			if _, err := one.GetSend(ctx, entry+".nonsense"); !errors.Is(err, ErrNotFound) {
				t.Errorf("a malformed id: %v", err)
			}
		})
	}
}

// One deliverer at a time has a key's sends, on one instance or two.
func TestTryLockEntry(t *testing.T) {
	ctx := context.Background()
	for name, pair := range backends(t) {
		t.Run(name, func(t *testing.T) {
			unlock, ok, err := pair[0].TryLockEntry(ctx, "abc")
			if err != nil || !ok {
				t.Fatalf("first: %v %v", ok, err)
			}
			if _, ok, err := pair[1].TryLockEntry(ctx, "abc"); err != nil || ok {
				t.Fatalf("second while the first holds it: %v %v", ok, err)
			}
			if u, ok, err := pair[1].TryLockEntry(ctx, "def"); err != nil || !ok {
				t.Fatalf("another key: %v %v", ok, err)
			} else {
				u()
			}
			unlock()
			u, ok, err := pair[1].TryLockEntry(ctx, "abc")
			if err != nil || !ok {
				t.Fatalf("after unlock: %v %v", ok, err)
			}
			u()
		})
	}
}

// A queued send survives the database being closed (as a crash would
// leave it, committed), and a file no record names is removed.
func TestQueueSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "clients.outbox.db")
	o := OpenFile(path)
	s, err := o.Enqueue(ctx, Send{Entry: "abc", Topic: "t", Content: "kept", QueuedAt: time.Now(),
		File: &File{Name: "f", Size: 4}}, spooled(t, o, "data"), Bounds{})
	if err != nil {
		t.Fatal(err)
	}
	// A spool and a file a crash left behind.
	stray := spooled(t, o, "stray")
	stray.Close()
	orphan := filepath.Join(filepath.Dir(path), "clients.outbox.files", "abc.0000000000000000deadbeef")
	if err := os.WriteFile(orphan, []byte("orphan"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	o = OpenFile(path)
	defer o.Close()
	got, err := o.GetSend(ctx, s.ID)
	if err != nil || got.Content != "kept" || got.State != Queued {
		t.Fatalf("after reopening: %+v %v", got, err)
	}
	rc, err := o.OpenSendFile(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	for _, p := range []string{stray.Name(), orphan} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s was kept: %v", filepath.Base(p), err)
		}
	}
}

// A key whose deliverer died (its lease is no longer renewed) is taken
// over by another instance once the lease runs out, not before.
func TestLeaseTakenOverWhenItRunsOut(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	dead := OpenStorage(&certmagic.FileStorage{Path: dir}).q.(*storageBackend)
	alive := OpenStorage(&certmagic.FileStorage{Path: dir}).q.(*storageBackend)
	now := time.Now()
	dead.now = func() time.Time { return now }
	alive.now = func() time.Time { return now }
	if _, ok, err := dead.tryLock(ctx, "abc"); err != nil || !ok {
		t.Fatalf("first: %v %v", ok, err)
	}
	// dead never renews nor unlocks: its process is gone.
	now = now.Add(leaseTTL - time.Second)
	if _, ok, _ := alive.tryLock(ctx, "abc"); ok {
		t.Fatal("taken over while the lease runs")
	}
	now = now.Add(2 * time.Second)
	unlock, ok, err := alive.tryLock(ctx, "abc")
	if err != nil || !ok {
		t.Fatalf("not taken over after the lease ran out: %v %v", ok, err)
	}
	if _, ok, _ := dead.tryLock(ctx, "abc"); ok {
		t.Error("the old holder took it back from the new")
	}
	unlock()
}
