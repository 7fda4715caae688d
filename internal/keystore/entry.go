package keystore

import (
	"errors"
	"slices"
	"time"
)

// Errors callers test for.
var (
	ErrKeyRevoked   = errors.New("key revoked")
	ErrKeyExpired   = errors.New("key expired")
	ErrKeyRotated   = errors.New("key was rotated")
	ErrNotFound     = errors.New("no such key")
	ErrCorruptStore = errors.New("key store is corrupt")
	// ErrStoreLost: the document lacks entries the store held, or is
	// empty, or vanished where a store was written before. Entries are
	// revoked, never deleted, so such a document is not a newer version,
	// and it is neither adopted nor written over.
	ErrStoreLost = errors.New("key store lost its entries")
	// ErrNotWritable: a change could not be written.
	ErrNotWritable = errors.New("key store cannot be written")
	// ErrReadOnly: the config says the store is read-only on purpose
	// (keys are managed elsewhere).
	ErrReadOnly = errors.New("key store is read-only by configuration: keys are managed elsewhere")
)

// storeVersion is the newest version of the store document this code
// reads. It writes version 1, as before the audit trail, until a document
// holds audit records: an older build then refuses the document with a
// message that says to upgrade, instead of one about an unknown field.
const storeVersion = 2

// versionOf is the version a document is written as.
func versionOf(d *document) int {
	if len(d.Audit) > 0 {
		return 2
	}
	return 1
}

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
	// Delivery is "queued" for a key whose sends are queued when Zulip
	// cannot take them now, rather than failing; empty: delivered at
	// once or not at all.
	Delivery string `json:"delivery,omitempty"`
	// Permissions are what a scoped key may do (permissions.go); none
	// named: all of them, as before permissions existed.
	Permissions []string `json:"permissions,omitempty"`
	// TopicPrefix holds a scoped key to the topics that start with it
	// (topics.go); empty: any topic of its stream.
	TopicPrefix string `json:"topic_prefix,omitempty"`
	// RotatedAt is when the key was last given a new secret.
	RotatedAt *time.Time `json:"rotated_at,omitempty"`
	// Retired are the secrets a rotation replaced, newest last; each works
	// until its Until, then fails as rotated.
	Retired []RetiredKey `json:"retired_keys,omitempty"`

	// RetiredUntil is set only on what Lookup returns for a retired
	// secret: the time it stops working.
	RetiredUntil *time.Time `json:"-"`
}

// RetiredKey is a secret a rotation replaced.
type RetiredKey struct {
	KeyHash string    `json:"key_hash"`
	Until   time.Time `json:"until"`
}

// maxRetired bounds the retired secrets kept per entry: past it the oldest
// (long ended, unless someone rotates in a loop) answer "invalid key"
// rather than "rotated".
const maxRetired = 8

// Usable says whether the key may be used now.
func (e *Entry) Usable(now time.Time) error {
	if e.RevokedAt != nil {
		return ErrKeyRevoked
	}
	if e.RetiredUntil != nil && !now.Before(*e.RetiredUntil) {
		return ErrKeyRotated
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
	for _, p := range []**time.Time{&c.ExpiresAt, &c.RevokedAt, &c.LastUsedAt, &c.RotatedAt, &c.RetiredUntil} {
		if *p != nil {
			t := **p
			*p = &t
		}
	}
	c.Retired = append([]RetiredKey(nil), e.Retired...)
	c.Permissions = slices.Clone(e.Permissions)
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
	Delivery   string
	// Permissions as ParsePermissions returns them; nil: all.
	Permissions []string
	// TopicPrefix as ParseTopicPrefix returns it; "": any topic.
	TopicPrefix string
}

// DeliveryQueued is Entry.Delivery for a key whose sends are queued.
const DeliveryQueued = "queued"
