package zulipproxy

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// A server leads to the module through raw handlers (while the HTTP app
// provisions), a loaded handler, or a subroute of either.
func TestRoutesToProxy(t *testing.T) {
	raw := func(s string) caddyhttp.Route {
		return caddyhttp.Route{HandlersRaw: []json.RawMessage{json.RawMessage(s)}}
	}
	loaded := func(h caddyhttp.MiddlewareHandler) caddyhttp.Route {
		return caddyhttp.Route{Handlers: []caddyhttp.MiddlewareHandler{h}}
	}
	for name, tc := range map[string]struct {
		routes caddyhttp.RouteList
		want   bool
	}{
		"raw":               {caddyhttp.RouteList{raw(`{"handler":"zulip_proxy"}`)}, true},
		"raw, nested":       {caddyhttp.RouteList{raw(`{"handler":"subroute","routes":[{"handle":[{"handler": "zulip_proxy"}]}]}`)}, true},
		"raw, other":        {caddyhttp.RouteList{raw(`{"handler":"reverse_proxy"}`)}, false},
		"loaded":            {caddyhttp.RouteList{loaded(new(Handler))}, true},
		"loaded subroute":   {caddyhttp.RouteList{loaded(&caddyhttp.Subroute{Routes: caddyhttp.RouteList{loaded(new(Handler))}})}, true},
		"loaded, other":     {caddyhttp.RouteList{loaded(&caddyhttp.Subroute{Routes: caddyhttp.RouteList{raw(`{"handler":"file_server"}`)}})}, false},
		"no routes at all":  {nil, false},
		"two, second leads": {caddyhttp.RouteList{raw(`{"handler":"headers"}`), loaded(new(Handler))}, true},
	} {
		if got := routesToProxy(tc.routes); got != tc.want {
			t.Errorf("%s: %v, want %v", name, got, tc.want)
		}
	}
}

func TestAccessLogFilterSnippet(t *testing.T) {
	plain := accessLogFilter(&caddyhttp.ServerLogConfig{})
	creds := accessLogFilter(&caddyhttp.ServerLogConfig{ShouldLogCredentials: true})
	if want := "request>headers>Authorization delete"; strings.Contains(plain, want) || !strings.Contains(creds, want) {
		t.Errorf("Authorization is deleted only where should_log_credentials logs it:\n%s\n%s", plain, creds)
	}
	if len(loggedSecrets(&caddyhttp.ServerLogConfig{ShouldLogCredentials: true})) != 3 {
		t.Error("should_log_credentials does not add Authorization to what is logged")
	}
}
