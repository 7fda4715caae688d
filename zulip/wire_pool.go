package zulip

import (
	"bufio"
	"context"
	"time"
)

// get takes the most recently used live connection, or dials one within
// the call's deadline.
func (w *wire) get(ctx context.Context, deadline time.Time) (*wireConn, bool, error) {
	now := time.Now()
	for {
		w.mu.Lock()
		n := len(w.idle)
		if n == 0 {
			w.mu.Unlock()
			break
		}
		wc := w.idle[n-1]
		w.idle[n-1] = nil
		w.idle = w.idle[:n-1]
		w.mu.Unlock()
		if now.Sub(wc.usedAt) < wireIdleTimeout && wc.br.Buffered() == 0 && wc.probe.alive() {
			return wc, true, nil
		}
		wc.conn.Close()
	}
	if d, ok := ctx.Deadline(); !ok || deadline.Before(d) {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	conn, err := w.dial(ctx, "tcp", w.addr)
	if err != nil {
		return nil, false, err
	}
	return &wireConn{conn: conn, br: bufio.NewReaderSize(conn, 4096), probe: newConnProbe(conn)}, false, nil
}

// put returns a connection whose exchange ended cleanly to the pool.
func (w *wire) put(wc *wireConn) {
	if wc.conn.SetDeadline(time.Time{}) != nil {
		wc.conn.Close()
		return
	}
	wc.usedAt = time.Now()
	var expired *wireConn
	w.mu.Lock()
	if len(w.idle) >= wireMaxIdle {
		w.mu.Unlock()
		wc.conn.Close()
		return
	}
	// The least recently used connection is dropped once too old, so
	// a pool that shrinks after a burst does not keep sockets the
	// server has long closed.
	if len(w.idle) > 0 && wc.usedAt.Sub(w.idle[0].usedAt) >= wireIdleTimeout {
		expired = w.idle[0]
		copy(w.idle, w.idle[1:])
		w.idle[len(w.idle)-1] = nil
		w.idle = w.idle[:len(w.idle)-1]
	}
	w.idle = append(w.idle, wc)
	w.mu.Unlock()
	if expired != nil {
		expired.conn.Close()
	}
}

// closeIdle closes pooled connections, for config unloads.
func (w *wire) closeIdle() {
	w.mu.Lock()
	idle := w.idle
	w.idle = nil
	w.mu.Unlock()
	for _, wc := range idle {
		wc.conn.Close()
	}
}
