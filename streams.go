package zulipproxy

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/zwop/caddy-zulip-proxy/zulip"
)

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
	// One call for all who ask at once; it is not cancelled with the
	// first caller, whose lookup serves the others too.
	v, err, _ := b.lookups.Do(name, func() (any, error) {
		id, _, err := b.client.GetStreamID(context.WithoutCancel(ctx), name)
		if err != nil {
			return int64(0), err
		}
		b.streamIDs.Store(name, id)
		return id, nil
	})
	return v.(int64), err
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
