package outbox

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"
	bolt "go.etcd.io/bbolt"
)

// The log of idempotency records in the bbolt database: a bucket keyed
// by a sequence number, each entry when its record changed (8 bytes,
// Unix nanoseconds, so that pruning reads no record), the record's id, a
// 0 byte, and the record in CBOR (RFC 8949).
//
// CBOR rather than JSON because every send with an Idempotency-Key writes
// one: through fxamacker/cbor, which Caddy's own build already holds, with
// small integers for keys and times as integers, a send's record is half
// the bytes of its JSON (so a commit writes half the pages) and takes a
// third of the time to encode. The records do not leave the database: the
// admin API and Caddy's storage keep JSON.

var (
	bucketRecords = []byte("idempotency_records")
	// bucketLogJSON is the log as written before CBOR, and
	// bucketIdempotencyV1 kept records under their ids; opening moves
	// both to bucketRecords.
	bucketLogJSON       = []byte("idempotency_log")
	bucketIdempotencyV1 = []byte("idempotency")
)

// logRecord is a Record as the log keeps it; the entry holds its Updated.
type logRecord struct {
	State       State  `cbor:"1,keyasint"`
	Request     string `cbor:"2,keyasint,omitempty"`
	Body        string `cbor:"3,keyasint,omitempty"`
	Started     int64  `cbor:"4,keyasint,omitempty"`
	Lease       int64  `cbor:"5,keyasint,omitempty"`
	Status      int    `cbor:"6,keyasint,omitempty"`
	ContentType string `cbor:"7,keyasint,omitempty"`
	Answer      []byte `cbor:"8,keyasint,omitempty"`
}

// logCBOR encodes entries; its options are the library's defaults, fixed
// here so that an upgrade of the library cannot change what is written.
var logCBOR = func() cbor.UserBufferEncMode {
	em, err := cbor.EncOptions{Sort: cbor.SortNone, ShortestFloat: cbor.ShortestFloatNone}.UserBufferEncMode()
	if err != nil {
		panic(err) // constant options
	}
	return em
}()

func unixNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// appendEntry appends the log entry of rec to buf; lr is room to encode
// it from.
func appendEntry(buf *bytes.Buffer, lr *logRecord, id string, rec *Record) error {
	var updated [8]byte
	binary.BigEndian.PutUint64(updated[:], uint64(unixNanos(rec.Updated)))
	buf.Write(updated[:])
	buf.WriteString(id)
	buf.WriteByte(0)
	*lr = logRecord{State: rec.State, Request: rec.Request, Body: rec.Body,
		Started: unixNanos(rec.Started), Lease: unixNanos(rec.Lease), Status: rec.Status,
		ContentType: rec.ContentType, Answer: rec.Answer}
	return logCBOR.MarshalToBuffer(lr, buf)
}

var errBadEntry = errors.New("malformed log entry")

// entryID reads a log entry's time and id, and returns its record's
// bytes undecoded.
func entryID(v []byte) (time.Time, string, []byte, error) {
	if len(v) < 9 {
		return time.Time{}, "", nil, errBadEntry
	}
	i := bytes.IndexByte(v[8:], 0)
	if i < 0 {
		return time.Time{}, "", nil, errBadEntry
	}
	return fromUnixNanos(int64(binary.BigEndian.Uint64(v))), string(v[8 : 8+i]), v[8+i+1:], nil
}

// decodeEntry reads a log entry whole.
func decodeEntry(v []byte) (string, *Record, error) {
	updated, id, raw, err := entryID(v)
	if err != nil {
		return "", nil, err
	}
	var lr logRecord
	if err := cbor.Unmarshal(raw, &lr); err != nil {
		return "", nil, fmt.Errorf("%w: %w", errBadEntry, err)
	}
	return id, &Record{State: lr.State, Request: lr.Request, Body: lr.Body,
		Started: fromUnixNanos(lr.Started), Lease: fromUnixNanos(lr.Lease), Status: lr.Status,
		ContentType: lr.ContentType, Answer: lr.Answer, Updated: updated}, nil
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// logItem is a record to append to the log; appendRecords notes its
// place.
type logItem struct {
	id  string
	rec *Record
	seq uint64
}

// appendRecords appends the records to the log, in order.
func appendRecords(log *bolt.Bucket, items []logItem) error {
	// bbolt keeps the keys and values it is given until the commit: they
	// are written into slabs, a new one begun when one is nearly full,
	// so that those already put stay where they are (a buffer that grew
	// would copy them, and clear twice the room, each time).
	const slab, room = 32 << 10, 2 << 10
	var buf *bytes.Buffer
	var lr logRecord
	seq := log.Sequence()
	for i := range items {
		it := &items[i]
		seq++
		if buf == nil || buf.Available() < room {
			buf = bytes.NewBuffer(make([]byte, 0, slab))
		}
		start := buf.Len()
		var key [8]byte
		binary.BigEndian.PutUint64(key[:], seq)
		buf.Write(key[:])
		if err := appendEntry(buf, &lr, it.id, it.rec); err != nil {
			return fmt.Errorf("encoding %s: %w", it.id, err)
		}
		kv := buf.Bytes()[start:]
		if err := log.Put(kv[:8:8], kv[8:len(kv):len(kv)]); err != nil {
			return err
		}
		it.seq = seq
	}
	return log.SetSequence(seq)
}

// migrateRecords appends the records of a database written before this
// log (a JSON log, or records under their ids) to it, oldest first.
func migrateRecords(tx *bolt.Tx) error {
	log := tx.Bucket(bucketRecords)
	for _, name := range [][]byte{bucketIdempotencyV1, bucketLogJSON} {
		old := tx.Bucket(name)
		if old == nil {
			continue
		}
		var items []logItem
		err := old.ForEach(func(k, v []byte) error {
			id, raw := string(k), v
			if !bytes.Equal(name, bucketIdempotencyV1) {
				var err error
				if _, id, raw, err = entryID(v); err != nil {
					return nil // unreadable: as if never kept
				}
			}
			rec := new(Record)
			if json.Unmarshal(raw, rec) != nil {
				return nil
			}
			items = append(items, logItem{id: id, rec: rec})
			return nil
		})
		if err == nil {
			err = appendRecords(log, items)
		}
		if err == nil {
			err = tx.DeleteBucket(name)
		}
		if err != nil {
			return fmt.Errorf("moving idempotency records from %s: %w", name, err)
		}
	}
	return nil
}
