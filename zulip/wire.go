package zulip

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
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
	if w == nil || len(r.header) != 0 || r.length > wireMaxBody || (r.body != nil && r.length < 0) {
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
		resp, err := w.exchange(ctx, deadline, wc, msg, r.method == http.MethodHead)
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
func (w *wire) exchange(ctx context.Context, deadline time.Time, wc *wireConn, msg []byte, head bool) (resp *Response, err error) {
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
	resp, keep, err = readWireResponse(wc.br, head)
	return resp, err
}

// readWireResponse reads one answer: status line, the headers Response
// keeps (and those that frame the body), and the body. keep says whether
// the connection can carry another request.
func readWireResponse(br *bufio.Reader, head bool) (*Response, bool, error) {
	var (
		status  int
		hdr     http.Header
		length  int64 = -1
		chunked bool
		closing bool
		total   int
	)
	for {
		line, err := readWireLine(br, &total)
		if err != nil {
			if total == 0 {
				// Nothing at all came back: for a pooled connection,
				// the server had most likely closed it.
				return nil, false, &staleConnError{err: err}
			}
			return nil, false, err
		}
		st, minor, ok := parseStatusLine(line)
		if !ok {
			return nil, false, &BadResponseError{Reason: "not an HTTP/1.x answer"}
		}
		status = st
		closing = minor == 0 // HTTP/1.0: no keep-alive asked for, none assumed
		hdr, length, chunked, closing, err = readWireHeaders(br, &total, closing, status)
		if err != nil {
			return nil, false, err
		}
		if status >= 200 || status == http.StatusSwitchingProtocols {
			break
		}
		// An interim answer (100 Continue, 103 Early Hints): the real
		// one follows.
	}
	if status == http.StatusSwitchingProtocols {
		return nil, false, &BadResponseError{Status: status, Reason: "switched protocols"}
	}
	if hdr == nil {
		hdr = http.Header{}
	}
	resp := &Response{Status: status, Header: hdr}
	if head || status == http.StatusNoContent || status == http.StatusNotModified {
		return resp, !closing, nil
	}
	switch {
	case chunked:
		body, err := readLimited(httputil.NewChunkedReader(br))
		if err != nil {
			return nil, false, err
		}
		// A chunked body ends with optional trailers and a blank line.
		for {
			line, err := readWireLine(br, &total)
			if err != nil {
				return nil, false, err
			}
			if len(line) == 0 {
				break
			}
		}
		resp.Body = body
	case length >= 0:
		if length > MaxResponseBytes {
			return nil, false, &BadResponseError{Status: status, ContentType: hdr.Get("Content-Type"),
				Reason: fmt.Sprintf("answer larger than %d bytes", MaxResponseBytes)}
		}
		resp.Body = make([]byte, length)
		if _, err := io.ReadFull(br, resp.Body); err != nil {
			return nil, false, err
		}
	default:
		// No framing: the body runs to the end of the connection.
		body, err := readLimited(br)
		if err != nil {
			return nil, false, err
		}
		resp.Body = body
		closing = true
	}
	return resp, !closing, nil
}

func readLimited(r io.Reader) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r, MaxResponseBytes+1))
	if err != nil {
		return nil, err
	}
	if len(body) > MaxResponseBytes {
		return nil, &BadResponseError{Reason: fmt.Sprintf("answer larger than %d bytes", MaxResponseBytes)}
	}
	return body, nil
}

// readWireLine reads one CRLF- (or LF-) terminated line without its end,
// counting bytes against the header limit. The slice is valid until the
// next read.
func readWireLine(br *bufio.Reader, total *int) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	*total += len(line)
	if err == bufio.ErrBufferFull || *total > wireMaxHeaderBytes {
		return nil, &BadResponseError{Reason: "answer headers too large"}
	}
	if err != nil {
		if err == io.EOF && *total > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// parseStatusLine reads "HTTP/1.x NNN reason".
func parseStatusLine(line []byte) (status, minor int, ok bool) {
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return 0, 0, false
	}
	if line[7] < '0' || line[7] > '9' {
		return 0, 0, false
	}
	minor = int(line[7] - '0')
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return 0, 0, false
		}
		status = status*10 + int(c-'0')
	}
	if status < 100 || (len(line) > 12 && line[12] != ' ') {
		return 0, 0, false
	}
	return status, minor, true
}

const jsonType = "application/json"

// wireKept are the headers Response keeps, by their lower-case names.
var wireKept = map[string]string{
	"content-type":          "Content-Type",
	"retry-after":           "Retry-After",
	"x-ratelimit-limit":     "X-Ratelimit-Limit",
	"x-ratelimit-remaining": "X-Ratelimit-Remaining",
	"x-ratelimit-reset":     "X-Ratelimit-Reset",
	"location":              "Location",
}

// readWireHeaders reads header lines up to the blank line. Only the
// headers that frame the body or that Response keeps are looked at;
// Location is dropped again unless the status is a redirect.
func readWireHeaders(br *bufio.Reader, total *int, closing bool, status int) (http.Header, int64, bool, bool, error) {
	var (
		hdr     http.Header
		length  int64 = -1
		chunked bool
		lower   [32]byte
		// Connection: close always ends the connection; keep-alive
		// only matters to an HTTP/1.0 answer.
		sawClose, sawKeepAlive bool
	)
	for {
		line, err := readWireLine(br, total)
		if err != nil {
			return nil, 0, false, false, err
		}
		if len(line) == 0 {
			if sawClose {
				closing = true
			} else if sawKeepAlive {
				closing = false
			}
			if chunked && length >= 0 {
				// Both framings: chunked wins (RFC 9112), and the
				// connection cannot be trusted for another request.
				length, closing = -1, true
			}
			return hdr, length, chunked, closing, nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			return nil, 0, false, false, &BadResponseError{Status: status, Reason: "folded header line"}
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || colon > len(lower) {
			if colon <= 0 {
				return nil, 0, false, false, &BadResponseError{Status: status, Reason: "malformed header line"}
			}
			continue // a long name is none of the ones read here
		}
		name := lower[:colon]
		for i, c := range line[:colon] {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			name[i] = c
		}
		value := bytes.TrimSpace(line[colon+1:])
		switch string(name) {
		case "content-length":
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || n < 0 || (length >= 0 && n != length) {
				return nil, 0, false, false, &BadResponseError{Status: status, Reason: "bad Content-Length"}
			}
			length = n
		case "transfer-encoding":
			if !bytes.EqualFold(value, []byte("chunked")) {
				return nil, 0, false, false, &BadResponseError{Status: status, Reason: "unsupported Transfer-Encoding"}
			}
			chunked = true
		case "connection":
			for _, tok := range bytes.Split(value, []byte(",")) {
				tok = bytes.TrimSpace(tok)
				if bytes.EqualFold(tok, []byte("close")) {
					sawClose = true
				} else if bytes.EqualFold(tok, []byte("keep-alive")) {
					sawKeepAlive = true
				}
			}
		default:
			canon, ok := wireKept[string(name)]
			if !ok || (canon == "Location" && (status < 300 || status >= 400)) {
				continue
			}
			if hdr == nil {
				hdr = make(http.Header, 2)
			}
			v := jsonType // Zulip's usual Content-Type, without a copy
			if canon != "Content-Type" || string(value) != jsonType {
				v = string(value)
			}
			hdr[canon] = append(hdr[canon], v)
		}
	}
}
