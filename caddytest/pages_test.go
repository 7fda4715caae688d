package caddytest

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/getkin/kin-openapi/openapi3"
)

// The page and its files carry the headers that keep it from being framed,
// from leaking its URL, and from running any script but its own file.
func TestAdminPageHeaders(t *testing.T) {
	store := newStore(t)
	start(t, config{store: store})
	for _, path := range []string{"/admin/", "/admin/admin.js", "/admin/admin.css"} {
		r := request(t, "GET", path, nil)
		if r.Status != 200 {
			t.Fatalf("%s: %d %s", path, r.Status, r.Body)
		}
		csp := r.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "script-src 'self';") || strings.Contains(csp, "unsafe") {
			t.Errorf("%s: Content-Security-Policy %q", path, csp)
		}
		if r.Header.Get("X-Frame-Options") != "DENY" || r.Header.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("%s: X-Frame-Options %q, Referrer-Policy %q", path, r.Header.Get("X-Frame-Options"), r.Header.Get("Referrer-Policy"))
		}
	}
	page := request(t, "GET", "/admin/", nil).Body
	if m := regexp.MustCompile(`<script(?:\s+[^>]*)?>`).FindAllString(page, -1); len(m) != 1 || !strings.Contains(m[0], `src="admin.js"`) {
		t.Errorf("the page's scripts: %q, want only admin.js", m)
	}
	if regexp.MustCompile(`(?i)\son[a-z]+=|https?://`).MatchString(page) {
		t.Error("the page has an inline handler or names another origin")
	}
	req, _ := http.NewRequest("GET", base+"/admin", nil)
	if resp, err := http.DefaultTransport.RoundTrip(req); err != nil {
		t.Error(err)
	} else if resp.Body.Close(); resp.StatusCode != 301 || resp.Header.Get("Location") != "./admin/" {
		t.Errorf("/admin: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	// The page's file is cached until it changes.
	r := request(t, "GET", "/admin/admin.js", nil)
	if r2 := request(t, "GET", "/admin/admin.js", nil, "If-None-Match: "+r.Header.Get("ETag")); r.Header.Get("ETag") == "" || r2.Status != 304 {
		t.Errorf("ETag %q, revalidation %d", r.Header.Get("ETag"), r2.Status)
	}
}

func TestAdminPagePathAndOff(t *testing.T) {
	store := newStore(t)
	start(t, config{store: store, extra: "admin_page /ops/keys/"})
	r := request(t, "GET", "/ops/keys/", nil)
	if r.Status != 200 || !strings.Contains(r.Body, `<meta name="api-base" content="../../">`) {
		t.Errorf("moved page: %d, api-base not ../../", r.Status)
	}
	if r := request(t, "GET", "/admin/", nil); r.Status != 404 {
		t.Errorf("/admin/ with the page moved: %d", r.Status)
	}
	start(t, config{store: store, extra: "admin_page off\n\t\tapi_docs off"})
	for _, p := range []string{"/admin/", "/openapi.json", "/docs"} {
		if r := request(t, "GET", p, nil); r.Status != 404 {
			t.Errorf("%s turned off: %d", p, r.Status)
		}
	}
	// A page cannot take a path the API answers.
	tc := startExpectingError(t, config{store: store, extra: "admin_page /clients/"})
	if !strings.Contains(tc, "admin_page") || !strings.Contains(tc, "/clients") {
		t.Errorf("admin_page /clients/: %s", tc)
	}
}

func TestAPIDocs(t *testing.T) {
	store := newStore(t)
	start(t, config{store: store})
	r := request(t, "GET", "/openapi.json", nil)
	if r.Status != 200 || r.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("/openapi.json: %d %s", r.Status, r.Header.Get("Content-Type"))
	}
	doc, err := openapi3.NewLoader().LoadFromData([]byte(r.Body))
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("not a valid description: %v", err)
	}
	if !doc.IsOpenAPI31OrLater() || doc.Components.SecuritySchemes["apiKey"].Value.Name != "X-API-key" {
		t.Errorf("openapi %s, security %+v", doc.OpenAPI, doc.Components.SecuritySchemes)
	}
	// Every route of the bot and admin API is described, once: the
	// description says the /api prefix works, and the Zulip-compatible
	// API and webhooks are described in its words.
	for _, p := range []string{"/health", "/me", "/send_message", "/upload_file", "/get_stream_topics", "/update_message", "/get_messages",
		"/create_client", "/clients", "/clients/{id}", "/clients/{id}/rotate", "/clients/{id}/messages", "/bots", "/queue", "/queue/{id}"} {
		if doc.Paths.Find(p) == nil {
			t.Errorf("%s is not described", p)
		}
		if doc.Paths.Find("/api"+p) != nil {
			t.Errorf("/api%s is described twice", p)
		}
	}
	for _, want := range []string{"also answers under `/api`", "POST /api/v1/messages", "/api/v1/external/{integration}"} {
		if !strings.Contains(doc.Info.Description, want) {
			t.Errorf("the description does not say %q", want)
		}
	}
	if doc.Info.License == nil || doc.Info.License.Name != "Apache-2.0" {
		t.Errorf("license %+v", doc.Info.License)
	}
	if r := request(t, "GET", "/docs", nil); r.Status != 200 || !strings.Contains(r.Body, "swagger-ui-bundle.js") {
		t.Errorf("/docs: %d", r.Status)
	}
	req, _ := http.NewRequest("GET", base+"/docs/swagger-ui-bundle.js", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != "gzip" {
		t.Errorf("bundle: %d, encoding %q", resp.StatusCode, resp.Header.Get("Content-Encoding"))
	}
	if r := request(t, "GET", "/docs/swagger-ui.css", nil); r.Status != 200 || !strings.Contains(r.Body, ".swagger-ui") {
		t.Errorf("css without gzip: %d", r.Status)
	}
}

// startExpectingError adapts and validates cfg as `caddy validate` does,
// and returns the error, failing the test when there is none.
func startExpectingError(t *testing.T, cfg config) string {
	t.Helper()
	msg := validateConfig(t, cfg)
	if msg == "" {
		t.Fatal("the config was accepted")
	}
	return msg
}

// validateConfig is `caddy validate` on cfg: "" when it is good.
func validateConfig(t *testing.T, cfg config) string {
	t.Helper()
	return validateCaddyfile(t, cfg.String())
}

// validateCaddyfile is `caddy validate` on a Caddyfile's text.
func validateCaddyfile(t *testing.T, text string) string {
	t.Helper()
	raw, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(text), nil)
	if err != nil {
		return err.Error()
	}
	var c caddy.Config
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&c); err != nil {
		return err.Error()
	}
	return ""
}
