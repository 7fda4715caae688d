package zulip

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// Client talks to one Zulip site as one bot. It is safe for concurrent
// use; make one per site and bot and keep it, so connections are reused.
type Client struct {
	site   string // normalized, no trailing slash
	api    string // site + "/api/v1"
	email  string
	apiKey string
	// secrets are the key and the Basic credentials made of it, for the
	// search every answer gets.
	secrets       [][]byte
	secretStrings []string
	userAgent     string
	timeout       time.Duration
	// headerTimeout says the transport itself bounds the wait for an
	// answer by timeout.
	headerTimeout bool
	onCall        func(context.Context, Call)
	rt            http.RoundTripper
	// Header values, built once and shared read-only by every request.
	hdrAuth, hdrUA []string
}

var (
	hdrAccept = []string{"application/json"}
	hdrForm   = []string{formType}
)

// NewClient checks cfg and builds a client with its own connection pool.
func NewClient(cfg Config) (*Client, error) {
	u, err := normalizeSite(cfg.Site)
	if err != nil {
		return nil, fmt.Errorf("zulip: %w", err)
	}
	if err := validateCredentials(cfg.Email, cfg.APIKey); err != nil {
		return nil, fmt.Errorf("zulip: %w", err)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	rt := cfg.Transport
	if rt == nil {
		t, err := newTransport(cfg)
		if err != nil {
			return nil, fmt.Errorf("zulip: %w", err)
		}
		rt = t
	}
	// The transport is called directly, not through an http.Client:
	// redirects are never followed (one would turn POST /messages into
	// GET /messages and may carry credentials elsewhere; a Zulip that
	// redirects is misconfigured, and the caller gets a BadResponseError
	// naming the new location), and the client's per-request header
	// copying is saved on the hot path.
	c := &Client{
		site:      u.String(),
		email:     strings.TrimSpace(cfg.Email),
		apiKey:    cfg.APIKey,
		userAgent: cfg.UserAgent,
		timeout:   cfg.Timeout,
		rt:        rt,
	}
	c.api = c.site + "/api/v1"
	basic := base64.StdEncoding.EncodeToString([]byte(c.email + ":" + c.apiKey))
	c.hdrAuth = []string{"Basic " + basic}
	c.secretStrings = []string{c.apiKey, basic}
	c.secrets = [][]byte{[]byte(c.apiKey), []byte(basic)}
	if c.userAgent == "" {
		c.userAgent = DefaultUserAgent
	}
	c.hdrUA = []string{c.userAgent}
	// The client's own transport bounds the wait for an answer's headers
	// (ResponseHeaderTimeout); a call then needs no context deadline of
	// its own, which costs a timer and a child of the caller's context
	// on every call, and the answer's body gets a cheaper guard below.
	c.headerTimeout = cfg.Transport == nil
	return c, nil
}

// Call is one call the client made, as an observer sees it.
type Call struct {
	// Method is the call's HTTP method: anything but GET may change
	// something in Zulip.
	Method string
	// Anonymous says the call carried none of the bot's credentials
	// (server_settings): a rate limit it met is about the caller's
	// address, not the bot.
	Anonymous bool
	// Response is Zulip's answer, errors included; nil when none came (a
	// timeout, a lost connection), though Zulip may have taken the call.
	Response *Response
	// Sent says the call may have reached Zulip: false only when no
	// connection to Zulip could be made.
	Sent bool
}

// Observe has f see every call the client makes once it is over, with
// the context it was made with (the rate-limit budget Zulip reports, and
// whose request the call was for). f must not keep or change the answer.
// Call it before the client is shared; it returns c.
func (c *Client) Observe(f func(ctx context.Context, call Call)) *Client {
	c.onCall = f
	return c
}

// Site is the normalized Zulip base URL, e.g. "https://chat.example.org".
func (c *Client) Site() string { return c.site }

// Email is the bot's Zulip API email.
func (c *Client) Email() string { return c.email }

// CloseIdleConnections closes pooled connections, for config unloads.
func (c *Client) CloseIdleConnections() {
	if ci, ok := c.rt.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// Response is Zulip's answer, kept raw so a proxy can pass it through
// unchanged.
type Response struct {
	Status int
	// Header holds only what is worth passing on: Content-Type,
	// Retry-After and X-RateLimit-* (and Location on a redirect).
	Header http.Header
	Body   []byte
}

// keptHeaders are the canonical names of the headers Response keeps.
var keptHeaders = map[string]bool{
	"Content-Type":          true,
	"Retry-After":           true,
	"X-Ratelimit-Limit":     true,
	"X-Ratelimit-Remaining": true,
	"X-Ratelimit-Reset":     true,
}

type authMode uint8

const (
	authBasic authMode = iota
	// authQuery: the request carries the bot's key itself (a webhook's
	// api_key), so no Authorization header.
	authQuery
	authNone
)

// request is one call, built from scratch by the typed methods.
type request struct {
	method   string
	path     string // below /api/v1, starting with "/"
	query    string // already encoded, without "?"
	ctype    string
	body     io.Reader
	length   int64 // -1 unknown
	auth     authMode
	endpoint string // for errors: "POST /messages"
	// header holds extra headers (a webhook sender's); the ones set
	// below always win over them.
	header http.Header
}

// do sends r and reads the answer. It returns a *Response for every
// answer (even an error status), or a *TransportError when there was none.
func (c *Client) do(ctx context.Context, r *request) (*Response, error) {
	_, hasDeadline := ctx.Deadline()
	if !hasDeadline && !c.headerTimeout {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	target := c.api + r.path
	if r.query != "" {
		target += "?" + r.query
	}
	req, err := http.NewRequestWithContext(ctx, r.method, target, r.body)
	if err != nil {
		return nil, fmt.Errorf("zulip: %s: building request: %w", r.endpoint, err)
	}
	if r.body != nil && r.length >= 0 {
		req.ContentLength = r.length
		if r.length == 0 {
			req.Body = http.NoBody
		}
	}
	h := req.Header
	for k, vs := range r.header {
		h[k] = vs
	}
	h["User-Agent"] = c.hdrUA
	h["Accept"] = hdrAccept
	switch r.ctype {
	case "":
	case formType:
		h["Content-Type"] = hdrForm
	default:
		h["Content-Type"] = []string{r.ctype}
	}
	if r.auth == authBasic {
		h["Authorization"] = c.hdrAuth
	}
	resp, err := c.rt.RoundTrip(req)
	if err != nil {
		c.observe(ctx, r, nil, !isDialFailure(err))
		return nil, transportError(ctx, r.endpoint, err)
	}
	if resp.Body == nil {
		resp.Body = http.NoBody
	}
	defer resp.Body.Close()
	var stalled *bodyGuard
	if !hasDeadline && c.headerTimeout {
		// A Zulip that sent its headers in time and then stalls is cut
		// off after another timeout.
		stalled = guardBody(resp.Body, c.timeout)
		defer stalled.stop()
	}
	body, err := readCapped(resp)
	if err != nil {
		c.observe(ctx, r, nil, true)
		if stalled.fired() {
			return nil, &TransportError{Endpoint: r.endpoint, Kind: ErrTimeout, Err: errors.New("answer's body stalled")}
		}
		if errors.Is(err, errTooLarge) {
			return nil, &BadResponseError{Endpoint: r.endpoint, Status: resp.StatusCode,
				ContentType: resp.Header.Get("Content-Type"),
				Reason:      fmt.Sprintf("answer larger than %d bytes", MaxResponseBytes)}
		}
		return nil, transportError(ctx, r.endpoint, err)
	}
	redirect := resp.StatusCode >= 300 && resp.StatusCode < 400
	for k, vs := range resp.Header {
		if !keptHeaders[k] && !(redirect && k == "Location") {
			delete(resp.Header, k)
			continue
		}
		for i, v := range vs {
			for _, secret := range c.secretStrings {
				if strings.Contains(v, secret) {
					vs[i] = strings.ReplaceAll(vs[i], secret, redactedKey)
				}
			}
		}
	}
	answer := &Response{Status: resp.StatusCode, Header: resp.Header, Body: c.scrub(body)}
	c.observe(ctx, r, answer, true)
	return answer, nil
}

// observe tells the observer, if any, that r is over.
func (c *Client) observe(ctx context.Context, r *request, answer *Response, sent bool) {
	if c.onCall != nil {
		c.onCall(ctx, Call{Method: r.method, Anonymous: r.auth == authNone, Response: answer, Sent: sent})
	}
}

// bodyGuard closes an answer's body that takes too long to arrive.
type bodyGuard struct {
	t    *time.Timer
	body io.Closer
	hit  atomic.Bool
}

func guardBody(body io.Closer, d time.Duration) *bodyGuard {
	g := &bodyGuard{body: body}
	g.t = time.AfterFunc(d, g.fire)
	return g
}

func (g *bodyGuard) fire() {
	g.hit.Store(true)
	_ = g.body.Close()
}

func (g *bodyGuard) stop() { g.t.Stop() }

// fired says whether the guard cut the body off; false for no guard.
func (g *bodyGuard) fired() bool { return g != nil && g.hit.Load() }

// redactedKey stands where an answer quoted the bot's API key.
const redactedKey = "[bot-api-key]"

// scrub takes the bot's own API key out of an answer: a Zulip (or a
// proxy in front of it) that echoes the request, as a webhook call's
// redirect or an error page can, would otherwise hand the bot's key to
// whoever the answer is passed on to.
func (c *Client) scrub(body []byte) []byte {
	for _, secret := range c.secrets {
		if bytes.Contains(body, secret) {
			body = bytes.ReplaceAll(body, secret, []byte(redactedKey))
		}
	}
	return body
}

var errTooLarge = errors.New("response too large")

func readCapped(resp *http.Response) ([]byte, error) {
	if n := resp.ContentLength; n > MaxResponseBytes {
		return nil, errTooLarge
	} else if n >= 0 {
		buf := make([]byte, n)
		_, err := io.ReadFull(resp.Body, buf)
		return buf, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return nil, err
	}
	if len(body) > MaxResponseBytes {
		return nil, errTooLarge
	}
	return body, nil
}

// envelope is the part of every Zulip answer that says how it went.
type envelope struct {
	Result string `json:"result"`
	Msg    string `json:"msg"`
	Code   string `json:"code"`
}

func (e *envelope) env() *envelope { return e }

type enveloped interface{ env() *envelope }

// decode checks that resp is Zulip's JSON and a success, filling dst
// (a small struct embedding envelope). Anything else becomes an *Error
// (Zulip said no) or a *BadResponseError (not Zulip's JSON).
func decode(endpoint string, resp *Response, dst enveloped) error {
	ctype := resp.Header.Get("Content-Type")
	bad := func(reason string) error {
		return &BadResponseError{Endpoint: endpoint, Status: resp.Status, ContentType: ctype, Reason: reason, Raw: resp}
	}
	if resp.Status >= 300 && resp.Status < 400 {
		if loc := resp.Header.Get("Location"); loc != "" {
			// Never the query: a redirect of a webhook call echoes the
			// URL, and with it the api_key.
			if u, err := url.Parse(loc); err == nil {
				return bad("redirect to " + redactURL(u))
			}
		}
		return bad("redirect")
	}
	if ctype != "" && !isJSONType(ctype) {
		return bad("content type " + ctype + ", not JSON")
	}
	if err := json.Unmarshal(resp.Body, dst); err != nil {
		// A success body whose fields have the wrong types is as broken
		// as garbage; an error body is handled below with a map.
		if env, ok := peekEnvelope(resp.Body); ok && env.Result == "error" {
			return newError(endpoint, resp, env)
		}
		return bad("not Zulip JSON")
	}
	env := dst.env()
	switch {
	case env.Result == "success" && resp.Status >= 200 && resp.Status < 300:
		return nil
	case env.Result == "error":
		return newError(endpoint, resp, *env)
	case resp.Status >= 400 && env.Msg != "":
		// Zulip's answers always say result, but an older or patched
		// server's error with a msg is still clearly an error.
		return newError(endpoint, resp, *env)
	}
	return bad(`no "result" in answer`)
}

// isJSONType checks a Content-Type without mime.ParseMediaType, which
// allocates a map on the hot path.
func isJSONType(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.TrimSpace(mt)
	return strings.EqualFold(mt, "application/json") ||
		(len(mt) > 5 && strings.EqualFold(mt[len(mt)-5:], "+json"))
}

func peekEnvelope(body []byte) (envelope, bool) {
	var env envelope
	return env, json.Unmarshal(body, &env) == nil
}

// newError builds an *Error; only this failure path pays for a map.
func newError(endpoint string, resp *Response, env envelope) *Error {
	e := &Error{Endpoint: endpoint, Status: resp.Status, Code: env.Code, Msg: env.Msg, Raw: resp}
	var all map[string]any
	if json.Unmarshal(resp.Body, &all) == nil {
		delete(all, "result")
		delete(all, "msg")
		delete(all, "code")
		if len(all) > 0 {
			e.Extra = all
		}
	}
	e.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	if e.RetryAfter == 0 && e.Extra != nil {
		if secs, ok := e.Extra["retry-after"].(float64); ok && secs > 0 && secs < 1e9 {
			e.RetryAfter = time.Duration(secs * float64(time.Second))
		}
	}
	return e
}

// call is do followed by decode, for the calls that answer small JSON.
func (c *Client) call(ctx context.Context, r *request, dst enveloped) (*Response, error) {
	resp, err := c.do(ctx, r)
	if err != nil {
		return nil, err
	}
	if err := decode(r.endpoint, resp, dst); err != nil {
		return resp, err
	}
	return resp, nil
}

// formBody wraps an encoded form as a request body with a known length.
func formBody(s string) (io.Reader, int64) {
	if s == "" {
		return nil, 0
	}
	return strings.NewReader(s), int64(len(s))
}

// jsonBytes is a tiny helper kept separate so the hot path needs no
// bytes.Buffer when it is not used.
func jsonBytes(v any) (string, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}
