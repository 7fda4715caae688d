package zulipproxy

import (
	"net/http"
	"testing"
)

// The route table's matching: literal paths and their /api aliases,
// wildcard segments, 404 and 405 with Allow.
func TestRouterMatch(t *testing.T) {
	t.Parallel()
	cases := []struct {
		method, path string
		route, arg   string // want a route, with its wildcard segment
		status       int    // or an error's status
		code, allow  string
	}{
		{method: "POST", path: "/send_message", route: "send_message"},
		{method: "POST", path: "/api/send_message", route: "send_message"},
		{method: "GET", path: "/send_message", status: 405, code: codeMethod, allow: "POST"},
		{method: "HEAD", path: "/health", route: "health"},
		{method: "GET", path: "/api/health", route: "health"},
		{method: "DELETE", path: "/clients/abc123", route: "revoke_client", arg: "abc123"},
		{method: "PATCH", path: "/api/clients/abc123", route: "update_client", arg: "abc123"},
		{method: "PUT", path: "/clients/abc123", status: 405, code: codeMethod, allow: "DELETE, PATCH"},
		{method: "POST", path: "/clients/abc123/rotate", route: "rotate_client", arg: "abc123"},
		{method: "GET", path: "/clients/", status: 404, code: codeNotFound},
		{method: "GET", path: "/api/v1/messages/42", route: "zulip_get_message", arg: "42"},
		{method: "PATCH", path: "/api/v1/messages/42", route: "zulip_update_message", arg: "42"},
		{method: "GET", path: "/api/v1/messages/4x2", status: 404, code: codeBadRequest},
		{method: "GET", path: "/api/v1/messages/1234567890123456789", status: 404, code: codeBadRequest},
		{method: "GET", path: "/api/v1/users/me/7/topics", route: "zulip_stream_topics", arg: "7"},
		{method: "POST", path: "/api/v1/external/github", route: "webhook", arg: "github"},
		{method: "POST", path: "/api/v1/external/Git-Hub", status: 404, code: codeBadRequest},
		{method: "POST", path: "/api/v1/send_message", status: 404, code: codeBadRequest},
		{method: "DELETE", path: "/api/v1/messages", status: 405, code: codeMethod, allow: "POST, GET"},
		{method: "GET", path: "/nowhere", status: 404, code: codeNotFound},
		{method: "GET", path: "/api", status: 404, code: codeNotFound},
		{method: "GET", path: "/apisend_message", status: 404, code: codeNotFound},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			t.Parallel()
			rt, arg, aerr := apiRouter.match(c.method, c.path)
			if c.route != "" {
				if aerr != nil || rt.name != c.route || arg != c.arg {
					t.Fatalf("got %v %q %v, want route %s arg %q", rt, arg, aerr, c.route, c.arg)
				}
				return
			}
			if aerr == nil || aerr.Status != c.status || aerr.Code != c.code {
				t.Fatalf("got %v %v, want %d %s", rt, aerr, c.status, c.code)
			}
			if got := aerr.Header.Get("Allow"); got != c.allow {
				t.Errorf("Allow %q, want %q", got, c.allow)
			}
			if c.status == http.StatusMethodNotAllowed && aerr.Header.Get("Allow") == "" {
				t.Error("405 without Allow")
			}
		})
	}
}
