package outbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Queued sends in the bbolt database beside a key store file. Each
// change is one transaction, committed (fsynced) before it returns: the
// records of queued sends, the finished ones, and each key's count and
// bytes queued, so that a bound is checked without reading the sends.
// A send's file is a plain file in a folder beside the database, written
// and fsynced before the record that names it is committed; a file no
// record names (a crash between the two) is removed when the database
// is opened.

var (
	bucketQueue     = []byte("queue")
	bucketFinished  = []byte("queue_finished")
	bucketQueueKeys = []byte("queue_keys")
)

// keyTotals are one key's queued sends.
type keyTotals struct {
	Count int   `json:"count"`
	Bytes int64 `json:"bytes"`
}

func getTotals(tx *bolt.Tx, entry string) keyTotals {
	var t keyTotals
	if v := tx.Bucket(bucketQueueKeys).Get([]byte(entry)); v != nil {
		_ = json.Unmarshal(v, &t)
	}
	return t
}

func putTotals(tx *bolt.Tx, entry string, t keyTotals) error {
	bk := tx.Bucket(bucketQueueKeys)
	if t.Count <= 0 {
		return bk.Delete([]byte(entry))
	}
	raw, err := json.Marshal(t)
	if err != nil {
		return err
	}
	return bk.Put([]byte(entry), raw)
}

func putSend(bk *bolt.Bucket, s *Send) error {
	raw, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return bk.Put([]byte(s.ID), raw)
}

func (b *boltBackend) filePath(id string) string { return filepath.Join(b.files, id) }

// tidyFiles removes the files no queued send names: spools a crash left,
// and files whose record was never committed.
func (b *boltBackend) tidyFiles(db *bolt.DB) error {
	names, err := os.ReadDir(b.files)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return db.View(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketQueue)
		for _, d := range names {
			if bk.Get([]byte(d.Name())) == nil {
				_ = os.Remove(filepath.Join(b.files, d.Name()))
			}
		}
		return nil
	})
}

func (b *boltBackend) spool() (*os.File, error) {
	if _, err := b.open(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(b.files, 0o700); err != nil {
		return nil, fmt.Errorf("%s: %w", b, err)
	}
	return os.CreateTemp(b.files, ".spool-*")
}

func (b *boltBackend) enqueue(_ context.Context, s *Send, file *os.File, bounds Bounds) error {
	db, err := b.open()
	if err != nil {
		return err
	}
	if file != nil {
		// The file first, on disk for good, then the record naming it.
		if err := file.Sync(); err != nil {
			return fmt.Errorf("%s: writing a queued file: %w", b, err)
		}
		if err := os.Rename(file.Name(), b.filePath(s.ID)); err != nil {
			return fmt.Errorf("%s: %w", b, err)
		}
		if err := syncDir(b.files); err != nil {
			return fmt.Errorf("%s: %w", b, err)
		}
	}
	err = db.Update(func(tx *bolt.Tx) error {
		t := getTotals(tx, s.Entry)
		if err := checkBounds(t.Count, t.Bytes, s.Size, bounds); err != nil {
			return err
		}
		if err := putSend(tx.Bucket(bucketQueue), s); err != nil {
			return err
		}
		return putTotals(tx, s.Entry, keyTotals{t.Count + 1, t.Bytes + s.Size})
	})
	if err != nil {
		if file != nil {
			os.Remove(b.filePath(s.ID))
		}
		if errors.Is(err, ErrFull) {
			return err
		}
		return fmt.Errorf("%s: queueing a send: %w", b, err)
	}
	return nil
}

// checkBounds says whether one more send of size fits beside count sends
// of bytes.
func checkBounds(count int, bytes, size int64, b Bounds) error {
	if b.MaxCount > 0 && count+1 > b.MaxCount {
		return &FullError{Limit: int64(b.MaxCount)}
	}
	if b.MaxBytes > 0 && bytes+size > b.MaxBytes {
		return &FullError{Bytes: true, Limit: b.MaxBytes}
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// view runs f in a read transaction.
func (b *boltBackend) view(f func(tx *bolt.Tx) error) error {
	db, err := b.open()
	if err != nil {
		return err
	}
	return db.View(f)
}

func (b *boltBackend) get(_ context.Context, id string) (*Send, error) {
	var s *Send
	err := b.view(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketQueue, bucketFinished} {
			if v := tx.Bucket(name).Get([]byte(id)); v != nil {
				s = new(Send)
				return json.Unmarshal(v, s)
			}
		}
		return ErrNotFound
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// scanEntry calls f on each send of a key in bucket, in order, until f
// says stop.
func scanEntry(bk *bolt.Bucket, entry string, f func(s *Send) (stop bool, err error)) error {
	prefix := []byte(entry + ".")
	c := bk.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		var s Send
		if err := json.Unmarshal(v, &s); err != nil {
			return err
		}
		if stop, err := f(&s); stop || err != nil {
			return err
		}
	}
	return nil
}

func (b *boltBackend) list(_ context.Context, entry string) ([]Send, error) {
	var out []Send
	err := b.view(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketQueue, bucketFinished} {
			if err := scanEntry(tx.Bucket(name), entry, func(s *Send) (bool, error) {
				out = append(out, *s)
				return false, nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

func (b *boltBackend) head(_ context.Context, entry string) (*Send, error) {
	var head *Send
	err := b.view(func(tx *bolt.Tx) error {
		return scanEntry(tx.Bucket(bucketQueue), entry, func(s *Send) (bool, error) {
			head = s
			return true, nil
		})
	})
	return head, err
}

func (b *boltBackend) count(_ context.Context, entry string) (int, error) {
	n := 0
	err := b.view(func(tx *bolt.Tx) error {
		n = getTotals(tx, entry).Count
		return nil
	})
	return n, err
}

func (b *boltBackend) update(_ context.Context, id string, f func(s *Send) (bool, error)) (*Send, error) {
	db, err := b.open()
	if err != nil {
		return nil, err
	}
	var out *Send
	dropFile := false
	err = db.Update(func(tx *bolt.Tx) error {
		queue, done := tx.Bucket(bucketQueue), tx.Bucket(bucketFinished)
		bk := queue
		v := queue.Get([]byte(id))
		if v == nil {
			bk, v = done, done.Get([]byte(id))
		}
		if v == nil {
			return ErrNotFound
		}
		var s Send
		if err := json.Unmarshal(v, &s); err != nil {
			return err
		}
		wasQueued := s.State == Queued
		remove, err := f(&s)
		if err != nil {
			return err
		}
		out = &s
		leaves := wasQueued && (remove || s.finished())
		if leaves {
			t := getTotals(tx, s.Entry)
			if err := putTotals(tx, s.Entry, keyTotals{t.Count - 1, max(t.Bytes-s.Size, 0)}); err != nil {
				return err
			}
			dropFile = s.File != nil
		}
		switch {
		case remove:
			return bk.Delete([]byte(id))
		case leaves:
			if err := queue.Delete([]byte(id)); err != nil {
				return err
			}
			return putSend(done, &s)
		}
		return putSend(bk, &s)
	})
	if err != nil {
		return nil, err
	}
	if dropFile {
		os.Remove(b.filePath(id))
	}
	return out, nil
}

func (b *boltBackend) openFile(_ context.Context, id string) (io.ReadCloser, error) {
	if strings.ContainsAny(id, `/\`) {
		return nil, ErrNotFound
	}
	f, err := os.Open(b.filePath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: the file of queued send %s is missing: %w", b, id, err)
	}
	return f, err
}

func (b *boltBackend) entries(_ context.Context) ([]string, error) {
	var out []string
	err := b.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketQueueKeys).ForEach(func(k, _ []byte) error {
			out = append(out, string(k))
			return nil
		})
	})
	return out, err
}

func (b *boltBackend) tryLock(_ context.Context, entry string) (func(), bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.delivering[entry] {
		return nil, false, nil
	}
	b.delivering[entry] = true
	return func() {
		b.mu.Lock()
		delete(b.delivering, entry)
		b.mu.Unlock()
	}, true, nil
}

func (b *boltBackend) stats(_ context.Context) (QueueStats, error) {
	var st QueueStats
	if !b.opened.Load() {
		return st, nil
	}
	err := b.view(func(tx *bolt.Tx) error {
		queue := tx.Bucket(bucketQueue)
		return tx.Bucket(bucketQueueKeys).ForEach(func(k, v []byte) error {
			var t keyTotals
			if json.Unmarshal(v, &t) != nil {
				return nil
			}
			st.Count += t.Count
			st.Bytes += t.Bytes
			// Only each key's oldest is read.
			return scanEntry(queue, string(k), func(s *Send) (bool, error) {
				if st.Oldest.IsZero() || s.QueuedAt.Before(st.Oldest) {
					st.Oldest = s.QueuedAt
				}
				return true, nil
			})
		})
	})
	return st, err
}

func (b *boltBackend) pruneFinished(_ context.Context, before time.Time) (int, error) {
	if !b.opened.Load() {
		return 0, nil
	}
	n := 0
	err := b.write(func(tx *bolt.Tx) error {
		n = 0
		c := tx.Bucket(bucketFinished).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var s Send
			if json.Unmarshal(v, &s) == nil && !s.Finished.Before(before) {
				continue
			}
			if err := c.Delete(); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("%s: pruning finished sends: %w", b, err)
	}
	return n, nil
}
