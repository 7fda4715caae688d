package zulipproxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/zwop/caddy-zulip-proxy/zulip"
)

// Zulip's incoming webhooks pick their destination from the `stream`
// parameter, except where an integration decides otherwise. From Zulip's
// server code (zerver/webhooks/*/view.py), these send elsewhere and are
// closed here:
//
//   - dialogflow and yo send only direct messages, to the user named by
//     their `email` parameter: refused outright;
//   - slack with `channels_map_to_topics=0` posts to the stream named by
//     the payload's `channel_name`, over the URL's stream: that option is
//     refused (absent or 1 keep the stream);
//   - teamcity sends a personal build's result as a direct message to
//     whoever started it: personal builds are refused, others pass.
//
// Zulip may still send the bot's owner a fixed notice about a misconfigured
// integration (missing event header, unreadable payload); the proxy cannot
// stop that, and it carries nothing the sender chose.
var refusedIntegrations = map[string]string{
	"dialogflow": "sends direct messages to the user named by 'email', never to a stream",
	"yo":         "sends direct messages to the user named by 'email', never to a stream",
}

// webhookField is one field of a form or multipart webhook body, kept in
// the sender's order.
type webhookField struct{ name, value string }

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
	// Zulip (Django) reads parameters from form and multipart bodies, so
	// those are parsed and written anew; any other body is not read as
	// parameters and passes unchanged. A Content-Type the proxy cannot
	// parse is refused: Django's laxer parser might take it for a form.
	mt := mediaType(r)
	var fields []webhookField
	switch mt {
	case mtForm:
		raw, err := io.ReadAll(r.Body)
		if err != nil {
			return h.bodyError(err)
		}
		if fields, err = parseFormOrdered(string(raw)); err != nil {
			return newError(http.StatusBadRequest, codeBadRequest, "malformed form body")
		}
	case mtMultipart:
		var err error
		if fields, err = h.readWebhookParts(r); err != nil {
			return err
		}
	case "invalid":
		return errUnsupportedBody("unreadable Content-Type header")
	}

	// The key: HTTP Basic (for the integrations that use it), or api_key
	// in the query or the body. One place only, so no two disagree.
	var key string
	places := 0
	_, basicKey, basic := r.BasicAuth()
	if basic {
		key, places = basicKey, places+1
	}
	if vs, ok := q["api_key"]; ok {
		if len(vs) != 1 {
			return errBadParam("api_key", "parameter 'api_key' given more than once")
		}
		key, places = vs[0], places+1
	}
	for _, f := range fields {
		if f.name == "api_key" {
			key, places = f.value, places+1
		}
	}
	if places == 0 || key == "" {
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

	if reason, ok := refusedIntegrations[integration]; ok {
		return newError(http.StatusForbidden, codeForbidden,
			"the "+integration+" integration "+reason+"; it is not available through a scoped key")
	}
	queryFields := make([]webhookField, 0, len(q))
	for name, vs := range q {
		for _, v := range vs {
			queryFields = append(queryFields, webhookField{name, v})
		}
	}
	out, streams, aerr := webhookParams(integration, queryFields)
	if aerr != nil {
		return aerr
	}
	bodyOut, bodyStreams, aerr := webhookParams(integration, fields)
	if aerr != nil {
		return aerr
	}
	// Zulip reads a name from the body or else the query: one of them may
	// hold it, never both, so that no two values disagree.
	for _, f := range bodyOut {
		if _, dup := q[f.name]; dup {
			return errBadParam(f.name, "parameter '"+f.name+"' given more than once")
		}
	}

	// A raw payload is read before Zulip is asked anything only where its
	// content decides the destination.
	var payload []byte
	if fields == nil && integration == "teamcity" && (mt != "" || r.ContentLength != 0) {
		var err error
		if payload, err = io.ReadAll(r.Body); err != nil {
			return h.bodyError(err)
		}
		personal, ok := teamcityPersonal(payload)
		if !ok {
			return errBadParam("payload", "a TeamCity payload must be a JSON object")
		}
		if personal {
			return newError(http.StatusForbidden, codeForbidden,
				"TeamCity personal builds are sent as direct messages, which a scoped key cannot send")
		}
	}

	sid, err := h.streamID(r.Context(), b, e.Stream)
	if err != nil {
		return c.record(errStatus(err), err)
	}
	for _, s := range append(streams, bodyStreams...) {
		if !webhookStreamIs(s, e.Stream, sid) {
			return errNotYourStream(e.Stream)
		}
	}
	// By id: a stream named like a number would otherwise be read as an
	// id. In the query always, and first in a body, where Zulip reads
	// first.
	stream := strconv.FormatInt(sid, 10)
	query := url.Values{"stream": {stream}}
	for _, f := range out {
		query.Set(f.name, f.value)
	}
	call := zulip.WebhookCall{Integration: integration, Method: r.Method, Query: query, BasicAuth: basic,
		Header: webhookHeader(r.Header)}
	switch {
	case mt == mtForm:
		body := encodeForm(append([]webhookField{{"stream", stream}}, bodyOut...))
		call.ContentType, call.Body, call.ContentLength = mtForm, strings.NewReader(body), int64(len(body))
	case mt == mtMultipart:
		body, ctype, err := encodeMultipart(append([]webhookField{{"stream", stream}}, bodyOut...))
		if err != nil {
			return err
		}
		call.ContentType, call.Body, call.ContentLength = ctype, bytes.NewReader(body), int64(len(body))
	case payload != nil:
		call.ContentType, call.Body, call.ContentLength = r.Header.Get("Content-Type"), bytes.NewReader(payload), int64(len(payload))
	case mt != "" || r.ContentLength != 0:
		call.ContentType, call.Body, call.ContentLength = r.Header.Get("Content-Type"), r.Body, r.ContentLength
	}
	body := &recordingReader{r: call.Body}
	if call.Body != nil {
		call.Body = body
	}
	resp, err := b.client.Webhook(r.Context(), call)
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

// webhookParams checks a webhook's query or body fields: single values
// only, no `method`, no api_key (the client adds the bot's), and none of
// the options that make an integration send elsewhere. `stream` values
// are returned for checking against the key's stream, and left out.
// Everything else passes, since integrations read their own options
// (topic, only_events, branches, ...).
func webhookParams(integration string, in []webhookField) (out []webhookField, streams []string, aerr *apiError) {
	seen := make(map[string]bool, len(in))
	for _, f := range in {
		if seen[f.name] {
			return nil, nil, errBadParam(f.name, "parameter '"+f.name+"' given more than once")
		}
		seen[f.name] = true
		switch f.name {
		case "api_key":
			continue
		case "method":
			return nil, nil, errBadParam(f.name, "parameter 'method' is not allowed: it would make Zulip run another endpoint")
		case "stream":
			streams = append(streams, f.value)
			continue
		case "channels_map_to_topics":
			if integration == "slack" && f.value != "1" {
				return nil, nil, newError(http.StatusForbidden, codeForbidden,
					"channels_map_to_topics="+f.value+" would post to the stream named by the Slack channel; a scoped key posts only to its own stream")
			}
		}
		out = append(out, f)
	}
	return out, streams, nil
}

// webhookStreamIs compares a webhook's `stream` the way Zulip's
// check_send_webhook_message reads it: digits are an id, anything else a
// name, trimmed and compared without case.
func webhookStreamIs(v, name string, id int64) bool {
	if isDigits(v) {
		n, err := strconv.ParseInt(v, 10, 64)
		return err == nil && n == id
	}
	return sameStreamName(v, name)
}

// webhookHeader picks the sender's headers to pass to the integration
// (event type, delivery id, signature): all but the proxy's credential
// header and those that describe the connection to the proxy. The zulip
// client keeps the headers it owns (credentials, body framing) itself.
func webhookHeader(in http.Header) http.Header {
	out := make(http.Header, len(in))
	for k, vs := range in {
		switch {
		case k == "X-Api-Key", k == "Forwarded", k == "Via", k == "X-Real-Ip",
			strings.HasPrefix(k, "X-Forwarded-"),
			k == "X-Http-Method-Override", k == "X-Http-Method", k == "X-Method-Override":
			continue
		}
		out[k] = vs
	}
	return out
}

// readWebhookParts reads a multipart webhook body (Jotform sends its
// submissions so). Only text fields: Zulip's integrations read no files.
func (h *Handler) readWebhookParts(r *http.Request) ([]webhookField, error) {
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, newError(http.StatusBadRequest, codeBadRequest, "malformed multipart body")
	}
	fields := []webhookField{}
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return fields, nil
		}
		if err != nil {
			return nil, h.multipartError(err)
		}
		name := p.FormName()
		if name == "" {
			return nil, newError(http.StatusBadRequest, codeBadRequest, "malformed multipart body: a part without a form field name")
		}
		if p.FileName() != "" {
			return nil, errBadParam(name, "webhook payloads may hold text fields only, not files")
		}
		v, err := io.ReadAll(p)
		if err != nil {
			return nil, h.multipartError(err)
		}
		fields = append(fields, webhookField{name, string(v)})
	}
}

// parseFormOrdered reads an urlencoded body as url.ParseQuery does, but
// keeps the fields in order, so the payload reaches Zulip as it was sent.
func parseFormOrdered(s string) ([]webhookField, error) {
	fields := []webhookField{}
	for s != "" {
		var kv string
		kv, s, _ = strings.Cut(s, "&")
		if strings.Contains(kv, ";") {
			return nil, errors.New("invalid semicolon separator in form")
		}
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		k, err := url.QueryUnescape(k)
		if err != nil {
			return nil, err
		}
		if v, err = url.QueryUnescape(v); err != nil {
			return nil, err
		}
		fields = append(fields, webhookField{k, v})
	}
	return fields, nil
}

func encodeForm(fields []webhookField) string {
	var b strings.Builder
	for i, f := range fields {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(url.QueryEscape(f.name))
		b.WriteByte('=')
		b.WriteString(url.QueryEscape(f.value))
	}
	return b.String()
}

func encodeMultipart(fields []webhookField) ([]byte, string, error) {
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	for _, f := range fields {
		fw, err := mw.CreateFormField(f.name)
		if err != nil {
			return nil, "", err
		}
		if _, err := io.WriteString(fw, f.value); err != nil {
			return nil, "", err
		}
	}
	if err := mw.Close(); err != nil {
		return nil, "", err
	}
	return b.Bytes(), mw.FormDataContentType(), nil
}

// teamcityPersonal says whether a TeamCity payload is a personal build,
// which Zulip sends as a direct message to whoever started it. It reads
// the JSON as Zulip does (keys exact, the last of repeated keys) and errs
// towards "personal": a property env.BUILD_IS_PERSONAL with any value but
// "false" counts. ok is false when the body cannot be read that far.
func teamcityPersonal(body []byte) (personal, ok bool) {
	var top map[string]json.RawMessage
	if json.Unmarshal(body, &top) != nil {
		return false, false
	}
	raw, found := top["build"]
	if !found {
		// Zulip tells the bot's owner the payload is misconfigured.
		return false, true
	}
	var build map[string]json.RawMessage
	if json.Unmarshal(raw, &build) != nil {
		return false, false
	}
	raw, found = build["teamcityProperties"]
	if !found {
		return false, true
	}
	var props []map[string]json.RawMessage
	if json.Unmarshal(raw, &props) != nil {
		return false, false
	}
	for _, p := range props {
		var name string
		if json.Unmarshal(p["name"], &name) != nil {
			return false, false
		}
		if name != "env.BUILD_IS_PERSONAL" {
			continue
		}
		var v string
		if json.Unmarshal(p["value"], &v) != nil || v != "false" {
			return true, true
		}
	}
	return false, true
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
