package zulipproxy

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/zwop/caddy-zulip-proxy/zulip"
)

// A key with a topic prefix writes, edits and reads only in the topics
// that start with it (keystore.Entry.TopicInScope): a topic it names is
// checked before anything goes to Zulip, a message it edits or reads by
// id must be in one, and what Zulip answers to a read or a topic list is
// cut down to them.

// topicInScope refuses a topic outside the key's topics.
func (c *call) topicInScope(topic string) *apiError {
	if c.entry.TopicInScope(topic) {
		return nil
	}
	return newError(http.StatusForbidden, codeForbidden, "topic '"+topic+"' is outside this key's topics: they start with '"+
		c.entry.TopicPrefix+"' (compared as Zulip compares topics: case, width and accents aside)")
}

// messageInScope refuses a message (read or edited by id) in a topic
// outside the key's.
func (c *call) messageInScope(msg *zulip.Message) *apiError {
	if c.entry.TopicInScope(msg.Topic) {
		return nil
	}
	return newError(http.StatusForbidden, codeForbidden,
		"message "+strconv.FormatInt(msg.ID, 10)+" is not in this key's topics (they start with '"+c.entry.TopicPrefix+"')")
}

// inScopeAnswer cuts Zulip's answer down to the key's topics: the
// messages of a read (field "messages", topic "subject"), or the topics
// of a topic list (field "topics", topic "name"). Other fields pass as
// they are; an answer that is not as expected is refused rather than
// passed whole.
func (c *call) inScopeAnswer(resp *zulip.Response, field, topicField string) (*zulip.Response, error) {
	if c.entry == nil || c.entry.TopicPrefix == "" {
		return resp, nil
	}
	var body map[string]json.RawMessage
	if err := json.Unmarshal(resp.Body, &body); err != nil {
		return nil, zulip.ErrBadResponse
	}
	var items []map[string]json.RawMessage
	if raw, ok := body[field]; ok {
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, zulip.ErrBadResponse
		}
	}
	kept := make([]map[string]json.RawMessage, 0, len(items))
	for _, it := range items {
		var topic string
		if err := json.Unmarshal(it[topicField], &topic); err != nil {
			return nil, zulip.ErrBadResponse
		}
		if c.entry.TopicInScope(topic) {
			kept = append(kept, it)
		}
	}
	raw, err := json.Marshal(kept)
	if err != nil {
		return nil, err
	}
	body[field] = raw
	out, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	cut := *resp
	cut.Body = out
	return &cut, nil
}
