package zulipproxy

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/swaggest/swgui/v5/static"
	"github.com/vearutop/statigz"
	"github.com/zwop/caddy-zulip-proxy/zulip"
)

// The admin page and the API documentation: files embedded in the binary,
// so `xcaddy build` gives the same pages, fetching nothing from elsewhere.
//
//go:embed adminpage apidocs
var pageFiles embed.FS

// pageCSP allows the page its own files and its own origin, nothing else:
// no inline script, so a name injected into the key list cannot run.
const pageCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"

// docsCSP is pageCSP with the inline styles Swagger UI sets on elements.
const docsCSP = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; " +
	"frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"

// pageRoutes are the routes of the pages this config serves: the admin
// page under its path and the API documentation, each unless turned off.
func pageRoutes(adminPage, apiDocs string) ([]route, error) {
	if apiDocs != "" && apiDocs != "on" && apiDocs != "off" {
		return nil, fmt.Errorf("zulip_proxy: api_docs is on or off; got %q", apiDocs)
	}
	var rs []route
	// adminLink is the admin page's path relative to /docs, "" when off.
	adminLink := ""
	if adminPage != "off" {
		base := adminPage
		if base == "" {
			base = defaultAdminPage
		}
		if !strings.HasPrefix(base, "/") {
			return nil, fmt.Errorf("zulip_proxy: admin_page is a path such as /admin/, or off; got %q", base)
		}
		base = strings.TrimSuffix(base, "/") + "/"
		adminLink = "." + base
		index, err := adminIndex(base)
		if err != nil {
			return nil, err
		}
		rs = append(rs,
			route{"GET", base, "admin_page", public, keyHeader, 0, noWrite, "", staticFile(index, "text/html; charset=utf-8", pageCSP)},
			route{"GET", strings.TrimSuffix(base, "/"), "admin_page", public, keyHeader, 0, noWrite, "", redirectTo(base)},
		)
		for _, f := range []struct{ name, ctype string }{{"admin.js", "text/javascript; charset=utf-8"}, {"admin.css", "text/css; charset=utf-8"}} {
			body, err := pageFiles.ReadFile("adminpage/" + f.name)
			if err != nil {
				return nil, fmt.Errorf("admin page: %w", err)
			}
			rs = append(rs, route{"GET", base + f.name, "admin_page", public, keyHeader, 0, noWrite, "", staticFile(body, f.ctype, pageCSP)})
		}
	}
	if apiDocs != "off" {
		spec, err := pageFiles.ReadFile("apidocs/openapi.json")
		if err != nil {
			return nil, fmt.Errorf("api docs: %w", err)
		}
		spec = bytes.Replace(spec, []byte(`"version": "VERSION"`), []byte(`"version": "`+zulip.Version+`"`), 1)
		docs, err := docsPage(adminLink)
		if err != nil {
			return nil, fmt.Errorf("api docs: %w", err)
		}
		docsJS, err := pageFiles.ReadFile("apidocs/docs.js")
		if err != nil {
			return nil, fmt.Errorf("api docs: %w", err)
		}
		swagger := statigz.FileServer(static.FS)
		rs = append(rs,
			route{"GET", "/openapi.json", "openapi", public, keyHeader, 0, noWrite, "", staticFile(spec, "application/json", pageCSP)},
			route{"GET", "/docs", "docs", public, keyHeader, 0, noWrite, "", staticFile(docs, "text/html; charset=utf-8", docsCSP)},
			route{"GET", "/docs/docs.js", "docs", public, keyHeader, 0, noWrite, "", staticFile(docsJS, "text/javascript; charset=utf-8", docsCSP)},
		)
		for _, name := range []string{"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"} {
			rs = append(rs, route{"GET", "/docs/" + name, "docs", public, keyHeader, 0, noWrite, "", embeddedAsset(swagger, "/"+name, docsCSP)})
		}
	}
	return rs, nil
}

const defaultAdminPage = "/admin/"

// adminIndex is the page's HTML with the way back from its path to the
// module's root, where the admin API is, so it works under any path and
// any handle_path prefix.
func adminIndex(base string) ([]byte, error) {
	up := strings.Repeat("../", strings.Count(base, "/")-1)
	if up == "" {
		up = "./"
	}
	b, err := renderPage("adminpage/index.html", struct{ APIBase, Version string }{up, zulip.Version})
	if err != nil {
		return nil, fmt.Errorf("admin page: %w", err)
	}
	return b, nil
}

// docsPage is /docs, with a link back to the admin page when there is
// one (relative, so it works under a handle_path prefix too).
func docsPage(adminLink string) ([]byte, error) {
	return renderPage("apidocs/docs.html", struct{ Admin string }{adminLink})
}

// renderPage fills in an embedded page's template once, at provision.
func renderPage(name string, data any) ([]byte, error) {
	raw, err := pageFiles.ReadFile(name)
	if err != nil {
		return nil, err
	}
	tpl, err := template.New(name).Parse(string(raw))
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := tpl.Execute(&b, data); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// setPageHeaders are the security headers of every page and its files.
func setPageHeaders(hdr http.Header, csp string) {
	hdr.Set("Content-Security-Policy", csp)
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Cross-Origin-Opener-Policy", "same-origin")
}

// staticFile serves one file from memory; its ETag lets a browser keep
// it until the binary changes.
func staticFile(body []byte, ctype, csp string) serveFunc {
	sum := sha256.Sum256(body)
	etag := `"` + hex.EncodeToString(sum[:12]) + `"`
	return func(_ *Handler, w http.ResponseWriter, r *http.Request, _ *call) error {
		hdr := w.Header()
		setPageHeaders(hdr, csp)
		hdr.Set("Content-Type", ctype)
		hdr.Set("Cache-Control", "no-cache")
		hdr.Set("ETag", etag)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
		return nil
	}
}

// embeddedAsset serves a file of Swagger UI's, stored compressed: statigz
// sends it as it is to a browser that takes gzip, and unpacks it for one
// that does not.
func embeddedAsset(fs http.Handler, name, csp string) serveFunc {
	return func(_ *Handler, w http.ResponseWriter, r *http.Request, _ *call) error {
		setPageHeaders(w.Header(), csp)
		r2 := r.Clone(r.Context())
		r2.URL.Path, r2.URL.RawPath = name, ""
		fs.ServeHTTP(w, r2)
		return nil
	}
}

// redirectTo sends a path without its trailing slash to the page, so that
// the page's relative links resolve.
func redirectTo(base string) serveFunc {
	last := base[strings.LastIndex(strings.TrimSuffix(base, "/"), "/")+1:]
	// Set as is: http.Redirect would make it absolute, and wrong under a
	// handle_path prefix, which the request's path no longer shows.
	return func(_ *Handler, w http.ResponseWriter, _ *http.Request, _ *call) error {
		w.Header().Set("Location", "./"+last)
		w.WriteHeader(http.StatusMovedPermanently)
		return nil
	}
}
