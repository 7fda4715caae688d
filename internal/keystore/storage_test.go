package keystore

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/filestorage" // the storage a test config names
	"github.com/caddyserver/certmagic"
)

// fileStorage is the storage a Caddy config with a file_system storage
// at root would give the module.
func fileStorage(t *testing.T, root string) certmagic.Storage {
	t.Helper()
	raw, _ := json.Marshal(map[string]string{"module": "file_system", "root": root})
	ctx, err := caddy.ProvisionContext(&caddy.Config{StorageRaw: raw})
	if err != nil {
		t.Fatal(err)
	}
	return ctx.Storage()
}

func mustOpenStorage(t *testing.T, st certmagic.Storage, opt Options) *Store {
	t.Helper()
	s, err := OpenStorage(st, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Two instances sharing a storage, each with its own storage value as
// separate Caddy processes would have: one's keys and revocations reach
// the other, and a fresh open reads them all.
func TestStorageStoreRoundTrip(t *testing.T) {
	root := t.TempDir()
	file := filepath.Join(root, "zulip_proxy", "clients.json")
	var is issued
	a := mustOpenStorage(t, fileStorage(t, root), Options{PollInterval: 20 * time.Millisecond})
	a.Start()
	b := mustOpenStorage(t, fileStorage(t, root), Options{})

	k1, e1 := mustAdd(t, b, NewEntry{Stream: "general", ProposalNo: 7, Name: "p7"}, &is)
	k2, e2 := mustAdd(t, b, NewEntry{Admin: true, Name: "ops"}, &is)
	waitFor(t, 5*time.Second, "keys seen by the other instance", func() bool { return a.Len() == 2 })
	if got, ok := a.Lookup(k1); !ok || got.Stream != "general" || got.ProposalNo != 7 {
		t.Errorf("scoped key: %+v", got)
	}
	if got, ok := a.Lookup(k2); !ok || !got.Admin {
		t.Errorf("admin key: %+v", got)
	}
	if l := a.List(); len(l) != 2 || l[0].ID != e1.ID || l[1].ID != e2.ID {
		t.Errorf("list order: %+v", l)
	}

	if _, err := b.Revoke(ctxT(t), e1.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "revocation seen by the other instance", func() bool {
		got, _ := a.Lookup(k1)
		return errors.Is(got.Usable(time.Now()), ErrKeyRevoked)
	})

	c := mustOpenStorage(t, fileStorage(t, root), Options{})
	if c.Len() != 2 {
		t.Fatalf("%d entries on reopening, want 2", c.Len())
	}
	if got, _ := c.Lookup(k1); got == nil || got.RevokedAt == nil {
		t.Errorf("revocation lost: %+v", got)
	}
	is.assertNoKeyIn(t, file)
}

// Writers sharing one storage value in one instance (requests at once)
// all land, and another instance watching the storage sees every key.
func TestStorageStoreConcurrentAdds(t *testing.T) {
	root := t.TempDir()
	st := fileStorage(t, root)
	a := mustOpenStorage(t, st, Options{PollInterval: 20 * time.Millisecond})
	a.Start()
	b := mustOpenStorage(t, st, Options{})

	var is issued
	addConcurrently(t, 50, &is, b)
	waitFor(t, 5*time.Second, "the other instance sees all keys", func() bool { return a.Len() == 50 })
	is.assertServes(t, a)
	is.assertNoKeyIn(t, filepath.Join(root, "zulip_proxy", "clients.json"))
}

// Two instances with their own storage values, as two Caddy processes
// sharing storage would have, adding at once: the storage lock keeps
// either from writing over the other's keys.
func TestStorageStoreConcurrentInstances(t *testing.T) {
	root := t.TempDir()
	a := mustOpenStorage(t, fileStorage(t, root), Options{})
	b := mustOpenStorage(t, fileStorage(t, root), Options{})
	var is issued
	addConcurrently(t, 6, &is, a, b)
	c := mustOpenStorage(t, fileStorage(t, root), Options{})
	is.assertServes(t, c)
	is.assertNoKeyIn(t, filepath.Join(root, "zulip_proxy", "clients.json"))
	// Neither instance's audit records are lost either.
	if recs, _ := c.Audit(AuditQuery{}); len(recs) != 12 || recs[0].Seq != 12 || recs[11].Seq != 1 {
		t.Fatalf("%d audit records, want 12 numbered 12 to 1", len(recs))
	}
}

// A corrupt document in storage is refused by an open and by a write, and
// left as it was.
func TestStorageStoreRefusesCorruptDocument(t *testing.T) {
	root := t.TempDir()
	file := filepath.Join(root, "zulip_proxy", "clients.json")
	st := fileStorage(t, root)
	s := mustOpenStorage(t, st, Options{})
	k, e := mustAdd(t, s, NewEntry{Stream: "a"}, nil)
	const broken = `{"version":1,"clients":[`
	if err := st.Store(ctxT(t), storageKey, []byte(broken)); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenStorage(fileStorage(t, root), Options{}); !errors.Is(err, ErrCorruptStore) {
		t.Errorf("open: %v, want ErrCorruptStore", err)
	}
	if _, err := s.Revoke(ctxT(t), e.ID); !errors.Is(err, ErrCorruptStore) {
		t.Errorf("revoke: %v, want ErrCorruptStore", err)
	}
	if raw, _ := os.ReadFile(file); string(raw) != broken {
		t.Errorf("the corrupt document was written over: %q", raw)
	}
	if _, ok := s.Lookup(k); !ok || !errors.Is(s.Healthy(), ErrCorruptStore) {
		t.Errorf("lookup %v, Healthy %v", ok, s.Healthy())
	}
}

// After a reload the pooled store must write where the new config's
// storage points, not through the old value.
func TestStorageStoreSetStorage(t *testing.T) {
	oldRoot, newRoot := t.TempDir(), t.TempDir()
	var is issued
	s := mustOpenStorage(t, fileStorage(t, oldRoot), Options{})
	k1, _ := mustAdd(t, s, NewEntry{Stream: "a"}, &is)
	oldDoc, _ := os.ReadFile(filepath.Join(oldRoot, "zulip_proxy", "clients.json"))

	s.SetStorage(nil) // ignored: a config without storage keeps the old one
	s.SetStorage(fileStorage(t, newRoot))
	var isNew issued
	k2, _ := mustAdd(t, s, NewEntry{Stream: "b"}, &isNew)

	if after, _ := os.ReadFile(filepath.Join(oldRoot, "zulip_proxy", "clients.json")); string(after) != string(oldDoc) {
		t.Error("written through the old storage")
	}
	n := mustOpenStorage(t, fileStorage(t, newRoot), Options{})
	if _, ok := n.Lookup(k2); !ok {
		t.Error("the key is not in the new storage")
	}
	// The store is what its storage holds: the old storage's key stays
	// there (Provision pools stores by storage, so this is a new value of
	// the same storage in practice, never another one).
	if _, ok := n.Lookup(k1); ok || n.Len() != 1 {
		t.Errorf("the new storage has %d entries, want only the new key", n.Len())
	}
	is.assertNoKeyIn(t, filepath.Join(oldRoot, "zulip_proxy", "clients.json"))
	isNew.assertNoKeyIn(t, filepath.Join(newRoot, "zulip_proxy", "clients.json"))

	// A reload hands over a new value of the same storage (how Provision
	// pools stores): writes go on into the same document.
	s.SetStorage(fileStorage(t, newRoot))
	k3, _ := mustAdd(t, s, NewEntry{Stream: "c"}, &isNew)
	if err := n.Reload(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{k2, k3} {
		if _, ok := n.Lookup(k); !ok {
			t.Error("a key added through a new value of the storage is missing")
		}
	}

	// A file store has no storage to replace.
	f := mustOpen(t, filepath.Join(t.TempDir(), "clients.json"), Options{})
	f.SetStorage(fileStorage(t, newRoot))
	if _, ok := f.b.(*fileBackend); !ok {
		t.Error("a file store changed backend")
	}
}
