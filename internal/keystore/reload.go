package keystore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"slices"
)

// Reload reads the document again. A document that cannot be read or
// parsed leaves the index as it was, and Healthy reports why.
func (s *Store) Reload(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reloadLocked(ctx)
}

func (s *Store) reloadLocked(ctx context.Context) error {
	st, err := s.b.stamp(ctx)
	if err != nil {
		err = fmt.Errorf("checking key store %s: %w", s.b, err)
		s.setLoadErr(err)
		return err
	}
	doc, sum, _, err := s.readDoc(ctx)
	if err != nil {
		s.setLoadErr(err)
		return err
	}
	s.install(doc, st, sum)
	s.setLoadErr(nil)
	return nil
}

// docState says what readDoc found where the document belongs.
type docState uint8

const (
	docPresent docState = iota
	docMissing
	docEmpty // present, but 0 bytes or only white space
)

// readDoc reads the document as it is now. A document identical to the
// one the index was built from is not parsed again: at 100,000 keys,
// parsing is most of the cost of a write. A document that lacks entries
// the index holds is refused (ErrStoreLost), whatever else it holds.
func (s *Store) readDoc(ctx context.Context) (document, [32]byte, docState, error) {
	raw, err := s.b.read(ctx)
	if errors.Is(err, fs.ErrNotExist) {
		if s.held.Load() {
			return document{}, [32]byte{}, docMissing, fmt.Errorf("%w: key store %s has disappeared; it held %d entries, which this instance keeps serving: restore the document, or restart to begin an empty store", ErrStoreLost, s.b, s.Len())
		}
		return document{Version: storeVersion}, [32]byte{}, docMissing, nil
	}
	if err != nil {
		return document{}, [32]byte{}, docPresent, fmt.Errorf("reading key store %s: %w", s.b, err)
	}
	state := docPresent
	if len(bytes.TrimSpace(raw)) == 0 {
		state = docEmpty
	}
	sum := sha256.Sum256(raw)
	if sum == s.lastSum && s.Healthy() == nil {
		idx := s.idx.Load()
		entries := make([]Entry, len(idx.entries))
		copy(entries, idx.entries)
		return document{Version: storeVersion, Clients: entries, Audit: idx.audit, indexed: idx.entries}, sum, state, nil
	}
	doc, err := parseDocument(raw)
	if err != nil {
		return document{}, [32]byte{}, state, fmt.Errorf("reading key store %s: %w", s.b, err)
	}
	if missing := s.missingFrom(doc); missing > 0 {
		what := fmt.Sprintf("lacks %d of the %d entries", missing, s.Len())
		if state == docEmpty {
			what = fmt.Sprintf("is empty; it held %d entries", s.Len())
		}
		return document{}, [32]byte{}, state, fmt.Errorf("%w: key store %s %s, which this instance keeps serving. Entries are revoked, never deleted, so this is not a newer version: restore the document (a backup copied over it with cp is truncated first: copy it beside the store, then mv it into place)", ErrStoreLost, s.b, what)
	}
	return doc, sum, state, nil
}

// missingFrom counts the entries of the index that doc lacks.
func (s *Store) missingFrom(doc document) int {
	idx := s.idx.Load()
	if len(idx.entries) == 0 {
		return 0
	}
	ids := make(map[string]struct{}, len(doc.Clients))
	for i := range doc.Clients {
		ids[doc.Clients[i].ID] = struct{}{}
	}
	missing := 0
	for i := range idx.entries {
		if _, ok := ids[idx.entries[i].ID]; !ok {
			missing++
		}
	}
	return missing
}

// install makes doc, read or written with the stamp and checksum given,
// the index that lookups see.
func (s *Store) install(doc document, stamp string, sum [32]byte) {
	idx := newIndex(doc.Clients)
	idx.audit = slices.Clip(doc.Audit)
	s.idx.Store(idx)
	s.lastStamp, s.lastSum = stamp, sum
	s.noteAudit(doc.Audit)
	if len(doc.Clients) > 0 {
		s.held.Store(true)
	}
}
