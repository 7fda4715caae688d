package zulipproxy

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("zulip_proxy", parseCaddyfile)
	// zulip_proxy answers every request it sees, like reverse_proxy, so it
	// sits with the handlers that respond; users need no `order` or `route`.
	httpcaddyfile.RegisterDirectiveOrder("zulip_proxy", httpcaddyfile.Before, "reverse_proxy")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Parsing is
// strict: unknown, repeated or incomplete subdirectives are errors that name
// the file and line.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.Errf("zulip_proxy takes no arguments on its line, got '%s'; put settings in a block", d.Val())
	}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		sub := d.Val()
		if sub != "bot" {
			if seen[sub] {
				return d.Errf("zulip_proxy: duplicate subdirective '%s'", sub)
			}
			seen[sub] = true
		}
		switch sub {
		case "bot":
			if err := h.unmarshalBot(d); err != nil {
				return err
			}
		case "store":
			if !d.AllArgs(&h.Store) {
				return d.ArgErr()
			}
		case "max_upload":
			var s string
			if !d.AllArgs(&s) {
				return d.ArgErr()
			}
			size, err := humanize.ParseBytes(s)
			if err != nil {
				return d.Errf("zulip_proxy: max_upload: '%s' is not a size; give a number with a unit, such as 25MiB, 10MB or 500KiB", s)
			}
			if size == 0 || size > 1<<40 {
				return d.Errf("zulip_proxy: max_upload: size '%s' out of range", s)
			}
			h.MaxUpload = int64(size)
		case "timeout":
			var s string
			if !d.AllArgs(&s) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(s)
			if err != nil {
				return d.Errf("zulip_proxy: timeout: bad duration '%s': %v", s, err)
			}
			if dur <= 0 {
				return d.Errf("zulip_proxy: timeout must be positive, got '%s'", s)
			}
			h.Timeout = caddy.Duration(dur)
		case "client_idle_timeout":
			var s string
			if !d.AllArgs(&s) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(s)
			if err != nil || dur <= 0 {
				return d.Errf("zulip_proxy: client_idle_timeout: '%s' is not a positive duration such as 30s or 2m", s)
			}
			h.ClientIdleTimeout = caddy.Duration(dur)
		case "rate_limit":
			var events, window string
			if !d.Args(&events, &window) || d.NextArg() {
				return d.ArgErr()
			}
			rl, err := parseRateLimit(events + "/" + window)
			if err != nil {
				return d.Errf("zulip_proxy: rate_limit: '%s %s' is not <events> <window>, such as 120 1m", events, window)
			}
			h.RateLimit = &rl
		case "max_uploads_per_key":
			var s string
			if !d.AllArgs(&s) {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(s)
			if err != nil || n <= 0 {
				return d.Errf("zulip_proxy: max_uploads_per_key: '%s' is not a positive whole number", s)
			}
			h.MaxUploadsPerKey = n
		case "stream_template":
			if !d.AllArgs(&h.StreamTemplate) {
				return d.ArgErr()
			}
			if !strings.Contains(h.StreamTemplate, "{proposal_no}") {
				return d.Errf("zulip_proxy: stream_template must contain {proposal_no}, got '%s'", h.StreamTemplate)
			}
		case "allow_propagate":
			if d.NextArg() {
				return d.ArgErr()
			}
			h.AllowPropagate = true
		case "access_log_filtered":
			if d.NextArg() {
				return d.ArgErr()
			}
			h.AccessLogFiltered = true
		case "create_streams":
			if d.NextArg() {
				return d.ArgErr()
			}
			h.CreateStreams = true
		case "admin_page":
			if !d.AllArgs(&h.AdminPage) {
				return d.ArgErr()
			}
			if h.AdminPage != "off" && !strings.HasPrefix(h.AdminPage, "/") {
				return d.Errf("zulip_proxy: admin_page is a path such as /admin/, or off; got '%s'", h.AdminPage)
			}
		case "api_docs":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			if v != "off" && v != "on" {
				return d.Errf("zulip_proxy: api_docs is on or off; got '%s'", v)
			}
			h.DisableAPIDocs = v == "off"
		default:
			return d.Errf("zulip_proxy: unrecognized subdirective '%s'", sub)
		}
	}
	return nil
}

func (h *Handler) unmarshalBot(d *caddyfile.Dispenser) error {
	var name string
	if !d.NextArg() {
		return d.Errf("zulip_proxy: bot needs a name, e.g. 'bot default { ... }'")
	}
	name = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	if _, dup := h.Bots[name]; dup {
		return d.Errf("zulip_proxy: bot '%s' defined twice", name)
	}
	b := new(Bot)
	seen := map[string]bool{}
	found := false
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		found = true
		field := d.Val()
		if seen[field] {
			return d.Errf("zulip_proxy: bot '%s': duplicate '%s'", name, field)
		}
		seen[field] = true
		var dst *string
		switch field {
		case "site":
			dst = &b.Site
		case "email":
			dst = &b.Email
		case "api_key":
			dst = &b.APIKey
		case "zuliprc":
			dst = &b.Zuliprc
		case "cert_bundle":
			dst = &b.CertBundle
		default:
			return d.Errf("zulip_proxy: bot '%s': unrecognized setting '%s' (want site, email, api_key, zuliprc or cert_bundle)", name, field)
		}
		if !d.AllArgs(dst) {
			return d.ArgErr()
		}
	}
	if !found {
		return d.Errf("zulip_proxy: bot '%s' needs a block with site, email and api_key, or zuliprc", name)
	}
	if b.Zuliprc != "" && (b.Site != "" || b.Email != "" || b.APIKey != "") {
		return d.Errf("zulip_proxy: bot '%s': zuliprc cannot be combined with site, email or api_key", name)
	}
	if b.Zuliprc == "" {
		for _, f := range []struct{ name, v string }{{"site", b.Site}, {"email", b.Email}, {"api_key", b.APIKey}} {
			if f.v == "" {
				return d.Errf("zulip_proxy: bot '%s': missing %s (or give a zuliprc file)", name, f.name)
			}
		}
	}
	if b.Site != "" && !strings.Contains(b.Site, "{") {
		if err := checkSiteURL(b.Site); err != nil {
			return d.Errf("zulip_proxy: bot '%s': site: %v", name, err)
		}
	}
	if h.Bots == nil {
		h.Bots = map[string]*Bot{}
	}
	h.Bots[name] = b
	return nil
}

// checkSiteURL catches a mistyped Zulip address at load time rather than on
// the first request.
func checkSiteURL(site string) error {
	u, err := url.Parse(site)
	if err != nil {
		return fmt.Errorf("bad URL %q: %v", site, err)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return fmt.Errorf("URL %q must start with https:// (or http://)", site)
	}
	if u.Host == "" {
		return fmt.Errorf("URL %q has no host", site)
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
