package outbox

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A bbolt database beside a key store file. bbolt commits each change
// with an fsync and survives a crash mid-write by itself; it lets one
// process open the file at a time, which is what a file store serves
// (instances that share keys share Caddy's storage instead).

var bucketIdempotency = []byte("idempotency")

type boltBackend struct {
	path string
	// The database is opened on first use, so that a config that is
	// only validated creates no file.
	once   sync.Once
	db     *bolt.DB
	err    error
	opened atomic.Bool
}

// OpenFile returns the outbox kept in the bbolt database at path, which
// is opened (or created) when first used.
func OpenFile(path string) *Outbox {
	return &Outbox{b: &boltBackend{path: path}}
}

func (b *boltBackend) open() (*bolt.DB, error) {
	b.once.Do(func() {
		// A second process waits a while for the file, then says why
		// it cannot have it, rather than hanging.
		db, err := bolt.Open(b.path, 0o600, &bolt.Options{Timeout: 10 * time.Second})
		if err == nil {
			err = db.Update(func(tx *bolt.Tx) error {
				_, err := tx.CreateBucketIfNotExists(bucketIdempotency)
				return err
			})
			if err != nil {
				db.Close()
			}
		}
		if err != nil {
			b.err = fmt.Errorf("opening %s: %w", b, err)
			return
		}
		b.db = db
		b.opened.Store(true)
	})
	return b.db, b.err
}

// update runs f in a write transaction of the database.
func (b *boltBackend) update(f func(tx *bolt.Tx) error) error {
	db, err := b.open()
	if err != nil {
		return err
	}
	return db.Update(f)
}

func (b *boltBackend) String() string { return "outbox " + b.path }

func (b *boltBackend) take(_ context.Context, id string, decide func(*Record) *Record) (*Record, bool, error) {
	var existing *Record
	stored := false
	err := b.update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketIdempotency)
		if v := bk.Get([]byte(id)); v != nil {
			existing = new(Record)
			if err := json.Unmarshal(v, existing); err != nil {
				return err
			}
		}
		rec := decide(existing)
		if rec == nil {
			return nil
		}
		raw, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		stored = true
		return bk.Put([]byte(id), raw)
	})
	if err != nil {
		return nil, false, fmt.Errorf("%s: claiming %s: %w", b, id, err)
	}
	return existing, stored, nil
}

func (b *boltBackend) put(_ context.Context, id string, rec Record) error {
	raw, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := b.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketIdempotency).Put([]byte(id), raw)
	}); err != nil {
		return fmt.Errorf("%s: writing %s: %w", b, id, err)
	}
	return nil
}

func (b *boltBackend) remove(_ context.Context, id string) error {
	if err := b.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketIdempotency).Delete([]byte(id))
	}); err != nil {
		return fmt.Errorf("%s: deleting %s: %w", b, id, err)
	}
	return nil
}

func (b *boltBackend) prune(_ context.Context, before time.Time) (int, error) {
	if !b.opened.Load() {
		// Never used: nothing to prune, and no file to make for it.
		return 0, nil
	}
	n := 0
	err := b.update(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketIdempotency).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var rec Record
			if json.Unmarshal(v, &rec) == nil && !rec.Updated.Before(before) {
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
		return n, fmt.Errorf("%s: pruning: %w", b, err)
	}
	return n, nil
}

func (b *boltBackend) close() error {
	b.once.Do(func() { b.err = ErrClosed })
	if !b.opened.Load() {
		return nil
	}
	return b.db.Close()
}
