package zulipproxy

// Version is the product version, reported by /health and sent to Zulip in
// the User-Agent so a Zulip admin can tell which proxy build is calling.
const Version = "0.1.0"

// userAgent names the product to Zulip's servers and logs.
const userAgent = "caddy-zulip-proxy/" + Version + " (+https://github.com/zwop/caddy-zulip-proxy)"
