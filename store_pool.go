package zulipproxy

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
)

// storePool shares one open store between the configs that use it, so a
// reload keeps the loaded index and its watcher instead of opening the
// store again. It is the package's only state, as Caddy intends.
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
