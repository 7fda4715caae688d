package zulip_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/zwop/caddy-zulip-proxy/zulip"
	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

// Every fault switch maps to the error class the HTTP layer turns into
// its answer: Zulip's own error (passed through), 502 or 504.
func TestFaultsBecomeDistinctErrors(t *testing.T) {
	tests := []struct {
		name  string
		fault emulator.Fault
		// timeout is the call's deadline.
		timeout time.Duration
		check   func(t *testing.T, err error)
	}{
		{"delay beyond the deadline", emulator.Fault{Delay: 300 * time.Millisecond}, 20 * time.Millisecond, func(t *testing.T, err error) {
			if !errors.Is(err, zulip.ErrTimeout) || errors.Is(err, zulip.ErrUnreachable) {
				t.Errorf("got %v, want ErrTimeout only", err)
			}
		}},
		{"dropped connection", emulator.Fault{Drop: true}, time.Second, func(t *testing.T, err error) {
			if !errors.Is(err, zulip.ErrUnreachable) {
				t.Errorf("got %v, want ErrUnreachable", err)
			}
		}},
		{"garbage body", emulator.Fault{Garbage: true}, time.Second, func(t *testing.T, err error) {
			var bad *zulip.BadResponseError
			if !errors.Is(err, zulip.ErrBadResponse) || !errors.As(err, &bad) || bad.Status != 200 {
				t.Errorf("got %v, want ErrBadResponse with status 200", err)
			}
		}},
		{"nginx 502 page", emulator.Fault{Status: 502}, time.Second, func(t *testing.T, err error) {
			var bad *zulip.BadResponseError
			if !errors.As(err, &bad) || bad.Status != 502 || !strings.Contains(bad.ContentType, "text/html") {
				t.Errorf("got %v, want BadResponseError 502 text/html", err)
			}
		}},
		{"nginx 504 page", emulator.Fault{Status: 504}, time.Second, func(t *testing.T, err error) {
			var bad *zulip.BadResponseError
			if !errors.As(err, &bad) || bad.Status != 504 {
				t.Errorf("got %v, want BadResponseError 504", err)
			}
		}},
		{"Zulip 500", emulator.Fault{Status: 500}, time.Second, func(t *testing.T, err error) {
			var ze *zulip.Error
			if !errors.As(err, &ze) || ze.Status != 500 || ze.Msg != "Internal server error" || ze.Raw == nil {
				t.Errorf("got %v, want Zulip error 500", err)
			}
		}},
		{"rate limited", emulator.Fault{RateLimited: true, RetryAfter: 2.25}, time.Second, func(t *testing.T, err error) {
			var ze *zulip.Error
			if !errors.As(err, &ze) || ze.Status != 429 || ze.Code != "RATE_LIMIT_HIT" || ze.RetryAfter != 2250*time.Millisecond {
				t.Errorf("got %v (retry after %v), want 429 RATE_LIMIT_HIT after 2.25s", err, ze.RetryAfter)
			}
			if ze.Raw.Header.Get("Retry-After") != "2.25" {
				t.Errorf("Retry-After %q not kept for passing on", ze.Raw.Header.Get("Retry-After"))
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := emulator.NewServer(t)
			c, _ := client(t, srv)
			if err := srv.SetFault(tt.fault); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
			defer cancel()
			_, _, err := c.Me(ctx)
			if err == nil {
				t.Fatal("no error")
			}
			tt.check(t, err)
			if strings.Contains(err.Error(), emulator.DemoBotKey) {
				t.Errorf("error %q contains the API key", err)
			}
		})
	}
}

func TestUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	key := "0123456789abcdef0123456789abcdef"
	c, err := zulip.NewClient(zulip.Config{Site: "http://" + addr, Email: "bot@example.com", APIKey: key})
	if err != nil {
		t.Fatal(err)
	}
	// A webhook carries the key in its URL: the error must not.
	_, err = c.Webhook(context.Background(), zulip.WebhookCall{Integration: "github"})
	if !errors.Is(err, zulip.ErrUnreachable) || errors.Is(err, zulip.ErrTimeout) {
		t.Errorf("got %v, want ErrUnreachable", err)
	}
	if strings.Contains(err.Error(), key) {
		t.Errorf("error %q contains the API key", err)
	}
}

func TestZulipErrorsCarryTheirFields(t *testing.T) {
	srv := emulator.NewServer(t)
	c, _ := client(t, srv)
	ctx := context.Background()

	_, err := c.SendMessage(ctx, zulip.SendMessage{StreamID: 4242, Topic: "t", Content: "x"})
	var ze *zulip.Error
	if !errors.As(err, &ze) || ze.Status != 400 || ze.Code != "STREAM_DOES_NOT_EXIST" || ze.Extra["stream_id"] != float64(4242) {
		t.Fatalf("got %v (extra %v)", err, ze.Extra)
	}
	if ze.Endpoint != "POST /messages" || !strings.Contains(ze.Error(), "STREAM_DOES_NOT_EXIST") {
		t.Errorf("error %q, endpoint %q", ze.Error(), ze.Endpoint)
	}

	bad, _ := clientAs(t, srv, emulator.DemoBotEmail, "wrongwrongwrongwrongwrongwrong00")
	_, err = bad.SendMessage(ctx, zulip.SendMessage{StreamID: 1, Topic: "t", Content: "x"})
	if !errors.As(err, &ze) || ze.Status != 401 || ze.Code != "UNAUTHORIZED" || ze.Msg != "Invalid API key" {
		t.Errorf("wrong key: %v", err)
	}
	if strings.Contains(err.Error(), "wrongwrong") {
		t.Error("the error contains the key")
	}
}

// A Zulip that is not quite Zulip: each answer is a BadResponseError.
func TestBadResponses(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		reason  string
	}{
		{"redirect", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "https://elsewhere.example/api/v1/users/me", http.StatusMovedPermanently)
		}, "redirect to https://elsewhere.example"},
		{"HTML", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte("<html>login</html>"))
		}, "not JSON"},
		{"JSON without result", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"detail": "nope"}`))
		}, "no \"result\""},
		{"oversized", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"result":"success","msg":"","x":"`))
			chunk := []byte(strings.Repeat("a", 64<<10))
			for i := 0; i < (zulip.MaxResponseBytes/len(chunk))+2; i++ {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		}, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := httptest.NewServer(tt.handler)
			defer ts.Close()
			c, err := zulip.NewClient(zulip.Config{Site: ts.URL, Email: "bot@example.com", APIKey: "0123456789abcdef0123456789abcdef"})
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = c.Me(context.Background())
			var bad *zulip.BadResponseError
			if !errors.As(err, &bad) || !errors.Is(err, zulip.ErrBadResponse) || !strings.Contains(bad.Reason, tt.reason) {
				t.Errorf("got %v, want a bad response (%s)", err, tt.reason)
			}
		})
	}
}

func TestCallerCancellationIsNotZulipsFault(t *testing.T) {
	srv := emulator.NewServer(t)
	c, _ := client(t, srv)
	if err := srv.SetFault(emulator.Fault{Delay: 200 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(10 * time.Millisecond); cancel() }()
	_, _, err := c.Me(ctx)
	if !errors.Is(err, context.Canceled) || errors.Is(err, zulip.ErrTimeout) || errors.Is(err, zulip.ErrUnreachable) {
		t.Errorf("got %v, want context.Canceled only", err)
	}
}

func TestDefaultTimeoutWithoutDeadline(t *testing.T) {
	srv := emulator.NewServer(t)
	c, err := zulip.NewClient(zulip.Config{Site: srv.URL, Email: emulator.DemoBotEmail, APIKey: emulator.DemoBotKey, Timeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.SetFault(emulator.Fault{Delay: 300 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Me(context.Background()); !errors.Is(err, zulip.ErrTimeout) {
		t.Errorf("got %v, want ErrTimeout from Config.Timeout", err)
	}
}

func TestRetryAfterParsing(t *testing.T) {
	tests := []struct {
		header string
		body   string
		want   time.Duration
	}{
		{"28.706807374954224", "", 28706807374 * time.Nanosecond},
		{"3", "", 3 * time.Second},
		{"", `,"retry-after":1.5`, 1500 * time.Millisecond},
		{"garbage", "", 0},
		{"-1", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.header+tt.body, func(t *testing.T) {
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.header != "" {
					w.Header().Set("Retry-After", tt.header)
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(429)
				_, _ = w.Write([]byte(`{"result":"error","msg":"API usage exceeded rate limit","code":"RATE_LIMIT_HIT"` + tt.body + `}`))
			}))
			defer ts.Close()
			c, _ := zulip.NewClient(zulip.Config{Site: ts.URL, Email: "b@x", APIKey: "0123456789abcdef0123456789abcdef"})
			_, _, err := c.Me(context.Background())
			var ze *zulip.Error
			if !errors.As(err, &ze) {
				t.Fatalf("got %v", err)
			}
			if d := ze.RetryAfter - tt.want; d > time.Microsecond || d < -time.Microsecond {
				t.Errorf("RetryAfter %v, want %v", ze.RetryAfter, tt.want)
			}
		})
	}
}

// Zulip reached over HTTPS offering HTTP/2 is spoken to in HTTP/2 when
// the client asks for it.
func TestHTTP2WhereOffered(t *testing.T) {
	srv := emulator.NewTLSServer(t)
	pool := srv.HTTP.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	c, err := zulip.NewClient(zulip.Config{Site: srv.URL, Email: emulator.DemoBotEmail, APIKey: emulator.DemoBotKey,
		TLSClientConfig: tlsConfig(pool), HTTP2: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, _, err := c.Me(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range srv.Requests() {
		if r.Proto != "HTTP/2.0" {
			t.Errorf("request over %s", r.Proto)
		}
	}
}

func TestSiteURLIsNormalized(t *testing.T) {
	srv := emulator.NewServer(t)
	for _, site := range []string{srv.URL + "/", srv.URL + "/api", srv.URL + "/api/v1/"} {
		c, err := zulip.NewClient(zulip.Config{Site: site, Email: emulator.DemoBotEmail, APIKey: emulator.DemoBotKey})
		if err != nil {
			t.Fatal(err)
		}
		if c.Site() != srv.URL {
			t.Errorf("Site() = %q for %q", c.Site(), site)
		}
		if _, _, err := c.Me(context.Background()); err != nil {
			t.Errorf("%s: %v", site, err)
		}
	}
}

func TestNewClientRejectsBadConfig(t *testing.T) {
	key := "0123456789abcdef0123456789abcdef"
	tests := []struct {
		name string
		cfg  zulip.Config
		want string
	}{
		{"no site", zulip.Config{Email: "b@x", APIKey: key}, "missing site"},
		{"ftp", zulip.Config{Site: "ftp://chat.example.org", Email: "b@x", APIKey: key}, "scheme"},
		{"no host", zulip.Config{Site: "https://", Email: "b@x", APIKey: key}, "no host"},
		{"credentials in URL", zulip.Config{Site: "https://u:p@chat.example.org", Email: "b@x", APIKey: key}, "user:password"},
		{"query", zulip.Config{Site: "https://chat.example.org/?x=1", Email: "b@x", APIKey: key}, "query"},
		{"no email", zulip.Config{Site: "https://chat.example.org", APIKey: key}, "missing email"},
		{"colon in email", zulip.Config{Site: "https://chat.example.org", Email: "b:c@x", APIKey: key}, "invalid email"},
		{"no key", zulip.Config{Site: "https://chat.example.org", Email: "b@x"}, "missing api key"},
		{"space in key", zulip.Config{Site: "https://chat.example.org", Email: "b@x", APIKey: "abc def"}, "invalid api key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := zulip.NewClient(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error mentioning %q", err, tt.want)
			}
			if err != nil && tt.cfg.APIKey != "" && strings.Contains(err.Error(), tt.cfg.APIKey) {
				t.Error("the error contains the key")
			}
		})
	}
	c, err := zulip.NewClient(zulip.Config{Site: "chat.example.org", Email: "b@x", APIKey: key})
	if err != nil || c.Site() != "https://chat.example.org" || c.Email() != "b@x" {
		t.Errorf("a bare host: %v, site %q", err, c.Site())
	}
}

// A Zulip (or a proxy before it) that echoes the request hands the bot's
// key back: in a redirect of a webhook call, whose URL carries api_key,
// or in an error body. No error text, kept header or answer body the
// proxy might pass on or log carries it, nor the URL's query.
func TestAnswersNeverCarryTheBotKey(t *testing.T) {
	const key = "0123456789abcdef0123456789abcdef"
	echo := func(r *http.Request) string {
		return r.URL.RequestURI() + " " + r.Header.Get("Authorization")
	}
	tests := map[string]http.HandlerFunc{
		"redirect echoing the URL": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Location", "https://login.example.org/sso?next="+url.QueryEscape(r.URL.RequestURI()))
			w.WriteHeader(http.StatusFound)
		},
		"error body echoing the request": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			b, _ := json.Marshal(map[string]string{"result": "error", "code": "BAD_REQUEST", "msg": "bad request: " + echo(r)})
			_, _ = w.Write(b)
		},
		"HTML page echoing the request": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			_, _ = io.WriteString(w, "<html>upstream failed for "+echo(r)+"</html>")
		},
	}
	for name, handler := range tests {
		t.Run(name, func(t *testing.T) {
			ts := httptest.NewServer(handler)
			defer ts.Close()
			c, err := zulip.NewClient(zulip.Config{Site: ts.URL, Email: "bot@example.com", APIKey: key})
			if err != nil {
				t.Fatal(err)
			}
			resp, err := c.Webhook(context.Background(), zulip.WebhookCall{Integration: "github",
				Query: url.Values{"stream": {"1"}}, ContentType: "application/json", Body: strings.NewReader("{}"), ContentLength: 2})
			if err == nil {
				t.Fatal("no error")
			}
			var raw *zulip.Response
			var ze *zulip.Error
			var be *zulip.BadResponseError
			switch {
			case errors.As(err, &ze):
				raw = ze.Raw
				if strings.Contains(ze.Msg, key) {
					t.Errorf("Msg carries the key: %s", ze.Msg)
				}
			case errors.As(err, &be):
				raw = be.Raw
			}
			if resp != nil {
				raw = resp
			}
			if s := err.Error(); strings.Contains(s, key) || strings.Contains(s, "api_key") || strings.Contains(s, "bad request:") {
				t.Errorf("the error text carries the key, the query or what Zulip wrote: %s", s)
			}
			for _, s := range []string{fmt.Sprint(raw.Header), string(raw.Body)} {
				if strings.Contains(s, key) {
					t.Errorf("the answer carries the key: %s", s)
				}
			}
		})
	}
}
