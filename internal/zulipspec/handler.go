package zulipspec

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
)

// Handler validates, on the server side, every request a client sends
// and every answer Next gives, reporting mismatches as test errors. It
// checks what went over the wire whatever built it: the client's own
// lean HTTP/1.1 path never passes through an http.RoundTripper that
// Transport could wrap.
type Handler struct {
	Spec *Spec
	Next http.Handler
	// Errorf reports a mismatch: a test's t.Errorf, or for a whole
	// suite's shared emulator a func that collects them.
	Errorf func(format string, args ...any)

	mu sync.Mutex
	// checked counts exchanges whose answer was checked against a
	// documented schema; seen counts requests.
	checked, seen int
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.URL.Path, "/api/v1/") {
		// The emulator's own control endpoints and upload downloads:
		// not Zulip's API.
		h.Next.ServeHTTP(w, r)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		// The sender gave up mid-body (an upload cut off at the
		// proxy's limit): nothing arrived to check, or to answer.
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	h.mu.Lock()
	h.seen++
	h.mu.Unlock()
	x, err := h.Spec.ValidateRequest(r)
	if err != nil {
		h.Errorf("openapi (as received): %v", err)
	}
	rec := httptest.NewRecorder()
	h.Next.ServeHTTP(rec, r)
	for k, vs := range rec.Header() {
		w.Header()[k] = vs
	}
	w.WriteHeader(rec.Code)
	body = rec.Body.Bytes()
	_, _ = w.Write(body)
	if checked, err := h.Spec.CheckAnswer(x, rec.Code, rec.Header(), body); err != nil {
		h.Errorf("openapi (as answered): %v", err)
	} else if checked {
		h.mu.Lock()
		h.checked++
		h.mu.Unlock()
	}
}

// CheckedCount is how many answers were checked against a documented
// schema.
func (h *Handler) CheckedCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.checked
}

// Seen is how many requests arrived.
func (h *Handler) Seen() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seen
}
