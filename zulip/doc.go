// Package zulip is the small, typed Zulip API client the proxy speaks
// through: one Client per Zulip site and bot, one call per endpoint the
// proxy needs.
//
// Every request is built from scratch from single-valued, allow-listed
// parameters, never from a caller's raw body or query: Zulip reads
// parameters from the body before the query, takes the last of repeated
// values, and runs another handler when a form carries "method", so
// forwarding anything a client sent can change what Zulip does.
//
// Every call goes through one net/http Transport per client (transport.go):
// connections are pooled and reused, with HTTP/2 where the server offers
// it. The transport is called directly, never through an http.Client, so
// redirects are not followed.
//
// Answers come back raw (Response) so a proxy can pass them on unchanged.
// Failures are one of: *Error (Zulip answered with an error), a
// *BadResponseError matching ErrBadResponse (something answered, not with
// Zulip's JSON), or a *TransportError matching ErrUnreachable or
// ErrTimeout (no answer). No error message contains the API key.
package zulip
