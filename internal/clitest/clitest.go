// Package clitest runs `caddy zulip-proxy` in the test's own process,
// through the command the module registers with Caddy, as a user's shell
// would run it.
package clitest

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"

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

var (
	keyLine = regexp.MustCompile(`(?m)^key:\s+(zwop_[A-Za-z0-9_-]{43})$`)
	idLine  = regexp.MustCompile(`(?m)^id:\s+([0-9a-f]{12})$`)
)

// MakeKey runs a command that makes a key (add-client, add-admin, rotate)
// and returns the key and id it printed, and what it wrote to stderr.
func MakeKey(args ...string) (key, id, stderr string, err error) {
	out, stderr, err := Run(args...)
	if err != nil {
		return "", "", stderr, fmt.Errorf("zulip-proxy %v: %w\n%s", args, err, stderr)
	}
	key, id, ok := PrintedKey(out)
	if !ok {
		return "", "", stderr, fmt.Errorf("zulip-proxy %v printed no key or id:\n%s", args, out)
	}
	return key, id, stderr, nil
}

// PrintedKey finds the key and id a command printed.
func PrintedKey(out string) (key, id string, ok bool) {
	k, i := keyLine.FindStringSubmatch(out), idLine.FindStringSubmatch(out)
	if k == nil || i == nil {
		return "", "", false
	}
	return k[1], i[1], true
}
