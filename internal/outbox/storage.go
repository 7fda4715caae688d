package outbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
)

// Records in Caddy's storage: one item each, changed under the storage's
// lock of the record, so that instances sharing the storage see each
// other's claims.

const storagePrefix = "zulip_proxy/idempotency"

type storageBackend struct {
	st certmagic.Storage
	// instance names this process's hold on the leases of keys' queues.
	instance string
	// now is the leases' clock; tests set it.
	now func() time.Time
}

// OpenStorage keeps the outbox in Caddy's storage.
func OpenStorage(st certmagic.Storage) *Outbox {
	var id [8]byte
	_, _ = rand.Read(id[:])
	b := &storageBackend{st: st, instance: hex.EncodeToString(id[:]), now: time.Now}
	return &Outbox{b: b, q: b}
}

func (b *storageBackend) String() string { return "outbox in Caddy's storage" }

func (b *storageBackend) key(id string) string { return path.Join(storagePrefix, id+".json") }

// locked runs f holding the storage's lock of record id.
func (b *storageBackend) locked(ctx context.Context, id string, f func() error) error {
	name := path.Join(storagePrefix, id)
	if err := b.st.Lock(ctx, name); err != nil {
		return fmt.Errorf("%s: locking %s: %w", b, id, err)
	}
	defer b.st.Unlock(context.WithoutCancel(ctx), name)
	return f()
}

func (b *storageBackend) take(ctx context.Context, id string, decide func(*Record) *Record) (*Record, bool, error) {
	var existing *Record
	stored := false
	err := b.locked(ctx, id, func() error {
		v, err := b.st.Load(ctx, b.key(id))
		switch {
		case err == nil:
			existing = new(Record)
			if err := json.Unmarshal(v, existing); err != nil {
				return err
			}
		case !errors.Is(err, fs.ErrNotExist):
			return err
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
		return b.st.Store(ctx, b.key(id), raw)
	})
	if err != nil {
		return nil, false, fmt.Errorf("%s: claiming %s: %w", b, id, err)
	}
	return existing, stored, nil
}

// put and remove change a record its claim made: only its claimer
// does, so no lock is needed, and a storage's Store replaces an item
// whole (file_system's writes a new file and renames it).
// outcomeTimeout bounds keeping an outcome, which a request's end waits
// for; the client's going away does not cancel it.
const outcomeTimeout = 30 * time.Second

func (b *storageBackend) put(ctx context.Context, id string, rec Record) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), outcomeTimeout)
	defer cancel()
	raw, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := b.st.Store(ctx, b.key(id), raw); err != nil {
		return fmt.Errorf("%s: writing %s: %w", b, id, err)
	}
	return nil
}

func (b *storageBackend) remove(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), outcomeTimeout)
	defer cancel()
	if err := b.st.Delete(ctx, b.key(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: deleting %s: %w", b, id, err)
	}
	return nil
}

func (b *storageBackend) prune(ctx context.Context, before time.Time) (int, error) {
	return b.pruneItems(ctx, storagePrefix, "records", before)
}

// pruneItems deletes the JSON items under prefix last written before
// before; what holds them is named in an error.
func (b *storageBackend) pruneItems(ctx context.Context, prefix, what string, before time.Time) (int, error) {
	names, err := b.st.List(ctx, prefix, true)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("%s: listing %s: %w", b, what, err)
	}
	n := 0
	for _, name := range names {
		if !strings.HasSuffix(name, ".json") {
			continue
		}
		info, err := b.st.Stat(ctx, name)
		if err != nil || !info.IsTerminal || !info.Modified.Before(before) {
			continue
		}
		if err := b.st.Delete(ctx, name); err == nil {
			n++
		}
	}
	return n, nil
}

func (b *storageBackend) close() error { return nil }
