package zulip

import (
	"bufio"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// scripted is a raw TCP server whose answers each test writes byte for
// byte, to try the client's transport on what real servers (and broken
// ones) send. serve runs once per connection, with the
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
func TestTransportReusesConnections(t *testing.T) {
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
func TestTransportRequestBytes(t *testing.T) {
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
func TestTransportClosedIdleConnection(t *testing.T) {
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
func TestTransportBrokenAfterWrite(t *testing.T) {
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
func TestTransportFraming(t *testing.T) {
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
		// Transfer-Encoding overrides Content-Length (RFC 9112, 6.3).
		{"both framings", strings.Replace(chunked, "Transfer-Encoding", "Content-Length: 5\r\nTransfer-Encoding", 1), false, 1},
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

// Answers no HTTP server should give are a failed call (502 to the bot):
// ErrBadResponse where an answer was read, ErrUnreachable where net/http
// refused it as HTTP; either way the error names the call.
func TestTransportBadAnswers(t *testing.T) {
	tests := map[string]string{
		"not HTTP":              "SSH-2.0-OpenSSH_9.2\r\n",
		"bad status":            "HTTP/1.1 2x0 OK\r\n\r\n",
		"bad content-length":    "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
		"signed content-length": "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: +99\r\n\r\n" + meJSON,
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
			if !errors.Is(err, ErrBadResponse) && !errors.Is(err, ErrUnreachable) {
				t.Fatalf("err = %v, want ErrBadResponse or ErrUnreachable", err)
			}
			if !strings.Contains(err.Error(), "GET /users/me") {
				t.Errorf("the error does not name the call: %v", err)
			}
		})
	}
}

// A Zulip that does not answer in time is a timeout; a caller that goes
// away ends the call at once and is not Zulip's fault.
func TestTransportTimeoutAndCancel(t *testing.T) {
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

// Many sends at once share the pool safely: every one arrives exactly
// once, and connections stay bounded by the calls in flight.
func TestTransportConcurrentSends(t *testing.T) {
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
	// net/http may finish a dial a waiting caller started after another
	// connection came free, and keeps it: at most one spare per caller.
	if got := s.conns.Load(); got > 2*workers {
		t.Errorf("%d connections for %d concurrent callers", got, workers)
	}
}

// A header line longer than 4 KiB (a long Content-Security-Policy, say)
// is an answer like any other: the lean client this transport replaced
// failed the call on it.
func TestTransportLongHeaderLine(t *testing.T) {
	long := "Content-Security-Policy: " + strings.Repeat("a", 6000)
	s := newScripted(t, func(s *scripted, _ int, c net.Conn, br *bufio.Reader) {
		for s.read(br) != nil {
			_, _ = io.WriteString(c, answer(meJSON, long))
		}
	})
	u, _, err := s.client(t, 0).Me(context.Background())
	if err != nil {
		t.Fatalf("an answer with a 6000-byte header line: %v", err)
	}
	if u.UserID != 7 {
		t.Errorf("user %d", u.UserID)
	}
}

// An answer nobody asked for, sent on an idle connection, is never read
// as the answer to the next call (which would hand one key's caller the
// answer to another's request): the connection is dropped instead.
func TestTransportStrayAnswer(t *testing.T) {
	stray := strings.Replace(meJSON, `"user_id":7`, `"user_id":666`, 1)
	s := newScripted(t, func(s *scripted, _ int, c net.Conn, br *bufio.Reader) {
		for s.read(br) != nil {
			_, _ = io.WriteString(c, answer(meJSON))
			_, _ = io.WriteString(c, answer(stray))
		}
	})
	c := s.client(t, 0)
	for i := range 3 {
		u, _, err := c.Me(context.Background())
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if u.UserID != 7 {
			t.Fatalf("call %d was answered with the stray answer (user %d)", i, u.UserID)
		}
		time.Sleep(20 * time.Millisecond) // let the stray answer arrive
	}
}

// tlsZulip is a TLS server with HTTP/2 offered, as a real Zulip's nginx
// is, that answers every call with meJSON and records the protocols.
func tlsZulip(t *testing.T) (*httptest.Server, *[]string, *sync.Mutex) {
	t.Helper()
	var mu sync.Mutex
	var protos []string
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		protos = append(protos, r.Proto)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, meJSON)
	}))
	ts.EnableHTTP2 = true
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return ts, &protos, &mu
}

// certFile writes the server's certificate as a PEM bundle.
func certFile(t *testing.T, ts *httptest.Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw})
	if err := os.WriteFile(path, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Over https the client keeps to HTTP/1.1 keep-alive unless HTTP/2 is
// asked for (then it is used where offered); a certificate is checked
// against cert_bundle, never skipped.
func TestTransportTLS(t *testing.T) {
	ts, protos, mu := tlsZulip(t)
	bundle := certFile(t, ts)
	for _, tt := range []struct {
		name  string
		http2 bool
		want  string
	}{
		{"default: HTTP/1.1 although HTTP/2 is offered", false, "HTTP/1.1"},
		{"HTTP/2 asked for", true, "HTTP/2.0"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			*protos = nil
			mu.Unlock()
			c, err := NewClient(Config{Site: ts.URL, Email: "bot@example.com", APIKey: strings.Repeat("k", 32),
				CertBundle: bundle, HTTP2: tt.http2})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.CloseIdleConnections)
			var wg sync.WaitGroup
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, _, err := c.Me(context.Background()); err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			mu.Lock()
			defer mu.Unlock()
			if len(*protos) != 8 {
				t.Fatalf("server saw %d calls", len(*protos))
			}
			for _, p := range *protos {
				if p != tt.want {
					t.Errorf("call over %s, want %s", p, tt.want)
				}
			}
		})
	}

	c, err := NewClient(Config{Site: ts.URL, Email: "bot@example.com", APIKey: strings.Repeat("k", 32)})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Me(context.Background()); !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a certificate outside the trusted roots: %v, want ErrUnreachable naming the certificate", err)
	}
	if _, err := NewClient(Config{Site: ts.URL, Email: "bot@example.com", APIKey: strings.Repeat("k", 32),
		CertBundle: filepath.Join(t.TempDir(), "missing.pem")}); err == nil || !strings.Contains(err.Error(), "cert_bundle") {
		t.Errorf("a missing cert_bundle: %v, want an error naming cert_bundle", err)
	}
}
