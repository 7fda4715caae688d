package outbox

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A bbolt database beside a key store file. bbolt commits with an fsync
// and survives a crash mid-write by itself; it lets one process open the
// file at a time, which is what a file store serves (instances that share
// keys share Caddy's storage instead).
//
// An fsync costs more CPU than all the rest of a send, so a send does not
// wait for one. One process holds the file, so the claim of a request
// being served lives in memory (a second request with the key sees it);
// what a write came to (put, remove) is kept in memory too, where claims
// see it at once, and written to the database in the next commit, which
// the changes made at the same moment share (bbolt's Batch). A restart
// forgets the requests in flight at that moment, and at most the last
// few milliseconds of outcomes.

var bucketIdempotency = []byte("idempotency")

type boltBackend struct {
	path string
	// files is the folder of queued sends' files.
	files string
	// The database is opened on first use, so that a config that is
	// only validated creates no file.
	once   sync.Once
	db     *bolt.DB
	err    error
	opened atomic.Bool

	// pending are the claims of requests being served, and outcomes not
	// committed yet, by record id; dirty says an outcome waits.
	mu      sync.Mutex
	pending map[string]*pendingChange
	dirty   chan struct{}
	// flushed is closed when the writer stops, after its last commit.
	stop    chan struct{}
	flushed chan struct{}

	// delivering are the keys whose sends a deliverer of this process
	// has the right to deliver: one process holds the file.
	delivering map[string]bool
}

// pendingChange is a record to store, or, with rec nil, to remove.
type pendingChange struct {
	rec *Record
	// memoryOnly: a claim, never written.
	memoryOnly bool
	// written: committed.
	written bool
}

// OpenFile returns the outbox kept in the bbolt database at path, which
// is opened (or created) when first used.
func OpenFile(path string) *Outbox {
	b := &boltBackend{path: path, files: strings.TrimSuffix(path, ".db") + ".files",
		pending: map[string]*pendingChange{}, delivering: map[string]bool{},
		dirty: make(chan struct{}, 1), stop: make(chan struct{}), flushed: make(chan struct{})}
	return &Outbox{b: b, q: b}
}

func (b *boltBackend) open() (*bolt.DB, error) {
	b.once.Do(func() {
		// A second process waits a while for the file, then says why
		// it cannot have it, rather than hanging.
		// The free-page list is not written with each commit but made
		// again when the file is opened, as etcd runs bbolt: a commit
		// then writes its own pages only.
		db, err := bolt.Open(b.path, 0o600, &bolt.Options{Timeout: 10 * time.Second,
			NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
		if err == nil {
			err = db.Update(func(tx *bolt.Tx) error {
				for _, name := range [][]byte{bucketIdempotency, bucketQueue, bucketFinished, bucketQueueKeys} {
					if _, err := tx.CreateBucketIfNotExists(name); err != nil {
						return err
					}
				}
				return nil
			})
			if err == nil {
				err = b.tidyFiles(db)
			}
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
		go b.writer()
	})
	return b.db, b.err
}

// flushEvery is how long outcomes gather to share a commit.
const flushEvery = 10 * time.Millisecond

// writer commits the outcomes waiting, all in one transaction, each time
// some wait, at most every flushEvery; and once more when stopped.
func (b *boltBackend) writer() {
	defer close(b.flushed)
	for {
		select {
		case <-b.dirty:
		case <-b.stop:
			b.flush()
			return
		}
		b.flush()
		select {
		case <-time.After(flushEvery):
		case <-b.stop:
			b.flush()
			return
		}
	}
}

// flush writes the outcomes waiting in one commit, and forgets them once
// it is on disk. On an error they stay waiting, where claims see them.
func (b *boltBackend) flush() {
	b.mu.Lock()
	batch := make(map[string]*pendingChange)
	for id, p := range b.pending {
		if !p.memoryOnly && !p.written {
			batch[id] = p
		}
	}
	b.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	err := b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketIdempotency)
		for id, p := range batch {
			if p.rec == nil {
				if err := bk.Delete([]byte(id)); err != nil {
					return err
				}
				continue
			}
			raw, err := json.Marshal(p.rec)
			if err != nil {
				return err
			}
			if err := bk.Put([]byte(id), raw); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.signal()
		return
	}
	b.mu.Lock()
	for id, p := range batch {
		p.written = true
		if b.pending[id] == p {
			delete(b.pending, id)
		}
	}
	b.mu.Unlock()
}

func (b *boltBackend) signal() {
	select {
	case b.dirty <- struct{}{}:
	default:
	}
}

// write runs f in a write transaction.
func (b *boltBackend) write(f func(tx *bolt.Tx) error) error {
	db, err := b.open()
	if err != nil {
		return err
	}
	return db.Update(f)
}

func (b *boltBackend) String() string { return "outbox " + b.path }

func (b *boltBackend) take(_ context.Context, id string, decide func(*Record) *Record) (*Record, bool, error) {
	db, err := b.open()
	if err != nil {
		return nil, false, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var existing *Record
	if p, ok := b.pending[id]; ok {
		if p.rec != nil {
			c := *p.rec
			existing = &c
		}
	} else if err := db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketIdempotency).Get([]byte(id)); v != nil {
			existing = new(Record)
			return json.Unmarshal(v, existing)
		}
		return nil
	}); err != nil {
		return nil, false, fmt.Errorf("%s: reading %s: %w", b, id, err)
	}
	rec := decide(existing)
	if rec == nil {
		return existing, false, nil
	}
	// A claim is held in memory: its outcome is what is written.
	b.pending[id] = &pendingChange{rec: rec, memoryOnly: true}
	return existing, true, nil
}

func (b *boltBackend) put(_ context.Context, id string, rec Record) error {
	b.later(id, &rec)
	return nil
}

func (b *boltBackend) remove(_ context.Context, id string) error {
	b.later(id, nil)
	return nil
}

// later keeps a change in memory, where claims see it, until the writer
// commits it with the others waiting.
func (b *boltBackend) later(id string, rec *Record) {
	if _, err := b.open(); err != nil {
		return
	}
	b.mu.Lock()
	b.pending[id] = &pendingChange{rec: rec}
	b.mu.Unlock()
	b.signal()
}

func (b *boltBackend) prune(_ context.Context, before time.Time) (int, error) {
	if !b.opened.Load() {
		// Never used: nothing to prune, and no file to make for it.
		return 0, nil
	}
	n := 0
	err := b.write(func(tx *bolt.Tx) error {
		n = 0
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
	close(b.stop)
	<-b.flushed
	return b.db.Close()
}
