package zulipspec

import (
	"bytes"
	"io"
	"net/http"
	"sync"
	"testing"
)

// Transport is an http.RoundTripper that validates every request sent
// through it and every answer received against the spec, reporting
// mismatches as test errors. Tests wrap the client's transport with it,
// so each call the client makes is checked both ways.
type Transport struct {
	Spec *Spec
	Base http.RoundTripper
	TB   testing.TB
	// RequestsMayDeviate is for tests that send what real Zulip accepts
	// but the description does not (a stream name as a bare "to", a
	// missing parameter on purpose): requests are not failed, answers
	// still are.
	RequestsMayDeviate bool

	mu sync.Mutex
	// Checked counts exchanges whose answer was checked against a
	// documented schema, so a test can tell validation really ran.
	Checked int
}

func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	x, err := t.Spec.ValidateRequest(req)
	if err != nil && !t.RequestsMayDeviate {
		t.TB.Errorf("openapi: %v", err)
	}
	if x == nil {
		// Not a documented operation (or a deliberate deviation):
		// nothing to check the answer against.
		return t.base().RoundTrip(req)
	}
	resp, err := t.base().RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, rerr := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if rerr != nil {
		return resp, nil // the client sees the broken body itself
	}
	if checked, err := t.Spec.CheckAnswer(x, resp.StatusCode, resp.Header, body); err != nil {
		t.TB.Errorf("openapi: %v", err)
	} else if checked {
		t.mu.Lock()
		t.Checked++
		t.mu.Unlock()
	}
	return resp, nil
}

func (t *Transport) base() http.RoundTripper {
	if t.Base != nil {
		return t.Base
	}
	return http.DefaultTransport
}

// CheckedCount is Checked, read safely.
func (t *Transport) CheckedCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.Checked
}

func isJSON(ct string) bool {
	return len(ct) >= 16 && ct[:16] == "application/json"
}
