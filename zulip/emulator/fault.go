package emulator

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Fault makes the emulator misbehave the ways a real Zulip (or the
// network in front of it) does. Several may be set at once: Delay
// happens first, then the first of Drop, Garbage, RateLimited, Status.
type Fault struct {
	// Delay holds the answer back this long. Like real Zulip, the
	// request is still processed after a client that gave up has gone:
	// a timed-out send may have been delivered.
	Delay time.Duration `json:"delay,omitempty"`
	// Drop closes the connection without an answer.
	Drop bool `json:"drop,omitempty"`
	// Garbage answers 200 with a body that is not JSON but claims to be.
	Garbage bool `json:"garbage,omitempty"`
	// RateLimited answers Zulip's 429 RATE_LIMIT_HIT with Retry-After
	// RetryAfter seconds (a float, as Zulip sends; default 1.5). With
	// Status 503, RetryAfter is sent as the maintenance page's
	// Retry-After.
	RateLimited bool    `json:"rate_limited,omitempty"`
	RetryAfter  float64 `json:"retry_after,omitempty"`
	// Status answers this HTTP status: 500 with Zulip's JSON, 502, 503
	// and 504 with nginx's HTML pages, others with a Zulip error body.
	Status int `json:"status,omitempty"`
	// Count limits the fault to the next Count matching requests; zero
	// means until cleared.
	Count int `json:"count,omitempty"`
	// PathPrefix limits the fault to request paths starting with it
	// (e.g. "/api/v1/user_uploads"); empty means every Zulip path.
	PathPrefix string `json:"path_prefix,omitempty"`
	// Method limits the fault to requests with this HTTP method (the
	// one sent, not a `method` override); empty means any.
	Method string `json:"method,omitempty"`
}

// UnmarshalJSON accepts delay as a Go duration string ("2s") or seconds.
func (f *Fault) UnmarshalJSON(b []byte) error {
	type plain Fault
	var aux struct {
		plain
		Delay json.RawMessage `json:"delay,omitempty"`
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	*f = Fault(aux.plain)
	f.Delay = 0
	if len(aux.Delay) > 0 && string(aux.Delay) != "null" {
		var s string
		if json.Unmarshal(aux.Delay, &s) == nil {
			d, err := time.ParseDuration(s)
			if err != nil {
				return fmt.Errorf("delay: %w", err)
			}
			f.Delay = d
		} else {
			var secs float64
			if err := json.Unmarshal(aux.Delay, &secs); err != nil {
				return fmt.Errorf("delay: want a duration string or seconds")
			}
			f.Delay = time.Duration(secs * float64(time.Second))
		}
	}
	return nil
}

// MarshalJSON writes delay as a duration string.
func (f Fault) MarshalJSON() ([]byte, error) {
	type plain Fault
	aux := struct {
		plain
		Delay string `json:"delay,omitempty"`
	}{plain: plain(f)}
	if f.Delay > 0 {
		aux.Delay = f.Delay.String()
	}
	return json.Marshal(aux)
}

func (f Fault) validate() error {
	switch {
	case f.Delay < 0:
		return fmt.Errorf("delay must not be negative")
	case f.Status != 0 && (f.Status < 400 || f.Status > 599):
		return fmt.Errorf("status must be 4xx or 5xx")
	case f.RetryAfter < 0:
		return fmt.Errorf("retry_after must not be negative")
	case f.Count < 0:
		return fmt.Errorf("count must not be negative")
	case f.Delay == 0 && !f.Drop && !f.Garbage && !f.RateLimited && f.Status == 0:
		return fmt.Errorf("fault does nothing: set delay, drop, garbage, rate_limited or status")
	}
	return nil
}

// FaultHeader is set on answers a fault switch produced.
const FaultHeader = "X-Emulator-Fault"

type faultState struct {
	mu     sync.Mutex
	active *Fault
	left   int
}

// SetFault switches a fault on, replacing any other.
func (e *Emulator) SetFault(f Fault) error {
	if err := f.validate(); err != nil {
		return fmt.Errorf("emulator: %w", err)
	}
	if f.RateLimited && f.RetryAfter == 0 {
		f.RetryAfter = 1.5
	}
	e.fault.mu.Lock()
	defer e.fault.mu.Unlock()
	e.fault.active = &f
	e.fault.left = f.Count
	return nil
}

// ClearFault switches faults off.
func (e *Emulator) ClearFault() {
	e.fault.mu.Lock()
	defer e.fault.mu.Unlock()
	e.fault.active = nil
}

// CurrentFault returns the active fault, if any.
func (e *Emulator) CurrentFault() (Fault, bool) {
	e.fault.mu.Lock()
	defer e.fault.mu.Unlock()
	if e.fault.active == nil {
		return Fault{}, false
	}
	f := *e.fault.active
	f.Count = e.fault.left
	return f, true
}

// take returns the fault for a request to path, counting it down.
func (s *faultState) take(method, path string) (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.active
	if f == nil || (f.PathPrefix != "" && !strings.HasPrefix(path, f.PathPrefix)) || (f.Method != "" && f.Method != method) {
		return Fault{}, false
	}
	if f.Count > 0 {
		s.left--
		if s.left <= 0 {
			s.active = nil
		}
	}
	return *f, true
}

// applyFault acts out f. It returns true when the request is answered.
func (x *exchange) applyFault(f Fault) bool {
	var names []string
	if f.Delay > 0 {
		names = append(names, "delay")
		time.Sleep(f.Delay)
	}
	defer func() { x.rec.Fault = strings.Join(names, ",") }()
	// Marks the answer as deliberate, for validators and curl users.
	setMark := func(name string) { x.w.Header().Set(FaultHeader, name) }
	switch {
	case f.Drop:
		names = append(names, "drop")
		x.rec.Status = 0
		conn, _, err := http.NewResponseController(x.w).Hijack()
		if err != nil {
			// HTTP/2 cannot hijack; aborting the handler resets the
			// stream. (Deferred calls still log the request.)
			panic(http.ErrAbortHandler)
		}
		x.dropped = conn
		return true
	case f.Garbage:
		names = append(names, "garbage")
		setMark("garbage")
		x.w.Header().Set("Content-Type", "application/json")
		x.writeRaw(http.StatusOK, []byte("\x00\x1f<garbage>{\"result\": \"succ"))
		return true
	case f.RateLimited:
		names = append(names, "rate_limited")
		setMark("rate_limited")
		limit, _ := x.e.rateLimit()
		x.writeError(errRateLimited(f.RetryAfter, limit))
		return true
	case f.Status != 0:
		names = append(names, "status "+strconv.Itoa(f.Status))
		setMark("status")
		x.writeStatusFault(f)
		return true
	}
	return false
}

func (x *exchange) writeStatusFault(f Fault) {
	status := f.Status
	switch status {
	case http.StatusInternalServerError:
		// Zulip's json_unhandled_exception: no code.
		x.writeJSON(status, obj{{"result", "error"}, {"msg", "Internal server error"}})
	case http.StatusServiceUnavailable:
		// Down for maintenance (an upgrade, a restart); RetryAfter, when
		// set, says for how long.
		if f.RetryAfter > 0 {
			x.w.Header().Set("Retry-After", strconv.FormatFloat(f.RetryAfter, 'f', -1, 64))
		}
		x.writeNginxPage(status)
	case http.StatusBadGateway, http.StatusGatewayTimeout:
		x.writeNginxPage(status)
	default:
		x.writeError(&apiError{status: status, code: "BAD_REQUEST", msg: "Emulated fault: " + http.StatusText(status)})
	}
}
