package emulator_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

func TestAuthentication(t *testing.T) {
	e := newEnv(t)
	bot := e.user(emulator.DemoBotEmail)
	if err := e.srv.Deactivate(e.user(emulator.DemoOwnerEmail).ID); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		header  string // raw Authorization; "" means use as
		as      string
		status  int
		code    string
		msg     string
		wantWWW bool
	}{
		{"right credentials", "", "", 200, "", "", false},
		{"email in another case, spaces around", "", " DEMO-BOT@zulip.example.com :" + emulator.DemoBotKey, 200, "", "", false},
		{"no credentials", "", "-", 401, "UNAUTHORIZED", "Not logged in: API authentication or user session required", true},
		{"wrong key", "", emulator.DemoBotEmail + ":" + strings.Repeat("a", 32), 401, "UNAUTHORIZED", "Invalid API key", true},
		{"key of another user", "", emulator.DemoBotEmail + ":" + emulator.DemoOwnerKey, 401, "UNAUTHORIZED", "Invalid API key", true},
		{"malformed key", "", emulator.DemoBotEmail + ":short", 401, "UNAUTHORIZED", "Malformed API key", true},
		{"empty email", "", ":" + emulator.DemoBotKey, 401, "UNAUTHORIZED", "Invalid API key", true},
		{"deactivated", "", owner(), 401, "UNAUTHORIZED", "Account is deactivated", true},
		{"not base64", "Basic !!!", "", 401, "UNAUTHORIZED", "Invalid authorization header for basic auth", true},
		{"two colons", "Basic YTpiOmM=", "", 401, "UNAUTHORIZED", "Invalid authorization header for basic auth", true},
		{"bearer", "Bearer xyz", "", 400, "BAD_REQUEST", "This endpoint requires HTTP basic authentication.", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", e.srv.URL+"/api/v1/users/me", nil)
			switch {
			case tt.header != "":
				req.Header.Set("Authorization", tt.header)
			case tt.as == "":
				req.SetBasicAuth(bot.Email, bot.APIKey)
			case tt.as != "-":
				email, key, _ := strings.Cut(tt.as, ":")
				req.SetBasicAuth(email, key)
			}
			resp, err := e.hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if got := resp.Header.Get("WWW-Authenticate"); (got == `Basic realm="zulip"`) != tt.wantWWW {
				t.Errorf("WWW-Authenticate %q", got)
			}
			if tt.status == 200 {
				return
			}
			last := e.srv.Requests()[len(e.srv.Requests())-1]
			if last.User != "" || last.Status != tt.status {
				t.Errorf("log: user %q status %d", last.User, last.Status)
			}
		})
	}
	// The body, checked once through the helper (the validator sees it).
	a := e.do(call{path: "/api/v1/users/me", as: emulator.DemoBotEmail + ":" + strings.Repeat("b", 32)})
	wantError(t, a, 401, "UNAUTHORIZED", "Invalid API key")
	if a := e.do(call{path: "/api/v1/server_settings", as: "-"}); a.status != 200 || a.num("zulip_feature_level") != 372 {
		t.Errorf("server_settings without credentials: %d %s", a.status, a.raw)
	}
}

func TestRouting(t *testing.T) {
	e := newEnv(t)
	e.hc = &http.Client{} // these paths and methods are not in Zulip's description
	tests := []struct {
		name   string
		c      call
		status int
		allow  string
	}{
		{"unknown endpoint", call{path: "/api/v1/nope"}, 404, ""},
		{"trailing slash", call{path: "/api/v1/messages/"}, 404, ""},
		{"non-numeric id", call{path: "/api/v1/messages/abc"}, 404, ""},
		{"json API is not served", call{path: "/json/messages"}, 404, ""},
		{"wrong method", call{method: "PUT", path: "/api/v1/messages"}, 405, "GET, POST"},
		{"options", call{method: "OPTIONS", path: "/api/v1/messages/1"}, 204, "DELETE, GET, PATCH"},
		{"wrong method before auth", call{method: "PUT", path: "/api/v1/users/me", as: "-"}, 405, "GET"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := e.do(tt.c)
			if a.status != tt.status || a.header.Get("Allow") != tt.allow {
				t.Errorf("got %d Allow %q (%s), want %d %q", a.status, a.header.Get("Allow"), a.raw, tt.status, tt.allow)
			}
			if tt.status >= 400 && a.str("result") != "error" {
				t.Errorf("not Zulip's error envelope: %s", a.raw)
			}
		})
	}
}
