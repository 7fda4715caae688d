package emulator

import (
	"net/http"
	"sync"
	"time"
)

// Request is one request the emulator received, for tests to assert on
// what reached "Zulip" (or that nothing did). Values are kept as
// received, credentials included: this is a test double.
type Request struct {
	// Seq numbers requests from 1 in arrival order; it keeps counting
	// across ResetRequests, so a test can ask for what came after a mark.
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Method string    `json:"method"`
	// EffectiveMethod is the method Zulip dispatched on, after the
	// "method" form field override of a POST.
	EffectiveMethod string      `json:"effective_method"`
	Path            string      `json:"path"`
	Query           string      `json:"query,omitempty"`
	Proto           string      `json:"proto"`
	ContentType     string      `json:"content_type,omitempty"`
	Header          http.Header `json:"header"`
	// Params are the body's then the query's parameters, as received.
	Params []Param `json:"params,omitempty"`
	Files  []File  `json:"files,omitempty"`
	// Body is the start of a body that is neither form nor multipart
	// (a JSON webhook payload).
	Body     string `json:"body,omitempty"`
	BodySize int64  `json:"body_size"`
	// User and UserID are who authenticated (empty and zero if nobody).
	User   string `json:"user,omitempty"`
	UserID int64  `json:"user_id,omitempty"`
	// Status is the answer's HTTP status; zero for a dropped connection.
	Status int `json:"status"`
	// Fault names the fault switch applied, if any.
	Fault string `json:"fault,omitempty"`

	rawBody []byte
}

// Param returns the value Zulip would use for name (the last body value,
// else the last query value) and where it came from.
func (r Request) Param(name string) (value, source string, ok bool) {
	var last *Param
	for i := range r.Params {
		p := &r.Params[i]
		if p.Name != name {
			continue
		}
		if last == nil || p.Source == "body" || last.Source == "query" {
			last = p
		}
	}
	if last == nil {
		return "", "", false
	}
	return last.Value, last.Source, true
}

// requestLog is a ring buffer, so a load test through the emulator keeps
// memory bounded.
type requestLog struct {
	mu   sync.Mutex
	buf  []*Request
	next int
	full bool
	seq  uint64
}

func (l *requestLog) init(n int) { l.buf = make([]*Request, n) }

func (l *requestLog) add(r *Request) {
	l.mu.Lock()
	l.seq++
	r.Seq = l.seq
	l.buf[l.next] = r
	l.next++
	if l.next == len(l.buf) {
		l.next, l.full = 0, true
	}
	l.mu.Unlock()
}

func (l *requestLog) snapshot(after uint64) []Request {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ordered []*Request
	if l.full {
		ordered = append(append(ordered, l.buf[l.next:]...), l.buf[:l.next]...)
	} else {
		ordered = l.buf[:l.next]
	}
	out := make([]Request, 0, len(ordered))
	for _, r := range ordered {
		if r != nil && r.Seq > after {
			c := *r
			c.rawBody = nil
			out = append(out, c)
		}
	}
	return out
}

func (l *requestLog) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(l.buf)
	l.next, l.full = 0, false
}

func (l *requestLog) lastSeq() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seq
}

// Requests returns the logged requests, oldest first.
func (e *Emulator) Requests() []Request { return e.log.snapshot(0) }

// RequestsAfter returns the requests logged after sequence number seq
// (see LastSeq), oldest first.
func (e *Emulator) RequestsAfter(seq uint64) []Request { return e.log.snapshot(seq) }

// LastSeq is the sequence number of the latest request logged (0: none
// yet), a mark for RequestsAfter.
func (e *Emulator) LastSeq() uint64 { return e.log.lastSeq() }

// ResetRequests empties the request log.
func (e *Emulator) ResetRequests() { e.log.reset() }
