package emulator_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile" // the "caddyfile" adapter
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

func TestCaddyModuleIsRegistered(t *testing.T) {
	info, err := caddy.GetModule("http.handlers.zulip_emulator")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := info.New().(caddyhttp.MiddlewareHandler); !ok {
		t.Error("not an HTTP handler")
	}
}

func parse(t *testing.T, input string) (*emulator.Handler, error) {
	t.Helper()
	var h emulator.Handler
	err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
	return &h, err
}

func TestCaddyfile(t *testing.T) {
	key := strings.Repeat("k", 32)
	tests := []struct {
		name  string
		input string
		want  string // JSON of the handler, or the error text
		err   bool
	}{
		{"empty", `zulip_emulator`, `{}`, false},
		{"instance argument", `zulip_emulator e2e`, `{"instance":"e2e"}`, false},
		{"everything", `zulip_emulator {
			instance demo
			realm_name "Beamline chat"
			user alice@example.com ` + key + ` Alice Liddell {
				admin
				subscribe general
			}
			bot ci-bot@example.com ` + strings.Repeat("b", 32) + ` {
				owner alice@example.com
				subscribe general other
			}
			stream general
			stream secret private
			rate_limit 10 30s
			max_upload 1MiB
			edit_limit 1h
			max_messages 50
			max_log_entries 60
		}`, `{"instance":"demo","realm_name":"Beamline chat","users":[{"email":"alice@example.com","api_key":"` + key + `","full_name":"Alice Liddell","admin":true,"subscribe":["general"]},{"email":"ci-bot@example.com","api_key":"` + strings.Repeat("b", 32) + `","bot":true,"owner":"alice@example.com","subscribe":["general","other"]}],"streams":[{"name":"general"},{"name":"secret","private":true}],"rate_limit":{"requests":10,"window":30000000000},"max_upload":1048576,"edit_limit":3600000000000,"max_messages":50,"max_log_entries":60}`, false},
		{"rate limit off", "zulip_emulator {\nrate_limit off\n}", `{"rate_limit":{"requests":0}}`, false},
		{"edit limit off", "zulip_emulator {\nedit_limit off\n}", `{"edit_limit":-1}`, false},
		{"unknown subdirective", "zulip_emulator {\ncolour blue\n}", `unknown subdirective "colour"`, true},
		{"two arguments", `zulip_emulator a b`, "wrong argument count", true},
		{"short key", "zulip_emulator {\nbot b@x short\n}", "32 ASCII letters and digits", true},
		{"bot without key", "zulip_emulator {\nbot b@x\n}", "wrong argument count", true},
		{"owner for a user", "zulip_emulator {\nuser a@x " + key + " {\nowner b@x\n}\n}", "only bots have an owner", true},
		{"admin bot", "zulip_emulator {\nbot a@x " + key + " {\nadmin\n}\n}", "bots cannot be admins", true},
		{"bad stream option", "zulip_emulator {\nstream s public\n}", `unknown option "public"`, true},
		{"bad rate", "zulip_emulator {\nrate_limit many 1m\n}", "positive integer", true},
		{"bad window", "zulip_emulator {\nrate_limit 5 soon\n}", "invalid window", true},
		{"duplicate rate_limit", "zulip_emulator {\nrate_limit 5 1m\nrate_limit 6 1m\n}", "more than once", true},
		{"bad size", "zulip_emulator {\nmax_upload lots\n}", "invalid size", true},
		{"instance twice", "zulip_emulator a {\ninstance b\n}", "instance given twice", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := parse(t, tt.input)
			if tt.err {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("got %v, want an error containing %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, _ := json.Marshal(h)
			if string(got) != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	key, key2 := strings.Repeat("k", 32), strings.Repeat("j", 32)
	tests := []struct {
		name string
		h    emulator.Handler
		want string
	}{
		{"subscribes to an undeclared stream", emulator.Handler{Users: []emulator.Account{{Email: "a@x", APIKey: key, Subscribe: []string{"nope"}}}}, "undeclared stream"},
		{"unknown owner", emulator.Handler{Users: []emulator.Account{{Email: "b@x", APIKey: key, Bot: true, Owner: "c@x"}}}, "owner c@x is not declared"},
		{"same email twice", emulator.Handler{Users: []emulator.Account{{Email: "a@x", APIKey: key}, {Email: "A@x", APIKey: key2}}}, "declared twice"},
		{"same key twice", emulator.Handler{Users: []emulator.Account{{Email: "a@x", APIKey: key}, {Email: "b@x", APIKey: key}}}, "already used"},
		{"same stream twice", emulator.Handler{Streams: []emulator.StreamConfig{{Name: "s"}, {Name: "S"}}}, "declared twice"},
		{"bad email", emulator.Handler{Users: []emulator.Account{{Email: "nobody", APIKey: key}}}, "invalid email"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.h.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want %q", err, tt.want)
			}
		})
	}
}

// The Caddyfile adapter places the directive without an "order" and
// produces the handler's JSON.
func TestCaddyfileAdapts(t *testing.T) {
	adapter := caddyconfig.GetAdapter("caddyfile")
	out, warnings, err := adapter.Adapt([]byte(":9991 {\n\tzulip_emulator\n\trespond \"not zulip\" 404\n}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) > 0 {
		t.Errorf("warnings: %v", warnings)
	}
	s := string(out)
	emu, respond := strings.Index(s, `"handler":"zulip_emulator"`), strings.Index(s, `"handler":"static_response"`)
	if emu < 0 || respond < 0 || emu > respond {
		t.Errorf("zulip_emulator is not ordered before respond:\n%s", s)
	}
}

func provision(t *testing.T, input string) *emulator.Handler {
	t.Helper()
	h, err := parse(t, input)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	return h
}

type nextHandler struct{ called bool }

func (n *nextHandler) ServeHTTP(w http.ResponseWriter, _ *http.Request) error {
	n.called = true
	w.WriteHeader(http.StatusTeapot)
	return nil
}

func serve(t *testing.T, h *emulator.Handler, req *http.Request) (*httptest.ResponseRecorder, bool) {
	t.Helper()
	var next nextHandler
	rec := httptest.NewRecorder()
	if err := h.ServeHTTP(rec, req, &next); err != nil {
		t.Fatal(err)
	}
	return rec, next.called
}

// A Caddyfile with only zulip_emulator answers like Zulip: the demo bot
// can send, a wrong key gets Zulip's 401.
func TestCaddyHandlerServesTheDemo(t *testing.T) {
	h := provision(t, "zulip_emulator handler-demo")
	t.Cleanup(func() { _ = h.Cleanup() })

	sendReq := func(key string) *http.Request {
		r := httptest.NewRequest("POST", "http://localhost:9991/api/v1/messages", strings.NewReader("type=stream&to=general&topic=t&content=hi"))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.SetBasicAuth(emulator.DemoBotEmail, key)
		return r
	}
	rec, _ := serve(t, h, sendReq(emulator.DemoBotKey))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"result":"success"`) || !strings.Contains(rec.Body.String(), `"id":`) {
		t.Errorf("send: %d %s", rec.Code, rec.Body)
	}
	rec, _ = serve(t, h, sendReq(strings.Repeat("x", 32)))
	if rec.Code != 401 || rec.Header().Get("WWW-Authenticate") != `Basic realm="zulip"` || !strings.Contains(rec.Body.String(), `"code":"UNAUTHORIZED"`) {
		t.Errorf("wrong key: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	rec, called := serve(t, h, httptest.NewRequest("GET", "http://localhost:9991/index.html", nil))
	if !called || rec.Code != http.StatusTeapot {
		t.Error("a non-Zulip path was not passed to the next handler")
	}
	rec, _ = serve(t, h, httptest.NewRequest("GET", "http://localhost:9991/_emulator/requests", nil))
	body, _ := io.ReadAll(rec.Body)
	if rec.Code != 200 || strings.Count(string(body), `"path": "/api/v1/messages"`) != 2 {
		t.Errorf("control: %d %s", rec.Code, body)
	}
}

// A reload provisions the new config before cleaning up the old one:
// the instance, and its messages, survive; configured keys are applied.
func TestReloadKeepsState(t *testing.T) {
	old := provision(t, "zulip_emulator reload-test")
	send := func(h *emulator.Handler) int {
		r := httptest.NewRequest("POST", "http://localhost/api/v1/messages", strings.NewReader("type=stream&to=general&topic=t&content=hi"))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.SetBasicAuth(emulator.DemoBotEmail, emulator.DemoBotKey)
		rec, _ := serve(t, h, r)
		return rec.Code
	}
	if send(old) != 200 {
		t.Fatal("send before the reload")
	}
	newer := provision(t, "zulip_emulator reload-test {\nrate_limit 5 1m\n}")
	if err := old.Cleanup(); err != nil {
		t.Fatal(err)
	}
	rec, _ := serve(t, newer, httptest.NewRequest("GET", "http://localhost/_emulator/messages", nil))
	if !strings.Contains(rec.Body.String(), `"content": "hi"`) {
		t.Errorf("messages lost across the reload: %s", rec.Body)
	}
	r := httptest.NewRequest("GET", "http://localhost/api/v1/users/me", nil)
	r.SetBasicAuth(emulator.DemoBotEmail, emulator.DemoBotKey)
	rec, _ = serve(t, newer, r)
	if rec.Header().Get("X-RateLimit-Limit") != "5" {
		t.Errorf("new rate limit not applied: %q", rec.Header().Get("X-RateLimit-Limit"))
	}
	if err := newer.Cleanup(); err != nil {
		t.Fatal(err)
	}
	// With the last user gone, the instance is freed: a new one is empty.
	fresh := provision(t, "zulip_emulator reload-test")
	t.Cleanup(func() { _ = fresh.Cleanup() })
	rec, _ = serve(t, fresh, httptest.NewRequest("GET", "http://localhost/_emulator/messages", nil))
	if strings.Contains(rec.Body.String(), `"hi"`) {
		t.Error("an unloaded instance kept its state")
	}
}

func TestCaddySeeds(t *testing.T) {
	h := provision(t, `zulip_emulator seeds-test {
		bot ci@example.com `+strings.Repeat("c", 32)+`
		stream lab private
	}`)
	t.Cleanup(func() { _ = h.Cleanup() })
	rec, _ := serve(t, h, httptest.NewRequest("GET", "http://localhost/_emulator/state", nil))
	var state struct {
		Users   []struct{ Email string }
		Streams []struct {
			Name       string
			InviteOnly bool `json:"invite_only"`
		}
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &state); err != nil {
		t.Fatal(err)
	}
	// A bot with no human gets the demo owner; declared streams replace
	// the defaults.
	if len(state.Users) != 2 || state.Users[0].Email != emulator.DemoOwnerEmail || state.Users[1].Email != "ci@example.com" ||
		len(state.Streams) != 1 || state.Streams[0].Name != "lab" || !state.Streams[0].InviteOnly {
		t.Errorf("state %s", rec.Body)
	}
}
