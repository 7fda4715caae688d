package zulipproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
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

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func mustOpen(t *testing.T, path string, opt StoreOptions) *Store {
	t.Helper()
	s, err := OpenFileStore(path, opt)
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

func TestStoreRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nested", "clients.json")
	var is issued
	s := mustOpen(t, path, StoreOptions{})
	if s.Len() != 0 {
		t.Fatal("a new store is not empty")
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
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("store file mode: %v %v", fi.Mode(), err)
	}

	// Reopened from disk, everything is there.
	s2 := mustOpen(t, path, StoreOptions{})
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

func TestStoreAddValidates(t *testing.T) {
	s := mustOpen(t, filepath.Join(t.TempDir(), "c.json"), StoreOptions{})
	if _, _, err := s.Add(ctxT(t), NewEntry{Stream: " "}); err == nil {
		t.Error("a scoped key without a stream was made")
	}
	if _, _, err := s.Add(ctxT(t), NewEntry{Admin: true, Stream: "x"}); err == nil {
		t.Error("an admin key with a stream was made")
	}
}

func TestStoreConcurrentAdds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	s := mustOpen(t, path, StoreOptions{})
	var is issued
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, _, err := s.Add(context.Background(), NewEntry{Stream: fmt.Sprint("s", i)})
			if err != nil {
				errs <- err
				return
			}
			is.add(k)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	s2 := mustOpen(t, path, StoreOptions{})
	if s2.Len() != 200 {
		t.Fatalf("%d entries, want 200", s2.Len())
	}
	for _, k := range is.keys {
		if _, ok := s2.Lookup(k); !ok {
			t.Fatal("a key added concurrently is missing")
		}
	}
	is.assertNoKeyIn(t, path)
}

// TestStoreHelperProcess is run as a separate OS process by
// TestStoreTwoProcesses; it adds keys and prints them.
func TestStoreHelperProcess(t *testing.T) {
	path := os.Getenv("ZWOP_STORE_HELPER")
	if path == "" {
		t.Skip("run by TestStoreTwoProcesses")
	}
	s, err := OpenFileStore(path, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 100 {
		k, _, err := s.Add(context.Background(), NewEntry{Stream: fmt.Sprint("p", os.Getpid(), "-", i)})
		if err != nil {
			t.Fatal(err)
		}
		fmt.Println("KEY", k)
	}
}

func TestStoreTwoProcesses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	var wg sync.WaitGroup
	outs := make([][]byte, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(os.Args[0], "-test.run=^TestStoreHelperProcess$", "-test.v")
			cmd.Env = append(os.Environ(), "ZWOP_STORE_HELPER="+path)
			outs[i], errs[i] = cmd.CombinedOutput()
		}()
	}
	wg.Wait()
	var is issued
	for i := range 2 {
		if errs[i] != nil {
			t.Fatalf("helper process %d: %v\n%s", i, errs[i], outs[i])
		}
		for _, line := range strings.Split(string(outs[i]), "\n") {
			if k, ok := strings.CutPrefix(line, "KEY "); ok {
				is.add(k)
			}
		}
	}
	if len(is.keys) != 200 {
		t.Fatalf("processes reported %d keys, want 200", len(is.keys))
	}
	s := mustOpen(t, path, StoreOptions{})
	if s.Len() != 200 {
		t.Fatalf("%d entries after two processes added 100 each", s.Len())
	}
	for _, k := range is.keys {
		if _, ok := s.Lookup(k); !ok {
			t.Fatal("a key added by another process is missing")
		}
	}
	is.assertNoKeyIn(t, path)
}

// A crash after the temporary file is written but before the rename
// leaves the old document in place.
func TestStoreCrashBeforeRename(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	s := mustOpen(t, path, StoreOptions{})
	k1, _ := mustAdd(t, s, NewEntry{Stream: "a"}, nil)
	before, _ := os.ReadFile(path)

	fb := s.b.(*fileBackend)
	var tmpName string
	fb.afterTempWrite = func(tmp string) error {
		tmpName = tmp
		return errors.New("simulated crash")
	}
	if _, _, err := s.Add(ctxT(t), NewEntry{Stream: "b"}); err == nil {
		t.Fatal("the interrupted write reported success")
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Fatal("the store changed although the write never finished")
	}
	if _, err := os.Stat(tmpName); err != nil {
		t.Fatalf("the simulated crash should leave its temp file: %v", err)
	}
	// A new process reads the old document, stale temp file or not, and
	// writes on.
	fb.afterTempWrite = nil
	s2 := mustOpen(t, path, StoreOptions{})
	if _, ok := s2.Lookup(k1); !ok || s2.Len() != 1 {
		t.Fatalf("after the crash: %d entries", s2.Len())
	}
	mustAdd(t, s2, NewEntry{Stream: "c"}, nil)
	if s3 := mustOpen(t, path, StoreOptions{}); s3.Len() != 2 {
		t.Errorf("%d entries, want 2", s3.Len())
	}
}

func TestStorePicksUpExternalChanges(t *testing.T) {
	for _, poll := range []time.Duration{50 * time.Millisecond, 0} {
		t.Run(fmt.Sprint("poll ", poll), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "clients.json")
			server := mustOpen(t, path, StoreOptions{PollInterval: poll})
			server.Start()
			cli := mustOpen(t, path, StoreOptions{})
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

func TestStoreRefusesCorruptFiles(t *testing.T) {
	hash := HashKey("k")
	entry := `{"id":"aaaaaaaaaaaa","key_hash":"` + hash + `","created_at":"2026-01-01T00:00:00Z"}`
	cases := map[string]string{
		"garbage":           "not json at all",
		"truncated":         `{"version":1,"clients":[` + entry,
		"unknown version":   `{"version":2,"clients":[]}`,
		"no version":        `{"clients":[]}`,
		"legacy format":     `{"somekey":{"stream":"s","proposal_no":1}}`,
		"duplicate id":      `{"version":1,"clients":[` + entry + `,` + strings.Replace(entry, hash, HashKey("j"), 1) + `]}`,
		"duplicate hash":    `{"version":1,"clients":[` + entry + `,` + strings.Replace(entry, "aaaaaaaaaaaa", "bbbbbbbbbbbb", 1) + `]}`,
		"bad hash":          `{"version":1,"clients":[{"id":"a","key_hash":"xyz"}]}`,
		"unknown field":     `{"version":1,"clients":[],"extra":true}`,
		"clients not array": `{"version":1,"clients":{}}`,
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "clients.json")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := OpenFileStore(path, StoreOptions{})
			if !errors.Is(err, ErrCorruptStore) {
				t.Fatalf("open: %v, want ErrCorruptStore", err)
			}
			if name == "legacy format" && !strings.Contains(err.Error(), "import-legacy") {
				t.Errorf("no hint at import-legacy: %v", err)
			}
			if after, _ := os.ReadFile(path); string(after) != content {
				t.Error("a corrupt store was changed")
			}
		})
	}
}

// A store that breaks while running keeps serving the last good keys,
// reports itself unhealthy, refuses writes, and recovers when fixed.
func TestStoreCorruptedWhileRunning(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	s := mustOpen(t, path, StoreOptions{PollInterval: 20 * time.Millisecond})
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

// Entries are never deleted: a change that would lose some is refused.
func TestStoreNeverShrinks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	s := mustOpen(t, path, StoreOptions{})
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
	s, err := OpenFileStore(path, StoreOptions{})
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
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := mustOpen(t, path, StoreOptions{})
	if e2, _ := s2.Lookup(k); e2.LastUsedAt == nil || time.Since(*e2.LastUsedAt) > time.Minute {
		t.Errorf("last use not written on close: %+v", e2)
	}
}

func TestLegacyImport(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	s := mustOpen(t, path, StoreOptions{})
	legacy := `{"plainkey-1": {"proposal_no": 1234, "stream": "S"}, "plainkey-admin": {"admin": true}, "plainkey-3": {"proposal_no": "77", "stream": "T", "extra": 1}}`
	n, skipped, err := s.ImportLegacy(ctxT(t), strings.NewReader(legacy), "test")
	if err != nil || n != 3 || skipped != 0 {
		t.Fatalf("import: %d %d %v", n, skipped, err)
	}
	checks := []struct {
		key      string
		stream   string
		proposal int64
		admin    bool
	}{
		{"plainkey-1", "S", 1234, false},
		{"plainkey-admin", "", 0, true},
		{"plainkey-3", "T", 77, false},
	}
	for _, c := range checks {
		e, ok := s.Lookup(c.key)
		if !ok || e.Stream != c.stream || e.ProposalNo != c.proposal || e.Admin != c.admin || !e.Legacy || e.Usable(time.Now()) != nil {
			t.Errorf("%s: %v %+v", c.key, ok, e)
		}
	}
	n, skipped, err = s.ImportLegacy(ctxT(t), strings.NewReader(legacy), "test")
	if err != nil || n != 0 || skipped != 3 || s.Len() != 3 {
		t.Errorf("second import: %d %d %v, %d entries", n, skipped, err, s.Len())
	}
	raw, _ := os.ReadFile(path)
	for _, c := range checks {
		if strings.Contains(string(raw), c.key) {
			t.Errorf("plain legacy key %s in the store", c.key)
		}
	}

	bad := map[string]string{
		"array":          `["a","b"]`,
		"not json":       `plainkey: stream`,
		"missing stream": `{"newkey": {"proposal_no": 5}}`,
		"bad proposal":   `{"newkey": {"proposal_no": "five", "stream": "S"}}`,
		"entry a string": `{"newkey": "S"}`,
		"our own store":  `{"version": 1, "clients": []}`,
	}
	for name, doc := range bad {
		t.Run(name, func(t *testing.T) {
			before, _ := os.ReadFile(path)
			if _, _, err := s.ImportLegacy(ctxT(t), strings.NewReader(doc), "test"); err == nil {
				t.Fatal("accepted")
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
				t.Error("a rejected import wrote the store")
			}
		})
	}
}

// The store can live in Caddy's storage, shared by instances.
func TestStorageStore(t *testing.T) {
	root := t.TempDir()
	ctx, err := caddy.ProvisionContext(&caddy.Config{StorageRaw: json.RawMessage(`{"module":"file_system","root":"` + root + `"}`)})
	if err != nil {
		t.Fatal(err)
	}
	st := ctx.Storage()
	a, err := OpenStorageStore(st, StoreOptions{PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	a.Start()
	b, err := OpenStorageStore(st, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	var is issued
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, _, err := b.Add(context.Background(), NewEntry{Stream: fmt.Sprint("s", i)})
			if err != nil {
				t.Error(err)
				return
			}
			is.add(k)
		}()
	}
	wg.Wait()
	waitFor(t, 5*time.Second, "the other instance sees all keys", func() bool { return a.Len() == 50 })
	for _, k := range is.keys {
		if _, ok := a.Lookup(k); !ok {
			t.Fatal("a key is missing in the other instance")
		}
	}
	is.assertNoKeyIn(t, filepath.Join(root, "zulip_proxy", "clients.json"))

	// After a config reload the pooled store gets the new storage value.
	ctx2, err := caddy.ProvisionContext(&caddy.Config{StorageRaw: json.RawMessage(`{"module":"file_system","root":"` + root + `"}`)})
	if err != nil {
		t.Fatal(err)
	}
	a.SetStorage(ctx2.Storage())
	k, _ := mustAdd(t, a, NewEntry{Stream: "after-reload"}, nil)
	if err := b.Reload(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.Lookup(k); !ok {
		t.Error("a key added through the new storage value is missing")
	}
}

func TestStorePool(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	opens := 0
	open := func() (*Store, error) {
		opens++
		return startStore(OpenFileStore(path, StoreOptions{}))
	}
	key := "file:" + path
	s1, err := loadPooledStore(key, open)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := loadPooledStore(key, open)
	if err != nil {
		t.Fatal(err)
	}
	if s1 != s2 || opens != 1 {
		t.Fatalf("two loads gave different stores (%d opens)", opens)
	}
	if err := releasePooledStore(key); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s1.done:
		t.Fatal("the store closed while still in use")
	default:
	}
	if err := releasePooledStore(key); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s1.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the last release did not close the store")
	}
}
