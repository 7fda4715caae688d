package zulipproxy

import (
	"bytes"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/zwop/caddy-zulip-proxy/zulip"
)

// serveWebhook forwards Zulip's incoming-webhook integrations,
// /api/v1/external/{integration}, with the bot's real key and the key's
// stream forced. The payload is passed on unchanged; the parameters Zulip
// reads to pick the destination are set here, where Zulip reads first.
func (h *Handler) serveWebhook(w http.ResponseWriter, r *http.Request, integration string) error {
	c := &call{start: time.Now()}
	ep := endpoint{name: "webhook", method: r.Method}
	err := h.webhook(w, r, c, integration)
	if err != nil {
		h.writeCallError(w, ep, c, err)
	}
	if c.bot != nil {
		h.logCall(ep, c, err)
	}
	return nil
}

func (h *Handler) webhook(w http.ResponseWriter, r *http.Request, c *call, integration string) error {
	if !isIntegrationName(integration) {
		return newError(http.StatusNotFound, codeBadRequest, "no such webhook integration: "+integration)
	}
	if r.Method != http.MethodPost && r.Method != http.MethodGet {
		return errMethod("POST, GET")
	}
	q, aerr := queryValues(r)
	if aerr != nil {
		return aerr
	}
	if aerr := h.limitBody(w, r); aerr != nil {
		return aerr
	}
	mt := mediaType(r)
	var form url.Values
	switch mt {
	case mtForm:
		raw, err := io.ReadAll(r.Body)
		if err != nil {
			return h.bodyError(err)
		}
		if form, err = url.ParseQuery(string(raw)); err != nil {
			return newError(http.StatusBadRequest, codeBadRequest, "malformed form body")
		}
	case mtMultipart:
		return errUnsupportedBody("multipart webhook payloads are not supported through the proxy")
	}

	// The key: HTTP Basic (for the integrations that use it), or api_key
	// in the query or a form body. One place only, so no two disagree.
	var key string
	places := 0
	_, basicKey, basic := r.BasicAuth()
	if basic {
		key, places = basicKey, places+1
	}
	for _, vals := range []url.Values{q, form} {
		if vs, ok := vals["api_key"]; ok {
			if len(vs) != 1 {
				return errBadParam("api_key", "parameter 'api_key' given more than once")
			}
			key, places = vs[0], places+1
		}
	}
	if places == 0 {
		return newError(http.StatusUnauthorized, codeUnauthorized,
			"Missing api_key: put the scoped key in the webhook URL as api_key=...").withHeader("WWW-Authenticate", zulipAuthenticate)
	}
	if places > 1 {
		return errBadParam("api_key", "give the key in one place only")
	}
	e, aerr := h.authenticate(key, c.start)
	if aerr != nil {
		aerr.Code = codeUnauthorized
		return aerr.withHeader("WWW-Authenticate", zulipAuthenticate)
	}
	setAuthUser(r, e)
	c.entry = e
	if e.Admin {
		return newError(http.StatusForbidden, codeForbidden, "admin keys cannot post; use a scoped key")
	}
	if aerr := h.bindBot(c); aerr != nil {
		return aerr
	}
	b := c.bot

	sid, err := h.streamID(r.Context(), b, e.Stream)
	if err != nil {
		return c.record(errStatus(err), err)
	}
	stream := strconv.FormatInt(sid, 10)
	out, aerr := webhookParams(q, e.Stream, sid)
	if aerr != nil {
		return aerr
	}
	// By id: a stream named like a number would otherwise be read as an id.
	out.Set("stream", stream)
	call := zulip.WebhookCall{Integration: integration, Method: r.Method, Query: out, BasicAuth: basic}
	if form != nil {
		fields, aerr := webhookParams(form, e.Stream, sid)
		if aerr != nil {
			return aerr
		}
		// Zulip reads the body before the query: the stream goes there too.
		fields.Set("stream", stream)
		body := fields.Encode()
		call.ContentType, call.Body, call.ContentLength = mtForm, bytes.NewReader([]byte(body)), int64(len(body))
	} else if mt != "" || r.ContentLength != 0 {
		call.ContentType, call.Body, call.ContentLength = r.Header.Get("Content-Type"), r.Body, r.ContentLength
	}
	ctx, cancel := h.callCtx(r.Context())
	defer cancel()
	body := &recordingReader{r: call.Body}
	if call.Body != nil {
		call.Body = body
	}
	resp, err := b.client.Webhook(ctx, call)
	if body.err != nil {
		return h.bodyError(body.err)
	}
	if isStreamGone(err) {
		b.streamIDs.CompareAndDelete(e.Stream, sid)
	}
	if err := c.record(respStatus(resp, err), err); err != nil {
		return err
	}
	writeUpstream(w, resp)
	return nil
}

// webhookParams checks a webhook's query or form fields: single values
// only, no `method`, a `stream` only if it is the key's own, and no
// api_key (the client adds the bot's). Everything else passes, since
// integrations read their own options (topic, only_events, ...).
func webhookParams(in url.Values, stream string, streamID int64) (url.Values, *apiError) {
	out := url.Values{}
	for name, vs := range in {
		if len(vs) != 1 {
			return nil, errBadParam(name, "parameter '"+name+"' given more than once")
		}
		switch name {
		case "api_key":
			continue
		case "method":
			return nil, errBadParam(name, "parameter 'method' is not allowed: it would make Zulip run another endpoint")
		case "stream":
			ref, err := parseStreamRef(vs[0])
			if err != nil || !ref.is(stream, streamID) {
				return nil, errNotYourStream(stream)
			}
			continue
		}
		out.Set(name, vs[0])
	}
	return out, nil
}

func isIntegrationName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '_') {
			return false
		}
	}
	return true
}
