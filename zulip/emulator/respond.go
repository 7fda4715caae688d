package emulator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"strconv"
	"time"
)

// obj is a JSON object that keeps its field order, as Zulip's answers
// do: result and msg first, then the data; compact, as orjson writes.
type obj []kv

type kv struct {
	k string
	v any
}

func (o obj) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(f.k)
		b.Write(k)
		b.WriteByte(':')
		if err := encodeJSON(&b, f.v); err != nil {
			return nil, err
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// encodeJSON writes v without HTML escaping (Zulip's orjson leaves <, >
// and & alone, and rendered content is full of them).
func encodeJSON(b *bytes.Buffer, v any) error {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	b.Truncate(b.Len() - 1) // Encode's newline
	return nil
}

// apiError is one of Zulip's error answers.
type apiError struct {
	status int
	code   string
	msg    string
	extra  obj
	header map[string]string
}

func (e *apiError) Error() string { return e.code + ": " + e.msg }

func errBadRequest(format string, args ...any) *apiError {
	return &apiError{status: 400, code: "BAD_REQUEST", msg: fmt.Sprintf(format, args...)}
}

func errMissing(name string) *apiError {
	return &apiError{status: 400, code: "REQUEST_VARIABLE_MISSING",
		msg: fmt.Sprintf("Missing '%s' argument", name), extra: obj{{"var_name", name}}}
}

func errInvalidVar(name, format string, args ...any) *apiError {
	return &apiError{status: 400, code: "BAD_REQUEST", msg: fmt.Sprintf(format, args...), extra: obj{{"var_name", name}}}
}

func errConfusing(a, b string) *apiError {
	return &apiError{status: 400, code: "REQUEST_CONFUSING_VAR",
		msg:   fmt.Sprintf("Can't decide between '%s' and '%s' arguments", a, b),
		extra: obj{{"var_name1", a}, {"var_name2", b}}}
}

// errStreamName is StreamDoesNotExistError; Zulip HTML-escapes the name.
func errStreamName(name string) *apiError {
	n := html.EscapeString(name)
	return &apiError{status: 400, code: "STREAM_DOES_NOT_EXIST",
		msg: fmt.Sprintf("Channel '%s' does not exist", n), extra: obj{{"stream", n}}}
}

func errStreamID(id int64) *apiError {
	return &apiError{status: 400, code: "STREAM_DOES_NOT_EXIST",
		msg: fmt.Sprintf("Channel with ID '%d' does not exist", id), extra: obj{{"stream_id", id}}}
}

func errInvalidMessage() *apiError { return errBadRequest("Invalid message(s)") }

func errBadNarrow(desc string) *apiError {
	return &apiError{status: 400, code: "BAD_NARROW", msg: "Invalid narrow operator: " + desc}
}

// errUnauthorized is Zulip's UnauthorizedError: every failed HTTP Basic
// authentication ends here, with the challenge header.
func errUnauthorized(msg string) *apiError {
	return &apiError{status: 401, code: "UNAUTHORIZED", msg: msg,
		header: map[string]string{"WWW-Authenticate": `Basic realm="zulip"`}}
}

// errInvalidAPIKey is what an api_key parameter (webhooks) that matches
// nobody gets: Zulip does not wrap it in UnauthorizedError there.
func errInvalidAPIKey(msg string) *apiError {
	return &apiError{status: 401, code: "INVALID_API_KEY", msg: msg}
}

func errRateLimited(secs float64, limit int) *apiError {
	return &apiError{status: 429, code: "RATE_LIMIT_HIT", msg: "API usage exceeded rate limit",
		extra: obj{{"retry-after", secs}},
		header: map[string]string{
			"Retry-After":           strconv.FormatFloat(secs, 'f', -1, 64),
			"X-RateLimit-Limit":     strconv.Itoa(max(limit, 1)),
			"X-RateLimit-Remaining": "0",
		}}
}

// exchange is one request being answered.
type exchange struct {
	e      *Emulator
	w      http.ResponseWriter
	r      *http.Request
	rec    *Request
	p      *params
	user   *user
	now    time.Time
	method string
	rate   *rateResult
	// dropped is a hijacked connection to close once the request is
	// logged (the drop fault).
	dropped io.Closer
}

func (x *exchange) setRateHeaders() {
	if x.rate == nil {
		return
	}
	h := x.w.Header()
	h.Set("X-RateLimit-Limit", strconv.Itoa(x.rate.limit))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(x.rate.remaining))
	h.Set("X-RateLimit-Reset", strconv.FormatInt(x.rate.reset.Unix(), 10))
}

func (x *exchange) writeRaw(status int, body []byte) {
	h := x.w.Header()
	h.Set("Content-Length", strconv.Itoa(len(body)))
	x.rec.Status = status
	x.w.WriteHeader(status)
	_, _ = x.w.Write(body)
}

func (x *exchange) writeJSON(status int, o obj) {
	x.setRateHeaders()
	body, err := o.MarshalJSON()
	if err != nil {
		status = 500
		body = []byte(`{"result":"error","msg":"Internal server error"}`)
	}
	x.w.Header().Set("Content-Type", "application/json")
	x.writeRaw(status, body)
}

func (x *exchange) writeError(e *apiError) {
	for k, v := range e.header {
		x.w.Header().Set(k, v)
	}
	o := make(obj, 0, 3+len(e.extra))
	o = append(o, kv{"result", "error"}, kv{"msg", e.msg}, kv{"code", e.code})
	o = append(o, e.extra...)
	x.writeJSON(e.status, o)
}

// success answers Zulip's success envelope around data.
func (x *exchange) success(data obj) {
	o := make(obj, 0, 3+len(data))
	o = append(o, kv{"result", "success"}, kv{"msg", ""})
	o = append(o, data...)
	if ig := x.p.ignored(); len(ig) > 0 {
		o = append(o, kv{"ignored_parameters_unsupported", ig})
	}
	x.writeJSON(http.StatusOK, o)
}

// writeNginxPage answers what Zulip's nginx answers for errors it
// produces itself: an HTML page, not Zulip's JSON.
func (x *exchange) writeNginxPage(status int) {
	line := strconv.Itoa(status) + " " + http.StatusText(status)
	body := "<html>\r\n<head><title>" + line + "</title></head>\r\n<body>\r\n<center><h1>" + line +
		"</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
	x.w.Header().Set("Content-Type", "text/html")
	x.writeRaw(status, []byte(body))
}
