package zulipproxy

import (
	"net/http"
	"strconv"
	"time"
)

// zulipUploadFile is POST /api/v1/user_uploads: one file, streamed to
// Zulip.
func (h *Handler) zulipUploadFile(w http.ResponseWriter, r *http.Request, c *call) error {
	return c.uploadOne(w, r, "")
}

// zulipGetStreamID is GET /api/v1/get_stream_id, for the key's own stream.
func (h *Handler) zulipGetStreamID(w http.ResponseWriter, r *http.Request, c *call) error {
	p, err := h.body.zulipParams(w, r, "stream")
	if err != nil {
		return err
	}
	if !p.Has("stream") {
		return errMissingParam("stream")
	}
	if !sameStreamName(p.Get("stream"), c.entry.Stream) {
		return errNotYourStream(c.entry.Stream)
	}
	id, err := c.bot.streamID(r.Context(), c.entry.Stream)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct {
		Result   string `json:"result"`
		Msg      string `json:"msg"`
		StreamID int64  `json:"stream_id"`
	}{"success", "", id})
	return nil
}

// zulipStreamTopics is GET /api/v1/users/me/{stream_id}/topics, for the
// key's own stream.
func (h *Handler) zulipStreamTopics(w http.ResponseWriter, r *http.Request, c *call) error {
	p, err := h.body.zulipParams(w, r, "allow_empty_topic_name")
	if err != nil {
		return err
	}
	opts, aerr := readOptions(p)
	if aerr != nil {
		return aerr
	}
	want, err := strconv.ParseInt(c.arg, 10, 64)
	if err != nil || want <= 0 {
		return errBadParam("stream_id", "invalid stream id")
	}
	return c.topics(w, r, want, opts)
}

// zulipMe is GET /api/v1/users/me: the bot's profile, since the key
// speaks as the bot.
func (h *Handler) zulipMe(w http.ResponseWriter, r *http.Request, c *call) error {
	if _, err := h.body.zulipParams(w, r); err != nil {
		return err
	}
	_, resp, err := c.bot.client.Me(r.Context())
	if err != nil {
		return err
	}
	writeZulipAnswer(w, resp)
	return nil
}

// zulipServerSettings is Zulip's public server description, which the
// official clients read first. It needs no key; when a usable scoped key
// comes with it anyway, the answer is from that key's Zulip, else from
// the default bot's (or the first bot's by name).
func (h *Handler) zulipServerSettings(w http.ResponseWriter, r *http.Request, c *call) error {
	b := h.bots.fallback
	if _, key, ok := r.BasicAuth(); ok && key != "" {
		if e, found := h.store.Lookup(key); found && !e.Admin && e.Usable(time.Now()) == nil {
			if kb, ok := h.bots.of(e); ok {
				b = kb
			}
		}
	}
	resp, err := b.client.ServerSettings(r.Context())
	if err != nil {
		return err
	}
	writeZulipAnswer(w, resp)
	return nil
}
