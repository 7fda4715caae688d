package zulipproxy

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/zwop/caddy-zulip-proxy/zulip"
)

// zulipSendMessage is POST /api/v1/messages, confined to the key's stream:
// `to` may name it (by name or id, in any form Zulip reads) or be absent.
func (h *Handler) zulipSendMessage(w http.ResponseWriter, r *http.Request, c *call) error {
	p, err := h.body.zulipParams(w, r, "type", "to", "topic", "subject", "content", "queue_id", "local_id", "read_by_sender")
	if err != nil {
		return err
	}
	switch typ := p.Get("type"); typ {
	case "stream", "channel", "":
	default:
		return errBadParam("type", "type '"+typ+"' is not available: a scoped key sends only to its stream (type 'stream')")
	}
	topic, _, aerr := c.scopedTopicOf(p, true)
	if aerr != nil {
		return aerr
	}
	if !p.Has("content") {
		return errMissingParam("content")
	}
	content := p.Get("content")
	if strings.TrimSpace(content) == "" {
		return errBadParam("content", "'content' must not be empty")
	}
	if aerr := checkText("content", content, maxContentRunes); aerr != nil {
		return aerr
	}
	var to *streamRef
	if p.Has("to") {
		ref, err := parseStreamRef(p.Get("to"))
		if err != nil {
			return errBadParam("to", "'to': "+err.Error())
		}
		// A name can be checked now; an id needs the key's stream id.
		if !ref.byID && !ref.is(c.entry.Stream, 0) {
			return errNotYourStream(c.entry.Stream)
		}
		to = &ref
	}
	if c.queueing {
		return c.sendOrQueue(w, r, topic, content, to, nil)
	}
	return c.send(w, r, topic, content, to)
}

// zulipGetMessages is GET /api/v1/messages: the bot's own messages in the
// key's stream. A client's narrow may only narrow further by topic; the
// narrow sent to Zulip is built here.
func (h *Handler) zulipGetMessages(w http.ResponseWriter, r *http.Request, c *call) error {
	p, err := h.body.zulipParams(w, r, append([]string{"anchor", "num_before", "num_after", "narrow"}, readOptionNames...)...)
	if err != nil {
		return err
	}
	opts, aerr := readOptions(p)
	if aerr != nil {
		return aerr
	}
	q := zulip.GetMessages{ReadOptions: opts}
	if q.Anchor, aerr = anchorParam(p); aerr != nil {
		return aerr
	}
	for name, dst := range map[string]*int{"num_before": &q.NumBefore, "num_after": &q.NumAfter} {
		if *dst, aerr = intParam(p, name, 0, 0, 1000); aerr != nil {
			return aerr
		}
	}
	return c.writeBotMessages(w, r, c.entry.Stream, q, func(streamID, botID int64) ([]zulip.NarrowTerm, *apiError) {
		return c.clientNarrow(p.Get("narrow"), streamID, botID)
	})
}

// clientNarrow checks a client's narrow: terms that restate the key's own
// scope (its stream, its bot as sender) are dropped, topic terms are kept,
// and anything else — other streams, `with`, searches, direct messages —
// is refused rather than passed on.
func (c *call) clientNarrow(raw string, streamID, botID int64) ([]zulip.NarrowTerm, *apiError) {
	if raw == "" {
		return nil, nil
	}
	var terms []json.RawMessage
	if err := json.Unmarshal([]byte(raw), &terms); err != nil {
		return nil, errBadParam("narrow", "'narrow' must be a JSON list of terms")
	}
	var kept []zulip.NarrowTerm
	for _, t := range terms {
		var op, operand string
		var negated bool
		var obj struct {
			Operator string          `json:"operator"`
			Operand  json.RawMessage `json:"operand"`
			Negated  bool            `json:"negated"`
		}
		var pair []json.RawMessage
		switch {
		case json.Unmarshal(t, &obj) == nil && obj.Operator != "":
			op, operand, negated = obj.Operator, string(obj.Operand), obj.Negated
		case json.Unmarshal(t, &pair) == nil && len(pair) == 2 && json.Unmarshal(pair[0], &op) == nil:
			operand = string(pair[1])
		default:
			return nil, errBadParam("narrow", "a narrow term must be {\"operator\":..., \"operand\":...}")
		}
		switch op {
		case "channel", "stream":
			ref, err := parseStreamRef(operand)
			if err != nil || negated || !ref.is(c.entry.Stream, streamID) {
				return nil, errNotYourStream(c.entry.Stream)
			}
		case "sender":
			var s string
			ok := false
			if json.Unmarshal([]byte(operand), &s) == nil {
				ok = s == "me" || strings.EqualFold(s, c.bot.client.Email())
			} else if id, err := strconv.ParseInt(operand, 10, 64); err == nil {
				ok = id == botID
			}
			if !ok || negated {
				return nil, errBadParam("narrow", "a scoped key reads only its own messages")
			}
		case "topic", "subject":
			var s string
			if json.Unmarshal([]byte(operand), &s) != nil {
				return nil, errBadParam("narrow", "a topic operand must be a string")
			}
			kept = append(kept, zulip.NarrowTerm{Operator: "topic", Operand: s, Negated: negated})
		default:
			return nil, errBadParam("narrow", "narrow operator '"+op+"' is not available through a scoped key")
		}
	}
	return kept, nil
}

// zulipGetMessage is GET /api/v1/messages/{id}, for the key's own
// messages only.
func (h *Handler) zulipGetMessage(w http.ResponseWriter, r *http.Request, c *call) error {
	p, err := h.body.zulipParams(w, r, "message_id", "apply_markdown", "allow_empty_topic_name")
	if err != nil {
		return err
	}
	id, aerr := messageIDArg(c, p)
	if aerr != nil {
		return aerr
	}
	opts, aerr := readOptions(p)
	if aerr != nil {
		return aerr
	}
	_, resp, err := c.checkOwnMessage(r.Context(), id, opts)
	if err != nil {
		return err
	}
	writeZulipAnswer(w, resp)
	return nil
}

// zulipUpdateMessage is PATCH /api/v1/messages/{id}: content and topic of
// the key's own messages; never a move to another stream.
func (h *Handler) zulipUpdateMessage(w http.ResponseWriter, r *http.Request, c *call) error {
	p, err := h.body.zulipParams(w, r, "message_id", "topic", "subject", "content", "propagate_mode",
		"send_notification_to_old_thread", "send_notification_to_new_thread", "stream_id")
	if err != nil {
		return err
	}
	if p.Has("stream_id") {
		return newError(http.StatusForbidden, codeForbidden, "a scoped key cannot move messages to another stream")
	}
	id, aerr := messageIDArg(c, p)
	if aerr != nil {
		return aerr
	}
	var u zulip.UpdateMessage
	topic, hasTopic, aerr := c.scopedTopicOf(p, false)
	if aerr != nil {
		return aerr
	}
	if hasTopic {
		u.Topic = &topic
	}
	if p.Has("content") {
		content := p.Get("content")
		if aerr := checkText("content", content, maxContentRunes); aerr != nil {
			return aerr
		}
		u.Content = &content
	}
	if p.Has("propagate_mode") {
		mode := p.Get("propagate_mode")
		if aerr := checkPropagate(mode, h.AllowPropagate); aerr != nil {
			return aerr
		}
		u.PropagateMode = mode
	}
	if u.Topic == nil && u.Content == nil {
		return newError(http.StatusBadRequest, codeBadRequest, "nothing to change: give 'content' or 'topic'")
	}
	return c.updateOwnMessage(w, r, id, u)
}
