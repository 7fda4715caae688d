package keystore

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// usable looks a key up as the request path does.
func usable(s *Store, key string, now time.Time) (*Entry, error) {
	e, ok := s.Lookup(key)
	if !ok {
		return nil, ErrNotFound
	}
	return e, e.Usable(now)
}

func TestStoreRotate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	var is issued
	s := mustOpen(t, path, Options{})
	old, e := mustAdd(t, s, NewEntry{Stream: "general", Name: "ci", RateLimit: "10/1m"}, &is)

	key, r, err := s.Rotate(ctxT(t), e.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	is.add(key)
	if key == old || r.ID != e.ID || r.Stream != "general" || r.Name != "ci" || r.RateLimit != "10/1m" || r.RotatedAt == nil {
		t.Fatalf("rotated entry %+v (key changed: %v): want the same id, stream, name and limit, and rotated_at", r, key != old)
	}
	now := time.Now()
	if got, err := usable(s, key, now); err != nil || got.ID != e.ID || got.RetiredUntil != nil {
		t.Fatalf("new key: %v, %+v", err, got)
	}
	got, err := usable(s, old, now)
	if err != nil || got.ID != e.ID || got.RetiredUntil == nil {
		t.Fatalf("old key within its grace: %v, %+v", err, got)
	}
	if until := *got.RetiredUntil; until.Sub(now) < 59*time.Minute || until.Sub(now) > time.Hour {
		t.Errorf("old key works until %s, want an hour from now", until)
	}
	if _, err := usable(s, old, now.Add(time.Hour+time.Second)); !errors.Is(err, ErrKeyRotated) {
		t.Errorf("old key after its grace: %v, want ErrKeyRotated", err)
	}

	// The file keeps the retired hash, never a key, and a fresh open
	// answers the same.
	is.assertNoKeyIn(t, path)
	s2 := mustOpen(t, path, Options{})
	if _, err := usable(s2, old, now.Add(2*time.Hour)); !errors.Is(err, ErrKeyRotated) {
		t.Errorf("reopened store, old key: %v, want ErrKeyRotated", err)
	}
	if _, err := usable(s2, key, now); err != nil {
		t.Errorf("reopened store, new key: %v", err)
	}
}

func TestStoreRotateWithoutGrace(t *testing.T) {
	s := mustOpen(t, filepath.Join(t.TempDir(), "clients.json"), Options{})
	old, e := mustAdd(t, s, NewEntry{Stream: "general"}, nil)
	key, _, err := s.Rotate(ctxT(t), e.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := usable(s, old, time.Now()); !errors.Is(err, ErrKeyRotated) {
		t.Errorf("old key with grace 0: %v, want ErrKeyRotated", err)
	}
	// Twice: both older secrets are retired, the newest works.
	key2, _, err := s.Rotate(ctxT(t), e.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := usable(s, key, time.Now()); err != nil {
		t.Errorf("second key in its grace: %v", err)
	}
	if _, err := usable(s, key2, time.Now()); err != nil {
		t.Errorf("third key: %v", err)
	}
	if _, err := usable(s, old, time.Now()); !errors.Is(err, ErrKeyRotated) {
		t.Errorf("first key: %v, want ErrKeyRotated", err)
	}
	for range maxRetired + 2 {
		if _, _, err := s.Rotate(ctxT(t), e.ID, 0); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(s.List()[0].Retired); n != maxRetired {
		t.Errorf("%d retired secrets kept, want at most %d", n, maxRetired)
	}
}

// A rotation with grace G ends every older secret by now+G at the latest:
// a second rotation with grace 0, after one with a day's grace, ends the
// first secret too (it may be the one that leaked).
func TestStoreRotateEndsOlderSecrets(t *testing.T) {
	s := mustOpen(t, filepath.Join(t.TempDir(), "clients.json"), Options{})
	first, e := mustAdd(t, s, NewEntry{Stream: "general"}, nil)
	second, _, err := s.Rotate(ctxT(t), e.ID, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	third, _, err := s.Rotate(ctxT(t), e.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	in2h := time.Now().Add(2 * time.Hour)
	for name, k := range map[string]string{"first": first, "second": second} {
		if _, err := usable(s, k, time.Now()); err != nil {
			t.Errorf("%s secret within the hour: %v", name, err)
		}
		if _, err := usable(s, k, in2h); !errors.Is(err, ErrKeyRotated) {
			t.Errorf("%s secret after the second rotation's hour: %v, want ErrKeyRotated", name, err)
		}
	}
	if _, _, err := s.Rotate(ctxT(t), e.ID, 0); err != nil {
		t.Fatal(err)
	}
	for name, k := range map[string]string{"first": first, "second": second, "third": third} {
		if _, err := usable(s, k, time.Now()); !errors.Is(err, ErrKeyRotated) {
			t.Errorf("%s secret after a rotation with grace 0: %v, want ErrKeyRotated", name, err)
		}
	}
}

func TestStoreRotateRefuses(t *testing.T) {
	s := mustOpen(t, filepath.Join(t.TempDir(), "clients.json"), Options{})
	old, e := mustAdd(t, s, NewEntry{Stream: "general"}, nil)
	if _, _, err := s.Rotate(ctxT(t), "nope", time.Hour); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown id: %v", err)
	}
	if _, _, err := s.Rotate(ctxT(t), e.ID, -time.Second); err == nil {
		t.Error("a negative grace was taken")
	}
	if _, err := s.Revoke(ctxT(t), e.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Rotate(ctxT(t), e.ID, time.Hour); !errors.Is(err, ErrKeyRevoked) {
		t.Errorf("revoked key rotated: %v", err)
	}
	if _, err := usable(s, old, time.Now()); !errors.Is(err, ErrKeyRevoked) {
		t.Errorf("revoked key: %v", err)
	}
}

func TestStoreSetExpiry(t *testing.T) {
	s := mustOpen(t, filepath.Join(t.TempDir(), "clients.json"), Options{})
	key, e := mustAdd(t, s, NewEntry{Stream: "general"}, nil)
	at := time.Now().Add(-time.Minute)
	got, err := s.SetExpiry(ctxT(t), e.ID, &at)
	if err != nil || got.ExpiresAt == nil {
		t.Fatalf("%v, %+v", err, got)
	}
	if _, err := usable(s, key, time.Now()); !errors.Is(err, ErrKeyExpired) {
		t.Errorf("key expired a minute ago: %v", err)
	}
	if got, err = s.SetExpiry(ctxT(t), e.ID, nil); err != nil || got.ExpiresAt != nil {
		t.Fatalf("never: %v, %+v", err, got)
	}
	if _, err := usable(s, key, time.Now().Add(1000*24*time.Hour)); err != nil {
		t.Errorf("key that never expires: %v", err)
	}
	if _, err := s.SetExpiry(ctxT(t), "nope", nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown id: %v", err)
	}
	s.Revoke(ctxT(t), e.ID)
	if _, err := s.SetExpiry(ctxT(t), e.ID, nil); !errors.Is(err, ErrKeyRevoked) {
		t.Errorf("revoked key's expiry changed: %v", err)
	}
}

func TestStoreRefusesRepeatedRetiredHash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	h := HashKey("k")
	doc := `{"version":1,"clients":[{"id":"a","key_hash":"` + h + `","stream":"s","created_at":"2026-01-01T00:00:00Z","retired_keys":[{"key_hash":"` + h + `","until":"2026-01-02T00:00:00Z"}]}]}`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := OpenFile(path, Options{})
	if !errors.Is(err, ErrCorruptStore) || !strings.Contains(err.Error(), "retired") {
		t.Errorf("a retired hash equal to a live one: %v, want a corrupt-store error naming it", err)
	}
}

// A legacy key rotated away stays away: importing the upstream file again
// skips it, instead of bringing the old secret back as a new, working key
// (and a document with one hash twice, which no instance would load).
func TestLegacyImportAfterRotate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	s := mustOpen(t, path, Options{})
	legacy := `{"Kq3-upstream-key-one": {"proposal_no": 1234, "stream": "S"}}`
	if n, _, err := s.ImportLegacy(ctxT(t), strings.NewReader(legacy), "import-test"); err != nil || n != 1 {
		t.Fatalf("import: %d, %v", n, err)
	}
	id := s.List()[0].ID
	if _, _, err := s.Rotate(ctxT(t), id, 0); err != nil {
		t.Fatal(err)
	}
	n, skipped, err := s.ImportLegacy(ctxT(t), strings.NewReader(legacy), "import-test")
	if err != nil || n != 0 || skipped != 1 {
		t.Fatalf("second import: %d imported, %d skipped, %v", n, skipped, err)
	}
	if _, err := usable(s, "Kq3-upstream-key-one", time.Now()); !errors.Is(err, ErrKeyRotated) {
		t.Errorf("the rotated-away legacy key: %v, want ErrKeyRotated", err)
	}
	if _, err := OpenFile(path, Options{}); err != nil {
		t.Errorf("the store no longer opens: %v", err)
	}
}

// Whatever a change does, the store never writes a document it would
// refuse to load.
func TestStoreNeverWritesWhatItWouldNotLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	s := mustOpen(t, path, Options{})
	_, e := mustAdd(t, s, NewEntry{Stream: "general"}, nil)
	before, _ := os.ReadFile(path)
	err := s.mutate(ctxT(t), func(doc *document) (bool, error) {
		twin := doc.Clients[0]
		twin.ID = "another-id"
		doc.Clients = append(doc.Clients, twin) // the same key hash twice
		return true, nil
	})
	if err == nil || !strings.Contains(err.Error(), "would not load") {
		t.Fatalf("a document with one hash twice: %v", err)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Error("the file changed")
	}
	if s.Len() != 1 || s.List()[0].ID != e.ID {
		t.Errorf("the store serves %d entries", s.Len())
	}
}

// A rotation whose write fails leaves the key as it was, the secrets an
// earlier rotation retired included: it once cut their time short in
// the entries List reads, before writing anything.
func TestStoreFailedRotateChangesNothing(t *testing.T) {
	s := mustOpen(t, filepath.Join(t.TempDir(), "clients.json"), Options{})
	_, e := mustAdd(t, s, NewEntry{Stream: "a"}, nil)
	if _, _, err := s.Rotate(ctxT(t), e.ID, 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	before, _ := s.Get(e.ID)
	s.b.(*fileBackend).afterTempWrite = func(string) error { return errors.New("simulated crash") }
	if _, _, err := s.Rotate(ctxT(t), e.ID, 0); err == nil {
		t.Fatal("the failed rotation reported success")
	}
	after, _ := s.Get(e.ID)
	if !after.Retired[0].Until.Equal(before.Retired[0].Until) {
		t.Fatalf("the retired secret's end moved from %v to %v by a rotation never written", before.Retired[0].Until, after.Retired[0].Until)
	}
}
