package zulip

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Version is the product version, sent in the User-Agent so a Zulip
// admin can tell which proxy build is calling.
const Version = "0.1.0"

// DefaultUserAgent names the product to Zulip. Zulip derives a message's
// "client" from the part before the slash.
const DefaultUserAgent = "caddy-zulip-proxy/" + Version + " (+https://github.com/zwop/caddy-zulip-proxy)"

// DefaultTimeout bounds a call whose context has no deadline, so a hung
// Zulip cannot hold a request forever when a caller forgot one.
const DefaultTimeout = 30 * time.Second

// MaxResponseBytes caps how much of one Zulip answer is read, so a broken
// or hostile server cannot exhaust memory. Real answers are far smaller
// (a 1000-message history is a few MiB).
const MaxResponseBytes = 8 << 20

// Config says which Zulip site to call and as whom.
type Config struct {
	// Site is the Zulip server's base URL, e.g. "https://chat.example.org".
	// A bare host gets "https://", and a trailing "/api" or "/api/v1" is
	// dropped, as Zulip's Python client does with zuliprc files.
	Site string
	// Email and APIKey are the bot's credentials (HTTP Basic auth).
	Email  string
	APIKey string
	// UserAgent overrides DefaultUserAgent.
	UserAgent string
	// Timeout bounds calls whose context has no deadline; zero means
	// DefaultTimeout.
	Timeout time.Duration
	// CertBundle is the path of a PEM file holding the certificate
	// authorities a Zulip with a private CA is checked against, instead
	// of the system's; zuliprc's cert_bundle. Ignored when Transport is
	// set.
	CertBundle string
	// HTTP2 uses HTTP/2 where the server offers it; by default calls go
	// over HTTP/1.1 keep-alive connections, which measured cheaper.
	HTTP2 bool
	// TLSClientConfig, when set, is the base of the TLS settings for
	// HTTPS (tests). Ignored when Transport is set.
	TLSClientConfig *tls.Config
	// Transport replaces the client's own transport (tests).
	Transport http.RoundTripper
}

// normalizeSite turns a configured site into the base URL calls hang off,
// without a trailing slash.
func normalizeSite(site string) (*url.URL, error) {
	site = strings.TrimSpace(site)
	if site == "" {
		return nil, errors.New("missing site")
	}
	if !strings.Contains(site, "://") {
		site = "https://" + site
	}
	u, err := url.Parse(site)
	if err != nil {
		return nil, fmt.Errorf("invalid site: %w", err)
	}
	switch u.Scheme {
	case "http", "https":
	default:
		return nil, fmt.Errorf("invalid site %q: scheme must be http or https", redactURL(u))
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("invalid site %q: no host", redactURL(u))
	}
	if u.User != nil {
		// Credentials belong in email and api_key; a URL ends up in logs.
		return nil, errors.New("invalid site: must not contain user:password@")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("invalid site %q: must not have a query or fragment", redactURL(u))
	}
	p := strings.TrimRight(u.Path, "/")
	p = strings.TrimSuffix(p, "/api/v1")
	p = strings.TrimSuffix(p, "/api")
	u.Path = strings.TrimRight(p, "/")
	u.RawPath = ""
	return u, nil
}

func redactURL(u *url.URL) string {
	c := *u
	c.User = nil
	c.RawQuery = ""
	c.Fragment = ""
	return c.String()
}

func validateCredentials(email, key string) error {
	switch {
	case strings.TrimSpace(email) == "":
		return errors.New("missing email")
	case strings.ContainsAny(email, ":\r\n\t "):
		// A colon would split HTTP Basic credentials in the wrong place.
		return errors.New("invalid email: must not contain ':' or whitespace")
	case key == "":
		return errors.New("missing api key")
	}
	for i := 0; i < len(key); i++ {
		// Zulip splits "email:key" on every colon and rejects a third
		// part, and strips whitespace; keys are 32 alphanumerics anyway.
		if c := key[i]; c <= ' ' || c >= 0x7f || c == ':' {
			return errors.New("invalid api key: must be printable ASCII without ':' or spaces")
		}
	}
	return nil
}
