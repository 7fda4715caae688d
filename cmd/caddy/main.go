// Command caddy is a full Caddy with the Zulip proxy and the Zulip emulator
// compiled in, for development and the demo. Production builds use xcaddy.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

func main() {
	caddycmd.Main()
}
