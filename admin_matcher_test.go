package zulipproxy

import (
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestAdminMatcher(t *testing.T) {
	admin := []string{
		"/create_client", "/clients", "/clients/abc123", "/clients/abc123/rotate", "/clients/abc123/messages", "/bots",
		"/api/create_client", "/api/clients", "/api/clients/abc123", "/api/clients/abc123/rotate", "/api/clients/abc123/messages", "/api/bots",
	}
	page := []string{"/admin", "/admin/", "/admin/admin.js", "/admin/admin.css"}
	never := []string{
		"/", "/health", "/me", "/send_message", "/api/send_message", "/api/me", "/get_messages", "/openapi.json", "/docs",
		"/api/v1/messages", "/api/v1/users/me", "/api/v1/external/github", "/clientsx", "/clients/", "/api/v1/clients",
		"/administrator", "/adminx/", "/keys/",
	}
	cases := []struct {
		caddyfile   string
		match, miss []string
	}{
		{"zulip_proxy_admin", append(append([]string{}, admin...), page...), never},
		{"zulip_proxy_admin all", append(append([]string{}, admin...), page...), never},
		{"zulip_proxy_admin api", admin, append(append([]string{}, never...), page...)},
		{"zulip_proxy_admin page", page, append(append([]string{}, never...), admin...)},
		{"zulip_proxy_admin page /keys/", []string{"/keys", "/keys/", "/keys/admin.js"}, append(append([]string{}, admin...), "/admin/", "/health")},
		{"zulip_proxy_admin /keys", append([]string{"/keys/", "/keys/admin.css"}, admin...), []string{"/admin/", "/health"}},
	}
	for _, c := range cases {
		t.Run(c.caddyfile, func(t *testing.T) {
			var m AdminMatcher
			if err := m.UnmarshalCaddyfile(caddyfile.NewTestDispenser(c.caddyfile)); err != nil {
				t.Fatal(err)
			}
			if err := m.Provision(caddy.Context{}); err != nil {
				t.Fatal(err)
			}
			if err := m.Validate(); err != nil {
				t.Fatal(err)
			}
			for _, method := range []string{"GET", "POST", "DELETE", "PATCH", "PUT"} {
				for _, p := range c.match {
					if ok, err := m.MatchWithError(httptest.NewRequest(method, p, nil)); !ok || err != nil {
						t.Errorf("%s %s not matched", method, p)
					}
				}
				for _, p := range c.miss {
					if ok, _ := m.MatchWithError(httptest.NewRequest(method, p, nil)); ok {
						t.Errorf("%s %s matched", method, p)
					}
				}
			}
		})
	}
	for _, bad := range []string{"zulip_proxy_admin everything", "zulip_proxy_admin api page", "zulip_proxy_admin page keys", "zulip_proxy_admin api /a/ /b/", "zulip_proxy_admin {\n\tpage /x/\n}"} {
		var m AdminMatcher
		if err := m.UnmarshalCaddyfile(caddyfile.NewTestDispenser(bad)); err == nil {
			t.Errorf("%q was taken", bad)
		}
	}
	if err := (&AdminMatcher{Parts: "some"}).Validate(); err == nil {
		t.Error(`parts "some" was taken`)
	}
}
