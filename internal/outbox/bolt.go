package outbox

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/maphash"
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
// the changes made at the same moment share (flushEvery). A crash
// forgets the requests in flight at that moment, and at most the last
// 50 ms of outcomes; a graceful stop commits them all.
//
// Records are appended to a log (bolt_log.go) rather than kept under
// their ids: ids are hashes, so a B+tree keyed by them puts each new
// record on a page of its own, and a commit writes one page a record;
// appended, the records of a commit share the last pages. The log is
// found by id through an index in memory, made again when the database
// is opened: a record costs the index some 50 bytes, and records are
// kept for the idempotency window only (at Zulip's default limit of 200
// calls a minute, a bot makes at most 288,000 writes a day: 15 MB).

// recordHash finds a record's place in the index: 128 bits of a record
// id's hash, which the record itself (its id is stored with it)
// confirms. The index is made again each time the database is opened,
// so the hash need not be stable across processes: maphash, with seeds
// of this process, costs a tenth of a SHA-256 and is as unlikely to
// collide as its first 128 bits.
type recordHash [16]byte

type recordHasher struct{ a, b maphash.Seed }

func newRecordHasher() recordHasher { return recordHasher{maphash.MakeSeed(), maphash.MakeSeed()} }

func (s recordHasher) of(id string) recordHash {
	var h recordHash
	binary.LittleEndian.PutUint64(h[:8], maphash.String(s.a, id))
	binary.LittleEndian.PutUint64(h[8:], maphash.String(s.b, id))
	return h
}

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
	// committed yet, by the hash of their record id (a record's id,
	// which it holds, confirms it); dirty says an outcome waits. index
	// finds a committed record's place in the log.
	mu      sync.Mutex
	pending map[recordHash]*pendingChange
	// flushing makes one flush at a time: two would append a change twice.
	flushing sync.Mutex
	index    map[recordHash]uint64
	hash     recordHasher
	dirty    chan struct{}
	// flushed is closed when the writer stops, after its last commit.
	stop    chan struct{}
	flushed chan struct{}

	// delivering are the keys whose sends a deliverer of this process
	// has the right to deliver: one process holds the file.
	delivering map[string]bool
}

// pendingChange is record id's record to store, or, with gone, to
// remove.
type pendingChange struct {
	id   string
	rec  Record
	gone bool
	// memoryOnly: a claim, never written.
	memoryOnly bool
	// written: committed.
	written bool
	// place is where the log held the id when the claim was made (0:
	// nowhere), which the commit replaces; placed says it is known, so
	// that the commit need not look in the index again.
	place  uint64
	placed bool
}

// OpenFile returns the outbox kept in the bbolt database at path, which
// is opened (or created) when first used.
func OpenFile(path string) *Outbox {
	b := &boltBackend{path: path, files: strings.TrimSuffix(path, ".db") + ".files",
		pending: map[recordHash]*pendingChange{}, index: map[recordHash]uint64{}, hash: newRecordHasher(), delivering: map[string]bool{},
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
				for _, name := range [][]byte{bucketRecords, bucketQueue, bucketFinished, bucketQueueKeys} {
					if _, err := tx.CreateBucketIfNotExists(name); err != nil {
						return err
					}
				}
				if err := migrateRecords(tx); err != nil {
					return err
				}
				return b.makeIndex(tx)
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

// makeIndex reads the log's ids into the index; a later entry of an id
// replaces an earlier one.
func (b *boltBackend) makeIndex(tx *bolt.Tx) error {
	c := tx.Bucket(bucketRecords).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		_, id, _, err := entryID(v)
		if err != nil || len(k) != 8 {
			continue
		}
		b.index[b.hash.of(id)] = binary.BigEndian.Uint64(k)
	}
	return nil
}

// flushEvery is the least time between two commits: an outcome is
// committed at once when none was in the last flushEvery, and otherwise
// with the next commit, which those waiting share. A commit, with its two
// fdatasyncs, costs the process some 0.5 ms of CPU under load, whether it
// holds one outcome or a thousand: at 10 ms, a proxy serving 10,000 sends
// a second with keys spent 18 % more CPU a send than without them, at
// 50 ms 10 %. A crash forgets what waits, as it forgets the requests in
// flight, whose calls to Zulip take longer than that; at the rates Zulip
// allows a bot (some 3 calls a second), an outcome rarely waits at all.
const flushEvery = 50 * time.Millisecond

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
	type change struct {
		h   recordHash
		p   *pendingChange
		old uint64
		// item is the change's record in items; -1 for a removal.
		item int
	}
	b.flushing.Lock()
	defer b.flushing.Unlock()
	b.mu.Lock()
	batch := make([]change, 0, len(b.pending))
	items := make([]logItem, 0, len(b.pending))
	for h, p := range b.pending {
		if p.memoryOnly || p.written {
			continue
		}
		c := change{h: h, p: p, old: p.place, item: -1}
		if !p.placed {
			c.old = b.index[h]
		}
		if p.gone && c.old == 0 {
			// Never committed: nothing to write.
			delete(b.pending, h)
			continue
		}
		if !p.gone {
			c.item = len(items)
			items = append(items, logItem{id: p.id, rec: &p.rec})
		}
		batch = append(batch, c)
	}
	b.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	err := b.db.Update(func(tx *bolt.Tx) error {
		log := tx.Bucket(bucketRecords)
		// Appended to in key order, the log's pages are filled before
		// they are split, as bbolt advises for sequential keys.
		log.FillPercent = 1
		for _, c := range batch {
			if c.old != 0 {
				if err := log.Delete(seqKey(c.old)); err != nil {
					return err
				}
			}
		}
		return appendRecords(log, items)
	})
	if err != nil {
		b.signal()
		return
	}
	b.mu.Lock()
	for _, c := range batch {
		c.p.written = true
		if c.item >= 0 {
			b.index[c.h] = items[c.item].seq
		} else if b.index[c.h] == c.old {
			delete(b.index, c.h)
		}
		if b.pending[c.h] == c.p {
			delete(b.pending, c.h)
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
	h := b.hash.of(id)
	b.mu.Lock()
	defer b.mu.Unlock()
	var existing *Record
	var place uint64
	placed := false
	if p, ok := b.pending[h]; ok && p.id == id {
		if !p.gone {
			c := p.rec
			existing = &c
		}
	} else if place, placed = b.index[h], true; place != 0 {
		// Only an id the index knows costs a read.
		if err := db.View(func(tx *bolt.Tx) error {
			v := tx.Bucket(bucketRecords).Get(seqKey(place))
			if v == nil {
				return nil
			}
			got, rec, err := decodeEntry(v)
			if err == nil && got == id {
				existing = rec
			}
			return err
		}); err != nil {
			return nil, false, fmt.Errorf("%s: reading %s: %w", b, id, err)
		}
	}
	rec := decide(existing)
	if rec == nil {
		return existing, false, nil
	}
	// A claim is held in memory: its outcome is what is written.
	b.pending[h] = &pendingChange{id: id, rec: *rec, memoryOnly: true, place: place, placed: placed}
	return existing, true, nil
}

func (b *boltBackend) put(_ context.Context, id string, rec Record) error {
	b.later(id, rec, false)
	return nil
}

func (b *boltBackend) remove(_ context.Context, id string) error {
	b.later(id, Record{}, true)
	return nil
}

// later keeps a change in memory, where claims see it, until the writer
// commits it with the others waiting.
func (b *boltBackend) later(id string, rec Record, gone bool) {
	if _, err := b.open(); err != nil {
		return
	}
	h := b.hash.of(id)
	b.mu.Lock()
	p := b.pending[h]
	if p == nil || !p.memoryOnly || p.id != id {
		// One the writer may be reading is left as it is.
		p = &pendingChange{id: id}
		b.pending[h] = p
	}
	// A request's claim, which no commit reads, becomes its outcome.
	p.rec, p.gone, p.memoryOnly = rec, gone, false
	b.mu.Unlock()
	b.signal()
}

func (b *boltBackend) prune(_ context.Context, before time.Time) (int, error) {
	if !b.opened.Load() {
		// Never used: nothing to prune, and no file to make for it.
		return 0, nil
	}
	n := 0
	var gone map[recordHash]uint64
	err := b.write(func(tx *bolt.Tx) error {
		n, gone = 0, map[recordHash]uint64{}
		log := tx.Bucket(bucketRecords)
		// Deleting under a cursor can make it skip the next entry.
		var old [][]byte
		c := log.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			updated, id, _, err := entryID(v)
			if err == nil && !updated.Before(before) {
				continue
			}
			old = append(old, k)
			if err == nil && len(k) == 8 {
				gone[b.hash.of(id)] = binary.BigEndian.Uint64(k)
			}
		}
		for _, k := range old {
			if err := log.Delete(k); err != nil {
				return err
			}
		}
		n = len(old)
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("%s: pruning: %w", b, err)
	}
	b.mu.Lock()
	for h, seq := range gone {
		if b.index[h] == seq {
			delete(b.index, h)
		}
	}
	b.mu.Unlock()
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
