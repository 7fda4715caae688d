package zulipproxy

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	good := []struct {
		name  string
		input string
		check func(t *testing.T, h *Handler)
	}{
		{
			name: "full",
			input: `zulip_proxy {
				bot default {
					site https://chat.example.org
					email {env.ZULIP_BOT_EMAIL}
					api_key {env.ZULIP_BOT_API_KEY}
				}
				bot alerts {
					zuliprc /etc/zwop/alerts.zuliprc
				}
				store /var/lib/zwop/clients.json
				max_upload 10MiB
				timeout 90s
				stream_template "proposal {proposal_no}"
				allow_propagate
			}`,
			check: func(t *testing.T, h *Handler) {
				if len(h.Bots) != 2 {
					t.Fatalf("bots: %d", len(h.Bots))
				}
				d := h.Bots["default"]
				if d.Site != "https://chat.example.org" || d.Email != "{env.ZULIP_BOT_EMAIL}" || d.APIKey != "{env.ZULIP_BOT_API_KEY}" {
					t.Errorf("default bot: %+v", d)
				}
				if h.Bots["alerts"].Zuliprc != "/etc/zwop/alerts.zuliprc" {
					t.Errorf("alerts bot: %+v", h.Bots["alerts"])
				}
				if h.Store != "/var/lib/zwop/clients.json" {
					t.Errorf("store: %q", h.Store)
				}
				if h.MaxUpload != 10<<20 {
					t.Errorf("max_upload: %d", h.MaxUpload)
				}
				if h.Timeout != caddy.Duration(90e9) {
					t.Errorf("timeout: %v", h.Timeout)
				}
				if h.StreamTemplate != "proposal {proposal_no}" || !h.AllowPropagate {
					t.Errorf("template %q propagate %v", h.StreamTemplate, h.AllowPropagate)
				}
			},
		},
		{
			name:  "queue",
			input: "zulip_proxy {\n bot b {\n zuliprc rc\n }\n queue {\n max_per_key 50\n max_bytes_per_key 10MB\n max_age 2d\n }\n }",
			check: func(t *testing.T, h *Handler) {
				if q := h.Queue; q == nil || q.MaxPerKey != 50 || q.MaxBytesPerKey != 10e6 || q.MaxAge != caddy.Duration(48*3600e9) {
					t.Errorf("queue %+v", q)
				}
			},
		},
		{
			name:  "days in timeout and SI size",
			input: "zulip_proxy {\n bot b {\n zuliprc rc\n }\n timeout 1d\n max_upload 5MB\n }",
			check: func(t *testing.T, h *Handler) {
				if h.Timeout != caddy.Duration(24*3600e9) || h.MaxUpload != 5e6 {
					t.Errorf("timeout %v max_upload %d", h.Timeout, h.MaxUpload)
				}
			},
		},
	}
	for _, tc := range good {
		t.Run(tc.name, func(t *testing.T) {
			h := new(Handler)
			if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input)); err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			tc.check(t, h)
		})
	}

	bad := []struct {
		name, input, want string
	}{
		{"argument on directive line", "zulip_proxy foo {\n}", "takes no arguments"},
		{"unknown subdirective", "zulip_proxy {\n stor /x\n}", "unrecognized subdirective 'stor'"},
		{"store without path", "zulip_proxy {\n store\n}", "wrong argument count"},
		{"store twice", "zulip_proxy {\n store a\n store b\n}", "duplicate subdirective 'store'"},
		{"bad size", "zulip_proxy {\n max_upload lots\n}", "max_upload: 'lots' is not a size; give a number with a unit, such as 25MiB"},
		{"bad duration", "zulip_proxy {\n timeout soon\n}", "timeout: 'soon' is not a duration"},
		{"bad idle duration", "zulip_proxy {\n client_idle_timeout never\n}", "client_idle_timeout: 'never' is not a duration"},
		{"uploads not a number", "zulip_proxy {\n max_uploads_per_key many\n}", "max_uploads_per_key: 'many' is not a whole number"},
		{"allow_propagate with argument", "zulip_proxy {\n allow_propagate yes\n}", "wrong argument count"},
		{"create_streams with argument", "zulip_proxy {\n create_streams yes\n}", "wrong argument count"},
		{"api_docs without value", "zulip_proxy {\n api_docs\n}", "wrong argument count"},
		{"bot without name", "zulip_proxy {\n bot {\n site x\n }\n}", "bot needs a name"},
		{"bot without block", "zulip_proxy {\n bot default\n}", "needs a block"},
		{"bot twice", "zulip_proxy {\n bot a {\n zuliprc x\n }\n bot a {\n zuliprc y\n }\n}", "bot 'a' defined twice"},
		{"bot unknown field", "zulip_proxy {\n bot a {\n sitee https://x\n }\n}", "unrecognized setting 'sitee'"},
		{"bot field twice", "zulip_proxy {\n bot a {\n zuliprc x\n zuliprc y\n }\n}", "duplicate 'zuliprc'"},
		{"bot field without value", "zulip_proxy {\n bot a {\n site\n }\n}", "wrong argument count"},
		{"bot field two values", "zulip_proxy {\n bot a {\n email a b\n }\n}", "wrong argument count"},
		{"queue unknown field", "zulip_proxy {\n queue {\n max_sends 5\n }\n}", "queue: unrecognized setting 'max_sends'"},
		{"queue field twice", "zulip_proxy {\n queue {\n max_age 1h\n max_age 2h\n }\n}", "queue: duplicate 'max_age'"},
		{"queue count not a number", "zulip_proxy {\n queue {\n max_per_key lots\n }\n}", "max_per_key: 'lots' is not a whole number"},
		{"queue size not a size", "zulip_proxy {\n queue {\n max_bytes_per_key big\n }\n}", "max_bytes_per_key: 'big' is not a size"},
		{"queue age not a duration", "zulip_proxy {\n queue {\n max_age forever\n }\n}", "max_age: 'forever' is not a duration"},
		{"queue with an argument", "zulip_proxy {\n queue big {\n }\n}", "wrong argument count"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			h := new(Handler)
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if err == nil {
				t.Fatalf("expected an error containing %q, got none", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			// Errors from the dispenser name file and line.
			if !strings.Contains(err.Error(), "Testfile:") {
				t.Errorf("error %q does not name the file and line", err)
			}
		})
	}
}

// What values must be is checked once, in Provision and Validate, for the
// Caddyfile and JSON alike: each rule below is met from a Caddyfile here,
// and the error names the directive.
func TestConfigRules(t *testing.T) {
	const bot = "bot default {\n site https://chat.example.org\n email bot@example.org\n api_key k\n }\n"
	cases := []struct {
		name, input, want string
	}{
		{"negative timeout", bot + "timeout -5s", "timeout must be positive"},
		{"negative idle timeout", bot + "client_idle_timeout -1s", "client_idle_timeout must be positive"},
		{"negative uploads", bot + "max_uploads_per_key -1", "max_uploads_per_key must be positive"},
		{"negative audit retention", bot + "audit_retention -1d", "audit_retention must be positive"},
		{"huge size", bot + "max_upload 2TiB", "max_upload must be from 1 byte to 1 TiB"},
		{"template without placeholder", bot + "stream_template fixed", "must contain {proposal_no}"},
		{"admin_page not a path", bot + "admin_page admin", "admin_page is a path"},
		{"api_docs neither on nor off", bot + "api_docs maybe", "api_docs is on or off"},
		{"no bot", "timeout 5s", "no bot configured"},
		{"negative queue count", bot + "queue {\n max_per_key -1\n }", "queue: max_per_key must be positive"},
		{"negative queue age", bot + "queue {\n max_age -1h\n }", "queue: max_age must be positive"},
		{"bot missing email", "bot a {\n site https://x\n api_key k\n }", `bot "a": missing email`},
		{"bot missing key", "bot a {\n site https://x\n email e@x\n }", `bot "a": missing api_key`},
		{"zuliprc and inline", "bot a {\n zuliprc x\n email e@x\n }", "cannot be combined"},
		{"site with another scheme", "bot a {\n site ftp://chat.example.org\n email e@x\n api_key k\n }", "scheme must be http or https"},
		{"site without host", "bot a {\n site https://\n email e@x\n api_key k\n }", "no host"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := provisionCaddyfile(t, "zulip_proxy {\n"+tc.input+"\n store "+filepath.Join(t.TempDir(), "clients.json")+"\n}")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	// A site without a scheme is https, in a Caddyfile as in JSON and a
	// zuliprc.
	if err := provisionCaddyfile(t, "zulip_proxy {\n bot a {\n site chat.example.org\n email e@x\n api_key k\n }\n store "+
		filepath.Join(t.TempDir(), "clients.json")+"\n}"); err != nil {
		t.Errorf("a site without a scheme: %v", err)
	}
}

// provisionCaddyfile provisions and validates a handler from a Caddyfile
// block, as `caddy validate` does, and releases what it took.
func provisionCaddyfile(t *testing.T, input string) error {
	t.Helper()
	h := new(Handler)
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil {
		t.Fatalf("the Caddyfile did not parse: %v", err)
	}
	raw, _ := json.Marshal(map[string]string{"module": "file_system", "root": t.TempDir()})
	ctx, err := caddy.ProvisionContext(&caddy.Config{StorageRaw: raw})
	if err != nil {
		t.Fatal(err)
	}
	err = h.Provision(ctx)
	if err == nil {
		err = h.Validate()
	}
	_ = h.Cleanup()
	return err
}
