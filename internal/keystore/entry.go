package keystore

import (
	"errors"
	"time"
)

// Errors callers test for.
var (
	ErrKeyRevoked   = errors.New("key revoked")
	ErrKeyExpired   = errors.New("key expired")
	ErrNotFound     = errors.New("no such key")
	ErrCorruptStore = errors.New("key store is corrupt")
	// ErrStoreLost: the document lacks entries the store held, or is
	// empty, or vanished where a store was written before. Entries are
	// revoked, never deleted, so such a document is not a newer version,
	// and it is neither adopted nor written over.
	ErrStoreLost = errors.New("key store lost its entries")
	// ErrNotWritable: a change could not be written.
	ErrNotWritable = errors.New("key store cannot be written")
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
	// RateLimit overrides the server's rate_limit for this key, as
	// "<events>/<window>" ("10/1m"); empty: the server's.
	RateLimit string `json:"rate_limit,omitempty"`
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
	RateLimit  string
}
