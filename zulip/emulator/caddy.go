package emulator

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// instances keeps each named emulator alive across config reloads, so a
// reload does not wipe its messages; the last config using a name that
// is unloaded frees it. This is the package's only global state.
var instances = caddy.NewUsagePool()

// Handler serves an emulated Zulip 10 (see package emulator) inside
// Caddy: the API under /api/v1/, uploads under /user_uploads/, and the
// emulator's controls under /_emulator/. Other paths go to the next
// handler. It is a test double for demos and end-to-end tests: its
// controls need no credentials, so never expose it to a network.
//
// Caddyfile syntax (every subdirective is optional):
//
//	zulip_emulator [<instance>] {
//		instance        <name>
//		realm_name      <name>
//		user            <email> <api_key> [<full name...>] [{
//			admin
//			subscribe <stream...>
//		}]
//		bot             <email> <api_key> [<full name...>] [{
//			owner     <email>
//			subscribe <stream...>
//		}]
//		stream          <name> [private]
//		rate_limit      <requests> <window> | off
//		max_upload      <size>
//		edit_limit      <duration> | off
//		max_messages    <n>
//		max_log_entries <n>
//	}
//
// With no user and no bot, the demo accounts are created: bot
// demo-bot@zulip.example.com with key demobotapikey0123456789abcdefghi,
// owned by owner@zulip.example.com (key demoownerapikey0123456789abcdefg).
// With no stream, the public streams "general" and "other" are created.
// API keys are 32 ASCII letters and digits, as Zulip's are.
type Handler struct {
	// Instance names the emulator state to use; configs (and reloads)
	// with the same name share users, streams, messages and the request
	// log. Default "default". Settings other than accounts, streams and
	// the rate limit apply when an instance is first created.
	Instance string `json:"instance,omitempty"`
	// RealmName is the organization name in /server_settings.
	RealmName string `json:"realm_name,omitempty"`
	// Users are the accounts to create (missing ones are added on
	// reload; an existing one gets its configured key). Bots are owned
	// by Owner, or else by the first human user.
	Users []Account `json:"users,omitempty"`
	// Streams are the streams to create.
	Streams []StreamConfig `json:"streams,omitempty"`
	// RateLimit is the per-user API rate limit; default 200 requests a
	// minute, as Zulip's. Requests 0 switches it off.
	RateLimit *RateLimit `json:"rate_limit,omitempty"`
	// MaxUpload is the request body size above which nginx's HTML 413 is
	// answered, in bytes; default 25 MiB.
	MaxUpload int64 `json:"max_upload,omitempty"`
	// EditLimit is how long after sending a message its content may be
	// edited; default 10 minutes, as Zulip's. A negative value means no
	// limit.
	EditLimit caddy.Duration `json:"edit_limit,omitempty"`
	// MaxMessages bounds retained messages; default 100000.
	MaxMessages int `json:"max_messages,omitempty"`
	// MaxLogEntries bounds the request log; default 100000.
	MaxLogEntries int `json:"max_log_entries,omitempty"`

	emu *Emulator
	key string
}

// Account is one user or bot.
type Account struct {
	// Email is the account's Zulip API email.
	Email string `json:"email"`
	// APIKey is its key: 32 ASCII letters and digits.
	APIKey string `json:"api_key"`
	// FullName defaults to the part of Email before "@".
	FullName string `json:"full_name,omitempty"`
	// Bot makes the account a bot.
	Bot bool `json:"bot,omitempty"`
	// Admin makes the account an organization administrator.
	Admin bool `json:"admin,omitempty"`
	// Owner is a bot's owner's email.
	Owner string `json:"owner,omitempty"`
	// Subscribe lists streams the account is subscribed to.
	Subscribe []string `json:"subscribe,omitempty"`
}

// StreamConfig is one stream.
type StreamConfig struct {
	// Name is the stream's name.
	Name string `json:"name"`
	// Private makes it invite-only.
	Private bool `json:"private,omitempty"`
}

// RateLimit is a number of requests per window.
type RateLimit struct {
	// Requests allowed per user in each window; 0 switches limiting off.
	Requests int `json:"requests"`
	// Window is the length of the window; default one minute.
	Window caddy.Duration `json:"window,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.zulip_emulator",
		New: func() caddy.Module { return new(Handler) },
	}
}

type instance struct{ emu *Emulator }

func (*instance) Destruct() error { return nil }

// accounts returns the configured accounts with the defaults applied.
func (h *Handler) accounts() []Account {
	if len(h.Users) == 0 {
		return []Account{
			{Email: DemoOwnerEmail, APIKey: DemoOwnerKey, FullName: "Demo Owner", Admin: true},
			{Email: DemoBotEmail, APIKey: DemoBotKey, FullName: "Demo Bot", Bot: true, Owner: DemoOwnerEmail, Subscribe: []string{DemoStream}},
		}
	}
	accts := append([]Account(nil), h.Users...)
	hasHuman := false
	for _, a := range accts {
		hasHuman = hasHuman || !a.Bot
	}
	if !hasHuman {
		// Bots need an owner to receive their stream-less webhook messages.
		accts = append([]Account{{Email: DemoOwnerEmail, APIKey: DemoOwnerKey, FullName: "Demo Owner", Admin: true}}, accts...)
	}
	return accts
}

func (h *Handler) streams() []StreamConfig {
	if len(h.Streams) == 0 {
		return []StreamConfig{{Name: DemoStream}, {Name: DemoOtherStream}}
	}
	return h.Streams
}

// Validate checks the configuration, so a bad one fails as a whole.
func (h *Handler) Validate() error {
	streams := map[string]bool{}
	for _, s := range h.streams() {
		if err := checkStreamName(strings.TrimSpace(s.Name)); err != nil {
			return fmt.Errorf("stream %q: %v", s.Name, err)
		}
		k := strings.ToLower(strings.TrimSpace(s.Name))
		if streams[k] {
			return fmt.Errorf("stream %q: declared twice", s.Name)
		}
		streams[k] = true
	}
	emails, keys := map[string]bool{}, map[string]bool{}
	accts := h.accounts()
	for _, a := range accts {
		k := strings.ToLower(a.Email)
		if a.Email == "" || !strings.Contains(a.Email, "@") || strings.ContainsAny(a.Email, ": \t") {
			return fmt.Errorf("account %q: invalid email", a.Email)
		}
		if emails[k] {
			return fmt.Errorf("account %s: declared twice", a.Email)
		}
		emails[k] = true
		if !apiKeyFormat.MatchString(a.APIKey) {
			return fmt.Errorf("account %s: api key must be 32 ASCII letters and digits, as Zulip's are", a.Email)
		}
		if keys[a.APIKey] {
			return fmt.Errorf("account %s: api key already used by another account", a.Email)
		}
		keys[a.APIKey] = true
		for _, s := range a.Subscribe {
			if !streams[strings.ToLower(strings.TrimSpace(s))] {
				return fmt.Errorf("account %s: subscribes to undeclared stream %q", a.Email, s)
			}
		}
	}
	for _, a := range accts {
		if a.Owner == "" {
			continue
		}
		if !a.Bot {
			return fmt.Errorf("account %s: only bots have an owner", a.Email)
		}
		if !emails[strings.ToLower(a.Owner)] {
			return fmt.Errorf("bot %s: owner %s is not declared", a.Email, a.Owner)
		}
	}
	if h.RateLimit != nil && (h.RateLimit.Requests < 0 || h.RateLimit.Window < 0) {
		return errors.New("rate_limit: requests and window must not be negative")
	}
	if h.MaxUpload < 0 || h.MaxMessages < 0 || h.MaxLogEntries < 0 {
		return errors.New("max_upload, max_messages and max_log_entries must not be negative")
	}
	return nil
}

// Provision finds or creates the named instance and applies accounts,
// streams and the rate limit to it.
func (h *Handler) Provision(caddy.Context) error {
	if err := h.Validate(); err != nil {
		return err
	}
	name := h.Instance
	if name == "" {
		name = "default"
	}
	h.key = "zulip_emulator/" + name
	val, _, err := instances.LoadOrNew(h.key, func() (caddy.Destructor, error) {
		return &instance{emu: New(h.options()...)}, nil
	})
	if err != nil {
		return err
	}
	h.emu = val.(*instance).emu
	if err := h.apply(h.emu); err != nil {
		_, _ = instances.Delete(h.key)
		h.emu = nil
		return err
	}
	return nil
}

func (h *Handler) options() []Option {
	opts := []Option{WithoutSeed()}
	if h.RealmName != "" {
		opts = append(opts, WithRealmName(h.RealmName))
	}
	if h.MaxUpload > 0 {
		opts = append(opts, WithMaxUpload(h.MaxUpload))
	}
	switch {
	case h.EditLimit < 0:
		opts = append(opts, WithEditLimit(0))
	case h.EditLimit > 0:
		opts = append(opts, WithEditLimit(time.Duration(h.EditLimit)))
	}
	if h.MaxMessages > 0 {
		opts = append(opts, WithMaxMessages(h.MaxMessages))
	}
	if h.MaxLogEntries > 0 {
		opts = append(opts, WithMaxLogEntries(h.MaxLogEntries))
	}
	return opts
}

// apply makes e hold the configured streams and accounts (adding what is
// missing, updating keys) and rate limit; it never deletes anything, so
// a reload keeps messages and their authors.
func (h *Handler) apply(e *Emulator) error {
	for _, s := range h.streams() {
		if _, ok := e.StreamByName(s.Name); ok {
			continue
		}
		if _, err := e.addStream(Stream{Name: s.Name, InviteOnly: s.Private}); err != nil {
			return err
		}
	}
	accts := h.accounts()
	var firstHuman int64
	ids := map[string]int64{}
	// Humans first, so bots can name them as owners.
	for pass := 0; pass < 2; pass++ {
		for _, a := range accts {
			if a.Bot != (pass == 1) {
				continue
			}
			u, ok := e.UserByEmail(a.Email)
			if ok {
				if u.APIKey != a.APIKey {
					if err := e.SetAPIKey(u.ID, a.APIKey); err != nil {
						return fmt.Errorf("account %s: %w", a.Email, err)
					}
				}
			} else {
				owner := ids[strings.ToLower(a.Owner)]
				if a.Bot && owner == 0 {
					owner = firstHuman
				}
				var err error
				u, err = e.AddUser(User{Email: a.Email, APIKey: a.APIKey, FullName: a.FullName,
					IsBot: a.Bot, IsAdmin: a.Admin, OwnerID: owner})
				if err != nil {
					return err
				}
			}
			ids[strings.ToLower(a.Email)] = u.ID
			if !a.Bot && firstHuman == 0 {
				firstHuman = u.ID
			}
			for _, name := range a.Subscribe {
				s, _ := e.StreamByName(name)
				if err := e.Subscribe(u.ID, s.ID); err != nil {
					return err
				}
			}
		}
	}
	want, window := DefaultRateLimit, DefaultRateWindow
	if h.RateLimit != nil {
		want = h.RateLimit.Requests
		if h.RateLimit.Window > 0 {
			window = time.Duration(h.RateLimit.Window)
		}
	}
	if limit, cur := e.rateLimit(); limit != want || cur != window {
		e.SetRateLimit(want, window)
	}
	return nil
}

// Cleanup releases this config's hold on the instance.
func (h *Handler) Cleanup() error {
	if h.key == "" || h.emu == nil {
		return nil
	}
	_, err := instances.Delete(h.key)
	return err
}

// ServeHTTP answers the emulator's paths and passes the rest on.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if !Handles(r.URL.Path) {
		return next.ServeHTTP(w, r)
	}
	h.emu.ServeHTTP(w, r)
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
