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
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// scripted is a raw TCP server whose answers each test writes byte for
// byte, to try the client's own HTTP/1.1 code on what real servers (and
// broken ones) send. serve runs once per connection, with the
// connection's number from 0.
type scripted struct {
	ln       net.Listener
	conns    atomic.Int32
	requests atomic.Int32
	wg       sync.WaitGroup
}

func newScripted(t *testing.T, serve func(s *scripted, n int, c net.Conn, br *bufio.Reader)) *scripted {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scripted{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := int(s.conns.Add(1)) - 1
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				serve(s, n, c, bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

// read reads one request, counting it; nil when the client hung up.
func (s *scripted) read(br *bufio.Reader) *http.Request {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil
	}
	_, _ = io.Copy(io.Discard, req.Body)
	s.requests.Add(1)
	return req
}

func (s *scripted) client(t *testing.T, timeout time.Duration) *Client {
	t.Helper()
	c, err := NewClient(Config{Site: "http://" + s.ln.Addr().String(), Email: "bot@example.com",
		APIKey: strings.Repeat("k", 32), Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	if c.wire == nil {
		t.Fatal("a plain-HTTP site does not use the client's own HTTP/1.1 path")
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

const meJSON = `{"result":"success","msg":"","user_id":7,"email":"bot@example.com","full_name":"Bot","is_bot":true}`

func answer(body string, extra ...string) string {
	h := "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
	for _, e := range extra {
		h += e + "\r\n"
	}
	return h + fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(body), body)
}

func sendTo(c *Client) error {
	_, err := c.SendMessage(context.Background(), SendMessage{StreamID: 1, Topic: "t", Content: "hi"})
	return err
}

const sendJSON = `{"result":"success","msg":"","id":42}`

// Calls one after another share one connection.
func TestWireReusesConnections(t *testing.T) {
	s := newScripted(t, func(s *scripted, _ int, c net.Conn, br *bufio.Reader) {
		for s.read(br) != nil {
			_, _ = io.WriteString(c, answer(sendJSON, "X-RateLimit-Remaining: 199"))
		}
	})
	c := s.client(t, 0)
	for range 10 {
		if err := sendTo(c); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.conns.Load(); n != 1 {
		t.Errorf("10 calls opened %d connections, want 1", n)
	}
}

// The exact request that goes out: form body, credentials, framing, and
// nothing the caller did not decide (no gzip negotiation, no method
// override).
func TestWireRequestBytes(t *testing.T) {
	got := make(chan *http.Request, 1)
	s := newScripted(t, func(s *scripted, _ int, c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, _ := io.ReadAll(req.Body)
		req.Form = nil
		req.PostForm = map[string][]string{"raw": {string(body)}}
		got <- req
		_, _ = io.WriteString(c, answer(sendJSON))
	})
	c := s.client(t, 0)
	if err := sendTo(c); err != nil {
		t.Fatal(err)
	}
	req := <-got
	checks := map[string]string{
		"method":         req.Method,
		"uri":            req.RequestURI,
		"proto":          req.Proto,
		"host":           req.Host,
		"content-type":   req.Header.Get("Content-Type"),
		"content-length": fmt.Sprint(req.ContentLength),
		"body":           req.PostForm["raw"][0],
		"user-agent":     req.Header.Get("User-Agent"),
		"gzip":           req.Header.Get("Accept-Encoding"),
	}
	user, pass, _ := req.BasicAuth()
	want := map[string]string{
		"method":         "POST",
		"uri":            "/api/v1/messages",
		"proto":          "HTTP/1.1",
		"host":           s.ln.Addr().String(),
		"content-type":   "application/x-www-form-urlencoded",
		"content-length": "",
		"body":           "type=stream&to=1&topic=t&content=hi",
		"user-agent":     DefaultUserAgent,
		"gzip":           "",
	}
	want["content-length"] = fmt.Sprint(len(want["body"]))
	for k, w := range want {
		if checks[k] != w {
			t.Errorf("%s: %q, want %q", k, checks[k], w)
		}
	}
	if user != "bot@example.com" || pass != strings.Repeat("k", 32) {
		t.Errorf("basic auth %q:%q", user, pass)
	}
}

// A server that closed an idle connection (restart, idle timeout) costs
// nothing: the closed connection is noticed before the request goes out,
// and the send is made once, on a new connection.
func TestWireClosedIdleConnection(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("idle connections are checked before use on Linux only")
	}
	s := newScripted(t, func(s *scripted, _ int, c net.Conn, br *bufio.Reader) {
		if s.read(br) != nil {
			_, _ = io.WriteString(c, answer(sendJSON))
		}
		// then close, keep-alive notwithstanding
	})
	c := s.client(t, 0)
	for i := range 3 {
		if err := sendTo(c); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		time.Sleep(20 * time.Millisecond) // let the close arrive
	}
	if n := s.requests.Load(); n != 3 {
		t.Errorf("the server got %d sends, want 3", n)
	}
}

// A connection that breaks after the request went out: a send is not
// made again (Zulip may have posted it), a read is.
func TestWireBrokenAfterWrite(t *testing.T) {
	s := newScripted(t, func(s *scripted, n int, c net.Conn, br *bufio.Reader) {
		if s.read(br) == nil {
			return
		}
		if n == 0 {
			_, _ = io.WriteString(c, answer(meJSON))
			if s.read(br) != nil {
				return // second request on this connection: hang up
			}
			return
		}
		_, _ = io.WriteString(c, answer(meJSON))
	})
	c := s.client(t, 0)
	if _, _, err := c.Me(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Me(context.Background()); err != nil {
		t.Fatalf("a read on a connection that broke was not made again: %v", err)
	}
	if got := s.requests.Load(); got != 3 {
		t.Errorf("server got %d requests, want 3 (one, one lost, its retry)", got)
	}

	s.requests.Store(0)
	s.conns.Store(0)
	c2 := s.client(t, 0)
	if _, _, err := c2.Me(context.Background()); err != nil {
		t.Fatal(err)
	}
	err := sendTo(c2)
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("send on a connection that broke: %v, want ErrUnreachable", err)
	}
	if got := s.requests.Load(); got != 2 {
		t.Errorf("server got %d requests, want 2: a send must not be repeated", got)
	}
}

// Answers framed every way HTTP/1.1 allows are read whole, and the
// connection is kept only when the server keeps it.
func TestWireFraming(t *testing.T) {
	chunked := "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
		fmt.Sprintf("%x\r\n%s\r\n", 20, meJSON[:20]) + fmt.Sprintf("%x\r\n%s\r\n", len(meJSON)-20, meJSON[20:]) +
		"0\r\nX-Trailer: yes\r\n\r\n"
	tests := []struct {
		name       string
		answer     string
		closeAfter bool  // the server hangs up after answering
		wantConns  int32 // after three calls
	}{
		{"content-length", answer(meJSON), false, 1},
		{"chunked with trailers", chunked, false, 1},
		{"connection close", answer(meJSON, "Connection: close"), false, 3},
		{"close and keep-alive both", answer(meJSON, "Connection: keep-alive, close"), false, 3},
		{"HTTP/1.0", strings.Replace(answer(meJSON), "HTTP/1.1", "HTTP/1.0", 1), false, 3},
		{"HTTP/1.0 keep-alive", strings.Replace(answer(meJSON, "Connection: keep-alive"), "HTTP/1.1", "HTTP/1.0", 1), false, 1},
		{"interim answer first", "HTTP/1.1 100 Continue\r\n\r\n" + answer(meJSON), false, 1},
		{"no framing: to end of connection", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + meJSON, true, 3},
		{"both framings", strings.Replace(chunked, "Transfer-Encoding", "Content-Length: 5\r\nTransfer-Encoding", 1), false, 3},
		{"lower-case names, LF only", "HTTP/1.1 200 OK\ncontent-type: application/json\ncontent-length: " + fmt.Sprint(len(meJSON)) + "\n\n" + meJSON, false, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newScripted(t, func(s *scripted, _ int, c net.Conn, br *bufio.Reader) {
				for s.read(br) != nil {
					_, _ = io.WriteString(c, tt.answer)
					if tt.closeAfter {
						return
					}
				}
			})
			c := s.client(t, 0)
			for i := range 3 {
				u, _, err := c.Me(context.Background())
				if err != nil {
					t.Fatalf("call %d: %v", i, err)
				}
				if u.UserID != 7 {
					t.Fatalf("call %d: user %d", i, u.UserID)
				}
			}
			if got := s.conns.Load(); got != tt.wantConns {
				t.Errorf("%d connections, want %d", got, tt.wantConns)
			}
		})
	}
}

// Answers no HTTP server should give are Zulip answering something that
// is not Zulip: ErrBadResponse, and the connection is not reused.
func TestWireBadAnswers(t *testing.T) {
	tests := map[string]string{
		"not HTTP":              "SSH-2.0-OpenSSH_9.2\r\n",
		"bad status":            "HTTP/1.1 2x0 OK\r\n\r\n",
		"bad content-length":    "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
		"two content-lengths":   "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"folded header":         "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n  folded\r\nContent-Length: 0\r\n\r\n",
		"no colon":              "HTTP/1.1 200 OK\r\nnonsense\r\n\r\n",
		"gzip framing":          "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
		"huge headers":          "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-Pad: "+strings.Repeat("p", 1000)+"\r\n", 80) + "\r\n",
		"too large":             fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", MaxResponseBytes+1),
		"switching protocols":   "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
		"not JSON (via decode)": "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5\r\n\r\n<html",
	}
	for name, raw := range tests {
		t.Run(name, func(t *testing.T) {
			s := newScripted(t, func(s *scripted, _ int, c net.Conn, br *bufio.Reader) {
				if s.read(br) != nil {
					_, _ = io.WriteString(c, raw)
				}
				time.Sleep(50 * time.Millisecond)
			})
			c := s.client(t, 2*time.Second)
			_, _, err := c.Me(context.Background())
			if !errors.Is(err, ErrBadResponse) {
				t.Fatalf("err = %v, want ErrBadResponse", err)
			}
			if !strings.Contains(err.Error(), "GET /users/me") {
				t.Errorf("the error does not name the call: %v", err)
			}
		})
	}
}

// A Zulip that does not answer in time is a timeout; a caller that goes
// away ends the call at once and is not Zulip's fault.
func TestWireTimeoutAndCancel(t *testing.T) {
	s := newScripted(t, func(s *scripted, _ int, c net.Conn, br *bufio.Reader) {
		s.read(br)
		_, _ = io.Copy(io.Discard, br) // never answer
	})
	c := s.client(t, 100*time.Millisecond)
	if err := sendTo(c); !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	c = s.client(t, time.Minute)
	start := time.Now()
	_, err := c.SendMessage(ctx, SendMessage{StreamID: 1, Topic: "t", Content: "hi"})
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) || errors.Is(err, ErrUnreachable) {
		t.Fatalf("err = %v, want the caller's cancellation", err)
	}
	if time.Since(start) > 30*time.Second {
		t.Error("a cancelled call waited for the timeout")
	}
}

// Requests the lean path does not take go through net/http.
func TestWireTakes(t *testing.T) {
	w := &wire{}
	tests := []struct {
		name string
		r    request
		want bool
	}{
		{"small form", request{path: "/messages", body: strings.NewReader("a=b"), length: 3}, true},
		{"no body", request{path: "/users/me"}, true},
		{"unknown length (an upload)", request{path: "/user_uploads", body: strings.NewReader("x"), length: -1}, false},
		{"large body", request{path: "/messages", body: strings.NewReader(""), length: wireMaxBody + 1}, false},
		{"extra headers (a webhook)", request{path: "/external/github", header: http.Header{"X-Github-Event": {"ping"}}}, false},
		{"HEAD", request{method: http.MethodHead, path: "/users/me"}, false},
		{"space in path", request{path: "/a b"}, false},
		{"CRLF in query", request{path: "/x", query: "a=1\r\nX: y"}, false},
	}
	for _, tt := range tests {
		if got := w.takes(&tt.r); got != tt.want {
			t.Errorf("%s: takes = %v, want %v", tt.name, got, tt.want)
		}
	}
	var none *wire
	if none.takes(&request{path: "/users/me"}) {
		t.Error("a client without the lean path took a request")
	}
}

// https and a proxy from the environment keep net/http.
func TestWireOnlyForPlainHTTP(t *testing.T) {
	noProxy := func(*http.Request) (*url.URL, error) { return nil, nil }
	viaProxy := func(*http.Request) (*url.URL, error) { return url.Parse("http://proxy.example.org:3128") }
	for _, tt := range []struct {
		site  string
		proxy func(*http.Request) (*url.URL, error)
		want  bool
	}{
		{"http://127.0.0.1:9991", noProxy, true},
		{"http://zulip.internal/prefix", noProxy, true},
		{"https://chat.example.org", noProxy, false},
		{"http://zulip.internal", viaProxy, false},
	} {
		u, err := url.Parse(tt.site)
		if err != nil {
			t.Fatal(err)
		}
		w := newWire(u, nil, tt.proxy)
		if (w != nil) != tt.want {
			t.Errorf("%s: lean path %v, want %v", tt.site, w != nil, tt.want)
		}
		if w != nil && tt.site == "http://zulip.internal/prefix" && (w.addr != "zulip.internal:80" || w.prefix != "/prefix/api/v1") {
			t.Errorf("%s: dials %q, paths under %q", tt.site, w.addr, w.prefix)
		}
	}
}

// The pool drops what the server has likely closed by now: a connection
// idle past wireIdleTimeout is closed when the next one comes back, and
// the pool never holds more than wireMaxIdle.
func TestWirePoolBounds(t *testing.T) {
	w := &wire{}
	newConn := func(usedAt time.Time) (*wireConn, net.Conn) {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		return &wireConn{conn: a, br: bufio.NewReader(a), usedAt: usedAt}, b
	}
	old, oldPeer := newConn(time.Now().Add(-2 * wireIdleTimeout))
	w.idle = append(w.idle, old)
	fresh, _ := newConn(time.Time{})
	w.put(fresh)
	if len(w.idle) != 1 || w.idle[0] != fresh {
		t.Fatalf("pool after put: %d connections", len(w.idle))
	}
	_ = oldPeer.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := oldPeer.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("the expired connection was not closed: %v", err)
	}

	for range wireMaxIdle + 5 {
		c, _ := newConn(time.Time{})
		w.put(c)
	}
	if len(w.idle) != wireMaxIdle {
		t.Errorf("pool holds %d connections, want at most %d", len(w.idle), wireMaxIdle)
	}
	w.closeIdle()
	if len(w.idle) != 0 {
		t.Errorf("%d connections left after closeIdle", len(w.idle))
	}
}

// Many sends at once share the pool safely: every one arrives exactly
// once, and no more connections are opened than calls were in flight.
func TestWireConcurrentSends(t *testing.T) {
	s := newScripted(t, func(s *scripted, _ int, c net.Conn, br *bufio.Reader) {
		for s.read(br) != nil {
			_, _ = io.WriteString(c, answer(sendJSON))
		}
	})
	c := s.client(t, 0)
	const workers, each = 16, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if err := sendTo(c); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := s.requests.Load(); got != workers*each {
		t.Errorf("server got %d sends, want %d", got, workers*each)
	}
	if got := s.conns.Load(); got > workers {
		t.Errorf("%d connections for %d concurrent callers", got, workers)
	}
}

// FuzzReadWireResponse feeds the answer parser what a broken or hostile
// upstream could send: it must never panic, and what it accepts must be
// a whole answer within the limits.
func FuzzReadWireResponse(f *testing.F) {
	f.Add([]byte(answer(meJSON)))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"))
	f.Add([]byte("HTTP/1.0 200 OK\r\n\r\nbody to the end"))
	f.Add([]byte("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 0.5\r\nX-RateLimit-Remaining: 0\r\nContent-Length: 2\r\n\r\n{}"))
	f.Add([]byte("HTTP/1.1 302 Found\r\nLocation: /login\r\nContent-Length: 0\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		resp, _, err := readWireResponse(bufio.NewReaderSize(strings.NewReader(string(data)), 4096))
		if err != nil {
			return
		}
		if resp.Status < 200 || resp.Status > 999 {
			t.Errorf("accepted status %d", resp.Status)
		}
		if len(resp.Body) > MaxResponseBytes {
			t.Errorf("accepted a %d-byte body", len(resp.Body))
		}
		for k := range resp.Header {
			if k != "Content-Type" && k != "Retry-After" && k != "Location" && !strings.HasPrefix(k, "X-Ratelimit-") {
				t.Errorf("kept header %q", k)
			}
		}
		if resp.Header.Get("Location") != "" && (resp.Status < 300 || resp.Status >= 400) {
			t.Errorf("kept Location on a %d", resp.Status)
		}
	})
}
