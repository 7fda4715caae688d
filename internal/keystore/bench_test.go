package keystore

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// benchKey is the i-th of a repeatable series of keys shaped like real
// ones: the length matters, as hashing a key longer than 32 bytes is
// where Lookup could allocate.
func benchKey(i int) string {
	sum := sha256.Sum256([]byte(strconv.Itoa(i)))
	return keyPrefix + base64.RawURLEncoding.EncodeToString(sum[:])
}

// generated returns n entries with the keys benchKey(0), benchKey(1), ...
func generated(n int) []Entry {
	entries := make([]Entry, n)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range entries {
		entries[i] = Entry{
			ID: fmt.Sprintf("%012x", i), KeyHash: HashKey(benchKey(i)),
			Name: fmt.Sprint("client ", i), Stream: "general", CreatedAt: t0.Add(time.Duration(i) * time.Second),
		}
	}
	return entries
}

// BenchmarkLookup is the request path's key check; it should not depend
// on the number of keys.
func BenchmarkLookup(b *testing.B) {
	for _, n := range []int{10, 10_000, 1_000_000} {
		b.Run(fmt.Sprint(n, "keys"), func(b *testing.B) {
			s := &Store{}
			s.idx.Store(newIndex(generated(n)))
			key := benchKey(n / 2)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, ok := s.Lookup(key); !ok {
					b.Fatal("not found")
				}
			}
		})
	}
}

// BenchmarkAdd adds a key to a file store of 100,000 keys: a full
// read-modify-write of the document under the lock, with fsyncs.
func BenchmarkAdd(b *testing.B) {
	path := filepath.Join(b.TempDir(), "clients.json")
	doc := document{Version: storeVersion, Clients: generated(100_000)}
	raw, err := doc.marshal()
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		b.Fatal(err)
	}
	s, err := OpenFile(path, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, _, err := s.Add(context.Background(), NewEntry{Stream: "general"}); err != nil {
			b.Fatal(err)
		}
	}
	// After the loop: ResetTimer drops metrics reported before it.
	b.ReportMetric(float64(len(raw))/(1<<20), "MiB-doc")
}

// BenchmarkTouch is the other half of the request path's store work:
// noting a key's last use, in memory.
func BenchmarkTouch(b *testing.B) {
	s := &Store{}
	s.idx.Store(newIndex(generated(10)))
	e, _ := s.Lookup(benchKey(3))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s.Touch(e)
		}
	})
}

// BenchmarkCount counts 100,000 keys by state, as the metrics do at each
// scrape: through List's copies, and through Each.
func BenchmarkCount(b *testing.B) {
	s := &Store{}
	s.idx.Store(newIndex(generated(100_000)))
	now := time.Now()
	for i := 0; i < 100_000; i += 3 {
		e, _ := s.Lookup(benchKey(i))
		s.Touch(e)
	}
	b.Run("List", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			n := 0
			for _, e := range s.List() {
				if e.Usable(now) == nil && e.LastUsedAt != nil {
					n++
				}
			}
		}
	})
	b.Run("Each", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			n := 0
			s.Each(func(e *Entry, used time.Time) {
				if e.Usable(now) == nil && !used.IsZero() {
					n++
				}
			})
		}
	})
}
