package zulip

// UsesWire says whether c sends its small calls through its own HTTP/1.1
// code (wire.go) rather than net/http, so tests can tell which path they
// exercised.
func UsesWire(c *Client) bool { return c.wire != nil }
