package zulip

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// wire is a lean HTTP/1.1 client for a Zulip reached over plain HTTP (a
// Zulip on the same host or network, behind the proxy). Each call writes
// its whole request at once and reads the answer on the caller's own
// goroutine, keeping only the headers Response keeps. net/http's
// transport spends about as much CPU as the rest of a forwarded send
// (two goroutines per connection, a header map per answer); on a proxy
// whose job is forwarding, that is the biggest cost left that is ours.
//
// It handles only what such calls need: requests whose body is small and
// of known length, no extra headers, no proxy from the environment, no
// TLS. Everything else (uploads, webhooks, https with HTTP/2) goes through
// net/http as before.
type wire struct {
	addr   string // host:port to dial
	host   string // Host header
	prefix string // escaped path before each request's path, "/api/v1" at least
	dial   func(ctx context.Context, network, addr string) (net.Conn, error)

	mu   sync.Mutex
	idle []*wireConn // most recently used last
}

const (
	// wireMaxBody is the largest request body sent this way; bigger
	// ones (a long message, percent-encoded) go through net/http.
	wireMaxBody = 256 << 10
	// wireMaxIdle bounds the pool: one connection per concurrent call
	// is kept, as many as a loaded proxy has calls in flight.
	wireMaxIdle = 256
	// wireIdleTimeout drops connections unused this long, before the
	// server's own idle timeout (nginx's is 75 s) is likely to.
	wireIdleTimeout = 60 * time.Second
	// wireMaxHeaderBytes bounds the answer's status line and headers.
	wireMaxHeaderBytes = 64 << 10
)

type wireConn struct {
	conn   net.Conn
	br     *bufio.Reader
	probe  *connProbe
	usedAt time.Time
}

// newWire returns a wire client for site, or nil when site must go
// through net/http: https, or a proxy configured (proxy is
// http.ProxyFromEnvironment but in tests).
func newWire(site *url.URL, dial func(ctx context.Context, network, addr string) (net.Conn, error),
	proxy func(*http.Request) (*url.URL, error)) *wire {
	if site.Scheme != "http" {
		return nil
	}
	probe := &http.Request{Method: http.MethodPost, URL: site, Header: http.Header{}}
	if p, err := proxy(probe); err != nil || p != nil {
		return nil
	}
	addr := site.Host
	if site.Port() == "" {
		addr = net.JoinHostPort(site.Hostname(), "80")
	}
	return &wire{
		addr:   addr,
		host:   site.Host,
		prefix: site.EscapedPath() + "/api/v1",
		dial:   dial,
	}
}

// takes says whether r can go this way.
func (w *wire) takes(r *request) bool {
	// HEAD answers carry no body whatever their framing says; no call
	// sends one, so they are left to net/http.
	if w == nil || r.method == http.MethodHead || len(r.header) != 0 || r.length > wireMaxBody || (r.body != nil && r.length < 0) {
		return false
	}
	return isPlainTarget(r.path) && isPlainTarget(r.query)
}

// isPlainTarget checks that s can go into a request line as it is: the
// typed calls build their paths and queries escaped, so anything else is
// a bug that net/http should report, not a header to inject.
func isPlainTarget(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

var wireBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// do sends r and reads the answer, with the same results as Client.do.
// A ctx without a deadline gets the client's timeout, set on the
// connection itself rather than through a derived context.
func (w *wire) do(ctx context.Context, c *Client, r *request) (*Response, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(c.timeout)
	}
	bp := wireBufs.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= 64<<10 {
			wireBufs.Put(bp)
		}
	}()
	msg, err := c.appendWireRequest((*bp)[:0], w, r)
	*bp = msg
	if err != nil {
		return nil, fmt.Errorf("zulip: %s: building request: %w", r.endpoint, err)
	}
	for attempt := 0; ; attempt++ {
		wc, reused, err := w.get(ctx, deadline)
		if err != nil {
			return nil, transportError(ctx, r.endpoint, err)
		}
		resp, err := w.exchange(ctx, deadline, wc, msg)
		if err == nil {
			return resp, nil
		}
		var stale *staleConnError
		if errors.As(err, &stale) && reused && attempt == 0 && ctx.Err() == nil && time.Now().Before(deadline) &&
			(stale.unsent || r.method == http.MethodGet) {
			// The server closed a pooled connection as the request
			// went out. Sent again only when Zulip cannot have acted
			// on it: nothing was written, or it was a read.
			continue
		}
		if errors.As(err, &stale) {
			err = stale.err
		}
		var bad *BadResponseError
		if errors.As(err, &bad) {
			bad.Endpoint = r.endpoint
			return nil, bad
		}
		return nil, transportError(ctx, r.endpoint, err)
	}
}

// appendWireRequest writes r's request line, headers and body to b.
func (c *Client) appendWireRequest(b []byte, w *wire, r *request) ([]byte, error) {
	b = append(b, r.method...)
	b = append(b, ' ')
	b = append(b, w.prefix...)
	b = append(b, r.path...)
	if r.query != "" {
		b = append(b, '?')
		b = append(b, r.query...)
	}
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, w.host...)
	b = append(b, "\r\nUser-Agent: "...)
	b = append(b, c.userAgent...)
	b = append(b, "\r\nAccept: application/json\r\n"...)
	if r.auth == authBasic {
		b = append(b, "Authorization: "...)
		b = append(b, c.hdrAuth[0]...)
		b = append(b, "\r\n"...)
	}
	if r.ctype != "" {
		b = append(b, "Content-Type: "...)
		b = append(b, r.ctype...)
		b = append(b, "\r\n"...)
	}
	n := r.length
	if r.body == nil || n < 0 {
		n = 0
	}
	if n > 0 || r.method == http.MethodPost || r.method == http.MethodPatch || r.method == http.MethodPut {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, n, 10)
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	if n > 0 {
		start := len(b)
		b = append(b, make([]byte, n)...)
		if _, err := io.ReadFull(r.body, b[start:]); err != nil {
			return b, fmt.Errorf("reading body: %w", err)
		}
	}
	return b, nil
}

// staleConnError is a failure before any answer arrived, which on a
// reused connection usually means the server had closed it.
type staleConnError struct {
	err    error
	unsent bool // nothing of the request was written
}

func (e *staleConnError) Error() string { return e.err.Error() }
func (e *staleConnError) Unwrap() error { return e.err }

var aLongTimeAgo = time.Unix(1, 0)

// exchange writes msg and reads one answer on wc. wc goes back to the
// pool when the answer was read whole and the server keeps it open.
func (w *wire) exchange(ctx context.Context, deadline time.Time, wc *wireConn, msg []byte) (resp *Response, err error) {
	keep := false
	defer func() {
		if keep {
			w.put(wc)
		} else {
			wc.conn.Close()
		}
	}()
	if err := wc.conn.SetDeadline(deadline); err != nil {
		return nil, &staleConnError{err: err, unsent: true}
	}
	if ctx.Done() != nil {
		// A caller that goes away (its own client hung up) ends the
		// call at once; the connection is then closed, not reused.
		stop := context.AfterFunc(ctx, func() { _ = wc.conn.SetDeadline(aLongTimeAgo) })
		defer func() {
			if !stop() {
				keep = false
			}
		}()
	}
	if n, err := wc.conn.Write(msg); err != nil {
		return nil, &staleConnError{err: err, unsent: n == 0}
	}
	resp, keep, err = readWireResponse(wc.br)
	return resp, err
}
