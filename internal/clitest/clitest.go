// Package clitest runs `caddy zulip-proxy` in the test's own process,
// through the command the module registers with Caddy, as a user's shell
// would run it.
package clitest

import (
	"bytes"
	"errors"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

// Run runs `caddy zulip-proxy args...` and returns what it printed.
func Run(args ...string) (stdout, stderr string, err error) {
	def, ok := caddycmd.Commands()["zulip-proxy"]
	if !ok {
		return "", "", errors.New("clitest: the zulip-proxy command is not registered; import the module")
	}
	c := &cobra.Command{Use: "zulip-proxy", SilenceUsage: true, SilenceErrors: true}
	def.CobraFunc(c)
	var out, errb bytes.Buffer
	c.SetOut(&out)
	c.SetErr(&errb)
	c.SetArgs(args)
	err = c.Execute()
	return out.String(), errb.String(), err
}
