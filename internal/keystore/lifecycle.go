package keystore

import (
	"context"
	"errors"
	"slices"
	"time"
)

// Rotate gives an entry a new secret and returns it. The old secret keeps
// working for grace (0: not at all), then fails with ErrKeyRotated, and
// so does every secret an earlier rotation replaced, by then at the
// latest: a rotation with grace 0 (a secret leaked) ends them all. The
// id, stream, name and limits stay, so nothing else about the key changes.
func (s *Store) Rotate(ctx context.Context, id string, grace time.Duration) (string, Entry, error) {
	if grace < 0 {
		return "", Entry{}, errors.New("a rotation's grace period cannot be negative")
	}
	key, err := NewKey()
	if err != nil {
		return "", Entry{}, err
	}
	var e Entry
	err = s.mutate(ctx, func(doc *document) (bool, error) {
		c, err := usableEntry(doc, id)
		if err != nil {
			return false, err
		}
		now := time.Now().UTC()
		until := now.Add(grace)
		// A copy: the entry's slice is shared with the index that
		// lookups and List read, which must not change before the write.
		c.Retired = slices.Clone(c.Retired)
		for i := range c.Retired {
			if c.Retired[i].Until.After(until) {
				c.Retired[i].Until = until
			}
		}
		c.Retired = append(c.Retired, RetiredKey{KeyHash: c.KeyHash, Until: until})
		if n := len(c.Retired) - maxRetired; n > 0 {
			c.Retired = append([]RetiredKey(nil), c.Retired[n:]...)
		}
		c.KeyHash, c.RotatedAt, c.Legacy = HashKey(key), &now, false
		e = c.clone()
		return true, nil
	})
	if err != nil {
		return "", Entry{}, err
	}
	return key, e, nil
}

// SetExpiry changes when an entry expires; nil: never.
func (s *Store) SetExpiry(ctx context.Context, id string, at *time.Time) (Entry, error) {
	var e Entry
	err := s.mutate(ctx, func(doc *document) (bool, error) {
		c, err := usableEntry(doc, id)
		if err != nil {
			return false, err
		}
		if at == nil {
			c.ExpiresAt = nil
		} else {
			t := at.UTC()
			c.ExpiresAt = &t
		}
		e = c.clone()
		return true, nil
	})
	return e, err
}

// usableEntry finds an entry a lifecycle change may touch: a revoked key
// stays revoked, whatever is asked of it.
func usableEntry(doc *document, id string) (*Entry, error) {
	for i := range doc.Clients {
		if doc.Clients[i].ID == id {
			if doc.Clients[i].RevokedAt != nil {
				return nil, ErrKeyRevoked
			}
			return &doc.Clients[i], nil
		}
	}
	return nil, ErrNotFound
}
