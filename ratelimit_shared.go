package zulipproxy

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
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// A key's rate_limit holds across Caddy instances that share storage, in
// the manner of mholt/caddy-ratelimit's distributed mode: every
// syncEvery, each instance publishes how many calls it has let each key
// make (counts since it started) to Caddy's storage, and reads the
// others'. What another instance let a key make since the last look is
// taken from this instance's bucket for that key, so every bucket runs
// down with the key's calls on all instances. The limit is approximate:
// between two looks each instance lets a key spend its own bucket. The
// bound measured for README is in ratelimit_shared_test.go.

// syncEvery is how often an instance publishes its counts and reads the
// others'.
const syncEvery = 2 * time.Second

// staleAfter: an instance that has published nothing for this long has
// stopped; its file is removed.
const staleAfter = 24 * time.Hour

// limitsPrefix is where the instances' counts live in Caddy's storage.
const limitsPrefix = "zulip_proxy/ratelimit"

// limitsDoc is what an instance publishes.
type limitsDoc struct {
	Instance string    `json:"instance"`
	Started  time.Time `json:"started"`
	Updated  time.Time `json:"updated"`
	// Keys are the calls it let each key make since it started, with the
	// key's limit, so another instance that has not seen the key yet
	// can start its bucket.
	Keys map[string]keyCount `json:"keys"`
}

type keyCount struct {
	Taken  uint64         `json:"taken"`
	Events int            `json:"events"`
	Window caddy.Duration `json:"window"`
}

// sharing is the state of keyBuckets' exchange with other instances.
type sharing struct {
	id      string
	started time.Time
	storage atomic.Pointer[storageRef]
	logger  *zap.Logger
	// published is the taken count last written; dirty says a call was
	// counted since.
	dirty atomic.Bool
	// seen are the other instances' counts at the last look.
	seen map[string]map[string]uint64
}

type storageRef struct{ certmagic.Storage }

func newSharing(st certmagic.Storage, logger *zap.Logger, now time.Time) *sharing {
	var b [8]byte
	_, _ = rand.Read(b[:])
	sh := &sharing{id: hex.EncodeToString(b[:]), started: now, logger: logger, seen: map[string]map[string]uint64{}}
	sh.storage.Store(&storageRef{st})
	return sh
}

func (sh *sharing) file(id string) string { return path.Join(limitsPrefix, id+".json") }

// share starts the exchange with other instances through st.
func (kb *keyBuckets) share(st certmagic.Storage, logger *zap.Logger) {
	kb.sh = newSharing(st, logger, time.Now())
	go kb.every(syncEvery, func(now time.Time) {
		ctx, cancel := context.WithTimeout(context.Background(), syncEvery)
		defer cancel()
		if err := kb.sync(ctx, now); err != nil {
			logger.Warn("sharing rate-limit counts with other instances", zap.Error(err))
		}
	})
}

// sync publishes this instance's counts, if any changed, and takes what
// the others let each key make since the last look from its buckets.
func (kb *keyBuckets) sync(ctx context.Context, now time.Time) error {
	sh := kb.sh
	st := sh.storage.Load().Storage
	var errs []error
	if sh.dirty.Swap(false) {
		doc := limitsDoc{Instance: sh.id, Started: sh.started, Updated: now, Keys: kb.counts()}
		raw, err := json.Marshal(doc)
		if err == nil {
			err = st.Store(ctx, sh.file(sh.id), raw)
		}
		if err != nil {
			sh.dirty.Store(true)
			errs = append(errs, fmt.Errorf("publishing to %s: %w", sh.file(sh.id), err))
		}
	}
	names, err := st.List(ctx, limitsPrefix, false)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return errors.Join(append(errs, fmt.Errorf("listing %s: %w", limitsPrefix, err))...)
	}
	for _, name := range names {
		id := strings.TrimSuffix(path.Base(name), ".json")
		if id == sh.id || !strings.HasSuffix(name, ".json") {
			continue
		}
		raw, err := st.Load(ctx, name)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("reading %s: %w", name, err))
			}
			continue
		}
		var doc limitsDoc
		if err := json.Unmarshal(raw, &doc); err != nil || doc.Instance != id {
			errs = append(errs, fmt.Errorf("reading %s: not an instance's counts", name))
			continue
		}
		if now.Sub(doc.Updated) > staleAfter {
			delete(sh.seen, id)
			_ = st.Delete(ctx, name)
			continue
		}
		kb.takeOthers(id, doc, now)
	}
	return errors.Join(errs...)
}

// counts are this instance's published counts.
func (kb *keyBuckets) counts() map[string]keyCount {
	kb.mu.Lock()
	defer kb.mu.Unlock()
	out := make(map[string]keyCount, len(kb.m))
	for id, b := range kb.m {
		if b.taken > 0 {
			out[id] = keyCount{Taken: b.taken, Events: b.spec.Events, Window: b.spec.Window}
		}
	}
	return out
}

// takeOthers takes from this instance's buckets what instance id let each
// key make since the last look. An instance seen for the first time that
// started before this one counts from now: what it did before is
// unknown, and long past for most keys.
func (kb *keyBuckets) takeOthers(id string, doc limitsDoc, now time.Time) {
	sh := kb.sh
	last, known := sh.seen[id]
	next := make(map[string]uint64, len(doc.Keys))
	kb.mu.Lock()
	defer kb.mu.Unlock()
	for key, c := range doc.Keys {
		next[key] = c.Taken
		if !known && doc.Started.Before(sh.started) {
			continue
		}
		before := last[key]
		if c.Taken < before {
			// The other instance forgot the key (idle, full) and counts
			// it anew.
			before = 0
		}
		n := c.Taken - before
		spec := RateLimit{Events: c.Events, Window: c.Window}
		if n == 0 || !spec.set() {
			continue
		}
		b, ok := kb.m[key]
		if !ok {
			b = &bucket{lim: rate.NewLimiter(spec.every(), spec.Events), spec: spec}
			kb.m[key] = b
		}
		b.lastUsed = now
		for n > 0 {
			// A reservation is never cancelled: the tokens go below zero,
			// a debt the bucket refills first.
			step := min(n, uint64(b.spec.Events))
			b.lim.ReserveN(now, int(step))
			n -= step
		}
	}
	sh.seen[id] = next
}
