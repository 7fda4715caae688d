package zulipproxy

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(AdminMatcher{})
}

// AdminMatcher matches the requests zulip_proxy answers with its admin
// API (create_client, clients, bots, and every admin endpoint to come,
// at the root and under /api, whatever the method) and its admin page,
// so that an operator can gate them (forward_auth, basic_auth, a network
// rule) without a list of paths that a new endpoint could slip past. It
// finds them in the handler's own route table.
//
// Caddyfile syntax:
//
//	@admin zulip_proxy_admin [api|page|all] [<admin page path>]
//
// With no argument it matches the admin API and the page at /admin/;
// `api` the admin API only, `page` the page only. Give the page's path
// when `admin_page` moves it.
type AdminMatcher struct {
	// Parts is what to match: "api" (the admin API), "page" (the admin
	// page), or "all" (both). Default: all.
	Parts string `json:"parts,omitempty"`

	// Page is the path of the admin page, as the handler's `admin_page`
	// says. Default: /admin/.
	Page string `json:"page,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (AdminMatcher) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.matchers.zulip_proxy_admin",
		New: func() caddy.Module { return new(AdminMatcher) },
	}
}

// Provision sets the defaults.
func (m *AdminMatcher) Provision(caddy.Context) error {
	if m.Parts == "" {
		m.Parts = "all"
	}
	if m.Page == "" {
		m.Page = defaultAdminPage
	}
	m.Page = strings.TrimSuffix(m.Page, "/") + "/"
	return nil
}

// Validate refuses a matcher that would match nothing by mistake.
func (m *AdminMatcher) Validate() error {
	switch m.Parts {
	case "api", "page", "all":
	default:
		return fmt.Errorf("zulip_proxy_admin: parts must be api, page or all, got %q", m.Parts)
	}
	if !strings.HasPrefix(m.Page, "/") {
		return fmt.Errorf("zulip_proxy_admin: the admin page is a path such as /admin/, got %q", m.Page)
	}
	return nil
}

// MatchWithError matches the admin API's paths and the admin page's.
func (m AdminMatcher) MatchWithError(r *http.Request) (bool, error) {
	p := r.URL.Path
	if m.Parts != "page" && apiRouter.isAdmin(p) {
		return true, nil
	}
	if m.Parts != "api" && (strings.HasPrefix(p, m.Page) || p == strings.TrimSuffix(m.Page, "/")) {
		return true, nil
	}
	return false, nil
}

// Match is MatchWithError for Caddy's older matcher interface.
func (m AdminMatcher) Match(r *http.Request) bool {
	ok, _ := m.MatchWithError(r)
	return ok
}

// UnmarshalCaddyfile reads `zulip_proxy_admin [api|page|all] [<page>]`.
func (m *AdminMatcher) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the matcher's name
	args := d.RemainingArgs()
	if len(args) > 0 && !strings.HasPrefix(args[0], "/") {
		switch args[0] {
		case "api", "page", "all":
			m.Parts = args[0]
		default:
			return d.Errf("zulip_proxy_admin: want api, page or all, or the admin page's path; got %q", args[0])
		}
		args = args[1:]
	}
	switch len(args) {
	case 0:
	case 1:
		if !strings.HasPrefix(args[0], "/") {
			return d.Errf("zulip_proxy_admin: the admin page is a path such as /admin/, got %q", args[0])
		}
		m.Page = args[0]
	default:
		return d.ArgErr()
	}
	if d.NextBlock(0) {
		return d.Err("zulip_proxy_admin takes no block")
	}
	if d.Next() {
		return d.Err("zulip_proxy_admin given twice in one matcher set")
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner                 = (*AdminMatcher)(nil)
	_ caddy.Validator                   = (*AdminMatcher)(nil)
	_ caddyhttp.RequestMatcherWithError = AdminMatcher{}
	_ caddyhttp.RequestMatcher          = AdminMatcher{}
	_ caddyfile.Unmarshaler             = (*AdminMatcher)(nil)
)
