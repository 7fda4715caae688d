package zulipproxy

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"strings"
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
	String() string
}

// StoreOptions tune a store; zero values take the defaults.
type StoreOptions struct {
	// PollInterval is how often the store looks for changes made by
	// another process. Default 1s.
	PollInterval time.Duration
	// FlushInterval is how often last-used times are written. Default 1m.
	FlushInterval time.Duration
	Logger        *zap.Logger
}

// Store is the key store: an immutable in-memory index for the request
// path, and a JSON document changed only by read-modify-write under a lock
// shared with every other writer.
type Store struct {
	b   backend
	opt StoreOptions

	idx     atomic.Pointer[index]
	loadErr atomic.Pointer[error]

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

	// usage holds last-used times (unix nanoseconds) not yet written, by id.
	usage sync.Map
	dirty atomic.Bool

	startOnce, closeOnce sync.Once
	stop, done           chan struct{}
	started              atomic.Bool
}

func openStore(b backend, opt StoreOptions) (*Store, error) {
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
		if v, ok := s.usage.Load(out[i].ID); ok {
			t := time.Unix(0, v.(*atomic.Int64).Load()).UTC()
			if out[i].LastUsedAt == nil || t.After(*out[i].LastUsedAt) {
				out[i].LastUsedAt = &t
			}
		}
	}
	return out
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
	s.loadErr.Store(&err)
}

// Touch notes that a key was used, in memory only: a background flush
// writes it at most once per FlushInterval.
func (s *Store) Touch(e *Entry) {
	now := time.Now().UnixNano()
	v, ok := s.usage.Load(e.ID)
	if !ok {
		v, _ = s.usage.LoadOrStore(e.ID, new(atomic.Int64))
	}
	v.(*atomic.Int64).Store(now)
	if !s.dirty.Load() {
		s.dirty.Store(true)
	}
}

// Reload reads the document again. A document that cannot be read or
// parsed leaves the index as it was, and Healthy reports why.
func (s *Store) Reload(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reloadLocked(ctx)
}

func (s *Store) reloadLocked(ctx context.Context) error {
	st, err := s.b.stamp(ctx)
	if err != nil {
		err = fmt.Errorf("checking key store %s: %w", s.b, err)
		s.setLoadErr(err)
		return err
	}
	doc, sum, err := s.readDoc(ctx)
	if err != nil {
		s.setLoadErr(err)
		return err
	}
	s.install(doc.Clients, st, sum)
	s.setLoadErr(nil)
	return nil
}

// readDoc reads the document as it is now. A document identical to the
// one the index was built from is not parsed again: at 100,000 keys,
// parsing is most of the cost of a write.
func (s *Store) readDoc(ctx context.Context) (document, [32]byte, error) {
	raw, err := s.b.read(ctx)
	if errors.Is(err, fs.ErrNotExist) {
		if s.held.Load() {
			return document{}, [32]byte{}, fmt.Errorf("key store %s has disappeared; it held %d entries, which this instance keeps serving: restore the document, or restart to begin an empty store", s.b, s.Len())
		}
		return document{Version: storeVersion}, [32]byte{}, nil
	}
	if err != nil {
		return document{}, [32]byte{}, fmt.Errorf("reading key store %s: %w", s.b, err)
	}
	sum := sha256.Sum256(raw)
	if sum == s.lastSum && s.Healthy() == nil {
		idx := s.idx.Load()
		entries := make([]Entry, len(idx.entries))
		copy(entries, idx.entries)
		return document{Version: storeVersion, Clients: entries}, sum, nil
	}
	doc, err := parseDocument(raw)
	if err != nil {
		return document{}, [32]byte{}, fmt.Errorf("reading key store %s: %w", s.b, err)
	}
	return doc, sum, nil
}

// install makes entries, read from or written as the document whose
// stamp and checksum are given, the index that lookups see.
func (s *Store) install(entries []Entry, stamp string, sum [32]byte) {
	s.idx.Store(newIndex(entries))
	s.lastStamp, s.lastSum = stamp, sum
	if len(entries) > 0 {
		s.held.Store(true)
	}
}

// mutate changes the document: under this process's mutex and the
// backend's lock, from the freshest document, so no writer loses another's
// entries. A document that cannot be read is never written over.
func (s *Store) mutate(ctx context.Context, fn func(doc *document) (changed bool, err error)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	unlock, err := s.b.lock(ctx)
	if err != nil {
		return fmt.Errorf("locking key store %s: %w", s.b, err)
	}
	defer unlock()
	doc, sum, err := s.readDoc(ctx)
	if err != nil {
		s.setLoadErr(err)
		return err
	}
	before := len(doc.Clients)
	changed, err := fn(&doc)
	if err != nil || !changed {
		if err == nil {
			// Still worth knowing the freshest state.
			st, serr := s.b.stamp(ctx)
			if serr == nil {
				s.install(doc.Clients, st, sum)
				s.setLoadErr(nil)
			}
		}
		return err
	}
	// Entries are revoked, never deleted: fewer entries means a bug, and
	// writing it would lose keys.
	if len(doc.Clients) < before {
		return fmt.Errorf("refusing to write key store %s: %d entries would become %d", s.b, before, len(doc.Clients))
	}
	doc.Version = storeVersion
	data, err := doc.marshal()
	if err != nil {
		return fmt.Errorf("encoding key store: %w", err)
	}
	if err := s.b.write(ctx, data); err != nil {
		return fmt.Errorf("writing key store %s: %w", s.b, err)
	}
	st, err := s.b.stamp(ctx)
	if err != nil {
		st = "" // the watcher reloads on its next look
	}
	s.install(doc.Clients, st, sha256.Sum256(data))
	s.setLoadErr(nil)
	return nil
}

// Add creates a key and returns it with its entry. The key is not kept.
func (s *Store) Add(ctx context.Context, n NewEntry) (string, Entry, error) {
	if n.Admin && n.Stream != "" {
		return "", Entry{}, errors.New("an admin key has no stream")
	}
	if !n.Admin && strings.TrimSpace(n.Stream) == "" {
		return "", Entry{}, errors.New("a scoped key needs a stream")
	}
	key, err := NewKey()
	if err != nil {
		return "", Entry{}, err
	}
	// The caller keeps its pointer; the index must not change with it.
	var expires *time.Time
	if n.ExpiresAt != nil {
		t := n.ExpiresAt.UTC()
		expires = &t
	}
	var e Entry
	err = s.mutate(ctx, func(doc *document) (bool, error) {
		id, err := uniqueID(doc)
		if err != nil {
			return false, err
		}
		e = Entry{
			ID: id, KeyHash: HashKey(key), Name: n.Name, ProposalNo: n.ProposalNo,
			Stream: n.Stream, Bot: n.Bot, Admin: n.Admin,
			CreatedAt: time.Now().UTC(), CreatedBy: n.CreatedBy, ExpiresAt: expires,
		}
		doc.Clients = append(doc.Clients, e)
		return true, nil
	})
	if err != nil {
		return "", Entry{}, err
	}
	return key, e.clone(), nil
}

func uniqueID(doc *document) (string, error) {
	for range 16 {
		id, err := newID()
		if err != nil {
			return "", err
		}
		taken := false
		for i := range doc.Clients {
			if doc.Clients[i].ID == id {
				taken = true
				break
			}
		}
		if !taken {
			return id, nil
		}
	}
	return "", errors.New("could not find a free key id")
}

// Revoke stops a key from working. Revoking twice keeps the first time.
func (s *Store) Revoke(ctx context.Context, id string) (Entry, error) {
	var e Entry
	err := s.mutate(ctx, func(doc *document) (bool, error) {
		for i := range doc.Clients {
			if doc.Clients[i].ID != id {
				continue
			}
			changed := false
			if doc.Clients[i].RevokedAt == nil {
				t := time.Now().UTC()
				doc.Clients[i].RevokedAt = &t
				changed = true
			}
			e = doc.Clients[i].clone()
			return changed, nil
		}
		return false, ErrNotFound
	})
	return e, err
}

// flushUsage writes last-used times newer than the document's.
func (s *Store) flushUsage(ctx context.Context) error {
	if !s.dirty.Swap(false) {
		return nil
	}
	err := s.mutate(ctx, func(doc *document) (bool, error) {
		changed := false
		for i := range doc.Clients {
			v, ok := s.usage.Load(doc.Clients[i].ID)
			if !ok {
				continue
			}
			t := time.Unix(0, v.(*atomic.Int64).Load()).UTC()
			if lu := doc.Clients[i].LastUsedAt; lu == nil || t.After(*lu) {
				doc.Clients[i].LastUsedAt = &t
				changed = true
			}
		}
		return changed, nil
	})
	if err != nil {
		s.dirty.Store(true)
	}
	return err
}

// Start runs the watcher, which picks up other processes' changes, and the
// last-used flusher. The CLI opens stores without starting them.
func (s *Store) Start() {
	s.startOnce.Do(func() {
		s.started.Store(true)
		go s.run()
	})
}

func (s *Store) run() {
	defer close(s.done)
	poll := time.NewTicker(s.opt.PollInterval)
	defer poll.Stop()
	flush := time.NewTicker(s.opt.FlushInterval)
	defer flush.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-poll.C:
			s.poll()
		case <-flush.C:
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if err := s.flushUsage(ctx); err != nil {
				s.opt.Logger.Warn("writing last-used times", zap.Error(err))
			}
			cancel()
		}
	}
}

// poll reloads when the document changed since it was last read.
func (s *Store) poll() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := s.b.stamp(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil && st == s.lastStamp && s.Healthy() == nil {
		return
	}
	wasHealthy := s.Healthy() == nil
	if err := s.reloadLocked(ctx); err != nil {
		if wasHealthy {
			s.opt.Logger.Error("key store cannot be read; serving the last good keys", zap.Error(err))
		}
		return
	}
	if !wasHealthy {
		s.opt.Logger.Info("key store readable again", zap.String("store", s.b.String()))
	}
	s.opt.Logger.Debug("key store reloaded", zap.Int("entries", s.Len()))
}

// Close stops the goroutines and writes pending last-used times.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		// stop is closed even if never started, so a Start after Close
		// does not leave a watcher running.
		close(s.stop)
		if s.started.Load() {
			<-s.done
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = s.flushUsage(ctx)
	})
	return err
}
