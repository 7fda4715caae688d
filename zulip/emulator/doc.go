// Package emulator is an in-memory Zulip 10 for tests and the demo: users
// and bots with API keys, streams and subscriptions, messages, topics,
// uploads, edits with Zulip's permission rules, narrows, Zulip's
// parameter rules (body before query, last value wins, topic/subject
// conflict, the "method" override), its error envelope, codes and
// statuses, rate limit headers and 429s, nginx's 25 MiB upload cap, a
// request log, and fault switches. Its answers are checked against
// Zulip's own OpenAPI description in this package's tests.
//
// In Go tests:
//
//	srv := emulator.NewServer(t)                 // demo seed: DemoBotEmail/DemoBotKey, DemoStream, DemoOtherStream
//	bot, _ := srv.UserByEmail(emulator.DemoBotEmail)
//	... point a client at srv.URL ...
//	srv.Requests()                               // what "Zulip" received
//	srv.SetFault(emulator.Fault{Status: 502})    // misbehave
//
// In Caddy (module http.handlers.zulip_emulator, directive
// zulip_emulator), see Handler. The Caddy module is registered by this
// package's init, so only cmd/caddy and tests import it, never the proxy.
package emulator
