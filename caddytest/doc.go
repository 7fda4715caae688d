// Package caddytest holds the end-to-end tests: a real Caddy, in this test
// process, with the zulip_proxy module in front of the Zulip emulator.
// Caddy allows one instance per process, so every such test lives here and
// none runs in parallel.
package caddytest
