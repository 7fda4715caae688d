package zulip

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
)

// WebhookCall forwards one call to an incoming-webhook integration,
// /api/v1/external/{Integration}.
type WebhookCall struct {
	// Integration is Zulip's integration name, e.g. "github"; it must
	// match ^[a-z0-9_]+$.
	Integration string
	// Method defaults to POST.
	Method string
	// Query is the query string to send, already sanitized by the caller
	// (stream forced, nothing unexpected). Every name must have exactly
	// one value. The client sets api_key itself unless BasicAuth.
	Query url.Values
	// BasicAuth authenticates with HTTP Basic (bot email and key) instead
	// of an api_key parameter, for the integrations that need it
	// (beanstalk, bitbucket, freshdesk, zendesk).
	BasicAuth bool
	// ContentType, Body and ContentLength (-1 unknown) are sent
	// unchanged. Caution: for form-encoded bodies Zulip reads body fields
	// before query fields, so a body can override Query; the caller
	// must check such bodies itself.
	ContentType   string
	Body          io.Reader
	ContentLength int64
	// Header holds the sender's headers that integrations read, such as
	// X-GitHub-Event or X-Event-Key, already chosen by the caller. The
	// client never lets it set what it owns: credentials, the body's
	// framing and type, the User-Agent, Accept, Host, cookies and
	// hop-by-hop headers: those are dropped from Header.
	Header http.Header
}

// reservedWebhookHeader says whether a header (in canonical form) is the
// client's own on a webhook call, so a WebhookCall's Header cannot set it.
func reservedWebhookHeader(name string) bool {
	switch name {
	case "Authorization", "Proxy-Authorization", "Cookie", "Host",
		"Content-Type", "Content-Length", "Content-Encoding", "Transfer-Encoding",
		"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Upgrade", "Expect",
		"User-Agent", "Accept", "Accept-Encoding":
		return true
	}
	return false
}

// Webhook forwards w. The answer is returned raw; a Zulip error (for
// instance an unsupported event, which Zulip answers with HTTP 200 and
// result "error") is an *Error carrying it.
func (c *Client) Webhook(ctx context.Context, w WebhookCall) (*Response, error) {
	if !ValidIntegration(w.Integration) {
		return nil, errors.New("zulip: webhook: integration name must match ^[a-z0-9_]+$")
	}
	method := w.Method
	if method == "" {
		method = "POST"
	}
	switch method {
	case "GET", "POST", "PUT", "PATCH", "DELETE":
	default:
		return nil, fmt.Errorf("zulip: webhook: unsupported method %q", method)
	}
	names := make([]string, 0, len(w.Query)+1)
	for name, vs := range w.Query {
		if len(vs) != 1 {
			return nil, fmt.Errorf("zulip: webhook: query parameter %q must have exactly one value", name)
		}
		if name == "api_key" || name == "method" {
			// api_key is the client's own to set; method would make
			// Zulip run another handler.
			continue
		}
		names = append(names, name)
	}
	sort.Strings(names)
	var f form
	for _, name := range names {
		f.add(name, w.Query[name][0])
	}
	auth := authBasic
	if !w.BasicAuth {
		f.add("api_key", c.apiKey)
		auth = authQuery
	}
	endpoint := method + " /external/" + w.Integration
	r := &request{
		method: method, path: "/external/" + w.Integration, query: f.String(),
		auth: auth, endpoint: endpoint,
	}
	for name, vs := range w.Header {
		name = http.CanonicalHeaderKey(name)
		if reservedWebhookHeader(name) || len(vs) == 0 {
			continue
		}
		if r.header == nil {
			r.header = make(http.Header, len(w.Header))
		}
		r.header[name] = vs
	}
	if w.Body != nil && w.ContentLength != 0 {
		r.body, r.length, r.ctype = w.Body, w.ContentLength, w.ContentType
		if r.length < 0 {
			r.length = -1
		}
	}
	var a anyAnswer
	return c.call(ctx, r, &a)
}

// ValidID says s is how a message, stream or user id is written in a
// path: a decimal of up to 18 digits, which always fits an int64.
func ValidID(s string) bool {
	if s == "" || len(s) > 18 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// ValidIntegration is Zulip's rule for an integration name, ^[a-z0-9_]+$
// (at most 64 bytes here).
func ValidIntegration(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}
