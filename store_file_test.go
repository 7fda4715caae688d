package zulipproxy

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// More shapes than TestStoreRefusesCorruptFiles: each would otherwise be
// guessed at and possibly written back without what it held.
func TestStoreRefusesOddDocuments(t *testing.T) {
	hash := HashKey("k")
	entry := `{"id":"aaaaaaaaaaaa","key_hash":"` + hash + `","created_at":"2026-01-01T00:00:00Z"}`
	twin := strings.Replace(strings.Replace(entry, hash, strings.ToUpper(hash), 1), "aaaaaaaaaaaa", "bbbbbbbbbbbb", 1)
	cases := map[string]string{
		"unknown entry field":     `{"version":1,"clients":[` + strings.Replace(entry, `"id"`, `"secret":"x","id"`, 1) + `]}`,
		"uppercase hash twin":     `{"version":1,"clients":[` + entry + `,` + twin + `]}`,
		"short hash":              `{"version":1,"clients":[` + strings.Replace(entry, hash, hash[:62], 1) + `]}`,
		"empty id":                `{"version":1,"clients":[` + strings.Replace(entry, "aaaaaaaaaaaa", "", 1) + `]}`,
		"stray closing brace":     `{"version":1,"clients":[` + entry + `]}}`,
		"second document":         `{"version":1,"clients":[]} {"version":1,"clients":[]}`,
		"version as string":       `{"version":"1","clients":[]}`,
		"null":                    `null`,
		"empty object":            `{}`,
		"array":                   `[]`,
		"bad created_at":          `{"version":1,"clients":[` + strings.Replace(entry, "2026-01-01T00:00:00Z", "yesterday", 1) + `]}`,
		"legacy file, admin only": `{"zwop_plainadmin":{"admin":true}}`,
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "clients.json")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := OpenFileStore(path, StoreOptions{}); !errors.Is(err, ErrCorruptStore) {
				t.Fatalf("open: %v, want ErrCorruptStore", err)
			}
			if after, _ := os.ReadFile(path); string(after) != content {
				t.Error("a corrupt store was changed")
			}
		})
	}
}

// An empty file holds no keys, so it may be read as an empty store; what
// is written over it must be a full document.
func TestStoreEmptyFileIsEmptyStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	if err := os.WriteFile(path, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := mustOpen(t, path, StoreOptions{})
	if s.Len() != 0 {
		t.Fatalf("%d entries in an empty file", s.Len())
	}
	var is issued
	k, _ := mustAdd(t, s, NewEntry{Stream: "a"}, &is)
	raw, _ := os.ReadFile(path)
	if doc, err := parseDocument(raw); err != nil || len(doc.Clients) != 1 {
		t.Fatalf("written document: %v %+v", err, doc)
	}
	if _, ok := mustOpen(t, path, StoreOptions{}).Lookup(k); !ok {
		t.Error("key missing after reopening")
	}
	is.assertNoKeyIn(t, path)
}

// Temp files that a crash left behind, whatever they hold, are neither
// read nor in the way of the next write.
func TestStoreIgnoresStaleTempFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "clients.json")
	var is issued
	s := mustOpen(t, path, StoreOptions{})
	k1, _ := mustAdd(t, s, NewEntry{Stream: "a"}, &is)
	for _, junk := range []string{"garbage", `{"version":1,"clients":[]}`, ""} {
		f, err := os.CreateTemp(dir, ".clients.json.tmp-*")
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(junk)
		f.Close()
	}
	s2 := mustOpen(t, path, StoreOptions{})
	if _, ok := s2.Lookup(k1); !ok || s2.Len() != 1 {
		t.Fatalf("read with stale temp files around: %d entries", s2.Len())
	}
	k2, _ := mustAdd(t, s2, NewEntry{Stream: "b"}, &is)
	s3 := mustOpen(t, path, StoreOptions{})
	for _, k := range []string{k1, k2} {
		if _, ok := s3.Lookup(k); !ok {
			t.Error("a key is missing")
		}
	}
	is.assertNoKeyIn(t, path)
}

// After a failed write the in-memory index must still be the document on
// disk, and the next write must start from it, not from the failed one.
func TestStoreFailedWriteChangesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	var is issued
	s := mustOpen(t, path, StoreOptions{})
	k1, _ := mustAdd(t, s, NewEntry{Stream: "a"}, &is)
	fb := s.b.(*fileBackend)
	fb.afterTempWrite = func(string) error { return errors.New("simulated crash") }
	k, _, err := s.Add(ctxT(t), NewEntry{Stream: "lost"})
	if err == nil {
		t.Fatal("the interrupted write reported success")
	}
	if _, ok := s.Lookup(k); ok || s.Len() != 1 {
		t.Errorf("an unwritten key is served: %d entries", s.Len())
	}
	before, _ := os.ReadFile(path)
	fb.afterTempWrite = nil
	k2, _ := mustAdd(t, s, NewEntry{Stream: "b"}, &is)
	after, _ := os.ReadFile(path)
	if bytes.Contains(after, []byte(HashKey(k))) || bytes.Equal(before, after) {
		t.Error("the next write did not start from the document on disk")
	}
	s2 := mustOpen(t, path, StoreOptions{})
	if s2.Len() != 2 {
		t.Errorf("%d entries, want 2", s2.Len())
	}
	for _, k := range []string{k1, k2} {
		if _, ok := s2.Lookup(k); !ok {
			t.Error("a key is missing")
		}
	}
	is.assertNoKeyIn(t, path)
}
