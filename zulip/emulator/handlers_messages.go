package emulator

import (
	"encoding/json"
	"strings"
)

// sendMessage is POST /messages.
func sendMessage(x *exchange, _ []string) *apiError {
	typ, ok := x.p.lookup("type")
	if !ok {
		return errMissing("type")
	}
	to, hasTo := x.p.lookup("to")
	topicRaw, hasTopic, aerr := x.topicParam()
	if aerr != nil {
		return aerr
	}
	content, ok := x.p.lookup("content")
	if !ok {
		return errMissing("content")
	}
	x.p.markUsed("queue_id")
	x.p.markUsed("local_id")
	x.p.markUsed("read_by_sender")

	// Pure checks first, outside the lock; their errors are reported in
	// Zulip's order (recipient before content) below.
	normContent, contentErr := normalizeContent(content)
	normTopic, topicErr := normalizeTopic(topicRaw)
	m := &message{Message: Message{
		SenderID:    x.user.ID,
		SenderEmail: x.user.Email,
		Timestamp:   x.now,
		Client:      clientName(x.r.UserAgent()),
		Content:     normContent,
	}}
	id, aerr := x.e.storeSend(x.user, m, typ, to, hasTo, normTopic, hasTopic, topicErr, contentErr)
	if aerr != nil {
		return aerr
	}
	x.success(obj{{"id", id}})
	return nil
}

func (e *Emulator) storeSend(u *user, m *message, typ, to string, hasTo bool, topic string, hasTopic bool, topicErr, contentErr *apiError) (int64, *apiError) {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch typ {
	case "stream", "channel":
		if !hasTo {
			return 0, errBadRequest("Missing channel")
		}
		s, aerr := e.streamForSendLocked(u, to)
		if aerr != nil {
			return 0, aerr
		}
		if !hasTopic {
			return 0, errBadRequest("Missing topic")
		}
		if topicErr != nil {
			return 0, topicErr
		}
		m.Type, m.StreamID, m.Topic = "stream", s.ID, topic
	case "direct", "private":
		if !hasTo {
			return 0, errBadRequest("Message must have recipients")
		}
		ids, aerr := e.recipientsLocked(to)
		if aerr != nil {
			return 0, aerr
		}
		m.Type = "private"
		m.Recipients = append([]int64{u.ID}, ids...)
	default:
		return 0, errBadRequest("Invalid message type")
	}
	if contentErr != nil {
		return 0, contentErr
	}
	return e.addMessageLocked(m), nil
}

func (e *Emulator) streamForSendLocked(u *user, to string) (*stream, *apiError) {
	name, id, isID, aerr := streamIndicator(to)
	if aerr != nil {
		return nil, aerr
	}
	var s *stream
	if isID {
		if s = e.streams[id]; s == nil {
			return nil, errStreamID(id)
		}
	} else {
		name = strings.TrimSpace(name)
		if s = e.streamsByKey[strings.ToLower(name)]; s == nil {
			return nil, errStreamName(name)
		}
	}
	if !s.canRead(u) {
		return nil, errBadRequest("Not authorized to send to channel '%s'", s.Name)
	}
	return s, nil
}

// recipientsLocked resolves a direct message's "to": a JSON list of ids
// or emails, or a comma-separated list of emails.
func (e *Emulator) recipientsLocked(to string) ([]int64, *apiError) {
	var raw []any
	if err := json.Unmarshal([]byte(to), &raw); err != nil {
		for _, s := range strings.Split(to, ",") {
			if s = strings.TrimSpace(s); s != "" {
				raw = append(raw, s)
			}
		}
	}
	if len(raw) == 0 {
		return nil, errBadRequest("Message must have recipients")
	}
	var ids []int64
	for _, r := range raw {
		switch v := r.(type) {
		case float64:
			u := e.users[int64(v)]
			if u == nil {
				return nil, errBadRequest("Invalid user ID %d", int64(v))
			}
			ids = append(ids, u.ID)
		case string:
			u := e.usersByEmail[strings.ToLower(strings.TrimSpace(v))]
			if u == nil {
				return nil, errBadRequest("Invalid email '%s'", v)
			}
			ids = append(ids, u.ID)
		default:
			return nil, errBadRequest("Invalid data type for recipients")
		}
	}
	return ids, nil
}

// getMessage is GET /messages/{id}.
func getMessage(x *exchange, vars []string) *apiError {
	applyMarkdown, aerr := x.boolParam("apply_markdown", true)
	if aerr != nil {
		return aerr
	}
	allowEmpty, aerr := x.boolParam("allow_empty_topic_name", false)
	if aerr != nil {
		return aerr
	}
	x.e.mu.Lock()
	m, ok := x.e.msgByID[parseID(vars[0])]
	if !ok || !x.e.canAccessLocked(x.user, m) {
		x.e.mu.Unlock()
		return errInvalidMessage()
	}
	data := obj{{"raw_content", m.Content}, {"message", x.e.messageJSONLocked(m, x.user, applyMarkdown, allowEmpty)}}
	x.e.mu.Unlock()
	x.success(data)
	return nil
}

// deleteMessage is DELETE /messages/{id} (reachable from a POST with
// method=DELETE, which is why the proxy must never forward "method").
func deleteMessage(x *exchange, vars []string) *apiError {
	if aerr := x.e.deleteMessage(x.user, parseID(vars[0])); aerr != nil {
		return aerr
	}
	x.success(nil)
	return nil
}

func (e *Emulator) deleteMessage(u *user, id int64) *apiError {
	e.mu.Lock()
	defer e.mu.Unlock()
	m, ok := e.msgByID[id]
	if !ok || !e.canAccessLocked(u, m) {
		return errInvalidMessage()
	}
	if m.SenderID != u.ID && !u.IsAdmin {
		return errBadRequest("You don't have permission to delete this message")
	}
	m.deleted = true
	if m.Type == "stream" {
		if s := e.streams[m.StreamID]; s != nil {
			s.removeFromTopic(m.Topic)
		}
	}
	return nil
}

// messageJSONLocked is Zulip's message object for viewer.
func (e *Emulator) messageJSONLocked(m *message, viewer *user, applyMarkdown, allowEmptyTopic bool) obj {
	content, ctype := m.Content, "text/x-markdown"
	if applyMarkdown {
		content, ctype = render(m.Content), "text/html"
	}
	senderName := ""
	if s := e.users[m.SenderID]; s != nil {
		senderName = s.FullName
	}
	topicName := m.Topic
	if topicName == "" && m.Type == "stream" && !allowEmptyTopic {
		topicName = emptyTopicName
	}
	flags := []string{}
	switch {
	case m.SenderID == viewer.ID:
		flags = append(flags, "read")
	case m.Type == "stream" && !e.streams[m.StreamID].subs[viewer.ID]:
		flags = append(flags, "read", "historical")
	}
	o := obj{
		{"id", m.ID},
		{"sender_id", m.SenderID},
		{"content", content},
		{"recipient_id", recipientID(m)},
		{"timestamp", m.Timestamp.Unix()},
		{"client", m.Client},
		{"subject", topicName},
		{"topic_links", []any{}},
		{"is_me_message", strings.HasPrefix(m.Content, "/me ")},
		{"reactions", []any{}},
		{"submessages", []any{}},
		{"sender_full_name", senderName},
		{"sender_email", m.SenderEmail},
		{"sender_realm_str", realmString},
		{"display_recipient", e.displayRecipientLocked(m)},
		{"type", m.Type},
	}
	if m.Type == "stream" {
		o = append(o, kv{"stream_id", m.StreamID})
	}
	o = append(o, kv{"avatar_url", nil}, kv{"content_type", ctype}, kv{"flags", flags})
	if len(m.Edits) > 0 {
		hist := make([]obj, 0, len(m.Edits))
		for i := len(m.Edits) - 1; i >= 0; i-- {
			ed := m.Edits[i]
			h := obj{{"user_id", ed.UserID}, {"timestamp", ed.Timestamp.Unix()}}
			if ed.ContentChanged {
				h = append(h, kv{"prev_content", ed.PrevContent}, kv{"prev_rendered_content", render(ed.PrevContent)})
			}
			if ed.TopicChanged {
				h = append(h, kv{"prev_topic", ed.PrevTopic}, kv{"topic", ed.Topic})
			}
			if ed.PrevStream != 0 {
				h = append(h, kv{"prev_stream", ed.PrevStream}, kv{"stream", ed.Stream})
			}
			hist = append(hist, h)
		}
		o = append(o, kv{"edit_history", hist})
	}
	if !m.LastEdit.IsZero() {
		o = append(o, kv{"last_edit_timestamp", m.LastEdit.Unix()})
	}
	if !m.LastMoved.IsZero() {
		o = append(o, kv{"last_moved_timestamp", m.LastMoved.Unix()})
	}
	return o
}

func recipientID(m *message) int64 {
	if m.Type == "stream" {
		return 1000 + m.StreamID
	}
	var sum int64
	for _, id := range m.Recipients {
		sum = sum*31 + id
	}
	return 100000 + sum%100000
}

func (e *Emulator) displayRecipientLocked(m *message) any {
	if m.Type == "stream" {
		if s := e.streams[m.StreamID]; s != nil {
			return s.Name
		}
		return ""
	}
	list := make([]obj, 0, len(m.Recipients))
	for _, id := range m.Recipients {
		if u := e.users[id]; u != nil {
			list = append(list, obj{{"id", u.ID}, {"email", u.Email}, {"full_name", u.FullName}, {"is_mirror_dummy", false}})
		}
	}
	return list
}
