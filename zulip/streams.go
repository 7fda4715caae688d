package zulip

import (
	"context"
	"errors"
	"fmt"
	"strconv"
)

type streamIDAnswer struct {
	envelope
	StreamID int64 `json:"stream_id"`
}

// GetStreamID resolves a stream name to its id. GET /get_stream_id.
// Zulip matches names case-insensitively; an unknown name is an *Error
// (400 BAD_REQUEST, "Invalid channel name ...").
func (c *Client) GetStreamID(ctx context.Context, name string) (int64, *Response, error) {
	if name == "" {
		return 0, nil, errors.New("zulip: get stream id: empty name")
	}
	var f form
	f.add("stream", name)
	var a streamIDAnswer
	resp, err := c.call(ctx, &request{method: "GET", path: "/get_stream_id", query: f.String(), endpoint: "GET /get_stream_id"}, &a)
	if err != nil {
		return 0, resp, err
	}
	if a.StreamID <= 0 {
		return 0, resp, &BadResponseError{Endpoint: "GET /get_stream_id", Status: resp.Status,
			ContentType: resp.Header.Get("Content-Type"), Reason: `no "stream_id" in answer`, Raw: resp}
	}
	return a.StreamID, resp, nil
}

// StreamTopicsWith is StreamTopics with allow_empty_topic_name, the one
// read option the call takes.
func (c *Client) StreamTopicsWith(ctx context.Context, streamID int64, o ReadOptions) (*Response, error) {
	if streamID <= 0 {
		return nil, errors.New("zulip: stream topics: stream id must be positive")
	}
	var f form
	ReadOptions{AllowEmptyTopicName: o.AllowEmptyTopicName}.add(&f)
	var a anyAnswer
	return c.call(ctx, &request{
		method: "GET", path: "/users/me/" + strconv.FormatInt(streamID, 10) + "/topics", query: f.String(),
		endpoint: "GET /users/me/{stream_id}/topics",
	}, &a)
}

// Subscription is what Subscribe did.
type Subscription struct {
	// Subscribed: the bot was not subscribed and now is.
	Subscribed bool
	Raw        *Response
}

type subscribeAnswer struct {
	envelope
	Subscribed map[string][]string `json:"subscribed"`
}

// Subscribe subscribes the bot to one stream: POST /users/me/subscriptions.
// Zulip creates a stream that does not exist (when the bot may create
// streams), so callers check that the stream exists first unless creating
// it is wanted. An invite-only stream the bot cannot see is an *Error.
func (c *Client) Subscribe(ctx context.Context, stream string) (*Subscription, error) {
	if stream == "" {
		return nil, errors.New("zulip: subscribe: empty stream name")
	}
	subs, err := jsonBytes([]struct {
		Name string `json:"name"`
	}{{stream}})
	if err != nil {
		return nil, fmt.Errorf("zulip: subscribe: %w", err)
	}
	var f form
	f.add("subscriptions", subs)
	body, n := formBody(f.String())
	var a subscribeAnswer
	resp, err := c.call(ctx, &request{
		method: "POST", path: "/users/me/subscriptions", endpoint: "POST /users/me/subscriptions",
		ctype: formType, body: body, length: n,
	}, &a)
	if err != nil {
		return nil, err
	}
	return &Subscription{Subscribed: len(a.Subscribed) > 0, Raw: resp}, nil
}
