package zulipproxy

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"

	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
)

// Configs that use one store share it; the last to let go closes it, and
// the next to ask opens it anew.
func TestStorePool(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	opens := 0
	open := func() (*keystore.Store, error) {
		opens++
		s, err := keystore.OpenFile(path, keystore.Options{})
		if err == nil {
			s.Start()
		}
		return s, err
	}
	key := "file:" + path
	s1, err := loadPooledStore(key, open)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := loadPooledStore(key, open)
	if err != nil {
		t.Fatal(err)
	}
	if s1 != s2 || opens != 1 {
		t.Fatalf("two loads gave different stores (%d opens)", opens)
	}
	for range 2 {
		if err := releasePooledStore(key); err != nil {
			t.Fatal(err)
		}
	}
	s3, err := loadPooledStore(key, open)
	if err != nil {
		t.Fatal(err)
	}
	defer releasePooledStore(key)
	if s3 == s1 || opens != 2 {
		t.Errorf("after the last release, the store was not opened anew (%d opens)", opens)
	}
}

func init() {
	caddy.RegisterModule(plainStorage{})
}

// plainStorage is a Caddy storage module whose storage has no String
// method, as many third-party ones have none: the file system, behind a
// value whose address changes with each config load.
type plainStorage struct {
	Root string `json:"root,omitempty"`
	fs   *certmagic.FileStorage
}

func (plainStorage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "caddy.storage.zwop_test_plain", New: func() caddy.Module { return new(plainStorage) }}
}

func (p *plainStorage) CertMagicStorage() (certmagic.Storage, error) {
	return &plainStorage{Root: p.Root, fs: &certmagic.FileStorage{Path: p.Root}}, nil
}

func (p *plainStorage) Lock(ctx context.Context, name string) error   { return p.fs.Lock(ctx, name) }
func (p *plainStorage) Unlock(ctx context.Context, name string) error { return p.fs.Unlock(ctx, name) }
func (p *plainStorage) Store(ctx context.Context, key string, value []byte) error {
	return p.fs.Store(ctx, key, value)
}
func (p *plainStorage) Load(ctx context.Context, key string) ([]byte, error) {
	return p.fs.Load(ctx, key)
}
func (p *plainStorage) Delete(ctx context.Context, key string) error { return p.fs.Delete(ctx, key) }
func (p *plainStorage) Exists(ctx context.Context, key string) bool  { return p.fs.Exists(ctx, key) }
func (p *plainStorage) List(ctx context.Context, path string, recursive bool) ([]string, error) {
	return p.fs.List(ctx, path, recursive)
}
func (p *plainStorage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	return p.fs.Stat(ctx, key)
}

// provisionWith provisions a handler (its store in Caddy's storage unless
// cfg names a file) with storage, as one config load does.
func provisionWith(t *testing.T, storage map[string]string, cfg string) *Handler {
	t.Helper()
	raw, _ := json.Marshal(storage)
	ctx, err := caddy.ProvisionContext(&caddy.Config{StorageRaw: raw})
	if err != nil {
		t.Fatal(err)
	}
	h := new(Handler)
	if err := json.Unmarshal([]byte(cfg), h); err != nil {
		t.Fatal(err)
	}
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Cleanup() })
	return h
}

const oneBot = `"bots": {"default": {"site": "https://chat.example.org", "email": "bot@example.org", "api_key": "k"}}`

// A reload with the same storage keeps the store and every key's rate
// bucket, also for a storage module without a String method (its name
// was its address before: every reload reopened the store and reset the
// buckets).
func TestStorageIdentityIsStable(t *testing.T) {
	storage := map[string]string{"module": "zwop_test_plain", "root": t.TempDir()}
	first := provisionWith(t, storage, `{`+oneBot+`}`)
	reload := provisionWith(t, storage, `{`+oneBot+`, "max_upload": 1000}`)
	if first.store != reload.store {
		t.Error("a reload with the same storage opened the key store anew")
	}
	if first.limits.buckets != reload.limits.buckets {
		t.Error("a reload with the same storage reset the keys' rate buckets")
	}
	other := provisionWith(t, map[string]string{"module": "zwop_test_plain", "root": t.TempDir()}, `{`+oneBot+`}`)
	if other.store == first.store {
		t.Error("another storage found the same store")
	}
}

// Two zulip_proxy handlers with their own stores in one config: the keys
// of both are reported, each under its store's name.
func TestKeysMetricsForEveryStore(t *testing.T) {
	storage := map[string]string{"module": "file_system", "root": t.TempDir()}
	raw, _ := json.Marshal(storage)
	ctx, err := caddy.ProvisionContext(&caddy.Config{StorageRaw: raw})
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for i, n := range []int{1, 2} {
		path := filepath.Join(t.TempDir(), "clients.json")
		paths = append(paths, path)
		h := new(Handler)
		if err := json.Unmarshal([]byte(`{`+oneBot+`, "store": "`+path+`"}`), h); err != nil {
			t.Fatal(err)
		}
		if err := h.Provision(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Cleanup() })
		for range n {
			if _, _, err := h.store.Add(context.Background(), keystore.NewEntry{Stream: "s" + string(rune('a'+i))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	families, err := ctx.GetMetricsRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	active := map[string]float64{}
	series := 0
	for _, f := range families {
		if f.GetName() != "caddy_zulip_proxy_keys" {
			continue
		}
		for _, m := range f.GetMetric() {
			series++
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["state"] == "active" {
				active[labels["store"]] = m.GetGauge().GetValue()
			}
		}
	}
	if series != 8 || active[paths[0]] != 1 || active[paths[1]] != 2 {
		t.Errorf("%d series, active keys by store %v; want 4 states for each of 2 stores, 1 and 2 active", series, active)
	}
}
