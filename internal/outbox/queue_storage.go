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
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Queued sends in Caddy's storage, shared by the instances that share the
// storage. A key's queued sends are items under queue/<key id>/, named
// by queue id and size (so that one listing gives what counts against the
// key's bounds), each with its file beside it; finished ones move to
// queue_finished/<key id>/. A send is changed under the storage's lock of
// that send.
//
// A key's sends are delivered by the instance that holds its lease: an
// item naming the instance and until when, taken and renewed under the
// storage's lock of the lease, renewed every leaseRenew, and taken over
// by another instance once it has run out (its holder died). The lease is
// not the storage's lock itself, held for as long as a delivery runs:
// Caddy's file_system storage keeps a lock file fresh from the process
// that last made it, and a process that released a lock keeps freshening
// the same file once another process has made it again, so a lock whose
// holder died could stay fresh for ever. Its locks are held here for the
// few milliseconds of a read and a write only.
//
// Bounds are checked from a listing, without a lock: instances queueing
// for one key at the same moment may pass a bound by as many sends.

const (
	queuePrefix    = "zulip_proxy/queue"
	finishedPrefix = "zulip_proxy/queue_finished"
	// Locks are named apart from items: some storages keep them as
	// items.
	queueLocks  = "zulip_proxy/queue_locks"
	leasePrefix = "zulip_proxy/queue_leases"
	// A lease is renewed every leaseRenew and runs out after leaseTTL
	// without renewal.
	leaseRenew = 5 * time.Second
	leaseTTL   = 15 * time.Second
)

// splitID is a queue id's key id and the rest.
func splitID(id string) (entry, rest string) {
	i := strings.LastIndexByte(id, '.')
	return id[:i], id[i+1:]
}

func (b *storageBackend) queuedDir(entry string) string { return path.Join(queuePrefix, entry) }

func (b *storageBackend) queuedName(s *Send) string {
	_, rest := splitID(s.ID)
	return path.Join(queuePrefix, s.Entry, rest+"-"+strconv.FormatInt(s.Size, 10)+".json")
}

func (b *storageBackend) fileName(id string) string {
	entry, rest := splitID(id)
	return path.Join(queuePrefix, entry, rest+".file")
}

func (b *storageBackend) finishedName(id string) string {
	entry, rest := splitID(id)
	return path.Join(finishedPrefix, entry, rest+".json")
}

// queuedItem is one queued send as a listing names it.
type queuedItem struct {
	name string
	rest string // the queue id's part after the key id
	size int64
}

// queued lists a key's queued sends, oldest first.
func (b *storageBackend) queued(ctx context.Context, entry string) ([]queuedItem, error) {
	names, err := b.st.List(ctx, b.queuedDir(entry), false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: listing the queue of %s: %w", b, entry, err)
	}
	var out []queuedItem
	for _, name := range names {
		base, ok := strings.CutSuffix(path.Base(name), ".json")
		if !ok {
			continue
		}
		rest, size, ok := strings.Cut(base, "-")
		n, err := strconv.ParseInt(size, 10, 64)
		if !ok || err != nil {
			continue
		}
		out = append(out, queuedItem{name: name, rest: rest, size: n})
	}
	slices.SortFunc(out, func(a, b queuedItem) int { return strings.Compare(a.rest, b.rest) })
	return out, nil
}

func (b *storageBackend) spool() (*os.File, error) { return os.CreateTemp("", "zwop-queued-*") }

func (b *storageBackend) withLock(ctx context.Context, name string, f func() error) error {
	if err := b.st.Lock(ctx, name); err != nil {
		return fmt.Errorf("%s: locking %s: %w", b, name, err)
	}
	defer b.st.Unlock(context.WithoutCancel(ctx), name)
	return f()
}

func (b *storageBackend) enqueue(ctx context.Context, s *Send, file *os.File, bounds Bounds) error {
	raw, err := json.Marshal(s)
	if err != nil {
		return err
	}
	items, err := b.queued(ctx, s.Entry)
	if err != nil {
		return err
	}
	var total int64
	for _, it := range items {
		total += it.size
	}
	if err := checkBounds(len(items), total, s.Size, bounds); err != nil {
		return err
	}
	if file != nil {
		// Caddy's storage takes an item whole.
		data, err := io.ReadAll(file)
		if err != nil {
			return fmt.Errorf("%s: reading a queued file: %w", b, err)
		}
		if err := b.st.Store(ctx, b.fileName(s.ID), data); err != nil {
			return fmt.Errorf("%s: storing a queued file: %w", b, err)
		}
	}
	if err := b.st.Store(ctx, b.queuedName(s), raw); err != nil {
		if file != nil {
			_ = b.st.Delete(ctx, b.fileName(s.ID))
		}
		return fmt.Errorf("%s: queueing a send: %w", b, err)
	}
	return nil
}

// find reads a send and names where it is.
func (b *storageBackend) find(ctx context.Context, id string) (*Send, string, error) {
	entry, rest := splitID(id)
	items, err := b.queued(ctx, entry)
	if err != nil {
		return nil, "", err
	}
	name := b.finishedName(id)
	for _, it := range items {
		if it.rest == rest {
			name = it.name
			break
		}
	}
	raw, err := b.st.Load(ctx, name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", ErrNotFound
	}
	if err != nil {
		return nil, "", fmt.Errorf("%s: reading %s: %w", b, id, err)
	}
	s := new(Send)
	if err := json.Unmarshal(raw, s); err != nil {
		return nil, "", fmt.Errorf("%s: reading %s: %w", b, id, err)
	}
	return s, name, nil
}

func (b *storageBackend) get(ctx context.Context, id string) (*Send, error) {
	s, _, err := b.find(ctx, id)
	return s, err
}

func (b *storageBackend) load(ctx context.Context, name string) (*Send, error) {
	raw, err := b.st.Load(ctx, name)
	if err != nil {
		return nil, err
	}
	s := new(Send)
	return s, json.Unmarshal(raw, s)
}

func (b *storageBackend) list(ctx context.Context, entry string) ([]Send, error) {
	items, err := b.queued(ctx, entry)
	if err != nil {
		return nil, err
	}
	var out []Send
	for _, it := range items {
		if s, err := b.load(ctx, it.name); err == nil {
			out = append(out, *s)
		}
	}
	names, err := b.st.List(ctx, path.Join(finishedPrefix, entry), false)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: listing the sends of %s: %w", b, entry, err)
	}
	slices.Sort(names)
	for _, name := range names {
		if s, err := b.load(ctx, name); err == nil {
			out = append(out, *s)
		}
	}
	return out, nil
}

func (b *storageBackend) head(ctx context.Context, entry string) (*Send, error) {
	items, err := b.queued(ctx, entry)
	if err != nil {
		return nil, err
	}
	for _, it := range items {
		s, err := b.load(ctx, it.name)
		if errors.Is(err, fs.ErrNotExist) {
			continue // delivered meanwhile by another instance
		}
		if err != nil {
			return nil, fmt.Errorf("%s: reading %s: %w", b, it.name, err)
		}
		return s, nil
	}
	return nil, nil
}

func (b *storageBackend) count(ctx context.Context, entry string) (int, error) {
	items, err := b.queued(ctx, entry)
	return len(items), err
}

func (b *storageBackend) update(ctx context.Context, id string, f func(s *Send) (bool, error)) (*Send, error) {
	var out *Send
	err := b.withLock(ctx, path.Join(queueLocks, "send", id), func() error {
		s, name, err := b.find(ctx, id)
		if err != nil {
			return err
		}
		wasQueued := s.State == Queued
		remove, err := f(s)
		if err != nil {
			return err
		}
		out = s
		switch {
		case remove:
			if err := b.st.Delete(ctx, name); err != nil {
				return err
			}
		case wasQueued && s.finished():
			raw, err := json.Marshal(s)
			if err != nil {
				return err
			}
			if err := b.st.Store(ctx, b.finishedName(id), raw); err != nil {
				return err
			}
			if err := b.st.Delete(ctx, name); err != nil {
				return err
			}
		default:
			raw, err := json.Marshal(s)
			if err != nil {
				return err
			}
			return b.st.Store(ctx, name, raw)
		}
		if wasQueued && s.File != nil {
			_ = b.st.Delete(ctx, b.fileName(id))
		}
		return nil
	})
	if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrDelivered) && !errors.Is(err, ErrInFlight) {
		return nil, fmt.Errorf("%s: changing %s: %w", b, id, err)
	}
	return out, err
}

func (b *storageBackend) openFile(ctx context.Context, id string) (io.ReadCloser, error) {
	data, err := b.st.Load(ctx, b.fileName(id))
	if err != nil {
		return nil, fmt.Errorf("%s: the file of queued send %s: %w", b, id, err)
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}

func (b *storageBackend) entries(ctx context.Context) ([]string, error) {
	names, err := b.st.List(ctx, queuePrefix, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: listing queues: %w", b, err)
	}
	var out []string
	for _, name := range names {
		if e := path.Base(name); safeName(e) {
			out = append(out, e)
		}
	}
	return out, nil
}

// lease is who delivers a key's sends, and until when.
type lease struct {
	Owner string    `json:"owner"`
	Until time.Time `json:"until"`
}

func (b *storageBackend) leaseName(entry string) string { return path.Join(leasePrefix, entry+".json") }

// changeLease runs f on the key's lease (nil: none) under the storage's
// lock of it; f returns the lease to store, or nil to leave it, and
// whether to delete it.
func (b *storageBackend) changeLease(ctx context.Context, entry string, f func(l *lease) (next *lease, drop bool)) error {
	return b.withLock(ctx, path.Join(queueLocks, entry, "lease"), func() error {
		var cur *lease
		raw, err := b.st.Load(ctx, b.leaseName(entry))
		switch {
		case err == nil:
			cur = new(lease)
			if json.Unmarshal(raw, cur) != nil {
				cur = nil // unreadable: as good as run out
			}
		case !errors.Is(err, fs.ErrNotExist):
			return err
		}
		next, drop := f(cur)
		switch {
		case drop:
			return b.st.Delete(ctx, b.leaseName(entry))
		case next != nil:
			raw, err := json.Marshal(next)
			if err != nil {
				return err
			}
			return b.st.Store(ctx, b.leaseName(entry), raw)
		}
		return nil
	})
}

func (b *storageBackend) tryLock(ctx context.Context, entry string) (func(), bool, error) {
	got := false
	err := b.changeLease(ctx, entry, func(l *lease) (*lease, bool) {
		now := b.now()
		if l != nil && l.Owner != b.instance && now.Before(l.Until) {
			return nil, false
		}
		got = true
		return &lease{Owner: b.instance, Until: now.Add(leaseTTL)}, false
	})
	if err != nil || !got {
		return nil, false, err
	}
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(leaseRenew)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			rctx, cancel := context.WithTimeout(context.Background(), leaseRenew)
			_ = b.changeLease(rctx, entry, func(l *lease) (*lease, bool) {
				if l == nil || l.Owner != b.instance {
					return nil, false // lost: the deliverer finds out at its next change
				}
				return &lease{Owner: b.instance, Until: b.now().Add(leaseTTL)}, false
			})
			cancel()
		}
	}()
	unlock := func() {
		close(stop)
		<-stopped
		uctx, cancel := context.WithTimeout(context.Background(), leaseRenew)
		defer cancel()
		_ = b.changeLease(uctx, entry, func(l *lease) (*lease, bool) {
			return nil, l != nil && l.Owner == b.instance
		})
	}
	return unlock, true, nil
}

func (b *storageBackend) stats(ctx context.Context) (QueueStats, error) {
	var st QueueStats
	entries, err := b.entries(ctx)
	if err != nil {
		return st, err
	}
	for _, e := range entries {
		items, err := b.queued(ctx, e)
		if err != nil {
			return st, err
		}
		st.Count += len(items)
		for _, it := range items {
			st.Bytes += it.size
		}
		if len(items) > 0 {
			if ns, err := strconv.ParseInt(items[0].rest[:16], 16, 64); err == nil {
				if t := time.Unix(0, ns); st.Oldest.IsZero() || t.Before(st.Oldest) {
					st.Oldest = t
				}
			}
		}
	}
	return st, nil
}

func (b *storageBackend) pruneFinished(ctx context.Context, before time.Time) (int, error) {
	return b.pruneItems(ctx, finishedPrefix, "finished sends", before)
}
