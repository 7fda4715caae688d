package zulipproxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/zwop/caddy-zulip-proxy/zulip"
)

// passedHeaders are the headers of a Zulip answer worth passing on: the
// rate limit state lets a well-behaved client slow down by itself. The
// names are canonical, as zulip.Response keeps them, so they are read and
// set without case folding.
var passedHeaders = []string{"Retry-After", "X-Ratelimit-Limit", "X-Ratelimit-Remaining", "X-Ratelimit-Reset"}

// writeZulipAnswer passes Zulip's answer through unchanged: status, body
// and rate limit headers.
func writeZulipAnswer(w http.ResponseWriter, resp *zulip.Response) {
	hdr := w.Header()
	for _, k := range passedHeaders {
		if _, ours := hdr[k]; ours && k != "Retry-After" {
			// The key's own rate limit, not the bot's.
			continue
		}
		if v := resp.Header[k]; len(v) > 0 && v[0] != "" {
			hdr[k] = v[:1:1]
		}
	}
	writeRawJSON(w, resp.Status, resp.Body)
}

// zulipFailure turns an error from a Zulip call into the answer the spec
// gives: Zulip's own errors through, 502 for an unreachable or confused
// Zulip, 504 for a slow one. ok is false for errors that did not come
// from Zulip.
func zulipFailure(err error, timeout time.Duration) (resp *zulip.Response, aerr *apiError, ok bool) {
	var zerr *zulip.Error
	if errors.As(err, &zerr) {
		if zerr.Raw != nil && len(zerr.Raw.Body) > 0 {
			return withBothShapes(zerr.Raw), nil, true
		}
		e := newError(zerr.Status, zerr.Code, zerr.Msg)
		if zerr.RetryAfter > 0 {
			e = e.setHeader("Retry-After", strconv.FormatFloat(zerr.RetryAfter.Seconds(), 'f', -1, 64))
		}
		return nil, e, true
	}
	var bad *zulip.BadResponseError
	switch {
	case errors.As(err, &bad) && bad.Status == http.StatusRequestEntityTooLarge:
		return nil, newError(http.StatusRequestEntityTooLarge, codeTooLarge, "Zulip refused the upload as too large"), true
	case errors.As(err, &bad) && bad.Status >= 500:
		// Zulip, or its nginx, failing in its own words (an HTML page):
		// its status says what happened, and a 503 for maintenance keeps
		// its Retry-After, so a client waits rather than giving up.
		code := codeBadUpstream
		switch bad.Status {
		case http.StatusServiceUnavailable:
			code = codeUnavailable
		case http.StatusGatewayTimeout:
			code = codeUpstreamTimeout
		}
		e := newError(bad.Status, code, fmt.Sprintf("Zulip failed with HTTP %d (%s)", bad.Status, http.StatusText(bad.Status)))
		if bad.Raw != nil {
			if ra := bad.Raw.Header.Get("Retry-After"); ra != "" {
				e = e.setHeader("Retry-After", ra)
			}
		}
		return nil, e, true
	case errors.Is(err, zulip.ErrBadResponse):
		return nil, newError(http.StatusBadGateway, codeBadUpstream, "Zulip answered with something that is not Zulip's JSON"), true
	case errors.Is(err, zulip.ErrTimeout):
		return nil, newError(http.StatusGatewayTimeout, codeUpstreamTimeout,
			fmt.Sprintf("Zulip did not answer within %s", timeout)), true
	case errors.Is(err, zulip.ErrUnreachable):
		return nil, newError(http.StatusBadGateway, codeUnreachable, "Zulip is unreachable"), true
	}
	return nil, nil, false
}

// credentialsRefused is the answer when Zulip refused the bot's own credentials
// (a 401 to a call made as the bot): the proxy's configuration is wrong,
// not the caller's key, so the caller gets 502 saying so, never a 401
// that reads like its own key failing.
func credentialsRefused(c *call, err error) *apiError {
	var zerr *zulip.Error
	if !errors.As(err, &zerr) || zerr.Status != http.StatusUnauthorized || c.bot == nil {
		return nil
	}
	return newError(http.StatusBadGateway, codeBotCredentials, "Zulip refused the proxy's credentials for bot '"+c.bot.name+
		"': a configuration problem of the proxy, not your key; tell the proxy's operator")
}

// withBothShapes makes sure a Zulip error body also has the upstream
// service's shape and a code: Zulip's unhandled-exception 500 has no
// code, and none of Zulip's errors has `detail`. Other answers pass as
// they are.
func withBothShapes(resp *zulip.Response) *zulip.Response {
	var m map[string]json.RawMessage
	if json.Unmarshal(resp.Body, &m) != nil {
		return resp
	}
	_, hasCode := m["code"]
	_, hasDetail := m["detail"]
	if hasCode && hasDetail {
		return resp
	}
	if !hasDetail {
		msg := m["msg"]
		if msg == nil {
			msg = json.RawMessage(`""`)
		}
		m["detail"] = msg
	}
	if !hasCode {
		code := codeBadRequest
		if resp.Status >= 500 {
			code = codeBadUpstream
		}
		m["code"], _ = json.Marshal(code)
	}
	body, err := json.Marshal(m)
	if err != nil {
		return resp
	}
	out := *resp
	out.Body = body
	return &out
}
