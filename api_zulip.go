package zulipproxy

import (
	"net/http"
	"net/url"
	"strconv"

	"github.com/zwop/caddy-zulip-proxy/zulip"
)

// The Zulip-compatible API answers a safe subset of Zulip's own API under
// /api/v1/ (routes.go), so Zulip's clients and integrations work with a
// scoped key: HTTP Basic with any email and the scoped key as the
// password. This file reads its parameters the way Zulip does.

// zulipParams reads a Zulip API call's parameters the way Zulip does: a
// form or multipart body and the query string together.
func (br bodyReader) zulipParams(w http.ResponseWriter, r *http.Request, allowed ...string) (url.Values, error) {
	return br.readParams(w, r, paramSpec{
		allowed: allowed,
		unknown: func(name string) *apiError {
			return errBadParam(name, "parameter '"+name+"' is not available through a scoped key")
		},
		multipart: true,
		bodyHint:  "send parameters as a form (application/x-www-form-urlencoded or multipart/form-data)",
	})
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

// scopedTopicOf is topicOf, and the topic within the key's topics.
func (c *call) scopedTopicOf(p url.Values, required bool) (string, bool, *apiError) {
	t, present, aerr := topicOf(p, required)
	if aerr == nil && present {
		aerr = c.topicInScope(t)
	}
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

// readOptionNames are Zulip's read options that change only how an
// answer is written; the Zulip-compatible API passes them on.
var readOptionNames = []string{"apply_markdown", "client_gravatar", "include_anchor", "use_first_unread_anchor", "allow_empty_topic_name"}

// readOptions reads the read options a call was given, as Zulip reads a
// boolean (JSON true or false).
func readOptions(p url.Values) (zulip.ReadOptions, *apiError) {
	var o zulip.ReadOptions
	for _, opt := range []struct {
		name string
		dst  **bool
	}{
		{"apply_markdown", &o.ApplyMarkdown},
		{"client_gravatar", &o.ClientGravatar},
		{"include_anchor", &o.IncludeAnchor},
		{"use_first_unread_anchor", &o.UseFirstUnreadAnchor},
		{"allow_empty_topic_name", &o.AllowEmptyTopicName},
	} {
		if !p.Has(opt.name) {
			continue
		}
		var b bool
		switch p.Get(opt.name) {
		case "true":
			b = true
		case "false":
		default:
			return o, errBadParam(opt.name, "'"+opt.name+"' must be true or false")
		}
		*opt.dst = &b
	}
	return o, nil
}
