package zulipproxy

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
	"github.com/zwop/caddy-zulip-proxy/internal/outbox"
	"go.uber.org/zap"
)

// storePool shares one open store between the configs that use it, so a
// reload keeps the loaded index and its watcher instead of opening the
// store again. It is one of the package's usage pools (with botPool and
// limiterPool): state that outlives a config, as Caddy intends.
var storePool = caddy.NewUsagePool()

type pooledStore struct{ *keystore.Store }

func (p pooledStore) Destruct() error { return p.Close() }

// loadPooledStore returns the store for key, opening it on first use.
func loadPooledStore(key string, open func() (*keystore.Store, error)) (*keystore.Store, error) {
	v, _, err := storePool.LoadOrNew(key, func() (caddy.Destructor, error) {
		s, err := open()
		if err != nil {
			return nil, err
		}
		return pooledStore{s}, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(pooledStore).Store, nil
}

// releasePooledStore drops one use; the last one closes the store.
func releasePooledStore(key string) error {
	_, err := storePool.Delete(key)
	return err
}

// openStore takes the store from the package pool, so that a config reload
// keeps the already-loaded index and its watcher instead of reading the
// store again.
// path is the store's file; "" for the document in Caddy's storage. key
// is the store's entry in the pool, for Cleanup; "" when none was taken.
// label names the store in metrics.
func openStore(ctx caddy.Context, path string, readOnly bool, logger *zap.Logger) (s *keystore.Store, key, label string, err error) {
	opt := keystore.Options{Logger: logger.Named("store"), ReadOnly: readOnly, OnFailure: func(kind string) {
		metrics.storeErrors.WithLabelValues(kind).Inc()
	}}
	// A store opened read-only is another store in the pool: it never
	// writes.
	ro := ""
	if readOnly {
		ro = ":read-only"
	}
	if path != "" {
		abs, err := filepath.Abs(path)
		if err != nil {
			return nil, "", "", fmt.Errorf("store %s: %w", path, err)
		}
		// Revocation cannot wait for the first write to find that the
		// store cannot be written.
		if !readOnly {
			if err := keystore.CheckWritable(abs); err != nil {
				return nil, "", "", fmt.Errorf("key store %s cannot be written: %w; fix that, or add store_read_only if keys are managed elsewhere", abs, err)
			}
		}
		key = "file:" + abs + ro
		s, err := loadPooledStore(key, func() (*keystore.Store, error) {
			return startStore(keystore.OpenFile(abs, opt))
		})
		if err != nil {
			return nil, "", "", fmt.Errorf("opening key store: %w", err)
		}
		return s, key, abs, nil
	}
	st := ctx.Storage()
	if !readOnly {
		if err := checkStorageWritable(ctx, st); err != nil {
			return nil, "", "", fmt.Errorf("key store in caddy storage (%s) cannot be written: %w; fix that, or add store_read_only if keys are managed elsewhere", storageIdentity(st), err)
		}
	}
	key = "storage:" + storageIdentity(st) + ro
	s, err = loadPooledStore(key, func() (*keystore.Store, error) {
		return startStore(keystore.OpenStorage(st, opt))
	})
	if err != nil {
		return nil, "", "", fmt.Errorf("opening key store in caddy storage: %w", err)
	}
	s.SetStorage(st)
	return s, key, "storage", nil
}

// checkStorageWritable writes and deletes an item where the store lives.
func checkStorageWritable(ctx context.Context, st certmagic.Storage) error {
	item := "zulip_proxy/write-check/" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := st.Store(ctx, item, []byte("ok")); err != nil {
		return err
	}
	return st.Delete(ctx, item)
}

// startStore starts the watcher of a store the server opened, so changes
// made by the CLI or another instance reach this one.
func startStore(s *keystore.Store, err error) (*keystore.Store, error) {
	if err != nil {
		return nil, err
	}
	s.Start()
	return s, nil
}

// storageIdentity names a Caddy storage by its configuration, so that a
// reload with the same storage finds the same store and rate-limit
// buckets in the pools. Its String, where it has one (file_system's is
// its path); else its exported settings, which a storage module's JSON
// config fills, and not its address, which a reload changes.
func storageIdentity(st certmagic.Storage) string {
	if s, ok := st.(fmt.Stringer); ok {
		return s.String()
	}
	if raw, err := json.Marshal(st); err == nil {
		return fmt.Sprintf("%T%s", st, raw)
	}
	return fmt.Sprintf("%T", st)
}

// outboxPool shares a store's outbox between the configs that use the
// store, as storePool shares the store.
var outboxPool = caddy.NewUsagePool()

func outboxKey(storeKey string) string { return "outbox:" + storeKey }

type pooledOutbox struct {
	*outbox.Outbox
	deliverer *deliverer
	// window is how long records are kept, as the last config set it.
	window atomic.Int64
	stop   chan struct{}
}

func (p *pooledOutbox) Destruct() error {
	close(p.stop)
	p.deliverer.close()
	return p.Close()
}

// openOutbox opens the outbox where the keys are: a bbolt database beside
// a key store file (clients.json: clients.outbox.db), or Caddy's storage;
// records and finished sends older than window are pruned every hour.
func openOutbox(ctx caddy.Context, storePath, storeKey string, window time.Duration, logger *zap.Logger) (*outbox.Outbox, *deliverer, error) {
	v, _, err := outboxPool.LoadOrNew(outboxKey(storeKey), func() (caddy.Destructor, error) {
		var o *outbox.Outbox
		if storePath != "" {
			abs, err := filepath.Abs(storePath)
			if err != nil {
				return nil, err
			}
			o = outbox.OpenFile(strings.TrimSuffix(abs, ".json") + ".outbox.db")
		} else {
			o = outbox.OpenStorage(ctx.Storage())
		}
		p := &pooledOutbox{Outbox: o, deliverer: newDeliverer(o), stop: make(chan struct{})}
		go p.prune(logger.Named("outbox"))
		return p, nil
	})
	if err != nil {
		return nil, nil, err
	}
	p := v.(*pooledOutbox)
	p.window.Store(int64(window))
	return p.Outbox, p.deliverer, nil
}

// prune forgets the records past the window, every hour.
func (p *pooledOutbox) prune(logger *zap.Logger) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		before := time.Now().Add(-time.Duration(p.window.Load()))
		if n, err := p.Prune(ctx, before); err != nil {
			logger.Warn("pruning idempotency records", zap.Error(err))
		} else if n > 0 {
			logger.Debug("idempotency records pruned", zap.Int("records", n))
		}
		if n, err := p.PruneSends(ctx, before); err != nil {
			logger.Warn("pruning finished queued sends", zap.Error(err))
		} else if n > 0 {
			logger.Debug("finished queued sends pruned", zap.Int("sends", n))
		}
		cancel()
	}
}
