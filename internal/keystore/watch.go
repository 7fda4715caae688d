package keystore

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// Start runs the watcher, which picks up other processes' changes, and the
// last-used flusher. The CLI opens stores without starting them.
func (s *Store) Start() {
	s.startOnce.Do(func() {
		s.started.Store(true)
		go s.run()
	})
}

func (s *Store) run() {
	defer close(s.done)
	poll := time.NewTicker(s.opt.PollInterval)
	defer poll.Stop()
	flush := time.NewTicker(s.opt.FlushInterval)
	defer flush.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-poll.C:
			s.poll()
		case <-flush.C:
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if err := s.flushUsage(ctx); err != nil {
				s.opt.Logger.Warn("writing last-used times", zap.Error(err))
			}
			cancel()
		}
	}
}

// poll reloads when the document changed since it was last read.
func (s *Store) poll() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := s.b.stamp(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil && st == s.lastStamp && s.Healthy() == nil {
		return
	}
	wasHealthy := s.Healthy() == nil
	if err := s.reloadLocked(ctx); err != nil {
		if wasHealthy {
			s.opt.Logger.Error("key store cannot be read; serving the last good keys", zap.Error(err))
		}
		return
	}
	if !wasHealthy {
		s.opt.Logger.Info("key store readable again", zap.String("store", s.b.String()))
	}
	s.opt.Logger.Debug("key store reloaded", zap.Int("entries", s.Len()))
}

// Close stops the goroutines and writes pending last-used times.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		// stop is closed even if never started, so a Start after Close
		// does not leave a watcher running.
		close(s.stop)
		if s.started.Load() {
			<-s.done
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = s.flushUsage(ctx)
	})
	return err
}
