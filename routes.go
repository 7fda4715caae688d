package zulipproxy

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
	"github.com/zwop/caddy-zulip-proxy/zulip"
)

// access says which keys may call a route.
type access uint8

const (
	public access = iota // no key needed
	anyKey               // scoped or admin
	scoped               // scoped keys only: admin keys never post
	admin                // admin keys only
)

// keyPlace says how a route's caller presents its key.
type keyPlace uint8

const (
	keyHeader  keyPlace = iota // X-API-key, the upstream service's header
	keyBasic                   // HTTP Basic with the key as password, as Zulip's API
	keyWebhook                 // api_key in the query or form body, or HTTP Basic, as Zulip's webhooks
	// keyEither: X-API-key, or HTTP Basic, for what both APIs lead to
	// (a queued send's Location).
	keyEither
)

type serveFunc func(h *Handler, w http.ResponseWriter, r *http.Request, c *call) error

// route is one endpoint: everything the dispatch needs to know about it.
type route struct {
	method string
	// path is literal segments and wildcards: {n} is a positive decimal
	// of up to 18 digits, {integration} a Zulip integration name, {id}
	// any one segment. It is matched as given and, for the bot API,
	// under /api too.
	path string
	// name is the bounded label of logs and metrics.
	name   string
	access access
	key    keyPlace
	// calls is how many calls to Zulip the route usually makes for a
	// scoped key, reserved from the bot's budget before it is served
	// (ids the proxy has cached cost none).
	calls  int
	effect effect
	// perm is the permission a scoped key needs for the route
	// (keystore.Perm*); "" for none.
	perm  string
	serve serveFunc
}

// effect is what a route does in Zulip, as far as delivery cares.
type effect uint8

const (
	noWrite effect = iota
	// writes: a scoped key's write, which may carry an Idempotency-Key.
	writes
	// sends: a write that may be queued (queued delivery).
	sends
)

// routes is every path the module answers, but for the pages a config may
// turn off or move (pageRoutes). A new endpoint is one entry here and its
// serve function.
var routes = []route{
	// The upstream service's bot API, at the root and under /api.
	{"GET", "/health", "health", public, keyHeader, 0, noWrite, "", (*Handler).serveHealth},
	{"GET", "/me", "me", anyKey, keyHeader, 0, noWrite, "", (*Handler).serveMe},
	{"POST", "/send_message", "send_message", scoped, keyHeader, 1, sends, keystore.PermSend, (*Handler).serveSendMessage},
	{"POST", "/upload_file", "upload_file", scoped, keyHeader, 1, writes, keystore.PermUpload, (*Handler).serveUploadFile},
	{"GET", "/get_stream_topics", "get_stream_topics", scoped, keyHeader, 1, noWrite, keystore.PermTopics, (*Handler).serveStreamTopics},
	{"PATCH", "/update_message", "update_message", scoped, keyHeader, 2, writes, keystore.PermEdit, (*Handler).serveUpdateMessage},
	{"GET", "/get_messages", "get_messages", scoped, keyHeader, 1, noWrite, keystore.PermRead, (*Handler).serveGetMessages},
	{"POST", "/create_client", "create_client", admin, keyHeader, 0, noWrite, "", (*Handler).serveCreateClient},
	{"GET", "/clients", "clients", admin, keyHeader, 0, noWrite, "", (*Handler).serveListClients},
	{"DELETE", "/clients/{id}", "revoke_client", admin, keyHeader, 0, noWrite, "", (*Handler).serveRevokeClient},
	{"PATCH", "/clients/{id}", "update_client", admin, keyHeader, 0, noWrite, "", (*Handler).serveUpdateClient},
	{"POST", "/clients/{id}/rotate", "rotate_client", admin, keyHeader, 0, noWrite, "", (*Handler).serveRotateClient},
	{"GET", "/clients/{id}/messages", "client_messages", admin, keyHeader, 0, noWrite, "", (*Handler).serveClientMessages},
	{"GET", "/bots", "bots", admin, keyHeader, 0, noWrite, "", (*Handler).serveListBots},
	{"GET", "/audit", "audit", admin, keyHeader, 0, noWrite, "", (*Handler).serveAudit},
	{"GET", "/queue", "queue", scoped, keyEither, 0, noWrite, "", (*Handler).serveQueue},
	{"GET", "/queue/{id}", "queued_send", anyKey, keyEither, 0, noWrite, "", (*Handler).serveQueuedSend},
	{"DELETE", "/queue/{id}", "cancel_queued_send", anyKey, keyEither, 0, noWrite, "", (*Handler).serveCancelQueuedSend},
	{"GET", "/clients/{id}/queue", "client_queue", admin, keyHeader, 0, noWrite, "", (*Handler).serveClientQueue},

	// A safe subset of Zulip's own API.
	{"POST", "/api/v1/messages", "zulip_send_message", scoped, keyBasic, 1, sends, keystore.PermSend, (*Handler).zulipSendMessage},
	{"GET", "/api/v1/messages", "zulip_get_messages", scoped, keyBasic, 1, noWrite, keystore.PermRead, (*Handler).zulipGetMessages},
	{"GET", "/api/v1/messages/{n}", "zulip_get_message", scoped, keyBasic, 1, noWrite, keystore.PermRead, (*Handler).zulipGetMessage},
	{"PATCH", "/api/v1/messages/{n}", "zulip_update_message", scoped, keyBasic, 2, writes, keystore.PermEdit, (*Handler).zulipUpdateMessage},
	{"POST", "/api/v1/user_uploads", "zulip_upload_file", scoped, keyBasic, 1, writes, keystore.PermUpload, (*Handler).zulipUploadFile},
	{"GET", "/api/v1/get_stream_id", "zulip_get_stream_id", scoped, keyBasic, 0, noWrite, "", (*Handler).zulipGetStreamID},
	{"GET", "/api/v1/users/me/{n}/topics", "zulip_stream_topics", scoped, keyBasic, 1, noWrite, keystore.PermTopics, (*Handler).zulipStreamTopics},
	{"GET", "/api/v1/users/me", "zulip_me", scoped, keyBasic, 1, noWrite, "", (*Handler).zulipMe},
	{"GET", "/api/v1/server_settings", "zulip_server_settings", public, keyBasic, 0, noWrite, "", (*Handler).zulipServerSettings},
	{"POST", "/api/v1/server_settings", "zulip_server_settings", public, keyBasic, 0, noWrite, "", (*Handler).zulipServerSettings},
	{"POST", "/api/v1/external/{integration}", "webhook", scoped, keyWebhook, 1, noWrite, keystore.PermSend, (*Handler).serveWebhook},
	{"GET", "/api/v1/external/{integration}", "webhook", scoped, keyWebhook, 1, noWrite, keystore.PermSend, (*Handler).serveWebhook},
}

const zulipPrefix = "/api/v1/"

// router finds a request's route: literal paths by one map lookup, the
// few patterns with wildcards by matching segments. It is built once
// from routes and never changed.
type router struct {
	literal  map[string][]*route
	patterns [][]*route // routes grouped by pattern, in table order
}

// apiRouter is the table without pages, to check a page's path against.
var apiRouter = newRouter(routes)

// newHandlerRouter is the table of one config: the API and its pages. A
// page may not take a path the API answers.
func newHandlerRouter(pages []route) (*router, error) {
	for _, p := range pages {
		if rs, _ := apiRouter.lookup(p.path); rs != nil {
			return nil, fmt.Errorf("%s: the path %s is the API's %s", p.name, p.path, rs[0].name)
		}
	}
	return newRouter(append(slices.Clone(routes), pages...)), nil
}

func newRouter(rs []route) *router {
	rt := &router{literal: map[string][]*route{}}
	byPattern := map[string]int{}
	for i := range rs {
		r := &rs[i]
		if !strings.Contains(r.path, "{") {
			rt.literal[r.path] = append(rt.literal[r.path], r)
			continue
		}
		j, ok := byPattern[r.path]
		if !ok {
			j = len(rt.patterns)
			byPattern[r.path] = j
			rt.patterns = append(rt.patterns, nil)
		}
		rt.patterns[j] = append(rt.patterns[j], r)
	}
	return rt
}

// match finds the route for a request. arg is the path's wildcard
// segment. A known path with another method is a 405 naming the methods
// it takes; an unknown path a 404.
func (rt *router) match(method, path string) (*route, string, *apiError) {
	candidates, arg := rt.candidates(path)
	if candidates == nil {
		if strings.HasPrefix(path, zulipPrefix) {
			return nil, "", newError(http.StatusNotFound, codeBadRequest,
				"this endpoint is not available through a scoped key: "+method+" "+path)
		}
		return nil, "", newError(http.StatusNotFound, codeNotFound, "no such endpoint: "+method+" "+path)
	}
	for _, r := range candidates {
		if r.method == method || (method == http.MethodHead && r.method == http.MethodGet) {
			return r, arg, nil
		}
	}
	allow := make([]string, len(candidates))
	for i, r := range candidates {
		allow[i] = r.method
	}
	return nil, "", errMethod(strings.Join(allow, ", "))
}

// candidates are the routes of a path, whatever their method: as given,
// or, for the bot and admin APIs, under /api.
func (rt *router) candidates(path string) ([]*route, string) {
	candidates, arg := rt.lookup(path)
	if candidates == nil && !strings.HasPrefix(path, zulipPrefix) {
		if p, ok := strings.CutPrefix(path, "/api"); ok && strings.HasPrefix(p, "/") {
			candidates, arg = rt.lookup(p)
		}
	}
	return candidates, arg
}

// isAdmin says whether the handler answers path, with any method, by an
// admin route.
func (rt *router) isAdmin(path string) bool {
	rs, _ := rt.candidates(path)
	for _, r := range rs {
		if r.access == admin {
			return true
		}
	}
	return false
}

func (rt *router) lookup(path string) ([]*route, string) {
	if rs, ok := rt.literal[path]; ok {
		return rs, ""
	}
	if !strings.Contains(path[1:], "/") {
		// Every pattern has two segments or more.
		return nil, ""
	}
	for _, rs := range rt.patterns {
		if arg, ok := matchPattern(rs[0].path, path); ok {
			return rs, arg
		}
	}
	return nil, ""
}

// matchPattern matches path against a pattern with one wildcard,
// segment by segment, without allocating.
func matchPattern(pattern, path string) (arg string, ok bool) {
	p, q := pattern, path
	for p != "" {
		if q == "" || p[0] != '/' || q[0] != '/' {
			return "", false
		}
		p, q = p[1:], q[1:]
		i := strings.IndexByte(p, '/')
		if i < 0 {
			i = len(p)
		}
		j := strings.IndexByte(q, '/')
		if j < 0 {
			j = len(q)
		}
		want, got := p[:i], q[:j]
		p, q = p[i:], q[j:]
		switch want {
		case "{n}":
			ok = zulip.ValidID(got)
		case "{integration}":
			ok = zulip.ValidIntegration(got)
		case "{id}":
			ok = got != ""
		default:
			if want != got {
				return "", false
			}
			continue
		}
		if !ok {
			return "", false
		}
		arg = got
	}
	return arg, q == ""
}
