package keystore

import (
	"encoding/hex"
	"sort"
)

// index is an immutable view of the store for lookups without locks.
type index struct {
	entries []Entry // sorted by created_at, then id
	byHash  map[[32]byte]*Entry
	// audit is the trail, oldest first; never changed in place (a write
	// appends to a copy).
	audit []AuditRecord
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
		e := &idx.entries[i]
		var h [32]byte
		if _, err := hex.Decode(h[:], []byte(e.KeyHash)); err == nil {
			idx.byHash[h] = e
		}
		// A retired secret finds a copy of its entry that says until when
		// it works, so the request path checks it as it checks expiry.
		for _, r := range e.Retired {
			if _, err := hex.Decode(h[:], []byte(r.KeyHash)); err == nil {
				v := e.clone()
				until := r.Until
				v.RetiredUntil = &until
				idx.byHash[h] = &v
			}
		}
	}
	return idx
}
