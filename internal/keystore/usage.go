package keystore

import (
	"context"
	"sync/atomic"
	"time"
)

// Touch notes that a key was used, in memory only: a background flush
// writes it at most once per FlushInterval.
func (s *Store) Touch(e *Entry) {
	now := time.Now().UnixNano()
	v, ok := s.usage.Load(e.ID)
	if !ok {
		v, _ = s.usage.LoadOrStore(e.ID, new(atomic.Int64))
	}
	v.(*atomic.Int64).Store(now)
	if !s.dirty.Load() {
		s.dirty.Store(true)
	}
}

// flushUsage writes last-used times newer than the document's.
func (s *Store) flushUsage(ctx context.Context) error {
	if s.opt.ReadOnly || !s.dirty.Swap(false) {
		return nil
	}
	err := s.write(ctx, false, func(doc *document) (bool, error) {
		changed := false
		for i := range doc.Clients {
			v, ok := s.usage.Load(doc.Clients[i].ID)
			if !ok {
				continue
			}
			t := time.Unix(0, v.(*atomic.Int64).Load()).UTC()
			if lu := doc.Clients[i].LastUsedAt; lu == nil || t.After(*lu) {
				doc.Clients[i].LastUsedAt = &t
				changed = true
			}
		}
		return changed, nil
	})
	if err != nil {
		s.dirty.Store(true)
	}
	return err
}
