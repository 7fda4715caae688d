package zulip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// The three ways a call can fail without Zulip giving an answer of its
// own. They are distinct so the HTTP layer can tell a client "Zulip is
// down" (502) from "Zulip is slow" (504) without parsing messages.
var (
	// ErrUnreachable: no answer at all (DNS, refused or reset connection,
	// TLS failure, connection dropped before a response).
	ErrUnreachable = errors.New("zulip unreachable")
	// ErrTimeout: the call's context deadline (or a transport timeout)
	// expired before Zulip answered in full.
	ErrTimeout = errors.New("zulip timed out")
	// ErrBadResponse: something answered, but not with Zulip's JSON
	// (an nginx HTML page, a redirect, garbage, an oversized body).
	ErrBadResponse = errors.New("zulip answered something that is not Zulip JSON")
)

// Error is an answer from Zulip that says the call failed: result "error"
// in Zulip's envelope, or a non-2xx status with a Zulip JSON body.
type Error struct {
	// Endpoint is the method and path called, such as "POST /messages";
	// never a query string, so never a credential.
	Endpoint string
	// Status is the HTTP status Zulip answered with.
	Status int
	// Code is Zulip's machine-readable error code, such as
	// "BAD_REQUEST" or "STREAM_DOES_NOT_EXIST"; empty when Zulip sent none.
	Code string
	// Msg is Zulip's human-readable message.
	Msg string
	// Extra holds the envelope's other fields (var_name, stream,
	// stream_id, retry-after, ...), as encoding/json decodes them.
	Extra map[string]any
	// RetryAfter is how long Zulip asked the caller to wait (429), from
	// the Retry-After header or the body's retry-after field.
	RetryAfter time.Duration
	// Raw is Zulip's answer, kept so a proxy can pass it on unchanged.
	Raw *Response
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("zulip: ")
	if e.Endpoint != "" {
		b.WriteString(e.Endpoint)
		b.WriteString(": ")
	}
	b.WriteString("HTTP ")
	b.WriteString(strconv.Itoa(e.Status))
	if e.Code != "" {
		b.WriteString(" ")
		b.WriteString(e.Code)
	}
	// Not Msg: Zulip's words can quote what the request carried, and an
	// error's text ends up in logs. Callers that show it read Msg.
	return b.String()
}

// BadResponseError is an answer that is not Zulip's JSON. Its Status
// stays available because some of these answers still mean something: a
// 413 HTML page from Zulip's nginx is "upload too large".
type BadResponseError struct {
	Endpoint    string
	Status      int
	ContentType string
	// Reason says what was wrong, e.g. "not JSON" or "redirect to ...".
	Reason string
	// Raw is the answer as read (capped), for logs and tests.
	Raw *Response
}

func (e *BadResponseError) Error() string {
	return fmt.Sprintf("zulip: %s: HTTP %d: %s", e.Endpoint, e.Status, e.Reason)
}

// Is makes errors.Is(err, ErrBadResponse) true.
func (e *BadResponseError) Is(target error) bool { return target == ErrBadResponse }

// TransportError is a call that got no answer. Kind is ErrUnreachable or
// ErrTimeout; Err is the cause (a net.OpError, context.DeadlineExceeded,
// ...). Both match errors.Is.
type TransportError struct {
	Endpoint string
	Kind     error
	Err      error
}

func (e *TransportError) Error() string {
	return fmt.Sprintf("zulip: %s: %v: %v", e.Endpoint, e.Kind, e.Err)
}

func (e *TransportError) Unwrap() []error { return []error{e.Kind, e.Err} }

// transportError classifies a failed round trip. It never keeps the
// *url.Error itself: its message holds the full URL, and a webhook URL
// carries the bot's api_key in its query.
func transportError(ctx context.Context, endpoint string, err error) error {
	cause := err
	var uerr *url.Error
	if errors.As(err, &uerr) {
		cause = uerr.Err
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		if errors.Is(ctxErr, context.DeadlineExceeded) {
			return &TransportError{Endpoint: endpoint, Kind: ErrTimeout, Err: ctxErr}
		}
		// The caller gave up (its own client went away): not Zulip's
		// fault, so neither 502 nor 504; the context error says so.
		return fmt.Errorf("zulip: %s: %w", endpoint, ctxErr)
	}
	if isDialFailure(cause) {
		// A dial that timed out means nothing answered at that address:
		// unreachable, not slow.
		return &TransportError{Endpoint: endpoint, Kind: ErrUnreachable, Err: cause}
	}
	var ne net.Error
	if errors.As(cause, &ne) && ne.Timeout() {
		return &TransportError{Endpoint: endpoint, Kind: ErrTimeout, Err: cause}
	}
	return &TransportError{Endpoint: endpoint, Kind: ErrUnreachable, Err: cause}
}

// isDialFailure says no connection to Zulip could be made, so nothing
// of the call reached it.
func isDialFailure(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// parseRetryAfter reads Zulip's Retry-After: seconds as a float string
// ("28.706807374954224"), or an HTTP date as RFC 9110 also allows.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if secs <= 0 || secs > 1e9 {
			return 0
		}
		return time.Duration(secs * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
