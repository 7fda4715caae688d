package zulipproxy

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

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

// A writer must not trust the file's stamp to tell whether another
// process changed the document: a modification time can be too coarse
// to tell two writes apart. Here another writer's revocation leaves size,
// inode and modification time as they were; it must survive this
// process's next write all the same.
func TestStoreWriteKeepsChangeTheStampMissed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	var is issued
	s := mustOpen(t, path, StoreOptions{})
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
	s2 := mustOpen(t, path, StoreOptions{})
	got, ok := s2.Lookup(k1)
	if !ok || got.ID != e1.ID || got.RevokedAt == nil || !got.RevokedAt.Equal(revoked) {
		t.Fatalf("another writer's revocation was lost: %+v", got)
	}
	if s2.Len() != 2 {
		t.Errorf("%d entries, want 2", s2.Len())
	}
	is.assertNoKeyIn(t, path)
}

// The CLI opens a store without starting it; when the file breaks under
// it, its writes fail and leave the file alone, and it recovers once the
// file is fixed.
func TestStoreUnstartedRefusesCorruptFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	var is issued
	s := mustOpen(t, path, StoreOptions{})
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
	if got, _ := mustOpen(t, path, StoreOptions{}).Lookup(k); got == nil || got.RevokedAt == nil {
		t.Errorf("revocation not written: %+v", got)
	}
}

// Closing a store that was never started must not let a later Start
// leave a watcher running.
func TestStoreStartAfterClose(t *testing.T) {
	s, err := OpenFileStore(filepath.Join(t.TempDir(), "clients.json"), StoreOptions{PollInterval: time.Millisecond})
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

// Flushing last-used times keeps other processes' entries and changes.
func TestStoreLastUsedFlushKeepsOthersChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	var is issued
	server := mustOpen(t, path, StoreOptions{FlushInterval: 20 * time.Millisecond})
	k1, _ := mustAdd(t, server, NewEntry{Stream: "a"}, &is)
	cli := mustOpen(t, path, StoreOptions{})
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
	s := mustOpen(t, path, StoreOptions{})
	if got, ok := s.Lookup(k2); !ok || got.RevokedAt == nil {
		t.Errorf("the flush lost another process's entry or revocation: %+v", got)
	}
	is.assertNoKeyIn(t, path)
}
