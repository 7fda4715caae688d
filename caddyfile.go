package zulipproxy

import (
	"math"
	"strconv"

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

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. It maps
// tokens only, strictly: an unknown, repeated or incomplete subdirective,
// or a value that is not a size, a duration or a number, is an error
// naming the file and line. What the values must be (a bot's fields, a
// positive timeout) is checked once, in Provision and Validate, for the
// Caddyfile and JSON alike.
//
// Syntax:
//
//	zulip_proxy {
//		bot <name> {
//			site        <url>
//			email       <bot email>
//			api_key     <bot api key>
//			# or: zuliprc <file>
//			cert_bundle <PEM file>
//		}
//		store               <file>
//		store_read_only
//		max_upload          <size>
//		timeout             <duration>
//		client_idle_timeout <duration>
//		idempotency_window  <duration>
//		audit_retention     <duration>
//		queue {
//			max_per_key       <n>
//			max_bytes_per_key <size>
//			max_age           <duration>
//		}
//		rate_limit          <events> <window>
//		max_uploads_per_key <n>
//		stream_template     <template with {proposal_no}>
//		allow_propagate
//		create_streams
//		access_log_filtered
//		admin_page          <path>|off
//		api_docs            on|off
//	}
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
			name, b, err := unmarshalBot(d)
			if err != nil {
				return err
			}
			if _, dup := h.Bots[name]; dup {
				return d.Errf("zulip_proxy: bot '%s' defined twice", name)
			}
			if h.Bots == nil {
				h.Bots = map[string]*Bot{}
			}
			h.Bots[name] = b
		case "store":
			if !d.AllArgs(&h.Store) {
				return d.ArgErr()
			}
		case "store_read_only":
			if d.NextArg() {
				return d.ArgErr()
			}
			h.StoreReadOnly = true
		case "max_upload":
			var s string
			if !d.AllArgs(&s) {
				return d.ArgErr()
			}
			size, err := humanize.ParseBytes(s)
			if err != nil || size > math.MaxInt64 {
				return d.Errf("zulip_proxy: max_upload: '%s' is not a size; give a number with a unit, such as 25MiB, 10MB or 500KiB", s)
			}
			h.MaxUpload = int64(size)
		case "timeout", "client_idle_timeout", "idempotency_window", "audit_retention":
			var s string
			if !d.AllArgs(&s) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(s)
			if err != nil {
				return d.Errf("zulip_proxy: %s: '%s' is not a duration such as 30s or 2m", sub, s)
			}
			switch sub {
			case "timeout":
				h.Timeout = caddy.Duration(dur)
			case "client_idle_timeout":
				h.ClientIdleTimeout = caddy.Duration(dur)
			case "audit_retention":
				h.AuditRetention = caddy.Duration(dur)
			default:
				h.IdempotencyWindow = caddy.Duration(dur)
			}
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
			if err != nil {
				return d.Errf("zulip_proxy: max_uploads_per_key: '%s' is not a whole number", s)
			}
			h.MaxUploadsPerKey = n
		case "stream_template":
			if !d.AllArgs(&h.StreamTemplate) {
				return d.ArgErr()
			}
		case "allow_propagate", "access_log_filtered", "create_streams":
			if d.NextArg() {
				return d.ArgErr()
			}
			switch sub {
			case "allow_propagate":
				h.AllowPropagate = true
			case "access_log_filtered":
				h.AccessLogFiltered = true
			default:
				h.CreateStreams = true
			}
		case "queue":
			q, err := unmarshalQueue(d)
			if err != nil {
				return err
			}
			h.Queue = q
		case "admin_page":
			if !d.AllArgs(&h.AdminPage) {
				return d.ArgErr()
			}
		case "api_docs":
			if !d.AllArgs(&h.APIDocs) {
				return d.ArgErr()
			}
		default:
			return d.Errf("zulip_proxy: unrecognized subdirective '%s'", sub)
		}
	}
	return nil
}

// unmarshalBot reads one `bot <name> { ... }` block.
func unmarshalBot(d *caddyfile.Dispenser) (string, *Bot, error) {
	if !d.NextArg() {
		return "", nil, d.Errf("zulip_proxy: bot needs a name, e.g. 'bot default { ... }'")
	}
	name := d.Val()
	if d.NextArg() {
		return "", nil, d.ArgErr()
	}
	b := new(Bot)
	seen := map[string]bool{}
	found := false
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		found = true
		field := d.Val()
		if seen[field] {
			return "", nil, d.Errf("zulip_proxy: bot '%s': duplicate '%s'", name, field)
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
			return "", nil, d.Errf("zulip_proxy: bot '%s': unrecognized setting '%s' (want site, email, api_key, zuliprc or cert_bundle)", name, field)
		}
		if !d.AllArgs(dst) {
			return "", nil, d.ArgErr()
		}
	}
	if !found {
		return "", nil, d.Errf("zulip_proxy: bot '%s' needs a block with site, email and api_key, or zuliprc", name)
	}
	return name, b, nil
}

// unmarshalQueue reads the `queue { ... }` block.
func unmarshalQueue(d *caddyfile.Dispenser) (*QueueConfig, error) {
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	q := new(QueueConfig)
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		field := d.Val()
		if seen[field] {
			return nil, d.Errf("zulip_proxy: queue: duplicate '%s'", field)
		}
		seen[field] = true
		var s string
		if !d.AllArgs(&s) {
			return nil, d.ArgErr()
		}
		switch field {
		case "max_per_key":
			n, err := strconv.Atoi(s)
			if err != nil {
				return nil, d.Errf("zulip_proxy: queue: max_per_key: '%s' is not a whole number", s)
			}
			q.MaxPerKey = n
		case "max_bytes_per_key":
			size, err := humanize.ParseBytes(s)
			if err != nil || size > math.MaxInt64 {
				return nil, d.Errf("zulip_proxy: queue: max_bytes_per_key: '%s' is not a size such as 256MiB", s)
			}
			q.MaxBytesPerKey = int64(size)
		case "max_age":
			dur, err := caddy.ParseDuration(s)
			if err != nil {
				return nil, d.Errf("zulip_proxy: queue: max_age: '%s' is not a duration such as 24h", s)
			}
			q.MaxAge = caddy.Duration(dur)
		default:
			return nil, d.Errf("zulip_proxy: queue: unrecognized setting '%s' (want max_per_key, max_bytes_per_key or max_age)", field)
		}
	}
	return q, nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
