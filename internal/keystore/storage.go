package keystore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
)

// Keys of the store in Caddy's storage.
const (
	storageKey     = "zulip_proxy/clients.json"
	storageLockKey = "zulip_proxy/clients"
)

// storageBackend keeps the store in Caddy's configured storage, so Caddy
// instances that share storage share keys.
type storageBackend struct {
	st atomic.Pointer[storageRef]
}

type storageRef struct{ certmagic.Storage }

// OpenStorage opens the store kept in a Caddy storage.
func OpenStorage(st certmagic.Storage, opt Options) (*Store, error) {
	b := &storageBackend{}
	b.st.Store(&storageRef{st})
	return openStore(b, opt)
}

// SetStorage points a storage store at a new storage value: after a config
// reload, the old config's storage may be cleaned up while the pooled store
// lives on. File stores ignore it.
func (s *Store) SetStorage(st certmagic.Storage) {
	b, ok := s.b.(*storageBackend)
	if !ok || st == nil {
		return
	}
	old := b.st.Swap(&storageRef{st})
	// Another place holds another document: not finding one there is a
	// first run, not a loss.
	if fmt.Sprint(old.Storage) != fmt.Sprint(st) {
		s.held.Store(false)
	}
}

func (b *storageBackend) storage() certmagic.Storage { return b.st.Load().Storage }

func (b *storageBackend) String() string {
	return fmt.Sprintf("storage %v key %s", b.storage(), storageKey)
}

func (b *storageBackend) read(ctx context.Context) ([]byte, error) {
	return b.storage().Load(ctx, storageKey)
}

func (b *storageBackend) stamp(ctx context.Context) (string, error) {
	ki, err := b.storage().Stat(ctx, storageKey)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	st := strconv.FormatInt(ki.Modified.UnixNano(), 10) + "/" + strconv.FormatInt(ki.Size, 10)
	// Some storages keep modification times in whole seconds, so two
	// writes of the same size within one look alike. While the document
	// is that fresh, its content tells them apart.
	if time.Since(ki.Modified) < recentWrite {
		raw, err := b.storage().Load(ctx, storageKey)
		if err != nil {
			return "", err
		}
		sum := sha256.Sum256(raw)
		st += "/" + hex.EncodeToString(sum[:8])
	}
	return st, nil
}

// recentWrite is how long after a write the storage stamp also hashes
// the content: more than the coarsest modification time resolution.
const recentWrite = 3 * time.Second

func (b *storageBackend) lock(ctx context.Context) (func(), error) {
	st := b.storage()
	if err := st.Lock(ctx, storageLockKey); err != nil {
		return nil, err
	}
	return func() { _ = st.Unlock(context.WithoutCancel(ctx), storageLockKey) }, nil
}

func (b *storageBackend) write(ctx context.Context, data []byte) error {
	return b.storage().Store(ctx, storageKey, data)
}

// wroteBefore: a storage shows nothing of a document it no longer has.
func (b *storageBackend) wroteBefore() string { return "" }
