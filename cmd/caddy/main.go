// Command caddy is a full Caddy with the Zulip proxy and the Zulip emulator
// compiled in, for development and the demo. Production builds use xcaddy
// and leave the emulator out.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/zwop/caddy-zulip-proxy"
	_ "github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

func main() {
	caddycmd.Main()
}
