package zulipproxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
)

// Reading what a client sent: the query, urlencoded and multipart bodies,
// each strictly, and the allow-lists that keep anything the proxy does not
// understand from being passed on.

// Zulip silently cuts longer text; the proxy refuses it instead, so a bot
// learns its message was too long rather than finding it truncated.
const (
	maxContentRunes = 10000
	maxTopicRunes   = 60
	// maxFieldBytes bounds a text field read into memory: the most bytes
	// maxContentRunes runes can take, plus one to notice more.
	maxFieldBytes = maxContentRunes*utf8.UTFMax + 1
	// maxWebhookFieldBytes bounds a webhook's form field: integrations
	// send whole JSON documents in one (Slack's payload, Jotform's
	// rawRequest), far larger than a message, and still bounded.
	maxWebhookFieldBytes = 1 << 20
)

const (
	mtForm      = "application/x-www-form-urlencoded"
	mtMultipart = "multipart/form-data"
	mtInvalid   = "invalid"
)

// mediaType is the request's content type without parameters; "" when
// absent, mtInvalid when it does not parse.
func mediaType(r *http.Request) string {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return ""
	}
	if strings.EqualFold(ct, mtForm) {
		// What nearly every send carries, without the map of parameters
		// mime.ParseMediaType builds.
		return mtForm
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return mtInvalid
	}
	return mt
}

// queryValues parses the query string strictly: a malformed query is a 400,
// not silently half-read.
func queryValues(r *http.Request) (url.Values, *apiError) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, newError(http.StatusBadRequest, codeBadRequest, "malformed query string")
	}
	return q, nil
}

// onlyParams refuses parameters outside the allow-list and repeated ones:
// nothing the proxy does not understand is ever passed on, and a repeated
// parameter is an error rather than a guess (Zulip reads the last value
// where Go reads the first, and a proxy that checks one value while Zulip
// acts on another is how scope checks get bypassed).
func onlyParams(vals url.Values, what string, allowed ...string) *apiError {
	for name, vs := range vals {
		if !slices.Contains(allowed, name) {
			return errBadParam(name, "unexpected "+what+" '"+name+"'")
		}
		if len(vs) != 1 {
			return errBadParam(name, what+" '"+name+"' given more than once")
		}
	}
	return nil
}

// bodyReader reads a client's request body within the config's bounds:
// max_upload for its size, client_idle_timeout for its pace.
type bodyReader struct {
	maxUpload int64
	idle      time.Duration
}

// limitBody refuses bodies over max_upload: at once when the declared
// length says so, otherwise when reading passes the limit.
func (br bodyReader) limitBody(w http.ResponseWriter, r *http.Request) *apiError {
	if r.ContentLength > br.maxUpload {
		return errTooLarge(br.maxUpload)
	}
	body := io.ReadCloser(r.Body)
	if idle := br.idle; idle > 0 && r.ContentLength != 0 {
		body = &idleReader{ReadCloser: body, rc: http.NewResponseController(w), idle: idle}
	}
	r.Body = http.MaxBytesReader(w, body, br.maxUpload)
	return nil
}

// idleReader bounds the wait for each piece of a client's body by
// pushing the connection's read deadline on before every read: a client
// that sends slowly but steadily is fine, one that stalls gets 408. Once
// the body is read, the deadline is cleared again for the next request.
type idleReader struct {
	io.ReadCloser
	rc   *http.ResponseController
	idle time.Duration
	done bool
}

func (ir *idleReader) Read(p []byte) (int, error) {
	if ir.done {
		return ir.ReadCloser.Read(p)
	}
	// Where the connection has no deadlines (a test recorder, HTTP/2
	// through some wrappers), the body is read without one.
	_ = ir.rc.SetReadDeadline(time.Now().Add(ir.idle))
	n, err := ir.ReadCloser.Read(p)
	if err != nil {
		ir.done = true
		_ = ir.rc.SetReadDeadline(time.Time{})
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = errClientStalled
		}
	}
	return n, err
}

// errClientStalled is a client that stopped sending its body.
var errClientStalled = errors.New("client sent nothing for too long")

// readBody reads a whole (already limited) body, into a buffer of the
// declared size when there is one.
func readBody(r *http.Request) ([]byte, error) {
	if n := r.ContentLength; n >= 0 && n <= maxFieldBytes*4 {
		buf := make([]byte, n)
		if _, err := io.ReadFull(r.Body, buf); err != nil {
			return nil, err
		}
		// net/http's body never yields more than the declared length.
		return buf, nil
	}
	return io.ReadAll(r.Body)
}

// field is one form field as the client sent it.
type field struct{ name, value string }

// readFormBody reads an urlencoded body as url.ParseQuery does, keeping
// the fields in the sender's order.
func (br bodyReader) readFormBody(r *http.Request) ([]field, *apiError) {
	raw, err := readBody(r)
	if err != nil {
		return nil, br.bodyError(err)
	}
	fields, err := parseFormOrdered(string(raw))
	if err != nil {
		return nil, newError(http.StatusBadRequest, codeBadRequest, "malformed form body")
	}
	return fields, nil
}

func parseFormOrdered(s string) ([]field, error) {
	fields := []field{}
	for s != "" {
		var kv string
		kv, s, _ = strings.Cut(s, "&")
		if strings.Contains(kv, ";") {
			return nil, errors.New("invalid semicolon separator in form")
		}
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		k, err := url.QueryUnescape(k)
		if err != nil {
			return nil, err
		}
		if v, err = url.QueryUnescape(v); err != nil {
			return nil, err
		}
		fields = append(fields, field{k, v})
	}
	return fields, nil
}

// readForm reads an urlencoded body whose fields must be in allowed and
// appear once.
func (br bodyReader) readForm(r *http.Request, allowed ...string) (url.Values, *apiError) {
	raw, err := readBody(r)
	if err != nil {
		return nil, br.bodyError(err)
	}
	form, err := url.ParseQuery(string(raw))
	if err != nil {
		return nil, newError(http.StatusBadRequest, codeBadRequest, "malformed form body")
	}
	if aerr := onlyParams(form, "form field", allowed...); aerr != nil {
		return nil, aerr
	}
	return form, nil
}

// partReader says what one multipart body may hold.
type partReader struct {
	// fieldBytes bounds each text field, which is read whole.
	fieldBytes int
	// text takes each text field in order.
	text func(name, value string) error
	// file takes each file part, to stream it; nil refuses files with
	// noFiles as the message.
	file    func(p *multipart.Part) error
	noFiles string
}

// readParts is the one loop over a multipart body: parts in order, text
// fields bounded, files streamed, a broken or oversized body answered
// as such.
func (br bodyReader) readParts(r *http.Request, pr partReader) error {
	mr, err := r.MultipartReader()
	if err != nil {
		return newError(http.StatusBadRequest, codeBadRequest, "malformed multipart body")
	}
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return br.multipartError(err)
		}
		name := p.FormName()
		if name == "" {
			return newError(http.StatusBadRequest, codeBadRequest, "malformed multipart body: a part without a form field name")
		}
		if p.FileName() != "" {
			if pr.file == nil {
				return errBadParam(name, pr.noFiles)
			}
			if err := pr.file(p); err != nil {
				return err
			}
			continue
		}
		v, err := br.readField(p, name, pr.fieldBytes)
		if err != nil {
			return err
		}
		if err := pr.text(name, v); err != nil {
			return err
		}
	}
}

// readField reads one text field whole, up to limit bytes.
func (br bodyReader) readField(p io.Reader, name string, limit int) (string, error) {
	b, err := io.ReadAll(io.LimitReader(p, int64(limit)))
	if err != nil {
		return "", br.multipartError(err)
	}
	if len(b) == limit {
		return "", errBadParam(name, "field '"+name+"' is too long")
	}
	return string(b), nil
}

// errStalled is the client's fault, not Zulip's: 408, never a 504.
func (br bodyReader) errStalled() *apiError {
	return newError(http.StatusRequestTimeout, "REQUEST_TIMEOUT",
		"the request body stopped arriving: nothing for "+br.idle.String()+" (client_idle_timeout); nothing was kept")
}

func errTooLarge(limit int64) *apiError {
	return newError(http.StatusRequestEntityTooLarge, codeTooLarge,
		"request body larger than this server's max_upload of "+humanize.IBytes(uint64(limit)))
}

func errUnsupportedBody(msg string) *apiError {
	return newError(http.StatusUnsupportedMediaType, codeBadRequest, msg)
}

// bodyError turns a failure to read the client's body into its answer.
func (br bodyReader) bodyError(err error) *apiError {
	return br.readFailure(err, "could not read the request body")
}

// multipartError is bodyError for a multipart body that broke off.
func (br bodyReader) multipartError(err error) *apiError {
	return br.readFailure(err, "malformed multipart body")
}

// readFailure tells a body over max_upload (413) and a client that
// stalled (408) from a broken one, answered with msg.
func (br bodyReader) readFailure(err error, msg string) *apiError {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return errTooLarge(br.maxUpload)
	}
	if errors.Is(err, errClientStalled) {
		return br.errStalled()
	}
	return newError(http.StatusBadRequest, codeBadRequest, msg)
}

// checkText enforces Zulip's limits with an error that names the field.
func checkText(name, v string, maxRunes int) *apiError {
	if !utf8.ValidString(v) {
		return errBadParam(name, "'"+name+"' is not valid UTF-8")
	}
	if n := utf8.RuneCountInString(v); n > maxRunes {
		return errBadParam(name, "'"+name+"' is longer than Zulip's limit of "+strconv.Itoa(maxRunes)+" characters")
	}
	return nil
}

// parseInt64Param parses a numeric parameter, naming it in the error.
func parseInt64Param(name, v string) (int64, *apiError) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, errBadParam(name, "parameter '"+name+"' must be an integer")
	}
	return n, nil
}

// recordingReader remembers the first error reading the client's body, so
// that when a streamed upload to Zulip fails, the proxy can tell a client
// that sent too much (413) from a Zulip that failed (502).
type recordingReader struct {
	r   io.Reader
	err error
	n   int64 // bytes read
}

func (rr *recordingReader) Read(p []byte) (int, error) {
	n, err := rr.r.Read(p)
	rr.n += int64(n)
	if err != nil && err != io.EOF && rr.err == nil {
		rr.err = err
	}
	return n, err
}

// paramSpec says where a call's parameters may come from and how a name
// outside its allow-list is answered.
type paramSpec struct {
	allowed []string
	// unknown is the error for a name not in allowed.
	unknown func(name string) *apiError
	// multipart takes multipart text fields (files are refused);
	// jsonBody takes a JSON object.
	multipart, jsonBody bool
	// null, when set, learns the names a JSON body gave as null (their
	// value is ""): an admin call tells null (never) from "" (a mistake).
	null func(name string)
	// bodyHint says which bodies the call takes, for a 415.
	bodyHint string
}

// readParams reads a call's parameters from the query and the body alike,
// as Zulip does, and refuses what Zulip would read differently from us or
// the proxy does not understand: the `method` override, a name outside
// the allow-list, and a name given twice anywhere (Zulip takes the last,
// body before query).
func (br bodyReader) readParams(w http.ResponseWriter, r *http.Request, spec paramSpec) (url.Values, error) {
	out := url.Values{}
	add := func(name, v string) *apiError {
		if name == "method" {
			return errBadParam(name, "parameter 'method' is not allowed: it would make Zulip run another endpoint")
		}
		if !slices.Contains(spec.allowed, name) {
			return spec.unknown(name)
		}
		if out.Has(name) {
			return errBadParam(name, "parameter '"+name+"' given more than once")
		}
		out.Set(name, v)
		return nil
	}
	q, aerr := queryValues(r)
	if aerr != nil {
		return nil, aerr
	}
	for name, vs := range q {
		for _, v := range vs {
			if aerr := add(name, v); aerr != nil {
				return nil, aerr
			}
		}
	}
	if aerr := br.limitBody(w, r); aerr != nil {
		return nil, aerr
	}
	switch mt := mediaType(r); {
	case mt == mtForm:
		fields, aerr := br.readFormBody(r)
		if aerr != nil {
			return nil, aerr
		}
		for _, f := range fields {
			if aerr := add(f.name, f.value); aerr != nil {
				return nil, aerr
			}
		}
	case mt == mtMultipart && spec.multipart:
		err := br.readParts(r, partReader{
			fieldBytes: maxFieldBytes,
			text: func(name, value string) error {
				if aerr := add(name, value); aerr != nil {
					return aerr
				}
				return nil
			},
			noFiles: "files are only taken by /api/v1/user_uploads",
		})
		if err != nil {
			return nil, err
		}
	case mt == "application/json" && spec.jsonBody:
		raw, err := readBody(r)
		if err != nil {
			return nil, br.bodyError(err)
		}
		if err := jsonMembers(raw, func(name string, v any) error {
			var s string
			switch t := v.(type) {
			case string:
				s = t
			case json.Number:
				s = t.String()
			case []any:
				// A list of words (permissions), as the comma-separated
				// form gives them.
				words := make([]string, len(t))
				for i, w := range t {
					ws, ok := w.(string)
					if !ok || strings.Contains(ws, ",") {
						return errBadParam(name, "parameter '"+name+"' must be a string, a number or a list of words")
					}
					words[i] = ws
				}
				s = strings.Join(words, ",")
			case nil:
				if spec.null != nil {
					spec.null(name)
				}
			default:
				return errBadParam(name, "parameter '"+name+"' must be a string or a number")
			}
			if aerr := add(name, s); aerr != nil {
				return aerr
			}
			return nil
		}); err != nil {
			return nil, err
		}
	case mt == "":
		if n, _ := io.ReadFull(r.Body, make([]byte, 1)); n > 0 {
			return nil, errUnsupportedBody(spec.bodyHint)
		}
	default:
		return nil, errUnsupportedBody(spec.bodyHint)
	}
	return out, nil
}

// jsonMembers reads a JSON object's members in order, each given to f,
// a member given twice included: a decoder into a map would keep only
// the last ({"stream":"A","stream":"B"} would make a key for B), where
// the caller must refuse the repeat as it refuses a repeated query
// parameter.
func jsonMembers(raw []byte, f func(name string, v any) error) error {
	notObject := newError(http.StatusBadRequest, codeBadRequest, "the body must be a JSON object of parameters")
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return notObject
	}
	for dec.More() {
		tok, err := dec.Token()
		name, ok := tok.(string)
		if err != nil || !ok {
			return notObject
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			return notObject
		}
		if err := f(name, v); err != nil {
			return err
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return notObject
	}
	if _, err := dec.Token(); err != io.EOF {
		return notObject
	}
	return nil
}

// intParam is an optional whole-number parameter in [lo, hi]; def when
// it is not given.
func intParam(q url.Values, name string, def, lo, hi int) (int, *apiError) {
	if !q.Has(name) {
		return def, nil
	}
	n, err := strconv.Atoi(q.Get(name))
	if err != nil || n < lo || n > hi {
		return 0, errBadParam(name, fmt.Sprintf("'%s' must be an integer from %d to %d", name, lo, hi))
	}
	return n, nil
}

// clientAddress is where a request came from, as Caddy's client_ip
// placeholder has it: behind trusted_proxies, the client's, not the
// proxy's.
func clientAddress(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && ip != "" {
		return ip
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}
