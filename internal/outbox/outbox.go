// Package outbox keeps what the proxy must remember of the writes it
// forwards to Zulip, so that a write happens once: a record for each
// write made with an Idempotency-Key, by the key entry that made it.
// Records live where the keys do: beside a key store file, in a bbolt
// database (a maintained embedded store with transactions and its own
// crash recovery); or in Caddy's storage, one item a record under the
// storage's locks, so that instances sharing the storage share them.
package outbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"time"
)

// State is where a write stands.
type State string

const (
	// InProgress: the first request with the key is being served. Its
	// lease says until when: a record whose lease has run out belongs to
	// an attempt that died, and its write may or may not have happened.
	InProgress State = "in_progress"
	// Done: the write had a definite outcome, kept to answer again.
	Done State = "done"
	// Uncertain: the write went to Zulip and no answer came back; a
	// retry looks for it in Zulip before writing again.
	Uncertain State = "uncertain"
)

// Record is what is kept of one write made with an Idempotency-Key. It
// never holds the caller's key.
type Record struct {
	State State `json:"state"`
	// Request identifies the request the key was first used for:
	// method, route and parameters. Body is the SHA-256 of its body.
	Request string `json:"request"`
	Body    string `json:"body,omitempty"`
	// Started is when the first request arrived.
	Started time.Time `json:"started"`
	// Lease bounds an InProgress record.
	Lease time.Time `json:"lease,omitzero"`
	// The first answer, for a Done record.
	Status      int    `json:"status,omitempty"`
	ContentType string `json:"content_type,omitempty"`
	Answer      []byte `json:"answer,omitempty"`
	// Updated is when the record last changed; records are pruned by it.
	Updated time.Time `json:"updated"`
}

// ErrClosed: the outbox was closed.
var ErrClosed = errors.New("outbox closed")

// backend keeps records by id.
type backend interface {
	// take reads the record of id (nil when there is none) and stores
	// what decide makes of it, unless that is nil; atomically, across
	// processes where the backend is shared.
	take(ctx context.Context, id string, decide func(existing *Record) *Record) (existing *Record, stored bool, err error)
	put(ctx context.Context, id string, rec Record) error
	remove(ctx context.Context, id string) error
	// prune removes the records last updated before t.
	prune(ctx context.Context, before time.Time) (int, error)
	close() error
	String() string
}

// Outbox holds the records of one key store.
type Outbox struct {
	b   backend
	q   queueBackend
	ids queueIDs
}

func (o *Outbox) String() string { return o.b.String() }

// Shared says whether other instances may use the outbox too (Caddy's
// storage): then what they queue is seen only by looking.
func (o *Outbox) Shared() bool {
	_, ok := o.b.(*storageBackend)
	return ok
}

// ID names the record of a write: the key entry's id and a hash of the
// Idempotency-Key, so that no client-chosen text becomes a file name or
// a storage key.
func ID(entryID, idempotencyKey string) string {
	sum := sha256.Sum256([]byte(idempotencyKey))
	var h [2 * sha256.Size]byte
	hex.Encode(h[:], sum[:])
	return entryID + "/" + string(h[:])
}

// Claim records rec for a first request, unless the id has a record
// already: then it returns that one, and claimed is false.
func (o *Outbox) Claim(ctx context.Context, id string, rec Record) (existing *Record, claimed bool, err error) {
	return o.b.take(ctx, id, func(existing *Record) *Record {
		if existing != nil {
			return nil
		}
		return &rec
	})
}

// Take is Claim where what to store depends on the record there: decide
// gets it (nil for none) and returns the record to store, or nil to leave
// things as they are. stored says whether it stored one.
func (o *Outbox) Take(ctx context.Context, id string, decide func(existing *Record) *Record) (existing *Record, stored bool, err error) {
	return o.b.take(ctx, id, decide)
}

// Put replaces the record of id. It outlives ctx's cancel: the
// backend bounds its own time.
func (o *Outbox) Put(ctx context.Context, id string, rec Record) error { return o.b.put(ctx, id, rec) }

// Delete forgets the record of id: nothing reached Zulip. It outlives
// ctx's cancel, as Put does.
func (o *Outbox) Delete(ctx context.Context, id string) error { return o.b.remove(ctx, id) }

// Prune forgets the records last changed before t.
func (o *Outbox) Prune(ctx context.Context, before time.Time) (int, error) {
	return o.b.prune(ctx, before)
}

// Close closes the outbox.
func (o *Outbox) Close() error { return o.b.close() }
