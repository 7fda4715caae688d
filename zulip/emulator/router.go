package emulator

import (
	"errors"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/zwop/caddy-zulip-proxy/zulip"
)

type authKind uint8

const (
	authAPI     authKind = iota // HTTP Basic email:api_key
	authNone                    // /server_settings
	authWebhook                 // api_key parameter, or Basic for a few integrations
)

type handlerFunc func(x *exchange, vars []string) *apiError

type route struct {
	auth    authKind
	methods map[string]handlerFunc
}

// basicAuthWebhooks are the integrations Zulip authenticates with HTTP
// Basic instead of an api_key parameter.
var basicAuthWebhooks = map[string]bool{"beanstalk": true, "bitbucket": true, "freshdesk": true, "zendesk": true}

// The routes, built once: matching runs on every request.
var (
	routeMessages = &route{methods: map[string]handlerFunc{"GET": getMessages, "POST": sendMessage}}
	routeMessage  = &route{methods: map[string]handlerFunc{
		"GET": getMessage, "PATCH": updateMessage, "DELETE": deleteMessage}}
	routeUploads        = &route{methods: map[string]handlerFunc{"POST": uploadFile}}
	routeAttachments    = &route{methods: map[string]handlerFunc{"GET": getAttachments}}
	routeAttachment     = &route{methods: map[string]handlerFunc{"DELETE": deleteAttachment}}
	routeGetStreamID    = &route{methods: map[string]handlerFunc{"GET": getStreamID}}
	routeOwnUser        = &route{methods: map[string]handlerFunc{"GET": getOwnUser}}
	routeSubscriptions  = &route{methods: map[string]handlerFunc{"POST": subscribe}}
	routeStreamTopics   = &route{methods: map[string]handlerFunc{"GET": getStreamTopics}}
	routeServerSettings = &route{auth: authNone, methods: map[string]handlerFunc{"GET": serverSettings}}
	routeWebhook        = &route{auth: authWebhook, methods: map[string]handlerFunc{
		"GET": webhook, "POST": webhook, "PUT": webhook, "PATCH": webhook, "DELETE": webhook}}
)

// match maps an /api/v1 path to its route and path variables, as
// Zulip's urls.py does (exact paths, no trailing slashes, ids as digits).
func match(path string) (*route, []string) {
	rest, ok := strings.CutPrefix(path, "/api/v1/")
	if !ok {
		return nil, nil
	}
	switch rest {
	case "messages":
		return routeMessages, nil
	case "user_uploads":
		return routeUploads, nil
	case "attachments":
		return routeAttachments, nil
	case "get_stream_id":
		return routeGetStreamID, nil
	case "users/me":
		return routeOwnUser, nil
	case "users/me/subscriptions":
		return routeSubscriptions, nil
	case "server_settings":
		return routeServerSettings, nil
	}
	seg := strings.Split(rest, "/")
	switch {
	case len(seg) == 2 && seg[0] == "messages" && zulip.ValidID(seg[1]):
		return routeMessage, seg[1:]
	case len(seg) == 2 && seg[0] == "attachments" && zulip.ValidID(seg[1]):
		return routeAttachment, seg[1:]
	case len(seg) == 4 && seg[0] == "users" && seg[1] == "me" && zulip.ValidID(seg[2]) && seg[3] == "topics":
		return routeStreamTopics, seg[2:3]
	case len(seg) == 2 && seg[0] == "external" && zulip.ValidIntegration(seg[1]):
		return routeWebhook, seg[1:]
	}
	return nil, nil
}

// statusRecorder notes the status for the request log even when a
// handler writes through it directly (uploads served back).
type statusRecorder struct {
	http.ResponseWriter
	rec *Request
}

func (s *statusRecorder) WriteHeader(code int) {
	s.rec.Status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (e *Emulator) serve(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, controlPrefix) {
		e.serveControl(w, r)
		return
	}
	rec := &Request{
		Time:            e.cfg.now(),
		Method:          r.Method,
		EffectiveMethod: r.Method,
		Path:            r.URL.Path,
		Query:           r.URL.RawQuery,
		Proto:           r.Proto,
		ContentType:     r.Header.Get("Content-Type"),
		Header:          r.Header.Clone(),
	}
	x := &exchange{e: e, w: &statusRecorder{ResponseWriter: w, rec: rec}, r: r, rec: rec, now: rec.Time, method: r.Method}
	// Deferred, so a request is logged however it ends (even a dropped
	// connection's panic), and before a dropped connection is closed:
	// a client that sees the drop finds the request in the log.
	e.inFlight.Add(1)
	defer func() {
		e.log.add(rec)
		e.inFlight.Add(-1)
		if x.dropped != nil {
			x.dropped.Close()
		}
	}()

	p, err := readParams(r, e.cfg.maxUpload, rec)
	x.p = p
	rec.Params = append(append(make([]Param, 0, len(p.body)+len(p.query)), p.body...), p.query...)
	for _, f := range p.files {
		rec.Files = append(rec.Files, *f)
	}
	switch {
	case errors.Is(err, errBodyTooLarge):
		x.writeNginxPage(http.StatusRequestEntityTooLarge)
		return
	case errors.Is(err, errBadMultipart):
		x.writeError(errBadRequest("Malformed multipart request"))
		return
	case err != nil:
		// The client went away mid-body: nothing to answer.
		return
	}

	if f, ok := e.fault.take(r.Method, r.URL.Path); ok && x.applyFault(f) {
		return
	}

	if strings.HasPrefix(r.URL.Path, "/user_uploads/") {
		x.serveUpload()
		return
	}
	rt, vars := match(r.URL.Path)
	if rt == nil {
		x.writeError(&apiError{status: 404, code: "BAD_REQUEST", msg: "Not Found"})
		return
	}
	// Zulip's rest_dispatch: a POST whose body has "method" runs the
	// handler for that method instead. Only POST bodies count.
	if r.Method == http.MethodPost {
		if m, ok := p.inBody("method"); ok {
			x.method = m
			rec.EffectiveMethod = m
		}
	}
	if x.method == http.MethodOptions {
		w.Header().Set("Allow", allowed(rt))
		w.Header().Set("Content-Length", "0")
		x.w.WriteHeader(http.StatusNoContent)
		return
	}
	h, ok := rt.methods[x.method]
	if !ok {
		names := strings.Split(allowed(rt), ", ")
		w.Header().Set("Allow", allowed(rt))
		x.writeJSON(http.StatusMethodNotAllowed, obj{{"result", "error"}, {"msg", "Method Not Allowed"}, {"allowed_methods", names}})
		return
	}
	if aerr := x.authenticate(rt, vars); aerr != nil {
		x.writeError(aerr)
		return
	}
	if x.user != nil {
		if aerr := x.rateLimit(); aerr != nil {
			x.writeError(aerr)
			return
		}
	}
	if aerr := h(x, vars); aerr != nil {
		x.writeError(aerr)
	}
}

func allowed(rt *route) string {
	names := make([]string, 0, len(rt.methods))
	for m := range rt.methods {
		names = append(names, m)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func (x *exchange) authenticate(rt *route, vars []string) *apiError {
	switch rt.auth {
	case authNone:
		return nil
	case authWebhook:
		if basicAuthWebhooks[vars[0]] {
			return x.authBasic()
		}
		return x.authAPIKeyParam()
	}
	return x.authBasic()
}

func (x *exchange) rateLimit() *apiError {
	limit, window := x.e.rateLimit()
	if limit <= 0 {
		return nil
	}
	res := x.user.rate.take(x.now, limit, window)
	x.rate = &res
	if !res.allowed {
		return errRateLimited(res.retryAfter.Seconds(), limit)
	}
	return nil
}

func parseID(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}
