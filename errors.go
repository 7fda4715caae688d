package zulipproxy

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
)

// Error codes of the proxy's own errors. Zulip's errors are passed through
// with Zulip's own codes.
const (
	codeBadRequest      = "BAD_REQUEST"
	codeMissingVar      = "REQUEST_VARIABLE_MISSING"
	codeUnauthorized    = "UNAUTHORIZED"
	codeInvalidKey      = "INVALID_API_KEY"
	codeForbidden       = "FORBIDDEN"
	codeNotFound        = "NOT_FOUND"
	codeMethod          = "METHOD_NOT_ALLOWED"
	codeTooLarge        = "REQUEST_TOO_LARGE"
	codeRateLimited     = "RATE_LIMIT_HIT"
	codeUnreachable     = "UPSTREAM_UNREACHABLE"
	codeBadUpstream     = "BAD_UPSTREAM_RESPONSE"
	codeUpstreamTimeout = "UPSTREAM_TIMEOUT"
	codeInternal        = "INTERNAL_ERROR"
	codeUnavailable     = "SERVICE_UNAVAILABLE"
	codeBotCredentials  = "BOT_CREDENTIALS_REJECTED"
	codeStoreReadOnly   = "STORE_READ_ONLY"
	// codeExpired is SPEC.md's word for a queued send past max_age.
	codeExpired = "expired"
)

// apiError is an error the proxy answers itself. Its body carries both the
// upstream service's shape (`detail`) and Zulip's (`result`, `msg`,
// `code`), so clients written for either understand it.
type apiError struct {
	Status int
	Code   string
	Msg    string
	// VarName names the offending parameter, as Zulip does.
	VarName string
	// Header is set on the response (WWW-Authenticate, Allow, Retry-After).
	Header http.Header
	// RetryAfter is a 429's wait in seconds, in the body as Zulip's
	// "retry-after".
	RetryAfter float64
}

func (e *apiError) Error() string { return e.Msg }

func newError(status int, code, msg string) *apiError {
	return &apiError{Status: status, Code: code, Msg: msg}
}

// setHeader sets one more response header on e, and returns e.
func (e *apiError) setHeader(k, v string) *apiError {
	if e.Header == nil {
		e.Header = http.Header{}
	}
	e.Header.Set(k, v)
	return e
}

func errBadParam(name, msg string) *apiError {
	return &apiError{Status: http.StatusBadRequest, Code: codeBadRequest, Msg: msg, VarName: name}
}

func errMissingParam(name string) *apiError {
	return &apiError{Status: http.StatusBadRequest, Code: codeMissingVar, Msg: "missing '" + name + "' argument", VarName: name}
}

func errMethod(allow string) *apiError {
	return newError(http.StatusMethodNotAllowed, codeMethod, "method not allowed; use "+allow).setHeader("Allow", allow)
}

type errorBody struct {
	Result  string `json:"result"`
	Msg     string `json:"msg"`
	Code    string `json:"code"`
	Detail  string `json:"detail"`
	VarName string `json:"var_name,omitempty"`
	// RetryAfter is Zulip's name for a 429's wait.
	RetryAfter float64 `json:"retry-after,omitempty"`
}

// writeError answers with e as JSON. Messages are written by the proxy
// itself and never carry a key or a bot credential.
func writeError(w http.ResponseWriter, e *apiError) {
	hdr := w.Header()
	for k, vs := range e.Header {
		hdr[k] = vs
	}
	writeJSON(w, e.Status, errorBody{Result: "error", Msg: e.Msg, Code: e.Code, Detail: e.Msg, VarName: e.VarName, RetryAfter: e.RetryAfter})
}

// writeJSON answers with v encoded as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		// Only our own plain structs are encoded; failing here is a bug.
		status = http.StatusInternalServerError
		body = []byte(`{"result":"error","msg":"internal error encoding response","code":"INTERNAL_ERROR","detail":"internal error encoding response"}`)
	}
	writeRawJSON(w, status, body)
}

func writeRawJSON(w http.ResponseWriter, status int, body []byte) {
	hdr := w.Header()
	// Canonical names set directly, the values in one allocation (each
	// of capacity one, so a later Add copies): this runs on every answer.
	// Not shared between requests: Caddy's header handler edits values
	// in place.
	vals := [...]string{"application/json", strconv.Itoa(len(body)), "nosniff"}
	hdr["Content-Type"] = vals[0:1:1]
	hdr["Content-Length"] = vals[1:2:2]
	hdr["X-Content-Type-Options"] = vals[2:3:3]
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// setMsg replaces e's message, and returns e.
func (e *apiError) setMsg(msg string) *apiError {
	e.Msg = msg
	return e
}

// errLacksPermission refuses what a key's permissions do not allow,
// naming the permission it lacks and those it holds.
func errLacksPermission(e *keystore.Entry, perm, what string) *apiError {
	return newError(http.StatusForbidden, codeForbidden, "this key lacks the '"+perm+"' permission ("+what+"); it may: "+
		strings.Join(e.Granted(), ", ")+". An admin can change a key's permissions (PATCH /clients/{id} permissions=...)")
}
