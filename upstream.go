package zulipproxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/zwop/caddy-zulip-proxy/zulip"
)

// upstreamHeaders are the headers of a Zulip answer worth passing on: the
// rate limit state lets a well-behaved client slow down by itself. The
// names are canonical, as zulip.Response keeps them, so they are read and
// set without case folding.
var upstreamHeaders = []string{"Retry-After", "X-Ratelimit-Limit", "X-Ratelimit-Remaining", "X-Ratelimit-Reset"}

// writeUpstream passes Zulip's answer through unchanged: status, body and
// rate limit headers.
func writeUpstream(w http.ResponseWriter, resp *zulip.Response) {
	hdr := w.Header()
	for _, k := range upstreamHeaders {
		if v := resp.Header[k]; len(v) > 0 && v[0] != "" {
			hdr[k] = v[:1:1]
		}
	}
	writeRawJSON(w, resp.Status, resp.Body)
}

// upstreamFailure turns an error from a Zulip call into the answer the
// spec gives: Zulip's own errors through, 502 for an unreachable or
// confused Zulip, 504 for a slow one. ok is false for errors that did not
// come from Zulip.
func (h *Handler) upstreamFailure(err error) (resp *zulip.Response, aerr *apiError, ok bool) {
	var zerr *zulip.Error
	if errors.As(err, &zerr) {
		if zerr.Raw != nil && len(zerr.Raw.Body) > 0 {
			return zerr.Raw, nil, true
		}
		e := newError(zerr.Status, zerr.Code, zerr.Msg)
		if zerr.RetryAfter > 0 {
			e = e.withHeader("Retry-After", strconv.FormatFloat(zerr.RetryAfter.Seconds(), 'f', -1, 64))
		}
		return nil, e, true
	}
	var bad *zulip.BadResponseError
	switch {
	case errors.As(err, &bad) && bad.Status == http.StatusRequestEntityTooLarge:
		return nil, newError(http.StatusRequestEntityTooLarge, codeTooLarge, "Zulip refused the upload as too large"), true
	case errors.Is(err, zulip.ErrBadResponse):
		return nil, newError(http.StatusBadGateway, codeBadUpstream, "Zulip answered with something that is not Zulip's JSON"), true
	case errors.Is(err, zulip.ErrTimeout):
		return nil, newError(http.StatusGatewayTimeout, codeUpstreamTimeout,
			fmt.Sprintf("Zulip did not answer within %s", time.Duration(h.Timeout))), true
	case errors.Is(err, zulip.ErrUnreachable):
		return nil, newError(http.StatusBadGateway, codeUnreachable, "Zulip is unreachable"), true
	}
	return nil, nil, false
}

// isStreamGone says whether Zulip answered that a stream id is not (or no
// longer) valid, so a cached id must be looked up again.
func isStreamGone(err error) bool {
	var zerr *zulip.Error
	if !errors.As(err, &zerr) {
		return false
	}
	if zerr.Code == "STREAM_DOES_NOT_EXIST" {
		return true
	}
	msg := strings.ToLower(zerr.Msg)
	return zerr.Status == http.StatusBadRequest &&
		(strings.Contains(msg, "invalid channel id") || strings.Contains(msg, "invalid stream id"))
}

// streamID returns a stream's id, asking Zulip once per bot and stream.
func (h *Handler) streamID(ctx context.Context, b *bot, name string) (int64, error) {
	if id, ok := b.streamIDs.Load(name); ok {
		return id.(int64), nil
	}
	id, _, err := b.client.GetStreamID(ctx, name)
	if err != nil {
		return 0, err
	}
	b.streamIDs.Store(name, id)
	return id, nil
}

// withStream runs fn with the id of the key's stream. When Zulip says the
// cached id is gone (the stream was deleted and made again, say), the id is
// looked up once more and fn retried once.
func (h *Handler) withStream(ctx context.Context, b *bot, name string, fn func(id int64) error) error {
	id, err := h.streamID(ctx, b, name)
	if err != nil {
		return err
	}
	err = fn(id)
	if err == nil || !isStreamGone(err) {
		return err
	}
	b.streamIDs.CompareAndDelete(name, id)
	newID, lerr := h.streamID(ctx, b, name)
	if lerr != nil {
		return lerr
	}
	if newID == id {
		return err
	}
	return fn(newID)
}

// botUserID returns the bot's own Zulip user id, asked once.
func (h *Handler) botUserID(ctx context.Context, b *bot) (int64, error) {
	if id := b.userID.Load(); id != 0 {
		return id, nil
	}
	u, _, err := b.client.Me(ctx)
	if err != nil {
		return 0, err
	}
	b.userID.Store(u.UserID)
	return u.UserID, nil
}

// Status helpers pick the HTTP status Zulip answered with from a call's
// result or error, for the log line.
func errStatus(err error) int {
	var zerr *zulip.Error
	if errors.As(err, &zerr) {
		return zerr.Status
	}
	var bad *zulip.BadResponseError
	if errors.As(err, &bad) {
		return bad.Status
	}
	return 0
}

func respStatus(resp *zulip.Response, err error) int {
	if err != nil {
		return errStatus(err)
	}
	return resp.Status
}

func resultStatus(res *zulip.SendResult, err error) int {
	if err != nil {
		return errStatus(err)
	}
	return res.Raw.Status
}

func uploadStatus(up *zulip.UploadResult, err error) int {
	if err != nil {
		return errStatus(err)
	}
	return up.Raw.Status
}
