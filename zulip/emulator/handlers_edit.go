package emulator

import (
	"strings"
	"time"
)

// moveLimit is move_messages_within_stream_limit_seconds and
// move_messages_between_streams_limit_seconds: a week, for non-admins.
const moveLimit = 7 * 24 * time.Hour

type editRequest struct {
	topic      string
	hasTopic   bool
	content    string
	hasContent bool
	streamID   int64
	hasStream  bool
	mode       string
}

// updateMessage is PATCH /messages/{id}, with Zulip 10's rules: only the
// sender edits content (within the edit limit), but anyone may move a
// message to another topic or stream (Zulip's default permissions), and
// propagate_mode change_later/change_all moves other people's messages
// in the same topic along with it.
func updateMessage(x *exchange, vars []string) *apiError {
	var req editRequest
	var aerr *apiError
	if req.topic, req.hasTopic, aerr = x.topicParam(); aerr != nil {
		return aerr
	}
	req.mode = "change_one"
	if v, ok := x.p.lookup("propagate_mode"); ok {
		switch v {
		case "change_one", "change_later", "change_all":
			req.mode = v
		default:
			return errInvalidVar("propagate_mode", "Invalid propagate_mode")
		}
	}
	if _, aerr = x.boolParam("send_notification_to_old_thread", false); aerr != nil {
		return aerr
	}
	if _, aerr = x.boolParam("send_notification_to_new_thread", true); aerr != nil {
		return aerr
	}
	req.content, req.hasContent = x.p.lookup("content")
	if req.streamID, req.hasStream, aerr = x.intParam("stream_id"); aerr != nil {
		return aerr
	}
	switch {
	case !req.hasTopic && !req.hasContent && !req.hasStream:
		return errBadRequest("Nothing to change")
	case req.mode != "change_one" && !req.hasTopic && !req.hasStream:
		return errBadRequest("Invalid propagate_mode without topic edit")
	case req.hasContent && req.hasStream:
		return errBadRequest("Cannot change message content while changing channel")
	}
	if req.hasContent {
		if strings.TrimSpace(req.content) == "" {
			// Zulip turns an emptied message into "(deleted)".
			req.content = "(deleted)"
		}
		if req.content, aerr = normalizeContent(req.content); aerr != nil {
			return aerr
		}
	}
	if req.hasTopic {
		if req.topic, aerr = normalizeTopic(req.topic); aerr != nil {
			return aerr
		}
	}
	contentEdited, aerr := x.e.applyEdit(x.user, parseID(vars[0]), req, x.now)
	if aerr != nil {
		return aerr
	}
	data := obj{}
	if contentEdited {
		data = append(data, kv{"detached_uploads", []any{}})
	}
	x.success(data)
	return nil
}

func (e *Emulator) applyEdit(u *user, id int64, req editRequest, now time.Time) (bool, *apiError) {
	e.mu.Lock()
	defer e.mu.Unlock()
	m, ok := e.msgByID[id]
	if !ok || !e.canAccessLocked(u, m) {
		return false, errInvalidMessage()
	}
	if req.hasContent {
		if m.SenderID != u.ID {
			return false, errBadRequest("You don't have permission to edit this message")
		}
		if lim := e.cfg.editLimit; lim > 0 && now.Sub(m.Timestamp) > lim {
			return false, errBadRequest("The time limit for editing this message has passed")
		}
	}
	moving := req.hasTopic || req.hasStream
	var target *stream
	if moving {
		if m.Type != "stream" {
			return false, errBadRequest("Direct messages cannot be moved to channels.")
		}
		if !u.IsAdmin && now.Sub(m.Timestamp) > moveLimit {
			return false, errBadRequest("The time limit for editing this message's topic has passed.")
		}
		if req.hasStream {
			target = e.streams[req.streamID]
			if target == nil || !target.canRead(u) {
				return false, errBadRequest("Invalid channel ID")
			}
		}
	}
	newTopic := m.Topic
	if req.hasTopic {
		newTopic = req.topic
	}
	newStream := m.StreamID
	if target != nil {
		newStream = target.ID
	}
	topicChanged := moving && newTopic != m.Topic
	streamChanged := moving && newStream != m.StreamID
	contentChanged := req.hasContent && req.content != m.Content
	if !topicChanged && !streamChanged && !contentChanged {
		if req.hasContent {
			return true, nil // same content: Zulip accepts it
		}
		return false, errBadRequest("Nothing to change")
	}

	affected := []*message{m}
	if (topicChanged || streamChanged) && req.mode != "change_one" {
		affected = affected[:0]
		for _, o := range e.msgs {
			if o.deleted || o.Type != "stream" || o.StreamID != m.StreamID || !strings.EqualFold(o.Topic, m.Topic) {
				continue
			}
			if req.mode == "change_later" && o.ID < m.ID {
				continue
			}
			if e.canAccessLocked(u, o) {
				affected = append(affected, o)
			}
		}
	}
	oldStream := m.StreamID
	for _, o := range affected {
		ed := Edit{UserID: u.ID, Timestamp: now}
		if o == m && contentChanged {
			ed.ContentChanged, ed.PrevContent = true, o.Content
			o.Content = req.content
			o.LastEdit = now
		}
		if topicChanged && o.Topic != newTopic {
			ed.TopicChanged, ed.PrevTopic, ed.Topic = true, o.Topic, newTopic
			o.Topic = newTopic
			o.LastMoved = now
		}
		if streamChanged {
			ed.PrevStream, ed.Stream = o.StreamID, newStream
			o.StreamID = newStream
			o.LastMoved = now
		}
		if ed.ContentChanged || ed.TopicChanged || ed.PrevStream != 0 {
			o.Edits = append(o.Edits, ed)
		}
	}
	if topicChanged || streamChanged {
		e.rebuildTopicsLocked(oldStream)
		if streamChanged {
			e.rebuildTopicsLocked(newStream)
		}
	}
	return contentChanged || req.hasContent, nil
}
