package keystore

import (
	"context"
	"crypto/sha256"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

const (
	defaultPollInterval  = time.Second
	defaultFlushInterval = time.Minute
)

// backend is where the store document lives: a file, or Caddy's storage.
type backend interface {
	// read returns the document, or an error matching fs.ErrNotExist.
	read(ctx context.Context) ([]byte, error)
	// stamp is a cheap token that changes whenever the document does;
	// "" when there is no document.
	stamp(ctx context.Context) (string, error)
	// lock excludes every other writer, in this and other processes.
	lock(ctx context.Context) (unlock func(), err error)
	// write replaces the document atomically and durably.
	write(ctx context.Context, data []byte) error
	// wroteBefore says why a missing document is likely a lost one (a
	// sign a store was written there before), or "" when nothing says so.
	wroteBefore() string
	String() string
}

// Options tune a store; zero values take the defaults.
type Options struct {
	// PollInterval is how often the store looks for changes made by
	// another process. Default 1s.
	PollInterval time.Duration
	// FlushInterval is how often last-used times are written. Default 1m.
	FlushInterval time.Duration
	Logger        *zap.Logger
	// OnFailure, when set, is told of each failed reload ("reload") and
	// failed write ("write"), for metrics.
	OnFailure func(kind string)
	// NewStore lets a write start a new, empty document where the file
	// is empty, or missing although a store was written there before.
	// Without it such a write is refused: the store was most likely lost
	// (truncated, an unmounted volume, a wrong path), not never made.
	NewStore bool
	// ReadOnly: keys are managed elsewhere; every change is refused with
	// ErrReadOnly, and last-used times stay in memory.
	ReadOnly bool
}

// Store is the key store: an immutable in-memory index for the request
// path, and a JSON document changed only by read-modify-write under a lock
// shared with every other writer.
type Store struct {
	b   backend
	opt Options

	idx      atomic.Pointer[index]
	loadErr  atomic.Pointer[error]
	writeErr atomic.Pointer[error]
	// created is set once a write of this store started a new document.
	created atomic.Bool

	// mu serialises this process's writes and reloads; other processes are
	// kept out by the backend's lock.
	mu        sync.Mutex
	lastStamp string
	// lastSum is the SHA-256 of the document the index was built from
	// (zero when there was none). Writers compare content, not stamps:
	// a modification time can be too coarse to tell two writes apart.
	lastSum [32]byte
	// held is set once the document at the backend's location has been
	// seen with entries: from then on a missing document means one lost
	// (deleted, or a storage answering "not found" by mistake), not a
	// first run, and dropping every key for it would lock every bot out.
	held atomic.Bool

	// retention is how long audit records are kept (a time.Duration);
	// 0: all.
	retention atomic.Int64
	// auditSeen is the newest audit record logged, once auditLoaded
	// (the first document's are history, not news). Under mu.
	auditSeen   int64
	auditLoaded bool

	// usage holds last-used times (unix nanoseconds) not yet written, by id.
	usage sync.Map
	dirty atomic.Bool

	startOnce, closeOnce sync.Once
	stop, done           chan struct{}
	started              atomic.Bool
}

func openStore(b backend, opt Options) (*Store, error) {
	if opt.PollInterval <= 0 {
		opt.PollInterval = defaultPollInterval
	}
	if opt.FlushInterval <= 0 {
		opt.FlushInterval = defaultFlushInterval
	}
	if opt.Logger == nil {
		opt.Logger = zap.NewNop()
	}
	s := &Store{b: b, opt: opt, stop: make(chan struct{}), done: make(chan struct{})}
	s.idx.Store(newIndex(nil))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Reload(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// String names the store for messages.
func (s *Store) String() string { return s.b.String() }

// Lookup finds a key's entry. It is the request path: a hash and a map
// lookup on an immutable index, with no lock and no I/O. The entry is
// shared and must not be modified.
func (s *Store) Lookup(key string) (*Entry, bool) {
	// []byte(key) alone would allocate: the compiler keeps only conversions
	// of up to 32 bytes on the stack, and a key is 48.
	var buf [128]byte
	var b []byte
	if len(key) <= len(buf) {
		b = append(buf[:0], key...)
	} else {
		b = []byte(key)
	}
	e, ok := s.idx.Load().byHash[sha256.Sum256(b)]
	return e, ok
}

// Len is the number of entries, revoked ones included.
func (s *Store) Len() int { return len(s.idx.Load().entries) }

// List returns a copy of every entry, with last-used times not yet written
// filled in.
func (s *Store) List() []Entry {
	idx := s.idx.Load()
	out := make([]Entry, len(idx.entries))
	for i := range idx.entries {
		out[i] = idx.entries[i].clone()
	}
	for i := range out {
		out[i].LastUsedAt = s.LastUsed(&out[i])
	}
	return out
}

// Get returns a copy of one entry, like List.
func (s *Store) Get(id string) (Entry, bool) {
	idx := s.idx.Load()
	for i := range idx.entries {
		if idx.entries[i].ID == id {
			e := idx.entries[i].clone()
			e.LastUsedAt = s.LastUsed(&e)
			return e, true
		}
	}
	return Entry{}, false
}

// LastUsed is when e's key was last used: the document's time, or a
// newer one not yet written.
func (s *Store) LastUsed(e *Entry) *time.Time {
	t := s.lastUsed(e)
	if t.IsZero() {
		return nil
	}
	if e.LastUsedAt != nil && t.Equal(*e.LastUsedAt) {
		return e.LastUsedAt
	}
	return &t
}

// lastUsed is LastUsed without a pointer: zero when never used.
func (s *Store) lastUsed(e *Entry) time.Time {
	var saved time.Time
	if e.LastUsedAt != nil {
		saved = *e.LastUsedAt
	}
	v, ok := s.usage.Load(e.ID)
	if !ok {
		return saved
	}
	if t := time.Unix(0, v.(*atomic.Int64).Load()).UTC(); t.After(saved) {
		return t
	}
	return saved
}

// Each calls fn with every entry, in the document's order, and its last
// use (zero when never), without the copies List makes: for counting at
// any size of store (the metrics do it at every scrape). fn must neither
// change nor keep e.
func (s *Store) Each(fn func(e *Entry, lastUsed time.Time)) {
	idx := s.idx.Load()
	for i := range idx.entries {
		fn(&idx.entries[i], s.lastUsed(&idx.entries[i]))
	}
}

// Healthy is nil while the store can be read; otherwise the error of the
// last failed read. Lookups keep using the last good index meanwhile.
func (s *Store) Healthy() error {
	if p := s.loadErr.Load(); p != nil {
		return *p
	}
	return nil
}

func (s *Store) setLoadErr(err error) {
	if err == nil {
		s.loadErr.Store(nil)
		return
	}
	if s.opt.OnFailure != nil {
		s.opt.OnFailure("reload")
	}
	s.loadErr.Store(&err)
}

// Writable is nil while changes can be written; otherwise the error of
// the last failed write. Lookups keep working meanwhile.
func (s *Store) Writable() error {
	if p := s.writeErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Created says whether a write through this store started a new document
// where there was none.
func (s *Store) Created() bool { return s.created.Load() }
