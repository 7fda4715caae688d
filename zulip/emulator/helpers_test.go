package emulator_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zwop/caddy-zulip-proxy/internal/zulipspec"
	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

// call is one raw HTTP request to the emulator: tests here speak HTTP
// directly, to reach the corners (repeated parameters, a query and a
// body at once, bad credentials) no well-behaved client produces.
type call struct {
	method string
	path   string
	query  string
	// body is form-encoded as given (kept raw so names can repeat).
	body  string
	ctype string // default form-encoded when body is set
	// as is "email:key"; empty means the demo bot, "-" no credentials.
	as string
}

type answer struct {
	status int
	header http.Header
	raw    []byte
	json   map[string]any
}

func (a answer) str(k string) string { s, _ := a.json[k].(string); return s }
func (a answer) num(k string) float64 {
	n, _ := a.json[k].(float64)
	return n
}

type env struct {
	t   *testing.T
	srv *emulator.Server
	hc  *http.Client
}

// newEnv starts an emulator; its answers are checked against Zulip's
// OpenAPI description when the file is present (requests are not: these
// tests send malformed ones on purpose).
func newEnv(t *testing.T, opts ...emulator.Option) *env {
	t.Helper()
	srv := emulator.NewServer(t, opts...)
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if _, err := zulipspec.Find(); err == nil || os.Getenv("ZULIP_OPENAPI_REQUIRED") == "1" {
		hc.Transport = &zulipspec.Transport{Spec: zulipspec.Load(t), TB: t, RequestsMayDeviate: true}
	}
	return &env{t: t, srv: srv, hc: hc}
}

func (e *env) do(c call) answer {
	e.t.Helper()
	u := e.srv.URL + c.path
	if c.query != "" {
		u += "?" + c.query
	}
	var body io.Reader
	if c.body != "" {
		body = strings.NewReader(c.body)
	}
	method := c.method
	if method == "" {
		method = "GET"
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if c.body != "" {
		ct := c.ctype
		if ct == "" {
			ct = "application/x-www-form-urlencoded"
		}
		req.Header.Set("Content-Type", ct)
	}
	switch c.as {
	case "":
		req.SetBasicAuth(emulator.DemoBotEmail, emulator.DemoBotKey)
	case "-":
	default:
		email, key, _ := strings.Cut(c.as, ":")
		req.SetBasicAuth(email, key)
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header, raw: raw}
	_ = json.Unmarshal(raw, &a.json)
	return a
}

// send posts a stream message as the demo bot (or as) and returns its id.
func (e *env) send(as, stream, topic, content string) int64 {
	e.t.Helper()
	a := e.do(call{method: "POST", path: "/api/v1/messages", as: as,
		body: form("type", "stream", "to", stream, "topic", topic, "content", content)})
	if a.status != 200 {
		e.t.Fatalf("send: %d %s", a.status, a.raw)
	}
	return int64(a.num("id"))
}

// form encodes name/value pairs in order, repeats allowed.
func form(kv ...string) string {
	var b strings.Builder
	for i := 0; i+1 < len(kv); i += 2 {
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(url.QueryEscape(kv[i]))
		b.WriteByte('=')
		b.WriteString(url.QueryEscape(kv[i+1]))
	}
	return b.String()
}

func owner() string { return emulator.DemoOwnerEmail + ":" + emulator.DemoOwnerKey }

func (e *env) stream(name string) int64 {
	e.t.Helper()
	s, ok := e.srv.StreamByName(name)
	if !ok {
		e.t.Fatalf("no stream %s", name)
	}
	return s.ID
}

func (e *env) user(email string) emulator.User {
	e.t.Helper()
	u, ok := e.srv.UserByEmail(email)
	if !ok {
		e.t.Fatalf("no user %s", email)
	}
	return u
}

func wantError(t *testing.T, a answer, status int, code, msg string) {
	t.Helper()
	if a.status != status || a.str("result") != "error" || a.str("code") != code || (msg != "" && a.str("msg") != msg) {
		t.Errorf("got %d %s, want %d %s %q", a.status, a.raw, status, code, msg)
	}
}

// clock is a settable time source for rate and edit limits.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2025, 4, 15, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}
