package keystore

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
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
	doc, sum, err := s.readDoc(ctx)
	if err != nil {
		s.setLoadErr(err)
		return err
	}
	s.install(doc.Clients, st, sum)
	s.setLoadErr(nil)
	return nil
}

// readDoc reads the document as it is now. A document identical to the
// one the index was built from is not parsed again: at 100,000 keys,
// parsing is most of the cost of a write.
func (s *Store) readDoc(ctx context.Context) (document, [32]byte, error) {
	raw, err := s.b.read(ctx)
	if errors.Is(err, fs.ErrNotExist) {
		if s.held.Load() {
			return document{}, [32]byte{}, fmt.Errorf("key store %s has disappeared; it held %d entries, which this instance keeps serving: restore the document, or restart to begin an empty store", s.b, s.Len())
		}
		return document{Version: storeVersion}, [32]byte{}, nil
	}
	if err != nil {
		return document{}, [32]byte{}, fmt.Errorf("reading key store %s: %w", s.b, err)
	}
	sum := sha256.Sum256(raw)
	if sum == s.lastSum && s.Healthy() == nil {
		idx := s.idx.Load()
		entries := make([]Entry, len(idx.entries))
		copy(entries, idx.entries)
		return document{Version: storeVersion, Clients: entries}, sum, nil
	}
	doc, err := parseDocument(raw)
	if err != nil {
		return document{}, [32]byte{}, fmt.Errorf("reading key store %s: %w", s.b, err)
	}
	return doc, sum, nil
}

// install makes entries, read from or written as the document whose
// stamp and checksum are given, the index that lookups see.
func (s *Store) install(entries []Entry, stamp string, sum [32]byte) {
	s.idx.Store(newIndex(entries))
	s.lastStamp, s.lastSum = stamp, sum
	if len(entries) > 0 {
		s.held.Store(true)
	}
}
