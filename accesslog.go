package zulipproxy

import (
	"bytes"
	"encoding/json"
	"slices"
	"sort"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// warnAccessLog warns once a provision when a server that routes to this
// module has an access log. Caddy copies each request for that log before
// any handler runs, so only the log's own format can keep a key out of it;
// and a handler is given no view of log formats, only of the server's
// config, which says whether a server logs at all. That is the signal
// used: a server that logs and serves keys gets the warning with the
// filter to add, unless the operator says (access_log_filtered) that its
// log has it.
func warnAccessLog(ctx caddy.Context, logger *zap.Logger) {
	for _, m := range ctx.Modules() {
		app, ok := m.(*caddyhttp.App)
		if !ok {
			continue
		}
		names := make([]string, 0, len(app.Servers))
		for name := range app.Servers {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			srv := app.Servers[name]
			if srv.Logs == nil || !routesToProxy(srv.Routes) {
				continue
			}
			logger.Warn("access logging is on for a server that takes keys: unless its log format deletes them, keys are written to the access log",
				zap.String("server", name),
				zap.Strings("logged", loggedSecrets(srv.Logs)),
				zap.String("add_to_the_site", accessLogFilter(srv.Logs)),
				zap.String("silence", "once the log has this filter, set access_log_filtered in the zulip_proxy block"))
		}
	}
}

// loggedSecrets names what the access log records that holds a key.
func loggedSecrets(l *caddyhttp.ServerLogConfig) []string {
	s := []string{"the X-API-key header", "the api_key query parameter of webhook URLs"}
	if l.ShouldLogCredentials {
		s = append(s, "the Authorization header (should_log_credentials is on)")
	}
	return s
}

// accessLogFilter is the Caddyfile log block that keeps keys out.
func accessLogFilter(l *caddyhttp.ServerLogConfig) string {
	var b strings.Builder
	b.WriteString("log {\n\tformat filter {\n\t\trequest>headers>X-Api-Key delete\n")
	if l.ShouldLogCredentials {
		b.WriteString("\t\trequest>headers>Authorization delete\n")
	}
	b.WriteString("\t\trequest>uri query {\n\t\t\tdelete api_key\n\t\t}\n\t}\n}")
	return b.String()
}

// routesToProxy says whether routes lead to a zulip_proxy handler. While
// the HTTP app provisions, a server's handlers are still raw JSON until
// they are loaded, and loaded ones are modules (a subroute nests routes).
func routesToProxy(routes caddyhttp.RouteList) bool {
	for _, r := range routes {
		if slices.ContainsFunc(r.HandlersRaw, rawNamesProxy) {
			return true
		}
		for _, mh := range r.Handlers {
			switch v := mh.(type) {
			case *Handler:
				return true
			case *caddyhttp.Subroute:
				if routesToProxy(v.Routes) {
					return true
				}
			}
		}
	}
	return false
}

var proxyModuleName = []byte(`"zulip_proxy"`)

func rawNamesProxy(raw json.RawMessage) bool { return bytes.Contains(raw, proxyModuleName) }
