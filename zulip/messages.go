package zulip

import (
	"context"
	"errors"
	"fmt"
	"strconv"
)

// SendMessage is a message to a stream, addressed by id: the proxy
// resolves its stream once, and an id cannot be re-read by Zulip as a
// different stream the way a name (JSON-parsed, case-folded) can.
type SendMessage struct {
	StreamID int64
	Topic    string
	Content  string
}

// SendResult is Zulip's answer to a send.
type SendResult struct {
	// ID is the new message's id.
	ID  int64
	Raw *Response
}

type sendAnswer struct {
	envelope
	ID int64 `json:"id"`
}

// SendMessage posts m as type=stream, to=<id>. POST /messages.
func (c *Client) SendMessage(ctx context.Context, m SendMessage) (*SendResult, error) {
	if m.StreamID <= 0 {
		return nil, errors.New("zulip: send message: stream id must be positive")
	}
	var f form
	f.b.Grow(40 + len(m.Topic) + len(m.Content)*3/2)
	f.add("type", "stream")
	f.add("to", strconv.FormatInt(m.StreamID, 10))
	f.add("topic", m.Topic)
	f.add("content", m.Content)
	body, n := formBody(f.String())
	var a sendAnswer
	resp, err := c.call(ctx, &request{
		method: "POST", path: "/messages", endpoint: "POST /messages",
		ctype: formType, body: body, length: n,
	}, &a)
	if err != nil {
		return nil, err
	}
	return &SendResult{ID: a.ID, Raw: resp}, nil
}

const formType = "application/x-www-form-urlencoded"

// Message is the part of Zulip's message object the proxy decides on.
type Message struct {
	ID          int64  `json:"id"`
	SenderID    int64  `json:"sender_id"`
	SenderEmail string `json:"sender_email"`
	// Type is "stream" or "private".
	Type string `json:"type"`
	// StreamID is zero for direct messages.
	StreamID int64 `json:"stream_id"`
	// Topic is Zulip's "subject" field.
	Topic     string `json:"subject"`
	Content   string `json:"content"`
	Timestamp int64  `json:"timestamp"`
}

type messageAnswer struct {
	envelope
	Message *Message `json:"message"`
}

// GetMessage fetches one message. GET /messages/{id}. Content is HTML as
// Zulip renders it by default, so the raw answer can be passed through
// as a client of Zulip's own API expects.
func (c *Client) GetMessage(ctx context.Context, id int64) (*Message, *Response, error) {
	return c.GetMessageWith(ctx, id, ReadOptions{})
}

// GetMessageWith is GetMessage with read options (apply_markdown=false
// for the raw Markdown, say); ClientGravatar, IncludeAnchor and
// UseFirstUnreadAnchor mean nothing to it and are not sent.
func (c *Client) GetMessageWith(ctx context.Context, id int64, o ReadOptions) (*Message, *Response, error) {
	if id <= 0 {
		return nil, nil, errors.New("zulip: get message: id must be positive")
	}
	var f form
	ReadOptions{ApplyMarkdown: o.ApplyMarkdown, AllowEmptyTopicName: o.AllowEmptyTopicName}.add(&f)
	var a messageAnswer
	resp, err := c.call(ctx, &request{
		method: "GET", path: "/messages/" + strconv.FormatInt(id, 10), query: f.String(),
		endpoint: "GET /messages/{id}",
	}, &a)
	if err != nil {
		return nil, resp, err
	}
	if a.Message == nil {
		return nil, resp, &BadResponseError{Endpoint: "GET /messages/{id}", Status: resp.Status,
			ContentType: resp.Header.Get("Content-Type"), Reason: `no "message" in answer`, Raw: resp}
	}
	return a.Message, resp, nil
}

// NarrowTerm is one term of a narrow, e.g. {"channel", 42}. Operand is
// a string or an integer, as Zulip accepts.
type NarrowTerm struct {
	Operator string `json:"operator"`
	Operand  any    `json:"operand"`
	Negated  bool   `json:"negated,omitempty"`
}

// GetMessages asks for a range of messages matching a narrow. The caller
// builds the narrow itself (never from a client's), see Zulip's "with"
// operator, which replaces channel and topic terms.
type GetMessages struct {
	// Anchor is a message id or "newest", "oldest", "first_unread";
	// empty means "newest".
	Anchor    string
	NumBefore int
	NumAfter  int
	Narrow    []NarrowTerm
	ReadOptions
}

// ReadOptions are the options of Zulip's read calls that change only how
// an answer is written, never what it may hold. nil leaves Zulip's
// default.
type ReadOptions struct {
	// ApplyMarkdown false asks for raw Markdown instead of rendered HTML.
	ApplyMarkdown        *bool
	ClientGravatar       *bool
	IncludeAnchor        *bool
	UseFirstUnreadAnchor *bool
	AllowEmptyTopicName  *bool
}

// add puts the options that are set into f.
func (o ReadOptions) add(f *form) {
	for _, opt := range []struct {
		name string
		v    *bool
	}{
		{"apply_markdown", o.ApplyMarkdown},
		{"client_gravatar", o.ClientGravatar},
		{"include_anchor", o.IncludeAnchor},
		{"use_first_unread_anchor", o.UseFirstUnreadAnchor},
		{"allow_empty_topic_name", o.AllowEmptyTopicName},
	} {
		if opt.v != nil {
			f.add(opt.name, strconv.FormatBool(*opt.v))
		}
	}
}

type anyAnswer struct{ envelope }

// GetMessages fetches messages. GET /messages.
func (c *Client) GetMessages(ctx context.Context, q GetMessages) (*Response, error) {
	if q.NumBefore < 0 || q.NumAfter < 0 {
		return nil, errors.New("zulip: get messages: num_before and num_after must not be negative")
	}
	anchor := q.Anchor
	if anchor == "" {
		anchor = "newest"
	}
	var f form
	f.add("anchor", anchor)
	f.add("num_before", strconv.Itoa(q.NumBefore))
	f.add("num_after", strconv.Itoa(q.NumAfter))
	if len(q.Narrow) > 0 {
		for _, t := range q.Narrow {
			switch t.Operand.(type) {
			case string, int, int64, int32:
			default:
				return nil, fmt.Errorf("zulip: get messages: narrow %q: operand must be a string or an integer", t.Operator)
			}
		}
		narrow, err := jsonBytes(q.Narrow)
		if err != nil {
			return nil, fmt.Errorf("zulip: get messages: narrow: %w", err)
		}
		f.add("narrow", narrow)
	}
	q.ReadOptions.add(&f)
	var a anyAnswer
	return c.call(ctx, &request{method: "GET", path: "/messages", query: f.String(), endpoint: "GET /messages"}, &a)
}

type messagesAnswer struct {
	envelope
	Messages []Message `json:"messages"`
}

// Messages fetches messages as GetMessages does, decoded.
func (c *Client) Messages(ctx context.Context, q GetMessages) ([]Message, error) {
	resp, err := c.GetMessages(ctx, q)
	if err != nil {
		return nil, err
	}
	var a messagesAnswer
	if err := decode("GET /messages", resp, &a); err != nil {
		return nil, err
	}
	return a.Messages, nil
}

// UpdateMessage edits a message's topic and/or content. It never moves a
// message to another stream: there is no field for stream_id.
type UpdateMessage struct {
	Topic   *string
	Content *string
	// PropagateMode is "change_one", "change_later", "change_all" or
	// empty (Zulip's default, change_one).
	PropagateMode string
}

// UpdateMessage edits message id. PATCH /messages/{id}.
func (c *Client) UpdateMessage(ctx context.Context, id int64, u UpdateMessage) (*Response, error) {
	if id <= 0 {
		return nil, errors.New("zulip: update message: id must be positive")
	}
	switch u.PropagateMode {
	case "", "change_one", "change_later", "change_all":
	default:
		return nil, fmt.Errorf("zulip: update message: invalid propagate_mode %q", u.PropagateMode)
	}
	var f form
	if u.Topic != nil {
		f.add("topic", *u.Topic)
	}
	if u.Content != nil {
		f.add("content", *u.Content)
	}
	if u.PropagateMode != "" {
		f.add("propagate_mode", u.PropagateMode)
	}
	r := &request{method: "PATCH", path: "/messages/" + strconv.FormatInt(id, 10), endpoint: "PATCH /messages/{id}"}
	if f.b.Len() > 0 {
		r.body, r.length = formBody(f.String())
		r.ctype = formType
	}
	var a anyAnswer
	return c.call(ctx, r, &a)
}
