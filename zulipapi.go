package zulipproxy

import (
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
)

// The Zulip-compatible API answers a safe subset of Zulip's own API under
// /api/v1/, so Zulip's clients and integrations work with a scoped key:
// HTTP Basic with any email and the scoped key as the password.

const zulipAuthenticate = `Basic realm="zulip"`

type zulipFunc func(h *Handler, w http.ResponseWriter, r *http.Request, c *call) error

type zulipRoute struct {
	name   string // bounded label for logs
	method string
	serve  zulipFunc
	public bool // no key needed
}

// zulipEndpoint finds the allowed endpoint for a path under /api/v1. arg
// is the path's numeric part, if any. allow lists the methods the path
// takes, for a 405.
func zulipEndpoint(method, path string) (rt zulipRoute, arg string, allow string, found bool) {
	var routes []zulipRoute
	switch {
	case path == "/messages":
		routes = []zulipRoute{
			{"zulip_send_message", http.MethodPost, (*Handler).zulipSendMessage, false},
			{"zulip_get_messages", http.MethodGet, (*Handler).zulipGetMessages, false},
		}
	case strings.HasPrefix(path, "/messages/") && isDigits(path[len("/messages/"):]):
		arg = path[len("/messages/"):]
		routes = []zulipRoute{
			{"zulip_get_message", http.MethodGet, (*Handler).zulipGetMessage, false},
			{"zulip_update_message", http.MethodPatch, (*Handler).zulipUpdateMessage, false},
		}
	case path == "/user_uploads":
		routes = []zulipRoute{{"zulip_upload_file", http.MethodPost, (*Handler).zulipUploadFile, false}}
	case path == "/get_stream_id":
		routes = []zulipRoute{{"zulip_get_stream_id", http.MethodGet, (*Handler).zulipGetStreamID, false}}
	case strings.HasPrefix(path, "/users/me/") && strings.HasSuffix(path, "/topics"):
		arg = strings.TrimSuffix(path[len("/users/me/"):], "/topics")
		if !isDigits(arg) {
			return zulipRoute{}, "", "", false
		}
		routes = []zulipRoute{{"zulip_stream_topics", http.MethodGet, (*Handler).zulipStreamTopics, false}}
	case path == "/users/me":
		routes = []zulipRoute{{"zulip_me", http.MethodGet, (*Handler).zulipMe, false}}
	case path == "/server_settings":
		routes = []zulipRoute{
			{"zulip_server_settings", http.MethodGet, (*Handler).zulipServerSettings, true},
			{"zulip_server_settings", http.MethodPost, (*Handler).zulipServerSettings, true},
		}
	default:
		return zulipRoute{}, "", "", false
	}
	var methods []string
	for _, rt := range routes {
		if rt.method == method || (method == http.MethodHead && rt.method == http.MethodGet) {
			return rt, arg, "", true
		}
		methods = append(methods, rt.method)
	}
	return zulipRoute{}, arg, strings.Join(methods, ", "), true
}

func isDigits(s string) bool {
	if s == "" || len(s) > 18 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// serveZulipAPI answers the Zulip-compatible API under /api/v1/.
func (h *Handler) serveZulipAPI(w http.ResponseWriter, r *http.Request) error {
	path := strings.TrimPrefix(r.URL.Path, "/api/v1")
	if integration, ok := strings.CutPrefix(path, "/external/"); ok {
		return h.serveWebhook(w, r, integration)
	}
	rt, arg, allow, found := zulipEndpoint(r.Method, path)
	if !found {
		writeError(w, newError(http.StatusNotFound, codeBadRequest,
			"this endpoint is not available through a scoped key: "+r.Method+" /api/v1"+path))
		return nil
	}
	if rt.serve == nil {
		writeError(w, errMethod(allow))
		return nil
	}
	c := &call{arg: arg, start: time.Now()}
	if !rt.public {
		e, aerr := h.zulipAuthenticate(r, c.start)
		if aerr != nil {
			writeError(w, aerr)
			return nil
		}
		setAuthUser(r, e)
		c.entry = e
		if aerr := h.bindBot(c); aerr != nil {
			writeError(w, aerr)
			return nil
		}
	}
	ep := endpoint{name: rt.name, method: rt.method}
	err := rt.serve(h, w, r, c)
	if err != nil {
		h.writeCallError(w, ep, c, err)
	}
	if c.bot != nil {
		h.logCall(ep, c, err)
	}
	return nil
}

// zulipAuthenticate checks HTTP Basic credentials the way Zulip does,
// with the scoped key as the API key; the email is not checked, since the
// key alone says who is calling. Admin keys are refused: they never post.
func (h *Handler) zulipAuthenticate(r *http.Request, now time.Time) (*keystore.Entry, *apiError) {
	_, key, ok := r.BasicAuth()
	if !ok || key == "" {
		return nil, newError(http.StatusUnauthorized, codeUnauthorized,
			"Missing 'Authorization' header: use HTTP Basic with any email and your scoped key").withHeader("WWW-Authenticate", zulipAuthenticate)
	}
	e, aerr := h.authenticate(key, now)
	if aerr != nil {
		aerr.Code = codeUnauthorized // what Zulip answers for a bad API key
		return nil, aerr.withHeader("WWW-Authenticate", zulipAuthenticate)
	}
	if e.Admin {
		return nil, newError(http.StatusForbidden, codeForbidden, "admin keys cannot use Zulip's API; use a scoped key")
	}
	return e, nil
}

// zulipParams reads a request's parameters the way Zulip does — a form
// body and the query string together — and refuses what Zulip would read
// differently from us: a name given twice anywhere (Zulip takes the last,
// body before query), the `method` override, and names not allowed.
func (h *Handler) zulipParams(w http.ResponseWriter, r *http.Request, allowed ...string) (url.Values, error) {
	out := url.Values{}
	add := func(name, v string) *apiError {
		if name == "method" {
			return errBadParam(name, "parameter 'method' is not allowed: it would make Zulip run another endpoint")
		}
		ok := false
		for _, a := range allowed {
			if a == name {
				ok = true
				break
			}
		}
		if !ok {
			return errBadParam(name, "parameter '"+name+"' is not available through a scoped key")
		}
		if out.Has(name) {
			return errBadParam(name, "parameter '"+name+"' given more than once")
		}
		out.Set(name, v)
		return nil
	}
	q, aerr := queryValues(r)
	if aerr != nil {
		return nil, aerr
	}
	for name, vs := range q {
		for _, v := range vs {
			if aerr := add(name, v); aerr != nil {
				return nil, aerr
			}
		}
	}
	if aerr := h.limitBody(w, r); aerr != nil {
		return nil, aerr
	}
	switch mt := mediaType(r); mt {
	case mtForm:
		raw, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, h.bodyError(err)
		}
		form, err := url.ParseQuery(string(raw))
		if err != nil {
			return nil, newError(http.StatusBadRequest, codeBadRequest, "malformed form body")
		}
		for name, vs := range form {
			for _, v := range vs {
				if aerr := add(name, v); aerr != nil {
					return nil, aerr
				}
			}
		}
	case mtMultipart:
		mr, err := r.MultipartReader()
		if err != nil {
			return nil, newError(http.StatusBadRequest, codeBadRequest, "malformed multipart body")
		}
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, h.multipartError(err)
			}
			if p.FileName() != "" {
				return nil, errBadParam(p.FormName(), "files are only taken by /api/v1/user_uploads")
			}
			v, aerr := h.readTextPart(p)
			if aerr != nil {
				return nil, aerr
			}
			if aerr := add(p.FormName(), v); aerr != nil {
				return nil, aerr
			}
		}
	case "":
		if n, _ := io.ReadFull(r.Body, make([]byte, 1)); n > 0 {
			return nil, errUnsupportedBody("send parameters as a form (application/x-www-form-urlencoded or multipart/form-data)")
		}
	default:
		return nil, errUnsupportedBody("send parameters as a form (application/x-www-form-urlencoded or multipart/form-data)")
	}
	return out, nil
}

// topicOf reads `topic`, or its old name `subject`; both at once are an
// error, as in Zulip.
func topicOf(p url.Values, required bool) (topic string, present bool, aerr *apiError) {
	if p.Has("topic") && p.Has("subject") {
		return "", false, errBadParam("subject", "give 'topic' or its old name 'subject', not both")
	}
	name := "topic"
	if p.Has("subject") {
		name = "subject"
	}
	topic, present = p.Get(name), p.Has(name)
	if !present && !required {
		return "", false, nil
	}
	t, aerr := topicParam(topic, present, required)
	return t, present, aerr
}

// messageIDArg reads the message id of /messages/{id}; a `message_id`
// parameter (which zulip-js adds) must agree with it.
func messageIDArg(c *call, p url.Values) (int64, *apiError) {
	id, err := strconv.ParseInt(c.arg, 10, 64)
	if err != nil || id <= 0 {
		return 0, errBadParam("message_id", "invalid message id")
	}
	if p.Has("message_id") && p.Get("message_id") != c.arg {
		return 0, errBadParam("message_id", "parameter 'message_id' does not match the path")
	}
	return id, nil
}

// errNotYourStream is the answer for anything outside the key's stream.
func errNotYourStream(stream string) *apiError {
	return newError(http.StatusForbidden, codeForbidden, "this key may only use the stream '"+stream+"'")
}
