package zulip

import (
	"context"
	"errors"
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

// StreamTopics lists a stream's topics, most recent first.
// GET /users/me/{stream_id}/topics.
func (c *Client) StreamTopics(ctx context.Context, streamID int64) (*Response, error) {
	return c.StreamTopicsWith(ctx, streamID, ReadOptions{})
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
