package emulator

import (
	"sort"
	"strings"
	"time"
)

// Message is a stored message as tests see it.
type Message struct {
	ID          int64  `json:"id"`
	SenderID    int64  `json:"sender_id"`
	SenderEmail string `json:"sender_email"`
	// Type is "stream" or "private".
	Type     string `json:"type"`
	StreamID int64  `json:"stream_id,omitempty"`
	Topic    string `json:"topic"`
	// Content is the raw Markdown as Zulip stored it (normalized and
	// truncated as Zulip does).
	Content string `json:"content"`
	// Recipients are the user ids of a direct message (sender included).
	Recipients []int64   `json:"recipients,omitempty"`
	Timestamp  time.Time `json:"timestamp"`
	// Client is what Zulip derives from the User-Agent.
	Client string `json:"client"`
	// Edits lists the edit history, oldest first.
	Edits []Edit `json:"edits,omitempty"`
	// LastEdit and LastMoved are zero if never edited or moved.
	LastEdit  time.Time `json:"last_edit,omitzero"`
	LastMoved time.Time `json:"last_moved,omitzero"`
}

// Edit is one entry of a message's edit history.
type Edit struct {
	UserID      int64     `json:"user_id"`
	Timestamp   time.Time `json:"timestamp"`
	PrevContent string    `json:"prev_content,omitempty"`
	PrevTopic   string    `json:"prev_topic,omitempty"`
	Topic       string    `json:"topic,omitempty"`
	PrevStream  int64     `json:"prev_stream,omitempty"`
	Stream      int64     `json:"stream,omitempty"`
	// TopicChanged distinguishes a move to the empty topic from no move.
	TopicChanged   bool `json:"topic_changed,omitempty"`
	ContentChanged bool `json:"content_changed,omitempty"`
}

type message struct {
	Message
	deleted bool
}

func (m *message) snapshot() Message {
	c := m.Message
	c.Recipients = append([]int64(nil), m.Recipients...)
	c.Edits = append([]Edit(nil), m.Edits...)
	return c
}

// Messages returns the retained messages, oldest first.
func (e *Emulator) Messages() []Message {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Message, 0, len(e.msgs))
	for _, m := range e.msgs {
		if !m.deleted {
			out = append(out, m.snapshot())
		}
	}
	return out
}

// Message returns one message by id.
func (e *Emulator) Message(id int64) (Message, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	m, ok := e.msgByID[id]
	if !ok || m.deleted {
		return Message{}, false
	}
	return m.snapshot(), true
}

// ResetMessages forgets every message (and so every topic).
func (e *Emulator) ResetMessages() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.msgs = nil
	e.msgByID = map[int64]*message{}
	for _, s := range e.streams {
		s.topics = map[string]*topic{}
	}
}

// addMessageLocked stores m with the next id, keeps the topic index, and
// drops the oldest message when over the cap. O(1) amortized: the send
// path is what load tests hammer. (Slicing off the front is enough to
// bound memory: append moves the live tail to a new array when the old
// one is used up, and the dropped head goes with the old array.)
func (e *Emulator) addMessageLocked(m *message) int64 {
	m.ID = e.nextMsgID
	e.nextMsgID++
	e.msgs = append(e.msgs, m)
	e.msgByID[m.ID] = m
	if m.Type == "stream" {
		e.streams[m.StreamID].addToTopic(m.Topic, m.ID)
	}
	for len(e.msgs) > e.cfg.maxMessages {
		old := e.msgs[0]
		e.msgs[0] = nil
		e.msgs = e.msgs[1:]
		delete(e.msgByID, old.ID)
		if old.Type == "stream" && !old.deleted {
			if s, ok := e.streams[old.StreamID]; ok {
				s.removeFromTopic(old.Topic)
			}
		}
	}
	return m.ID
}

func (s *stream) addToTopic(name string, id int64) {
	k := strings.ToLower(name)
	t := s.topics[k]
	if t == nil {
		t = &topic{name: name}
		s.topics[k] = t
	}
	t.count++
	if id > t.maxID {
		t.maxID = id
		// Zulip shows a topic under the name of its latest message.
		t.name = name
	}
}

func (s *stream) removeFromTopic(name string) {
	k := strings.ToLower(name)
	if t := s.topics[k]; t != nil {
		t.count--
		if t.count <= 0 {
			delete(s.topics, k)
		}
	}
}

// rebuildTopicsLocked recomputes a stream's topic index after a move
// (rare; a scan is fine there).
func (e *Emulator) rebuildTopicsLocked(streamID int64) {
	s, ok := e.streams[streamID]
	if !ok {
		return
	}
	s.topics = map[string]*topic{}
	for _, m := range e.msgs {
		if !m.deleted && m.Type == "stream" && m.StreamID == streamID {
			s.addToTopic(m.Topic, m.ID)
		}
	}
}

// topicList returns a stream's topics, most recent first, as Zulip does.
func (s *stream) topicList() []topic {
	out := make([]topic, 0, len(s.topics))
	for _, t := range s.topics {
		out = append(out, *t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].maxID > out[j].maxID })
	return out
}

// canRead reports whether u may see messages of s: public streams are
// readable by everyone in the organization, private ones by subscribers.
func (s *stream) canRead(u *user) bool {
	return !s.InviteOnly || s.subs[u.ID] || u.IsAdmin
}

func (e *Emulator) canAccessLocked(u *user, m *message) bool {
	if m.deleted {
		return false
	}
	if m.Type == "stream" {
		s, ok := e.streams[m.StreamID]
		return ok && s.canRead(u)
	}
	for _, id := range m.Recipients {
		if id == u.ID {
			return true
		}
	}
	return false
}
