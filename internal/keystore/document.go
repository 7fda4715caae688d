package keystore

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// document is the store file.
type document struct {
	Version int     `json:"version"`
	Clients []Entry `json:"clients"`
	// Audit is the audit trail (audit.go), oldest first.
	Audit []AuditRecord `json:"audit,omitempty"`

	// indexed, when set, is the index's copy of Clients as read: the
	// same entries in the same order, never to be changed. A change
	// compares with it instead of copying every entry first.
	indexed []Entry
}

// parseDocument reads a store document. Anything it does not understand
// is an error: a store that is guessed at could lose keys when written back.
func parseDocument(raw []byte) (document, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return document{Version: storeVersion}, nil
	}
	var doc struct {
		Version *int          `json:"version"`
		Clients []Entry       `json:"clients"`
		Audit   []AuditRecord `json:"audit"`
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
	if *doc.Version < 1 || *doc.Version > storeVersion {
		return document{}, fmt.Errorf("%w: version %d is not supported (this build reads versions 1 to %d); upgrade the proxy", ErrCorruptStore, *doc.Version, storeVersion)
	}
	d := document{Version: *doc.Version, Clients: doc.Clients, Audit: doc.Audit}
	if err := d.check(); err != nil {
		return document{}, err
	}
	return d, nil
}

// check holds a document to what parseDocument accepts: ids and hashes
// (retired ones included) present, canonical and unique. mutate checks
// before it writes too, so no change can write a document that no
// instance would load.
func (d *document) check() error {
	ids := make(map[string]bool, len(d.Clients))
	hashes := make(map[string]bool, len(d.Clients))
	for i, e := range d.Clients {
		if e.ID == "" || ids[e.ID] {
			return fmt.Errorf("%w: entry %d has a missing or repeated id", ErrCorruptStore, i)
		}
		// Only the lowercase form HashKey writes: an uppercase twin of a
		// revoked entry's hash would be a second, unrevoked entry for the
		// same key.
		if !canonicalHash(e.KeyHash) || hashes[e.KeyHash] {
			return fmt.Errorf("%w: entry %s has a bad or repeated key_hash", ErrCorruptStore, e.ID)
		}
		ids[e.ID], hashes[e.KeyHash] = true, true
		for _, r := range e.Retired {
			if !canonicalHash(r.KeyHash) || hashes[r.KeyHash] {
				return fmt.Errorf("%w: entry %s has a bad or repeated retired key_hash", ErrCorruptStore, e.ID)
			}
			hashes[r.KeyHash] = true
		}
	}
	for i := 1; i < len(d.Audit); i++ {
		if d.Audit[i].Seq <= d.Audit[i-1].Seq {
			return fmt.Errorf("%w: audit record %d is out of order", ErrCorruptStore, d.Audit[i].Seq)
		}
	}
	return nil
}

// canonicalHash says whether h is a hash as HashKey writes it: 64
// lowercase hex digits. It runs for every entry on every read and write,
// so it allocates nothing.
func canonicalHash(h string) bool {
	if len(h) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
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
	// Field-like names are shown (a typo such as "stram"); anything else,
	// or anything that starts as a key does, is not.
	if len(name) > 32 || strings.TrimLeft(name, "abcdefghijklmnopqrstuvwxyz_") != "" || strings.HasPrefix(name, keyPrefix) {
		return "json: unknown field (name not shown: it could be a key)"
	}
	return msg
}

// marshal writes one entry a line: an operator can grep the file and
// read a diff of it, and it costs half of what MarshalIndent does, which
// re-scans its output (at 100,000 keys, encoding is most of a write).
// The audit trail follows the keys, a record a line, when there is one.
func (d *document) marshal() ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(64 + len(d.Clients)*320 + len(d.Audit)*400)
	fmt.Fprintf(&buf, "{\n  \"version\": %d,\n  \"clients\": ", d.Version)
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := writeLines(&buf, enc, d.Clients); err != nil {
		return nil, err
	}
	if len(d.Audit) > 0 {
		buf.WriteString(",\n  \"audit\": ")
		if err := writeLines(&buf, enc, d.Audit); err != nil {
			return nil, err
		}
	}
	buf.WriteString("\n}\n")
	return buf.Bytes(), nil
}

// writeLines writes items as a JSON array, an item a line.
func writeLines[T any](buf *bytes.Buffer, enc *json.Encoder, items []T) error {
	buf.WriteByte('[')
	for i := range items {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteString("\n    ")
		if err := enc.Encode(&items[i]); err != nil {
			return err
		}
		buf.Truncate(buf.Len() - 1) // Encode's newline
	}
	if len(items) > 0 {
		buf.WriteString("\n  ")
	}
	buf.WriteByte(']')
	return nil
}
