package zulipproxy

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
)

// Configs that use one store share it; the last to let go closes it.
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
	if err := releasePooledStore(key); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s1.Closed():
		t.Fatal("the store closed while still in use")
	default:
	}
	if err := releasePooledStore(key); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s1.Closed():
	case <-time.After(5 * time.Second):
		t.Fatal("the last release did not close the store")
	}
}
