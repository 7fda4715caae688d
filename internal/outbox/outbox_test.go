package outbox

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
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
// written before the log (records under their ids) or before CBOR (a
// log of JSON) is read too.
func TestBoltRecordsAfterReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "clients.outbox.db")
	now := time.Now().UTC().Truncate(time.Second)
	done := func(answer string) Record {
		return Record{State: Done, Request: "POST send_message", Status: 200, Answer: []byte(answer), Updated: now}
	}
	kept, replaced, removed, resumed := ID("e1", "kept"), ID("e1", "replaced"), ID("e1", "removed"), ID("e1", "resumed")
	v1, jsonLog := ID("e2", "from-v1"), ID("e2", "from-the-json-log")

	ob := OpenFile(path)
	for _, id := range []string{kept, replaced, removed, resumed} {
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
	// A retry takes a committed record over (as one that resolves an
	// uncertain write does) and ends with another outcome: the commit
	// replaces the record it took.
	if _, stored, err := ob.Take(ctx, resumed, func(e *Record) *Record { return &Record{State: InProgress, Updated: now} }); err != nil || !stored {
		t.Fatalf("taking a committed record over: stored=%v %v", stored, err)
	}
	if err := ob.Put(ctx, resumed, done(`"resumed"`)); err != nil {
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
		if err := bk.Put([]byte(v1), raw); err != nil {
			return err
		}
		// And one of the log as written in JSON, before CBOR.
		bk, err = tx.CreateBucketIfNotExists(bucketLogJSON)
		if err != nil {
			return err
		}
		raw, _ = json.Marshal(done(`"json log"`))
		v := binary.BigEndian.AppendUint64(nil, uint64(now.UnixNano()))
		v = append(append(append(v, jsonLog...), 0), raw...)
		return bk.Put(seqKey(1), v)
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()

	ob = OpenFile(path)
	defer ob.Close()
	for id, want := range map[string]string{kept: `"first"`, replaced: `"second"`, resumed: `"resumed"`, v1: `"v1"`, jsonLog: `"json log"`} {
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
		if tx.Bucket(bucketIdempotencyV1) != nil || tx.Bucket(bucketLogJSON) != nil {
			t.Error("an old bucket is still there")
		}
		if n := tx.Bucket(bucketRecords).Stats().KeyN; n != 5 {
			t.Errorf("the log holds %d entries, want 5 (kept, replaced once, resumed once, v1, the JSON log's)", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkBoltCommit is the CPU of one commit of the bbolt outbox
// (user and system: the fdatasyncs count) with 1, 100 and 1,000 outcomes
// waiting, on a log of 20,000 records: what a commit costs whatever it
// holds, and what each outcome adds. It is why commits are flushEvery
// apart under load.
func BenchmarkBoltCommit(b *testing.B) {
	ctx := context.Background()
	now := time.Now().UTC()
	answer := []byte(`{"result":"success","msg":"","id":123456}`)
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprint("outcomes=", n), func(b *testing.B) {
			ob := OpenFile(filepath.Join(b.TempDir(), "clients.outbox.db"))
			defer ob.Close()
			bb := ob.b.(*boltBackend)
			seq := 0
			wait := func(n int) {
				for range n {
					seq++
					_ = bb.put(ctx, ID("k_bench", strconv.Itoa(seq)), Record{State: Done, Request: "POST send_message ?topic=bench",
						Body: strings.Repeat("ab", 32), Started: now, Updated: now, Status: 200, ContentType: "application/json", Answer: answer})
				}
			}
			for range 20 {
				wait(1000)
				bb.flush()
			}
			var cpu time.Duration
			for b.Loop() {
				b.StopTimer()
				wait(n)
				b.StartTimer()
				c := cpuTime()
				bb.flush()
				cpu += cpuTime() - c
			}
			b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/commit")
			b.ReportMetric(float64(cpu)/float64(b.N)/float64(n), "cpu-ns/outcome")
		})
	}
}

// cpuTime is the process's user and system CPU so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Every field of a record comes back from the file as it was kept, to the
// nanosecond: a replay is the first answer byte for byte, and a resumed
// write looks for the first from when it began.
func TestBoltRecordKeepsEveryField(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "clients.outbox.db")
	now := time.Now().UTC()
	want := []Record{
		{State: Done, Request: "POST send_message ?topic=%C3%A9t%C3%A9", Body: strings.Repeat("0f", 32),
			Started: now.Add(-time.Second), Status: 200, ContentType: "application/json; charset=utf-8",
			Answer: []byte(`{"result":"success","msg":"","id":42}`), Updated: now},
		{State: Uncertain, Request: "POST upload_file ?", Started: now.Add(-time.Minute), Updated: now.Add(time.Millisecond)},
		{State: InProgress, Request: "PATCH update_message 7?", Started: now, Lease: now.Add(5 * time.Minute), Updated: now},
		{State: Done, Status: 400, Answer: []byte{}, Updated: now},
	}
	ob := OpenFile(path)
	for i, rec := range want {
		if err := ob.Put(ctx, ID("e", strconv.Itoa(i)), rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := ob.Close(); err != nil {
		t.Fatal(err)
	}
	ob = OpenFile(path)
	defer ob.Close()
	for i, w := range want {
		got, claimed, err := ob.Claim(ctx, ID("e", strconv.Itoa(i)), Record{State: InProgress})
		if err != nil || claimed || got == nil {
			t.Fatalf("record %d: %+v claimed=%v %v", i, got, claimed, err)
		}
		if got.State != w.State || got.Request != w.Request || got.Body != w.Body || got.Status != w.Status ||
			got.ContentType != w.ContentType || string(got.Answer) != string(w.Answer) ||
			!got.Started.Equal(w.Started) || !got.Lease.Equal(w.Lease) || !got.Updated.Equal(w.Updated) {
			t.Errorf("record %d came back as\n%+v\nwant\n%+v", i, *got, w)
		}
		if w.Lease.IsZero() != got.Lease.IsZero() || w.Started.IsZero() != got.Started.IsZero() {
			t.Errorf("record %d: a zero time came back set, or a set one zero", i)
		}
	}
}
