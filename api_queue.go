package zulipproxy

import (
	"errors"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/zwop/caddy-zulip-proxy/internal/outbox"
)

// The queue's endpoints: a queued send's state, a key's queue, and
// cancelling a send not delivered yet. A scoped key sees its own sends
// only (another key's queue id is a 404, as one that never was); an admin
// key sees every key's.

// sendView is what the API shows of a queued send: never its content.
type sendView struct {
	QueueID       string            `json:"queue_id"`
	State         outbox.SendState  `json:"state"`
	QueuedAt      time.Time         `json:"queued_at"`
	Attempts      int               `json:"attempts"`
	NextAttemptAt *time.Time        `json:"next_attempt_at,omitempty"`
	MessageID     int64             `json:"message_id,omitempty"`
	Error         *outbox.SendError `json:"error,omitempty"`
}

func viewOfSend(s *outbox.Send) sendView {
	v := sendView{QueueID: s.ID, State: s.State, QueuedAt: s.QueuedAt, Attempts: s.Attempts, MessageID: s.MessageID, Error: s.Error}
	if s.State == outbox.Queued {
		// When it may go next: now, if nothing holds it back.
		t := s.QueuedAt
		if s.NextAttempt.After(t) {
			t = s.NextAttempt
		}
		v.NextAttemptAt = &t
	}
	return v
}

type sendBody struct {
	Result string `json:"result"`
	Msg    string `json:"msg"`
	sendView
}

type queueBody struct {
	Result string     `json:"result"`
	Msg    string     `json:"msg"`
	Sends  []sendView `json:"sends"`
}

// queuedSend finds the send a request names, if its caller may see it.
func (c *call) queuedSend(r *http.Request) (*outbox.Send, error) {
	entry, ok := outbox.EntryOf(c.arg)
	if !ok || !c.entry.Admin && entry != c.entry.ID {
		return nil, errNoQueuedSend(c.arg)
	}
	s, err := c.h.outbox.GetSend(r.Context(), c.arg)
	if errors.Is(err, outbox.ErrNotFound) {
		return nil, errNoQueuedSend(c.arg)
	}
	return s, err
}

func errNoQueuedSend(id string) *apiError {
	return newError(http.StatusNotFound, codeNotFound, "no queued send '"+id+"' for this key")
}

// serveQueuedSend is GET /queue/{id}.
func (h *Handler) serveQueuedSend(w http.ResponseWriter, r *http.Request, c *call) error {
	if _, err := h.body.adminParams(w, r, c); err != nil {
		return err
	}
	s, err := c.queuedSend(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, sendBody{Result: "success", sendView: viewOfSend(s)})
	return nil
}

// serveCancelQueuedSend is DELETE /queue/{id}: a send not delivered yet
// is dropped (a failed one is forgotten).
func (h *Handler) serveCancelQueuedSend(w http.ResponseWriter, r *http.Request, c *call) error {
	if _, err := h.body.adminParams(w, r, c); err != nil {
		return err
	}
	if _, err := c.queuedSend(r); err != nil {
		return err
	}
	s, err := h.outbox.CancelSend(r.Context(), c.arg)
	switch {
	case errors.Is(err, outbox.ErrNotFound):
		return errNoQueuedSend(c.arg)
	case errors.Is(err, outbox.ErrDelivered):
		return newError(http.StatusConflict, "ALREADY_DELIVERED", "queued send '"+c.arg+"' was delivered already; edit or delete the message in Zulip instead")
	case errors.Is(err, outbox.ErrInFlight):
		return newError(http.StatusConflict, "DELIVERY_IN_PROGRESS", "queued send '"+c.arg+"' is being delivered at this moment; ask again in a second").setHeader("Retry-After", "1")
	case err != nil:
		return err
	}
	if s.UploadURI != "" && s.UncertainSince.IsZero() {
		// Its file went to Zulip already; the message never will.
		if e, ok := h.store.Get(s.Entry); ok {
			if b, ok := h.bots.of(&e); ok {
				if err := b.client.DeleteUpload(r.Context(), s.UploadURI); err != nil {
					h.logger.Warn("the upload of a cancelled queued send could not be removed from Zulip",
						append([]zap.Field{zap.String("key_id", s.Entry)}, errorFields(err)...)...)
				}
			}
		}
	}
	h.logger.Info("queued send cancelled", zap.String("key_id", s.Entry), zap.String("queue_id", s.ID), zap.String("by", c.entry.ID))
	v := viewOfSend(s)
	writeJSON(w, http.StatusOK, sendBody{Result: "success", Msg: "cancelled", sendView: v})
	return nil
}

// serveQueue is GET /queue: the caller's queued and failed sends.
func (h *Handler) serveQueue(w http.ResponseWriter, r *http.Request, c *call) error {
	if _, err := h.body.adminParams(w, r, c); err != nil {
		return err
	}
	return c.writeQueue(w, r, c.entry.ID)
}

// serveClientQueue is the admin's GET /clients/{id}/queue.
func (h *Handler) serveClientQueue(w http.ResponseWriter, r *http.Request, c *call) error {
	if _, err := h.body.adminParams(w, r, c); err != nil {
		return err
	}
	if _, ok := h.store.Get(c.arg); !ok {
		return errNoClient(c.arg)
	}
	return c.writeQueue(w, r, c.arg)
}

// writeQueue answers a key's queued and failed sends, oldest first.
func (c *call) writeQueue(w http.ResponseWriter, r *http.Request, entry string) error {
	sends, err := c.h.outbox.ListSends(r.Context(), entry)
	if err != nil {
		return err
	}
	views := make([]sendView, 0, len(sends))
	for i := range sends {
		if sends[i].State != outbox.Delivered {
			views = append(views, viewOfSend(&sends[i]))
		}
	}
	writeJSON(w, http.StatusOK, queueBody{Result: "success", Sends: views})
	return nil
}
