package keystore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// issued collects every key a store test hands out, so the tests can
// prove no key ever reaches a store file.
type issued struct {
	mu   sync.Mutex
	keys []string
}

func (is *issued) add(k string) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.keys = append(is.keys, k)
}

// assertNoKeyIn fails if the file holds any issued key, and checks that
// it holds their hashes instead.
func (is *issued) assertNoKeyIn(t *testing.T, path string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	is.mu.Lock()
	defer is.mu.Unlock()
	if len(is.keys) == 0 {
		t.Fatal("no key was issued")
	}
	for _, k := range is.keys {
		if bytes.Contains(raw, []byte(k)) {
			t.Fatalf("store file %s contains a key", path)
		}
		if !bytes.Contains(raw, []byte(HashKey(k))) {
			t.Errorf("store file lacks the hash of an issued key")
		}
	}
}

// assertServes fails unless s holds the issued keys and no others.
func (is *issued) assertServes(t *testing.T, s *Store) {
	t.Helper()
	is.mu.Lock()
	defer is.mu.Unlock()
	if s.Len() != len(is.keys) {
		t.Fatalf("%d entries, want the %d keys issued", s.Len(), len(is.keys))
	}
	for _, k := range is.keys {
		if _, ok := s.Lookup(k); !ok {
			t.Fatal("an issued key is missing")
		}
	}
}

// addConcurrently adds each keys through every one of stores, all at once.
func addConcurrently(t *testing.T, each int, is *issued, stores ...*Store) {
	t.Helper()
	var wg sync.WaitGroup
	for _, s := range stores {
		for i := range each {
			wg.Go(func() {
				k, _, err := s.Add(ctxT(t), NewEntry{Stream: fmt.Sprint("s", i)})
				if err != nil {
					t.Error(err)
					return
				}
				is.add(k)
			})
		}
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func mustOpen(t *testing.T, path string, opt Options) *Store {
	t.Helper()
	s, err := OpenFile(path, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustAdd(t *testing.T, s *Store, n NewEntry, is *issued) (string, Entry) {
	t.Helper()
	k, e, err := s.Add(ctxT(t), n)
	if err != nil {
		t.Fatal(err)
	}
	if is != nil {
		is.add(k)
	}
	return k, e
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestStoreRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	var is issued
	s := mustOpen(t, path, Options{})
	if s.Len() != 0 || s.Healthy() != nil {
		t.Fatalf("a missing store is not an empty one: %d entries, %v", s.Len(), s.Healthy())
	}
	k1, e1 := mustAdd(t, s, NewEntry{Name: "beamline", ProposalNo: 1234, Stream: "general", CreatedBy: "test"}, &is)
	k2, e2 := mustAdd(t, s, NewEntry{Admin: true, Name: "ops"}, &is)
	for _, k := range []string{k1, k2} {
		if !strings.HasPrefix(k, "zwop_") || len(k) != len("zwop_")+43 {
			t.Errorf("key %q is not zwop_ + 43 base64url characters", k)
		}
	}
	if e1.ID == e2.ID || len(e1.ID) != 12 {
		t.Errorf("ids %q %q", e1.ID, e2.ID)
	}

	// Reopened from disk, everything is there.
	s2 := mustOpen(t, path, Options{})
	got, ok := s2.Lookup(k1)
	if !ok || got.ID != e1.ID || got.Stream != "general" || got.ProposalNo != 1234 || got.Name != "beamline" || got.CreatedBy != "test" || got.Admin {
		t.Fatalf("lookup after reopen: %v %+v", ok, got)
	}
	if a, ok := s2.Lookup(k2); !ok || !a.Admin || a.Stream != "" {
		t.Errorf("admin: %+v", a)
	}
	if _, ok := s2.Lookup("zwop_unknown"); ok {
		t.Error("an unknown key was found")
	}
	if l := s2.List(); len(l) != 2 || l[0].ID != e1.ID || l[1].ID != e2.ID {
		t.Errorf("list order: %+v", l)
	}

	// Revoke, twice: the first time stays.
	r1, err := s2.Revoke(ctxT(t), e1.ID)
	if err != nil || r1.RevokedAt == nil {
		t.Fatalf("revoke: %v %+v", err, r1)
	}
	r2, err := s2.Revoke(ctxT(t), e1.ID)
	if err != nil || !r2.RevokedAt.Equal(*r1.RevokedAt) {
		t.Errorf("second revoke changed the time: %v %v", r1.RevokedAt, r2.RevokedAt)
	}
	if _, err := s2.Revoke(ctxT(t), "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("revoking an unknown id: %v", err)
	}
	got, _ = s2.Lookup(k1)
	if !errors.Is(got.Usable(time.Now()), ErrKeyRevoked) {
		t.Error("revoked key still usable")
	}
	is.assertNoKeyIn(t, path)
}

func TestEntryUsable(t *testing.T) {
	now := time.Now()
	past, future := now.Add(-time.Second), now.Add(time.Hour)
	cases := []struct {
		e    Entry
		want error
	}{
		{Entry{}, nil},
		{Entry{ExpiresAt: &future}, nil},
		{Entry{ExpiresAt: &past}, ErrKeyExpired},
		{Entry{ExpiresAt: &now}, ErrKeyExpired},
		{Entry{RevokedAt: &past, ExpiresAt: &future}, ErrKeyRevoked},
	}
	for i, c := range cases {
		if err := c.e.Usable(now); !errors.Is(err, c.want) || (c.want == nil && err != nil) {
			t.Errorf("%d: %v, want %v", i, err, c.want)
		}
	}
}

// A key made to expire stops working when its time comes, and its expiry
// survives a reopening.
func TestStoreExpiredKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	var is issued
	s := mustOpen(t, path, Options{})
	past, future := time.Now().Add(-time.Minute), time.Now().Add(time.Hour)
	kPast, _ := mustAdd(t, s, NewEntry{Stream: "a", ExpiresAt: &past}, &is)
	kFuture, _ := mustAdd(t, s, NewEntry{Stream: "b", ExpiresAt: &future}, &is)

	r := mustOpen(t, path, Options{})
	if e, ok := r.Lookup(kPast); !ok || !errors.Is(e.Usable(time.Now()), ErrKeyExpired) {
		t.Errorf("expired key: %v %+v", ok, e)
	}
	e, ok := r.Lookup(kFuture)
	if !ok || e.ExpiresAt == nil || !e.ExpiresAt.Equal(future) {
		t.Fatalf("expiry not kept: %v %+v", ok, e)
	}
	if err := e.Usable(time.Now()); err != nil {
		t.Errorf("key before its expiry: %v", err)
	}
	if err := e.Usable(future.Add(time.Second)); !errors.Is(err, ErrKeyExpired) {
		t.Errorf("key after its expiry: %v", err)
	}
	is.assertNoKeyIn(t, path)
}

// What callers get back is theirs to change: the index that lookups share
// must not change with it, nor with the time a caller passed in.
func TestStoreEntriesAreCopies(t *testing.T) {
	s := mustOpen(t, filepath.Join(t.TempDir(), "clients.json"), Options{})
	exp := time.Now().Add(time.Hour).UTC()
	want := exp
	k, added := mustAdd(t, s, NewEntry{Stream: "a", ExpiresAt: &exp}, nil)
	exp = time.Time{}
	*added.ExpiresAt = time.Time{}
	revoked, err := s.Revoke(ctxT(t), added.ID)
	if err != nil {
		t.Fatal(err)
	}
	wantRevoked := *revoked.RevokedAt
	*revoked.RevokedAt, *revoked.ExpiresAt = time.Time{}, time.Time{}
	l := s.List()
	*l[0].RevokedAt, *l[0].ExpiresAt = time.Time{}, time.Time{}

	e, _ := s.Lookup(k)
	if e.ExpiresAt == nil || !e.ExpiresAt.Equal(want) {
		t.Errorf("expiry in the index: %v, want %v", e.ExpiresAt, want)
	}
	if e.RevokedAt == nil || !e.RevokedAt.Equal(wantRevoked) {
		t.Errorf("revocation in the index: %v, want %v", e.RevokedAt, wantRevoked)
	}
}

// A store whose document vanishes after holding keys keeps serving them,
// says why, and will not begin a new document in its place: a deleted
// file, or a storage wrongly answering "not found", must neither lock
// every bot out nor let the next write drop every key.
func TestStoreDisappeared(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	var is issued
	s := mustOpen(t, path, Options{PollInterval: 20 * time.Millisecond})
	k, _ := mustAdd(t, s, NewEntry{Stream: "a"}, &is)
	good, _ := os.ReadFile(path)
	s.Start()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "unhealthy", func() bool { return s.Healthy() != nil })
	if !strings.Contains(s.Healthy().Error(), "disappeared") {
		t.Errorf("Healthy: %v", s.Healthy())
	}
	if _, ok := s.Lookup(k); !ok {
		t.Error("the last good keys are no longer served")
	}
	if _, _, err := s.Add(ctxT(t), NewEntry{Stream: "b"}); err == nil {
		t.Error("a key was added to a store that disappeared")
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a new document was begun in place of the lost one: %v", err)
	}
	// A restart is a first run: the operator's way to begin again.
	if n := mustOpen(t, path, Options{}); n.Len() != 0 || n.Healthy() != nil {
		t.Errorf("a fresh open of a missing store: %d entries, %v", n.Len(), n.Healthy())
	}

	if err := os.WriteFile(path, good, 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "healthy again", func() bool { return s.Healthy() == nil })
	mustAdd(t, s, NewEntry{Stream: "c"}, &is)
	if r := mustOpen(t, path, Options{}); r.Len() != 2 {
		t.Errorf("%d entries once restored, want 2", r.Len())
	}
	is.assertNoKeyIn(t, path)
}

func TestStoreAddValidates(t *testing.T) {
	s := mustOpen(t, filepath.Join(t.TempDir(), "c.json"), Options{})
	if _, _, err := s.Add(ctxT(t), NewEntry{Stream: " "}); err == nil {
		t.Error("a scoped key without a stream was made")
	}
	if _, _, err := s.Add(ctxT(t), NewEntry{Admin: true, Stream: "x"}); err == nil {
		t.Error("an admin key with a stream was made")
	}
}

// The request path must not allocate per key check, and real keys are
// longer than the 32 bytes the compiler converts on the stack.
func TestStoreLookupDoesNotAllocate(t *testing.T) {
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	entries := generated(10)
	entries[3].KeyHash = HashKey(key)
	s := &Store{}
	s.idx.Store(newIndex(entries))
	if e, ok := s.Lookup(key); !ok || e.ID != entries[3].ID {
		t.Fatalf("lookup: %v %+v", ok, e)
	}
	if n := testing.AllocsPerRun(100, func() { s.Lookup(key) }); n != 0 {
		t.Errorf("Lookup of a %d-byte key: %v allocations, want 0", len(key), n)
	}
	// Longer than any key we issue: still answered, just not for free.
	long := key + strings.Repeat("x", 200)
	if _, ok := s.Lookup(long); ok {
		t.Error("a long unknown key was found")
	}
	entries[5].KeyHash = HashKey(long)
	s.idx.Store(newIndex(entries))
	if e, ok := s.Lookup(long); !ok || e.ID != entries[5].ID {
		t.Error("a long key in the store was not found")
	}
}

func TestStoreConcurrentAdds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	var is issued
	addConcurrently(t, 200, &is, mustOpen(t, path, Options{}))
	is.assertServes(t, mustOpen(t, path, Options{}))
	is.assertNoKeyIn(t, path)
}

func TestStorePicksUpExternalChanges(t *testing.T) {
	for _, poll := range []time.Duration{50 * time.Millisecond, 0} {
		t.Run(fmt.Sprint("poll ", poll), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "clients.json")
			server := mustOpen(t, path, Options{PollInterval: poll})
			server.Start()
			cli := mustOpen(t, path, Options{})
			k, e := mustAdd(t, cli, NewEntry{Stream: "general"}, nil)
			start := time.Now()
			waitFor(t, 5*time.Second, "added key seen", func() bool { _, ok := server.Lookup(k); return ok })
			if _, err := cli.Revoke(ctxT(t), e.ID); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 5*time.Second, "revocation seen", func() bool {
				got, _ := server.Lookup(k)
				return got.RevokedAt != nil
			})
			t.Logf("changes picked up in %s", time.Since(start).Round(time.Millisecond))
		})
	}
}

// A writer must not trust the file's stamp to tell whether another
// process changed the document: a modification time can be too coarse
// to tell two writes apart. Here another writer's revocation leaves size,
// inode and modification time as they were; it must survive this
// process's next write all the same.
func TestStoreWriteKeepsChangeTheStampMissed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	var is issued
	s := mustOpen(t, path, Options{})
	k1, e1 := mustAdd(t, s, NewEntry{Stream: "a", Name: strings.Repeat("n", 120)}, &is)
	fb := s.b.(*fileBackend)
	stampBefore, err := fb.stamp(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	old, _ := os.ReadFile(path)

	// The revocation, with the name shortened to keep the size.
	var doc document
	if err := json.Unmarshal(old, &doc); err != nil {
		t.Fatal(err)
	}
	revoked := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	doc.Clients[0].RevokedAt = &revoked
	grown, _ := doc.marshal()
	doc.Clients[0].Name = doc.Clients[0].Name[:len(doc.Clients[0].Name)-(len(grown)-len(old))]
	changed, _ := doc.marshal()
	if len(changed) != len(old) {
		t.Fatalf("test setup: %d bytes, want %d", len(changed), len(old))
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(changed, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if st, _ := fb.stamp(ctxT(t)); st != stampBefore {
		t.Fatalf("test setup: the stamp changed (%s, was %s)", st, stampBefore)
	}

	mustAdd(t, s, NewEntry{Stream: "b"}, &is)
	s2 := mustOpen(t, path, Options{})
	got, ok := s2.Lookup(k1)
	if !ok || got.ID != e1.ID || got.RevokedAt == nil || !got.RevokedAt.Equal(revoked) {
		t.Fatalf("another writer's revocation was lost: %+v", got)
	}
	if s2.Len() != 2 {
		t.Errorf("%d entries, want 2", s2.Len())
	}
	is.assertNoKeyIn(t, path)
}

// A store that breaks while running keeps serving the last good keys,
// reports itself unhealthy, refuses writes, and recovers when fixed.
func TestStoreCorruptedWhileRunning(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	s := mustOpen(t, path, Options{PollInterval: 20 * time.Millisecond})
	k, _ := mustAdd(t, s, NewEntry{Stream: "general"}, nil)
	good, _ := os.ReadFile(path)
	s.Start()
	if err := os.WriteFile(path, []byte(`{"version":1,"clients":[{`), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "unhealthy", func() bool { return s.Healthy() != nil })
	if !errors.Is(s.Healthy(), ErrCorruptStore) {
		t.Errorf("Healthy: %v", s.Healthy())
	}
	if _, ok := s.Lookup(k); !ok {
		t.Error("the last good keys are no longer served")
	}
	if _, _, err := s.Add(ctxT(t), NewEntry{Stream: "x"}); !errors.Is(err, ErrCorruptStore) {
		t.Errorf("add on a corrupt store: %v", err)
	}
	if raw, _ := os.ReadFile(path); string(raw) != `{"version":1,"clients":[{` {
		t.Error("the corrupt store was written over")
	}
	if err := os.WriteFile(path, good, 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "healthy again", func() bool { return s.Healthy() == nil })
}

// The CLI opens a store without starting it; when the file breaks under
// it, its writes fail and leave the file alone, and it recovers once the
// file is fixed.
func TestStoreUnstartedRefusesCorruptFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	var is issued
	s := mustOpen(t, path, Options{})
	k, e := mustAdd(t, s, NewEntry{Stream: "a"}, &is)
	good, _ := os.ReadFile(path)
	const broken = `{"version":1,"clients":[`
	if err := os.WriteFile(path, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Revoke(ctxT(t), e.ID); !errors.Is(err, ErrCorruptStore) {
		t.Fatalf("revoke in a corrupt store: %v", err)
	}
	if _, _, err := s.Add(ctxT(t), NewEntry{Admin: true}); !errors.Is(err, ErrCorruptStore) {
		t.Fatalf("add to a corrupt store: %v", err)
	}
	if _, _, err := s.ImportLegacy(ctxT(t), strings.NewReader(`{"plain":{"admin":true}}`), "test"); !errors.Is(err, ErrCorruptStore) {
		t.Fatalf("import into a corrupt store: %v", err)
	}
	if raw, _ := os.ReadFile(path); string(raw) != broken {
		t.Fatalf("the corrupt store was written over: %q", raw)
	}
	if !errors.Is(s.Healthy(), ErrCorruptStore) {
		t.Errorf("Healthy: %v", s.Healthy())
	}
	if _, ok := s.Lookup(k); !ok {
		t.Error("the last good keys are gone")
	}

	if err := os.WriteFile(path, good, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Revoke(ctxT(t), e.ID); err != nil {
		t.Fatalf("revoke once the file is fixed: %v", err)
	}
	if s.Healthy() != nil {
		t.Errorf("still unhealthy: %v", s.Healthy())
	}
	if got, _ := mustOpen(t, path, Options{}).Lookup(k); got == nil || got.RevokedAt == nil {
		t.Errorf("revocation not written: %+v", got)
	}
}

// Entries are never deleted: a change that would lose some is refused.
func TestStoreNeverShrinks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	s := mustOpen(t, path, Options{})
	mustAdd(t, s, NewEntry{Stream: "a"}, nil)
	before, _ := os.ReadFile(path)
	err := s.mutate(ctxT(t), func(doc *document) (bool, error) {
		doc.Clients = nil
		return true, nil
	})
	if err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Fatalf("an emptying write was not refused: %v", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("the store was emptied")
	}
}

func TestStoreLastUsed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	s, err := OpenFile(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	k, _ := mustAdd(t, s, NewEntry{Stream: "a"}, nil)
	before, _ := os.ReadFile(path)
	e, _ := s.Lookup(k)
	s.Touch(e)
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("Touch wrote the store")
	}
	if l := s.List(); l[0].LastUsedAt == nil {
		t.Error("List does not show the unwritten last use")
	}
	// Each, which the metrics count with, says the same as List: the
	// unwritten use of one key, and no use of the other.
	mustAdd(t, s, NewEntry{Stream: "b"}, nil)
	list, seen := s.List(), 0
	s.Each(func(e *Entry, used time.Time) {
		want := list[seen]
		if e.ID != want.ID || (want.LastUsedAt == nil) != used.IsZero() || want.LastUsedAt != nil && !used.Equal(*want.LastUsedAt) {
			t.Errorf("Each: %s used %v; List: %s used %v", e.ID, used, want.ID, want.LastUsedAt)
		}
		seen++
	})
	if seen != 2 || list[1].LastUsedAt != nil {
		t.Errorf("Each saw %d entries of 2; the unused one: %v", seen, list[1].LastUsedAt)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := mustOpen(t, path, Options{})
	if e2, _ := s2.Lookup(k); e2.LastUsedAt == nil || time.Since(*e2.LastUsedAt) > time.Minute {
		t.Errorf("last use not written on close: %+v", e2)
	}
}

// Flushing last-used times keeps other processes' entries and changes.
func TestStoreLastUsedFlushKeepsOthersChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	var is issued
	server := mustOpen(t, path, Options{FlushInterval: 20 * time.Millisecond})
	k1, _ := mustAdd(t, server, NewEntry{Stream: "a"}, &is)
	cli := mustOpen(t, path, Options{})
	k2, e2 := mustAdd(t, cli, NewEntry{Stream: "b"}, &is)
	if _, err := cli.Revoke(ctxT(t), e2.ID); err != nil {
		t.Fatal(err)
	}
	e1, _ := server.Lookup(k1)
	server.Touch(e1)
	server.Start()
	waitFor(t, 5*time.Second, "last use written", func() bool {
		raw, _ := os.ReadFile(path)
		doc, err := parseDocument(raw)
		return err == nil && len(doc.Clients) == 2 && newIndex(doc.Clients).entries[0].LastUsedAt != nil
	})
	s := mustOpen(t, path, Options{})
	if got, ok := s.Lookup(k2); !ok || got.RevokedAt == nil {
		t.Errorf("the flush lost another process's entry or revocation: %+v", got)
	}
	is.assertNoKeyIn(t, path)
}

// Two instances that saw one key used keep the later use, whichever
// writes last.
func TestStoreLastUsedKeepsTheNewerTime(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	early, err := OpenFile(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	k, _ := mustAdd(t, early, NewEntry{Stream: "a"}, nil)
	late, err := OpenFile(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	e, _ := early.Lookup(k)
	early.Touch(e)
	touched := time.Now()
	for !time.Now().After(touched) {
	}
	e, _ = late.Lookup(k)
	late.Touch(e)
	if err := late.Close(); err != nil {
		t.Fatal(err)
	}
	written, _ := mustOpen(t, path, Options{}).Lookup(k)
	if written.LastUsedAt == nil {
		t.Fatal("last use not written")
	}
	want := *written.LastUsedAt
	if err := early.Close(); err != nil {
		t.Fatal(err)
	}
	got, _ := mustOpen(t, path, Options{}).Lookup(k)
	if got.LastUsedAt == nil || !got.LastUsedAt.Equal(want) {
		t.Errorf("last use %v, want the later %v", got.LastUsedAt, want)
	}
}

// Closing a store that was never started must not let a later Start
// leave a watcher running.
func TestStoreStartAfterClose(t *testing.T) {
	s, err := OpenFile(filepath.Join(t.TempDir(), "clients.json"), Options{PollInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s.Start()
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the watcher of a closed store is still running")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
}
