package zulipproxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

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

// webhookRequest is a webhook call as read to find its key: the query,
// and the fields of a form or multipart body, which Zulip (Django) reads
// as parameters and the proxy therefore writes anew. fields is nil for
// any other body, which is passed on unchanged, and until a form is read.
type webhookRequest struct {
	query  url.Values
	mt     string
	fields []field
	basic  bool
	// keyInBody says the key came in the body, which was read for it.
	keyInBody bool
}

// isForm says the body is one whose fields Zulip reads as parameters.
func (hook *webhookRequest) isForm() bool { return hook.mt == mtForm || hook.mt == mtMultipart }

// webhookKey finds a webhook call's key: HTTP Basic (for the integrations
// that use it) or api_key in the query, before anything of the body is
// read; only where the key can be nowhere else, in a form body, is the
// body read for it, and then no more than a webhook field's bound, so a
// caller without a key never makes the proxy read more. One place only,
// so that no two disagree.
func (c *call) webhookKey(w http.ResponseWriter, r *http.Request) (string, *apiError) {
	q, aerr := queryValues(r)
	if aerr != nil {
		return "", aerr
	}
	hook := &webhookRequest{query: q, mt: mediaType(r)}
	if hook.mt == mtInvalid {
		// Django's laxer parser might take it for a form.
		return "", errUnsupportedBody("unreadable Content-Type header")
	}
	c.hook = hook
	var key string
	places := 0
	if _, basicKey, ok := r.BasicAuth(); ok {
		key, places, hook.basic = basicKey, places+1, true
	}
	if vs, ok := q["api_key"]; ok {
		if len(vs) != 1 {
			return "", errBadParam("api_key", "parameter 'api_key' given more than once")
		}
		key, places = vs[0], places+1
	}
	missing := newError(http.StatusUnauthorized, codeUnauthorized,
		"Missing api_key: put the scoped key in the webhook URL as api_key=...").setHeader("WWW-Authenticate", zulipAuthenticate)
	if places == 0 {
		if !hook.isForm() || r.ContentLength > maxWebhookFieldBytes {
			return "", missing
		}
		if aerr := c.readWebhookFields(w, r, maxWebhookFieldBytes); aerr != nil {
			if aerr.Status == http.StatusRequestEntityTooLarge {
				return "", missing
			}
			return "", aerr
		}
	}
	for _, f := range hook.fields {
		if f.name == "api_key" {
			key, places, hook.keyInBody = f.value, places+1, true
		}
	}
	if places == 0 || key == "" {
		return "", missing
	}
	if places > 1 {
		return "", errBadParam("api_key", "give the key in one place only")
	}
	return key, nil
}

// readWebhookFields reads a form body's fields, at most limit bytes of
// it; the body of any other webhook is passed on as it is.
func (c *call) readWebhookFields(w http.ResponseWriter, r *http.Request, limit int64) *apiError {
	hook, body := c.hook, c.h.body
	body.maxUpload = min(body.maxUpload, limit)
	if aerr := body.limitBody(w, r); aerr != nil {
		return aerr
	}
	switch hook.mt {
	case mtForm:
		var aerr *apiError
		hook.fields, aerr = body.readFormBody(r)
		return aerr
	case mtMultipart:
		// Jotform sends its submissions so. Only text fields: Zulip's
		// integrations read no files.
		hook.fields = []field{}
		err := body.readParts(r, partReader{
			fieldBytes: maxWebhookFieldBytes,
			text: func(name, value string) error {
				hook.fields = append(hook.fields, field{name, value})
				return nil
			},
			noFiles: "webhook payloads may hold text fields only, not files",
		})
		if err != nil {
			var aerr *apiError
			if errors.As(err, &aerr) {
				return aerr
			}
			return body.multipartError(err)
		}
	}
	return nil
}

// serveWebhook forwards Zulip's incoming-webhook integrations,
// /api/v1/external/{integration}, with the bot's real key and the key's
// stream forced. The payload is passed on unchanged; the parameters Zulip
// reads to pick the destination are set here, where Zulip reads first.
func (h *Handler) serveWebhook(w http.ResponseWriter, r *http.Request, c *call) error {
	integration, hook, e, b := c.arg, c.hook, c.entry, c.bot
	if reason, ok := refusedIntegrations[integration]; ok {
		return newError(http.StatusForbidden, codeForbidden,
			"the "+integration+" integration "+reason+"; it is not available through a scoped key")
	}
	// The key came in the URL: the body is read now that it is checked.
	if !hook.keyInBody {
		if hook.isForm() {
			if aerr := c.readWebhookFields(w, r, h.MaxUpload); aerr != nil {
				return aerr
			}
			for _, f := range hook.fields {
				if f.name == "api_key" {
					return errBadParam("api_key", "give the key in one place only")
				}
			}
		} else if aerr := h.body.limitBody(w, r); aerr != nil {
			return aerr
		}
	}
	q, mt, fields := hook.query, hook.mt, hook.fields
	queryFields := make([]field, 0, len(q))
	for name, vs := range q {
		for _, v := range vs {
			queryFields = append(queryFields, field{name, v})
		}
	}
	out, streams, aerr := webhookParams(integration, queryFields, true)
	if aerr != nil {
		return aerr
	}
	bodyOut, bodyStreams, aerr := webhookParams(integration, fields, false)
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
	if aerr := c.webhookTopicInScope(q, bodyOut); aerr != nil {
		return aerr
	}

	// A raw payload is read before Zulip is asked anything only where its
	// content decides the destination.
	var payload []byte
	if fields == nil && integration == "teamcity" && (mt != "" || r.ContentLength != 0) {
		var err error
		if payload, err = io.ReadAll(r.Body); err != nil {
			return h.body.bodyError(err)
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

	sid, err := b.streamID(r.Context(), e.Stream)
	if err != nil {
		return err
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
	// The caller's own key goes nowhere: not in an option, a field, a
	// header or the payload (scrub.go).
	query := url.Values{"stream": {stream}}
	for _, f := range out {
		query.Set(f.name, scrubString(f.value, c.key))
	}
	for i := range bodyOut {
		bodyOut[i].value = scrubString(bodyOut[i].value, c.key)
	}
	header := webhookHeader(r.Header, c.key)
	if payload != nil {
		payload = []byte(scrubString(string(payload), c.key))
	}
	call := zulip.WebhookCall{Integration: integration, Method: r.Method, Query: query, BasicAuth: hook.basic, Header: header}
	switch {
	case mt == mtForm:
		body := encodeForm(append([]field{{"stream", stream}}, bodyOut...))
		call.ContentType, call.Body, call.ContentLength = mtForm, strings.NewReader(body), int64(len(body))
	case mt == mtMultipart:
		body, ctype, err := encodeMultipart(append([]field{{"stream", stream}}, bodyOut...))
		if err != nil {
			return err
		}
		call.ContentType, call.Body, call.ContentLength = ctype, bytes.NewReader(body), int64(len(body))
	case payload != nil:
		call.ContentType, call.Body, call.ContentLength = r.Header.Get("Content-Type"), bytes.NewReader(payload), int64(len(payload))
	case mt != "" || r.ContentLength != 0:
		// Streamed, the key replaced on the way by a marker of its
		// length, so the declared length holds.
		call.ContentType, call.Body, call.ContentLength = r.Header.Get("Content-Type"), newKeyScrubber(r.Body, c.key), r.ContentLength
	}
	body := &recordingReader{r: call.Body}
	if call.Body != nil {
		call.Body = body
	}
	resp, err := b.client.Webhook(r.Context(), call)
	if body.err != nil {
		return h.body.bodyError(body.err)
	}
	if isStreamGone(err) {
		b.streamIDs.CompareAndDelete(e.Stream, sid)
	}
	if err != nil {
		return err
	}
	writeZulipAnswer(w, resp)
	return nil
}

// webhookOptions are the query options the proxy passes to an
// integration: those Zulip's integrations read that cannot choose a
// stream or a recipient. From Zulip's server code:
//   - zerver/lib/webhooks/common.py, check_send_webhook_message, read by
//     every integration: topic, only_events, exclude_events, no_previews
//     (stream is set by the proxy; unquote_url_parameters is left out,
//     since it changes how the stream is read);
//   - zerver/webhooks/github/view.py: branches, ignore_private_repositories;
//   - gitlab, bitbucket2, bitbucket3, gogs, gitea, beanstalk: branches;
//     gitlab: use_merge_request_title; travis: ignore_pull_requests;
//     alertmanager: name, desc (which alert labels make the topic and
//     the text).
//
// Anything else is refused with a 400 naming it: an option a newer Zulip
// adds may route messages (Slack's mapping=channels posts to the stream
// a Slack channel names), and a proxy that passed unknown options would
// let it.
var webhookOptions = []string{
	"topic", "only_events", "exclude_events", "no_previews",
	"branches", "ignore_private_repositories", "use_merge_request_title",
	"ignore_pull_requests", "name", "desc",
}

// routingBodyFields are the names that Zulip reads from a form body as
// options choosing where a webhook's message goes. A form body is the
// sender's payload, whose fields cannot be allow-listed; these are
// refused there.
var routingBodyFields = []string{"mapping", "channels_map_to_topics", "unquote_url_parameters"}

// webhookParams checks a webhook's query options or body fields: single
// values only, no `method`, no api_key (the client adds the bot's), query
// options from webhookOptions only, and nothing that chooses a
// destination. `stream` values are returned for checking against the
// key's stream, and left out.
func webhookParams(integration string, in []field, query bool) (out []field, streams []string, aerr *apiError) {
	seen := make(map[string]bool, len(in))
	for _, f := range in {
		if seen[f.name] {
			return nil, nil, errBadParam(f.name, "parameter '"+f.name+"' given more than once")
		}
		seen[f.name] = true
		switch {
		case f.name == "api_key":
			continue
		case f.name == "method":
			return nil, nil, errBadParam(f.name, "parameter 'method' is not allowed: it would make Zulip run another endpoint")
		case f.name == "stream":
			streams = append(streams, f.value)
			continue
		case f.name == "channels_map_to_topics" && integration == "slack" && f.value == "1":
			// Slack channels as topics of the key's stream: allowed.
		case f.name == "channels_map_to_topics" && integration == "slack":
			return nil, nil, newError(http.StatusForbidden, codeForbidden,
				"channels_map_to_topics="+f.value+" would post to the stream named by the Slack channel; a scoped key posts only to its own stream")
		case slices.Contains(routingBodyFields, f.name):
			return nil, nil, errBadParam(f.name, "webhook option '"+f.name+"' is not available through a scoped key: it can choose where messages go")
		case query && !slices.Contains(webhookOptions, f.name):
			return nil, nil, errBadParam(f.name, "webhook option '"+f.name+"' is not available through a scoped key (it takes "+strings.Join(webhookOptions, ", ")+")")
		}
		out = append(out, f)
	}
	return out, streams, nil
}

// webhookStreamIs compares a webhook's `stream` the way Zulip's
// check_send_webhook_message reads it: digits are an id, anything else a
// name, trimmed and compared without case.
func webhookStreamIs(v, name string, id int64) bool {
	if zulip.ValidID(v) {
		n, err := strconv.ParseInt(v, 10, 64)
		return err == nil && n == id
	}
	return sameStreamName(v, name)
}

// webhookHeader picks the sender's headers to pass to the integration
// (event type, delivery id, signature): all but the proxy's credential
// header and those that describe the connection to the proxy, with the
// caller's key replaced wherever a sender put it. The zulip client keeps
// the headers it owns (credentials, body framing) itself.
func webhookHeader(in http.Header, key string) http.Header {
	out := make(http.Header, len(in))
	for k, vs := range in {
		switch {
		case k == "X-Api-Key", k == "Forwarded", k == "Via", k == "X-Real-Ip",
			strings.HasPrefix(k, "X-Forwarded-"),
			k == "X-Http-Method-Override", k == "X-Http-Method", k == "X-Method-Override":
			continue
		}
		kept := make([]string, len(vs))
		for i, v := range vs {
			kept[i] = scrubString(v, key)
		}
		out[k] = kept
	}
	return out
}

func encodeForm(fields []field) string {
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

func encodeMultipart(fields []field) ([]byte, string, error) {
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

// webhookTopicInScope holds a topic-scoped key's webhook to its topics.
// The integration would choose its own topic from the payload, which the
// proxy cannot check before Zulip posts; Zulip's webhook framework puts
// a `topic` parameter in its place for every integration, so a
// topic-scoped key's URL must name one, inside the key's topics.
func (c *call) webhookTopicInScope(q url.Values, body []field) *apiError {
	if c.entry.TopicPrefix == "" {
		return nil
	}
	topic, named := q.Get("topic"), q.Has("topic")
	for _, f := range body {
		if f.name == "topic" {
			topic, named = f.value, true
		}
	}
	if !named || strings.TrimSpace(topic) == "" {
		return errMissingParam("topic").setMsg("this key is held to the topics that start with '" + c.entry.TopicPrefix +
			"': its webhook URL must name one (topic=" + c.entry.TopicPrefix + "...), which Zulip puts in place of the integration's own")
	}
	return c.topicInScope(topic)
}
