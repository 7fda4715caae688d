package emulator

import (
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("zulip_emulator", parseCaddyfile)
	// It answers its own paths and passes the rest on, so it runs before
	// the usual terminal handlers (respond, reverse_proxy, file_server).
	httpcaddyfile.RegisterDirectiveOrder("zulip_emulator", httpcaddyfile.Before, "respond")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var e Handler
	if err := e.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return &e, nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens; see
// Handler for the syntax.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		h.Instance = d.Val()
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	once := func(name string) error {
		if seen[name] {
			return d.Errf("zulip_emulator: %s given more than once", name)
		}
		seen[name] = true
		return nil
	}
	for d.NextBlock(0) {
		sub := d.Val()
		switch sub {
		case "instance", "realm_name":
			if err := once(sub); err != nil {
				return err
			}
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			if sub == "instance" {
				if h.Instance != "" {
					return d.Errf("zulip_emulator: instance given twice (argument and subdirective)")
				}
				h.Instance = v
			} else {
				h.RealmName = v
			}
		case "user", "bot":
			a, err := parseAccount(d, sub == "bot")
			if err != nil {
				return err
			}
			h.Users = append(h.Users, a)
		case "stream":
			args := d.RemainingArgs()
			if len(args) < 1 || len(args) > 2 {
				return d.ArgErr()
			}
			s := StreamConfig{Name: args[0]}
			if len(args) == 2 {
				if args[1] != "private" {
					return d.Errf("zulip_emulator: stream %q: unknown option %q (want: private)", args[0], args[1])
				}
				s.Private = true
			}
			h.Streams = append(h.Streams, s)
		case "rate_limit":
			if err := once(sub); err != nil {
				return err
			}
			args := d.RemainingArgs()
			switch {
			case len(args) == 1 && args[0] == "off":
				h.RateLimit = &RateLimit{Requests: 0}
			case len(args) == 2:
				n, err := strconv.Atoi(args[0])
				if err != nil || n <= 0 {
					return d.Errf("zulip_emulator: rate_limit: requests must be a positive integer, not %q", args[0])
				}
				w, err := caddy.ParseDuration(args[1])
				if err != nil || w <= 0 {
					return d.Errf("zulip_emulator: rate_limit: invalid window %q", args[1])
				}
				h.RateLimit = &RateLimit{Requests: n, Window: caddy.Duration(w)}
			default:
				return d.ArgErr()
			}
		case "max_upload":
			if err := once(sub); err != nil {
				return err
			}
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			n, err := humanize.ParseBytes(v)
			if err != nil || n == 0 || n > 1<<40 {
				return d.Errf("zulip_emulator: max_upload: invalid size %q", v)
			}
			h.MaxUpload = int64(n)
		case "edit_limit":
			if err := once(sub); err != nil {
				return err
			}
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			if v == "off" {
				h.EditLimit = -1
				break
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur <= 0 {
				return d.Errf("zulip_emulator: edit_limit: invalid duration %q", v)
			}
			h.EditLimit = caddy.Duration(dur)
		case "max_messages", "max_log_entries":
			if err := once(sub); err != nil {
				return err
			}
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return d.Errf("zulip_emulator: %s: must be a positive integer, not %q", sub, v)
			}
			if sub == "max_messages" {
				h.MaxMessages = n
			} else {
				h.MaxLogEntries = n
			}
		default:
			return d.Errf("zulip_emulator: unknown subdirective %q", sub)
		}
	}
	return nil
}

// parseAccount reads "user|bot <email> <api_key> [<full name...>]" and
// its optional block.
func parseAccount(d *caddyfile.Dispenser, bot bool) (Account, error) {
	kind := d.Val()
	args := d.RemainingArgs()
	if len(args) < 2 {
		return Account{}, d.ArgErr()
	}
	a := Account{Email: args[0], APIKey: args[1], Bot: bot, FullName: strings.Join(args[2:], " ")}
	if !apiKeyFormat.MatchString(a.APIKey) {
		return Account{}, d.Errf("zulip_emulator: %s %s: api key must be 32 ASCII letters and digits, as Zulip's are", kind, a.Email)
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "admin":
			if bot {
				return Account{}, d.Errf("zulip_emulator: bot %s: bots cannot be admins here", a.Email)
			}
			if d.NextArg() {
				return Account{}, d.ArgErr()
			}
			a.Admin = true
		case "owner":
			if !bot {
				return Account{}, d.Errf("zulip_emulator: user %s: only bots have an owner", a.Email)
			}
			if a.Owner != "" {
				return Account{}, d.Errf("zulip_emulator: bot %s: owner given twice", a.Email)
			}
			if !d.AllArgs(&a.Owner) {
				return Account{}, d.ArgErr()
			}
		case "subscribe":
			streams := d.RemainingArgs()
			if len(streams) == 0 {
				return Account{}, d.ArgErr()
			}
			a.Subscribe = append(a.Subscribe, streams...)
		default:
			return Account{}, d.Errf("zulip_emulator: %s %s: unknown option %q", kind, a.Email, d.Val())
		}
	}
	return a, nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
