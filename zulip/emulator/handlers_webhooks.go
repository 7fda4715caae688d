package emulator

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/zwop/caddy-zulip-proxy/zulip"
)

// webhook is /external/{integration}, standing in for every incoming
// webhook integration: it posts a summary of the payload. Like Zulip's
// check_send_webhook_message, "stream" and "topic" are read from the
// body before the query, and with no stream the message goes to the
// bot's owner as a direct message.
func webhook(x *exchange, vars []string) *apiError {
	integration := vars[0]
	streamArg, hasStream := x.p.lookup("stream")
	topicArg, hasTopic := x.p.lookup("topic")
	// Integrations read parameters of their own; Zulip reports none of
	// them as ignored.
	for _, list := range [][]Param{x.p.body, x.p.query} {
		for _, q := range list {
			x.p.markUsed(q.Name)
		}
	}
	content := webhookContent(integration, x.rec.rawBody, x.p)
	m := &message{Message: Message{
		SenderID:    x.user.ID,
		SenderEmail: x.user.Email,
		Timestamp:   x.now,
		Client:      "Zulip" + strings.ToUpper(integration[:1]) + integration[1:] + "Webhook",
		Content:     truncate(content, maxContentLength, "\n[message truncated]"),
	}}
	topicName := integration
	if hasTopic {
		topicName = topicArg
	}
	var aerr *apiError
	if m.Topic, aerr = normalizeTopic(topicName); aerr != nil {
		return aerr
	}
	if aerr := x.e.storeWebhook(x.user, m, streamArg, hasStream); aerr != nil {
		return aerr
	}
	x.success(nil)
	return nil
}

func (e *Emulator) storeWebhook(u *user, m *message, streamArg string, hasStream bool) *apiError {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !hasStream {
		to := u.ID
		if u.IsBot && u.OwnerID != 0 {
			to = u.OwnerID
		}
		m.Type, m.Topic = "private", ""
		m.Recipients = []int64{u.ID}
		if to != u.ID {
			m.Recipients = append(m.Recipients, to)
		}
		e.addMessageLocked(m)
		return nil
	}
	var s *stream
	if zulip.ValidID(streamArg) {
		id, _ := strconv.ParseInt(streamArg, 10, 64)
		if s = e.streams[id]; s == nil {
			return errStreamID(id)
		}
	} else if s = e.streamsByKey[strings.ToLower(strings.TrimSpace(streamArg))]; s == nil {
		return errStreamName(strings.TrimSpace(streamArg))
	}
	if !s.canRead(u) {
		return errBadRequest("Not authorized to send to channel '%s'", s.Name)
	}
	m.Type, m.StreamID = "stream", s.ID
	e.addMessageLocked(m)
	return nil
}

// webhookContent summarizes a payload: the compact JSON body, or the
// form fields other than the routing ones.
func webhookContent(integration string, body []byte, p *params) string {
	var b strings.Builder
	b.WriteString("**")
	b.WriteString(integration)
	b.WriteString("** webhook")
	if len(body) > 0 {
		var compact bytes.Buffer
		if json.Compact(&compact, body) == nil {
			body = compact.Bytes()
		}
		b.WriteString(":\n```\n")
		b.Write(body[:min(len(body), 2000)])
		b.WriteString("\n```")
		return b.String()
	}
	first := true
	for _, q := range p.body {
		switch q.Name {
		case "stream", "topic", "api_key":
			continue
		}
		if first {
			b.WriteString(":")
			first = false
		}
		b.WriteString("\n- ")
		b.WriteString(q.Name)
		b.WriteString(": ")
		b.WriteString(q.Value)
	}
	return b.String()
}
