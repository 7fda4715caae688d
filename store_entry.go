package zulipproxy

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// Errors callers test for.
var (
	ErrKeyRevoked   = errors.New("key revoked")
	ErrKeyExpired   = errors.New("key expired")
	ErrNotFound     = errors.New("no such key")
	ErrCorruptStore = errors.New("key store is corrupt")
)

// storeVersion is the version of the store document this code writes.
const storeVersion = 1

// Entry is one key's record. The key itself is never stored, only its hash.
type Entry struct {
	ID         string     `json:"id"`
	KeyHash    string     `json:"key_hash"`
	Name       string     `json:"name,omitempty"`
	ProposalNo int64      `json:"proposal_no,omitempty"`
	Stream     string     `json:"stream,omitempty"`
	Bot        string     `json:"bot,omitempty"`
	Admin      bool       `json:"admin,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	CreatedBy  string     `json:"created_by,omitempty"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
	// Legacy marks a plain key imported from the upstream service.
	Legacy bool `json:"legacy,omitempty"`
}

// Usable says whether the key may be used now.
func (e *Entry) Usable(now time.Time) error {
	if e.RevokedAt != nil {
		return ErrKeyRevoked
	}
	if e.ExpiresAt != nil && !now.Before(*e.ExpiresAt) {
		return ErrKeyExpired
	}
	return nil
}

// clone copies e and its times, so that what a caller does with the copy
// cannot reach the index that lookups share.
func (e *Entry) clone() Entry {
	c := *e
	for _, p := range []**time.Time{&c.ExpiresAt, &c.RevokedAt, &c.LastUsedAt} {
		if *p != nil {
			t := **p
			*p = &t
		}
	}
	return c
}

// NewEntry describes a key to create.
type NewEntry struct {
	Name       string
	ProposalNo int64
	Stream     string
	Bot        string
	Admin      bool
	CreatedBy  string
	ExpiresAt  *time.Time
}

// document is the store file.
type document struct {
	Version int     `json:"version"`
	Clients []Entry `json:"clients"`
}

// parseDocument reads a store document. Anything it does not understand
// is an error: a store that is guessed at could lose keys when written back.
func parseDocument(raw []byte) (document, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return document{Version: storeVersion}, nil
	}
	var doc struct {
		Version *int    `json:"version"`
		Clients []Entry `json:"clients"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		var probe map[string]json.RawMessage
		if json.Unmarshal(raw, &probe) == nil && probe["version"] == nil && probe["clients"] == nil && len(probe) > 0 {
			return document{}, fmt.Errorf("%w: no \"version\"; if this is the upstream service's plain-key file, import it with 'caddy zulip-proxy import-legacy'", ErrCorruptStore)
		}
		return document{}, fmt.Errorf("%w: %s", ErrCorruptStore, jsonErrorText(err))
	}
	// More() would let a stray '}' or ']' through.
	if _, err := dec.Token(); err != io.EOF {
		return document{}, fmt.Errorf("%w: data after the document", ErrCorruptStore)
	}
	if doc.Version == nil {
		return document{}, fmt.Errorf("%w: no \"version\" field", ErrCorruptStore)
	}
	if *doc.Version != storeVersion {
		return document{}, fmt.Errorf("%w: version %d is not supported (this build reads version %d); upgrade the proxy", ErrCorruptStore, *doc.Version, storeVersion)
	}
	ids := make(map[string]bool, len(doc.Clients))
	hashes := make(map[string]bool, len(doc.Clients))
	for i, e := range doc.Clients {
		if e.ID == "" || ids[e.ID] {
			return document{}, fmt.Errorf("%w: entry %d has a missing or repeated id", ErrCorruptStore, i)
		}
		// Only the lowercase form HashKey writes: an uppercase twin of a
		// revoked entry's hash would be a second, unrevoked entry for the
		// same key.
		if b, err := hex.DecodeString(e.KeyHash); err != nil || len(b) != 32 || hex.EncodeToString(b) != e.KeyHash || hashes[e.KeyHash] {
			return document{}, fmt.Errorf("%w: entry %s has a bad or repeated key_hash", ErrCorruptStore, e.ID)
		}
		ids[e.ID], hashes[e.KeyHash] = true, true
	}
	return document{Version: storeVersion, Clients: doc.Clients}, nil
}

// jsonErrorText is err's message without an unknown field's name when
// that name could be a secret: a field is whatever someone typed there,
// such as a plain key pasted in from the legacy file, and this message
// reaches logs and /health.
func jsonErrorText(err error) string {
	const unknown = `json: unknown field "`
	msg := err.Error()
	name, ok := strings.CutPrefix(msg, unknown)
	if !ok {
		return msg
	}
	name = strings.TrimSuffix(name, `"`)
	if len(name) > 32 || strings.TrimLeft(name, "abcdefghijklmnopqrstuvwxyz_") != "" {
		return "json: unknown field (name not shown: it could be a key)"
	}
	return msg
}

// marshal writes one entry a line: an operator can grep the file and
// read a diff of it, and it costs half of what MarshalIndent does, which
// re-scans its output (at 100,000 keys, encoding is most of a write).
func (d *document) marshal() ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(64 + len(d.Clients)*320)
	fmt.Fprintf(&buf, "{\n  \"version\": %d,\n  \"clients\": [", d.Version)
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	for i := range d.Clients {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteString("\n    ")
		if err := enc.Encode(&d.Clients[i]); err != nil {
			return nil, err
		}
		buf.Truncate(buf.Len() - 1) // Encode's newline
	}
	if len(d.Clients) > 0 {
		buf.WriteString("\n  ")
	}
	buf.WriteString("]\n}\n")
	return buf.Bytes(), nil
}

// index is an immutable view of the store for lookups without locks.
type index struct {
	entries []Entry // sorted by created_at, then id
	byHash  map[[32]byte]*Entry
}

func newIndex(entries []Entry) *index {
	idx := &index{entries: make([]Entry, len(entries)), byHash: make(map[[32]byte]*Entry, len(entries))}
	copy(idx.entries, entries)
	sort.SliceStable(idx.entries, func(i, j int) bool {
		a, b := &idx.entries[i], &idx.entries[j]
		if !a.CreatedAt.Equal(b.CreatedAt) {
			return a.CreatedAt.Before(b.CreatedAt)
		}
		return a.ID < b.ID
	})
	for i := range idx.entries {
		var h [32]byte
		if _, err := hex.Decode(h[:], []byte(idx.entries[i].KeyHash)); err == nil {
			idx.byHash[h] = &idx.entries[i]
		}
	}
	return idx
}
