package keystore

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// mutate changes the document: under this process's mutex and the
// backend's lock, from the freshest document, so no writer loses another's
// entries. A document that cannot be read is never written over. What fn
// changes of a key is recorded in the audit trail, in the same write.
func (s *Store) mutate(ctx context.Context, fn func(doc *document) (changed bool, err error)) error {
	return s.write(ctx, true, fn)
}

// write is mutate; audited false is for what is not a change to a key
// (last-used times), which skips comparing every entry.
func (s *Store) write(ctx context.Context, audited bool, fn func(doc *document) (changed bool, err error)) error {
	if s.opt.ReadOnly {
		return fmt.Errorf("%s: %w", s.b, ErrReadOnly)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Asked before the lock, which leaves a lock file of its own.
	wroteBefore := s.b.wroteBefore()
	unlock, err := s.b.lock(ctx)
	if err != nil {
		return s.failedWrite(fmt.Errorf("%w: locking %s: %w", ErrNotWritable, s.b, err))
	}
	defer unlock()
	doc, sum, state, err := s.readDoc(ctx)
	if err != nil {
		s.setLoadErr(err)
		return err
	}
	before := len(doc.Clients)
	// What the entries were: a shallow copy is enough, as changes
	// replace an entry's times and slices rather than writing through
	// them; and none is needed when the document is the index's.
	var was []Entry
	if audited {
		if was = doc.indexed; was == nil {
			was = slices.Clone(doc.Clients)
		}
	}
	changed, err := fn(&doc)
	if err != nil || !changed {
		if err == nil {
			// Still worth knowing the freshest state.
			st, serr := s.b.stamp(ctx)
			if serr == nil {
				s.install(doc, st, sum)
				s.setLoadErr(nil)
			}
		}
		return err
	}
	if audited {
		s.audit(ctx, &doc, was, time.Now().UTC())
	}
	// Entries are revoked, never deleted: fewer entries means a bug, and
	// writing it would lose keys.
	if len(doc.Clients) < before {
		return fmt.Errorf("refusing to write key store %s: %d entries would become %d", s.b, before, len(doc.Clients))
	}
	if !s.opt.NewStore {
		switch {
		case state == docEmpty:
			return fmt.Errorf("%w: key store %s is empty (0 bytes or only white space), which a store this proxy wrote never is: restore it from a backup, or, to start a new, empty store there, run again with --new-store", ErrStoreLost, s.b)
		case state == docMissing:
			if wroteBefore != "" {
				return fmt.Errorf("%w: key store %s does not exist, but a store was written there before (%s): check that its volume is mounted and that the path is right; to start a new, empty store there, run again with --new-store", ErrStoreLost, s.b, wroteBefore)
			}
		}
	}
	if err := doc.check(); err != nil {
		return fmt.Errorf("refusing to write key store %s, it would not load again: %w", s.b, err)
	}
	doc.Version = versionOf(&doc)
	data, err := doc.marshal()
	if err != nil {
		return fmt.Errorf("encoding key store: %w", err)
	}
	if err := s.b.write(ctx, data); err != nil {
		if errors.Is(err, ErrNotWritable) {
			return s.failedWrite(err)
		}
		return s.failedWrite(fmt.Errorf("%w: %s: %w", ErrNotWritable, s.b, err))
	}
	s.writeErr.Store(nil)
	if state != docPresent {
		s.created.Store(true)
	}
	st, err := s.b.stamp(ctx)
	if err != nil {
		st = "" // the watcher reloads on its next look
	}
	// install logs the new records, as it logs those written elsewhere.
	s.install(doc, st, sha256.Sum256(data))
	s.setLoadErr(nil)
	return nil
}

// failedWrite remembers a write that failed, for Writable.
func (s *Store) failedWrite(err error) error {
	s.writeErr.Store(&err)
	if s.opt.OnFailure != nil {
		s.opt.OnFailure("write")
	}
	return err
}

// Add creates a key and returns it with its entry. The key is not kept.
func (s *Store) Add(ctx context.Context, n NewEntry) (string, Entry, error) {
	if n.Admin && n.Stream != "" {
		return "", Entry{}, errors.New("an admin key has no stream")
	}
	if !n.Admin && strings.TrimSpace(n.Stream) == "" {
		return "", Entry{}, errors.New("a scoped key needs a stream")
	}
	if n.Admin && (n.Permissions != nil || n.TopicPrefix != "") {
		return "", Entry{}, ErrAdminPermissions
	}
	key, err := NewKey()
	if err != nil {
		return "", Entry{}, err
	}
	// The caller keeps its pointer; the index must not change with it.
	var expires *time.Time
	if n.ExpiresAt != nil {
		t := n.ExpiresAt.UTC()
		expires = &t
	}
	var e Entry
	err = s.mutate(ctx, func(doc *document) (bool, error) {
		id, err := uniqueID(doc)
		if err != nil {
			return false, err
		}
		e = Entry{
			ID: id, KeyHash: HashKey(key), Name: n.Name, ProposalNo: n.ProposalNo,
			Stream: n.Stream, Bot: n.Bot, Admin: n.Admin,
			CreatedAt: time.Now().UTC(), CreatedBy: n.CreatedBy, ExpiresAt: expires, RateLimit: n.RateLimit,
			Delivery: n.Delivery, Permissions: slices.Clone(n.Permissions), TopicPrefix: n.TopicPrefix,
		}
		doc.Clients = append(doc.Clients, e)
		return true, nil
	})
	if err != nil {
		return "", Entry{}, err
	}
	return key, e.clone(), nil
}

func uniqueID(doc *document) (string, error) {
	for range 16 {
		id, err := newID()
		if err != nil {
			return "", err
		}
		taken := false
		for i := range doc.Clients {
			if doc.Clients[i].ID == id {
				taken = true
				break
			}
		}
		if !taken {
			return id, nil
		}
	}
	return "", errors.New("could not find a free key id")
}

// Revoke stops a key from working. Revoking twice keeps the first time.
func (s *Store) Revoke(ctx context.Context, id string) (Entry, error) {
	var e Entry
	err := s.mutate(ctx, func(doc *document) (bool, error) {
		for i := range doc.Clients {
			if doc.Clients[i].ID != id {
				continue
			}
			changed := false
			if doc.Clients[i].RevokedAt == nil {
				t := time.Now().UTC()
				doc.Clients[i].RevokedAt = &t
				changed = true
			}
			e = doc.Clients[i].clone()
			return changed, nil
		}
		return false, ErrNotFound
	})
	return e, err
}
