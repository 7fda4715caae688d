package outbox

import (
	"context"
	"encoding/json"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/caddyserver/certmagic"
)

// backends opens each backend twice over the same place where the
// backend can be shared, as two instances would: the bbolt file once
// (one process holds it), Caddy's file storage twice.
func backends(t *testing.T) map[string][2]*Outbox {
	t.Helper()
	ob := OpenFile(filepath.Join(t.TempDir(), "clients.outbox.db"))
	t.Cleanup(func() { ob.Close() })
	dir := t.TempDir()
	return map[string][2]*Outbox{
		"bbolt":   {ob, ob},
		"storage": {OpenStorage(&certmagic.FileStorage{Path: dir}), OpenStorage(&certmagic.FileStorage{Path: dir})},
	}
}

func TestClaimPutDelete(t *testing.T) {
	ctx := context.Background()
	for name, pair := range backends(t) {
		t.Run(name, func(t *testing.T) {
			one, two := pair[0], pair[1]
			id := ID("abc123", "order-17")
			now := time.Now().UTC().Truncate(time.Second)
			first := Record{State: InProgress, Request: "POST send_message topic=x", Started: now, Lease: now.Add(time.Minute), Updated: now}
			if existing, claimed, err := one.Claim(ctx, id, first); err != nil || !claimed || existing != nil {
				t.Fatalf("first claim: %v %v %v", existing, claimed, err)
			}
			existing, claimed, err := two.Claim(ctx, id, Record{State: InProgress, Started: now.Add(time.Second)})
			if err != nil || claimed || existing == nil || existing.State != InProgress || existing.Request != first.Request || !existing.Started.Equal(now) {
				t.Fatalf("second claim: %+v %v %v", existing, claimed, err)
			}
			done := first
			done.State, done.Status, done.ContentType, done.Answer = Done, 200, "application/json", []byte(`{"result":"success","id":42}`)
			if err := one.Put(ctx, id, done); err != nil {
				t.Fatal(err)
			}
			existing, _, err = two.Claim(ctx, id, first)
			if err != nil || existing.State != Done || string(existing.Answer) != `{"result":"success","id":42}` {
				t.Fatalf("after put: %+v %v", existing, err)
			}
			if err := two.Delete(ctx, id); err != nil {
				t.Fatal(err)
			}
			if _, claimed, err := one.Claim(ctx, id, first); err != nil || !claimed {
				t.Fatalf("after delete: %v %v", claimed, err)
			}
			// Another key entry's record is another record.
			if _, claimed, err := one.Claim(ctx, ID("def456", "order-17"), first); err != nil || !claimed {
				t.Errorf("the same Idempotency-Key of another entry: %v %v", claimed, err)
			}
		})
	}
}

// Of many requests with one key at once, on both instances, one claims.
func TestClaimIsAtomic(t *testing.T) {
	ctx := context.Background()
	for name, pair := range backends(t) {
		t.Run(name, func(t *testing.T) {
			id := ID("abc123", "at-once")
			var claims atomic.Int32
			var wg sync.WaitGroup
			for i := range 16 {
				wg.Go(func() {
					_, claimed, err := pair[i%2].Claim(ctx, id, Record{State: InProgress, Updated: time.Now()})
					if err != nil {
						t.Error(err)
					}
					if claimed {
						claims.Add(1)
					}
				})
			}
			wg.Wait()
			if n := claims.Load(); n != 1 {
				t.Errorf("%d claims, want 1", n)
			}
		})
	}
}

func TestPrune(t *testing.T) {
	ctx := context.Background()
	for name, pair := range backends(t) {
		t.Run(name, func(t *testing.T) {
			o := pair[0]
			old, fresh := ID("abc123", "old"), ID("abc123", "fresh")
			for id, updated := range map[string]time.Time{old: time.Now().Add(-25 * time.Hour), fresh: time.Now()} {
				if _, _, err := o.Claim(ctx, id, Record{State: InProgress, Updated: updated}); err != nil {
					t.Fatal(err)
				}
				if err := o.Put(ctx, id, Record{State: Done, Updated: updated}); err != nil {
					t.Fatal(err)
				}
			}
			if bb, ok := o.b.(*boltBackend); ok {
				bb.flush() // the outcomes on disk now
			}
			// Caddy's storage knows an item's age by when it was written.
			before := time.Now().Add(-24 * time.Hour)
			if name == "storage" {
				before = time.Now().Add(time.Hour)
			}
			n, err := o.Prune(ctx, before)
			if err != nil || n < 1 {
				t.Fatalf("pruned %d: %v", n, err)
			}
			if _, claimed, _ := o.Claim(ctx, old, Record{}); !claimed {
				t.Error("a record past the window was kept")
			}
			if name == "bbolt" {
				if _, claimed, _ := o.Claim(ctx, fresh, Record{}); claimed {
					t.Error("a record within the window was pruned")
				}
			}
		})
	}
}

// The bbolt file's records outlive the process: after a reopen, a write
// that ended is found again, a replaced record is the last one written
// (and the log holds it once), a removed one is gone, and a database
// written before the log (records under their ids) is read too.
func TestBoltRecordsAfterReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "clients.outbox.db")
	now := time.Now().UTC().Truncate(time.Second)
	done := func(answer string) Record {
		return Record{State: Done, Request: "POST send_message", Status: 200, Answer: []byte(answer), Updated: now}
	}
	kept, replaced, removed, v1 := ID("e1", "kept"), ID("e1", "replaced"), ID("e1", "removed"), ID("e2", "from-v1")

	ob := OpenFile(path)
	for _, id := range []string{kept, replaced, removed} {
		if _, _, err := ob.Claim(ctx, id, Record{State: InProgress, Updated: now}); err != nil {
			t.Fatal(err)
		}
		if err := ob.Put(ctx, id, done(`"first"`)); err != nil {
			t.Fatal(err)
		}
	}
	ob.b.(*boltBackend).flush()
	if err := ob.Put(ctx, replaced, done(`"second"`)); err != nil {
		t.Fatal(err)
	}
	if err := ob.Delete(ctx, removed); err != nil {
		t.Fatal(err)
	}
	if err := ob.Close(); err != nil {
		t.Fatal(err)
	}

	// A record of the old layout, as a database from before the log has.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(done(`"v1"`))
	if err := db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(bucketIdempotencyV1)
		if err != nil {
			return err
		}
		return bk.Put([]byte(v1), raw)
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()

	ob = OpenFile(path)
	defer ob.Close()
	for id, want := range map[string]string{kept: `"first"`, replaced: `"second"`, v1: `"v1"`} {
		existing, claimed, err := ob.Claim(ctx, id, Record{State: InProgress})
		if err != nil || claimed || existing == nil || string(existing.Answer) != want {
			t.Errorf("%s after reopen: %+v claimed=%v %v; want the answer %s", id, existing, claimed, err, want)
		}
	}
	if _, claimed, err := ob.Claim(ctx, removed, Record{State: InProgress}); err != nil || !claimed {
		t.Errorf("a removed record came back: claimed=%v %v", claimed, err)
	}
	bb := ob.b.(*boltBackend)
	if err := bb.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketIdempotencyV1) != nil {
			t.Error("the old bucket is still there")
		}
		if n := tx.Bucket(bucketRecords).Stats().KeyN; n != 3 {
			t.Errorf("the log holds %d entries, want 3 (kept, replaced once, v1)", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
