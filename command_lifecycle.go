package zulipproxy

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/spf13/cobra"
	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
)

// lifecycleCommands are the commands that change a key that exists.
func lifecycleCommands() []*cobra.Command {
	rotate := &cobra.Command{
		Use:   "rotate <id> [--grace 24h]",
		Short: "Gives a key a new secret and prints it once; the old one works for the grace period",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			g, _ := c.Flags().GetString("grace")
			grace, ok := parseGrace(g)
			if !ok {
				return fmt.Errorf("--grace must be a duration such as 24h, or 0 to stop the old key now; got %q", g)
			}
			return withStore(c, func(ctx context.Context, s *keystore.Store, _ *storeLocation) error {
				key, e, err := s.Rotate(ctx, args[0], grace)
				if err != nil {
					return lifecycleError(s, args[0], err)
				}
				out := c.OutOrStdout()
				fmt.Fprintf(out, "id:     %s\n", e.ID)
				fmt.Fprintf(out, "old key works until: %s\n", e.Retired[len(e.Retired)-1].Until.Local().Format(time.RFC3339))
				fmt.Fprintf(out, "key:    %s\n", key)
				fmt.Fprintln(c.ErrOrStderr(), "The new key is shown only this once; only its hash is stored.")
				return nil
			})
		},
	}
	rotate.Flags().String("grace", "24h", "how long the old key keeps working (0: not at all)")

	expire := &cobra.Command{
		Use:   "expire <id> (--in <duration> | --never)",
		Short: "Changes when a key expires",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			in, _ := c.Flags().GetString("in")
			never, _ := c.Flags().GetBool("never")
			if (in == "") == !never {
				return errors.New("give one of --in <duration> (such as 30d) and --never")
			}
			var at *time.Time
			if in != "" {
				d, err := caddy.ParseDuration(in)
				if err != nil || d <= 0 {
					return fmt.Errorf("--in must be a positive duration such as 30d or 12h; got %q", in)
				}
				t := time.Now().Add(d)
				at = &t
			}
			return withStore(c, func(ctx context.Context, s *keystore.Store, _ *storeLocation) error {
				e, err := s.SetExpiry(ctx, args[0], at)
				if err != nil {
					return lifecycleError(s, args[0], err)
				}
				when := "never"
				if e.ExpiresAt != nil {
					when = e.ExpiresAt.Local().Format(time.RFC3339)
				}
				fmt.Fprintf(c.OutOrStdout(), "%s (%s) expires: %s\n", e.ID, describe(&e), when)
				return nil
			})
		},
	}
	expire.Flags().String("in", "", "new lifetime from now, e.g. 30d or 12h")
	expire.Flags().Bool("never", false, "the key never expires")

	allow := &cobra.Command{
		Use:   "allow <id> <permissions>",
		Short: "Sets what a scoped key may do: some of send, upload, edit, read, topics (comma-separated), or all",
		Args:  cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			perms, err := allowArg(args[1])
			if err != nil {
				return err
			}
			return withStore(c, func(ctx context.Context, s *keystore.Store, _ *storeLocation) error {
				e, err := s.SetPermissions(ctx, args[0], perms)
				if err != nil {
					return lifecycleError(s, args[0], err)
				}
				fmt.Fprintf(c.OutOrStdout(), "%s (%s) may: %s\n", e.ID, describe(&e), strings.Join(e.Granted(), ", "))
				return nil
			})
		},
	}
	topics := &cobra.Command{
		Use:   "topics <id> (<prefix> | --any)",
		Short: "Holds a scoped key to the topics that start with a prefix, or lets it use any topic of its stream",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(c *cobra.Command, args []string) error {
			anyTopic, _ := c.Flags().GetBool("any")
			if (len(args) == 2) == anyTopic {
				return errors.New("give one of a prefix (such as BL3/) and --any")
			}
			prefix := ""
			if !anyTopic {
				var err error
				if prefix, err = keystore.ParseTopicPrefix(args[1]); err != nil {
					return err
				}
			}
			return withStore(c, func(ctx context.Context, s *keystore.Store, _ *storeLocation) error {
				e, err := s.SetTopicPrefix(ctx, args[0], prefix)
				if err != nil {
					return lifecycleError(s, args[0], err)
				}
				what := "any topic"
				if e.TopicPrefix != "" {
					what = "topics starting with " + strconv.Quote(e.TopicPrefix)
				}
				fmt.Fprintf(c.OutOrStdout(), "%s (%s) may use: %s\n", e.ID, describe(&e), what)
				return nil
			})
		},
	}
	topics.Flags().Bool("any", false, "let the key use any topic of its stream")
	return []*cobra.Command{rotate, expire, allow, topics}
}

// allowArg reads --allow and allow's permissions: "send,edit", or "all".
func allowArg(v string) ([]string, error) {
	if strings.TrimSpace(v) == "all" {
		return nil, nil
	}
	perms, err := keystore.ParsePermissions([]string{v})
	if err != nil {
		return nil, fmt.Errorf("permissions: %w", err)
	}
	return perms, nil
}

func lifecycleError(s *keystore.Store, id string, err error) error {
	switch {
	case errors.Is(err, keystore.ErrNotFound):
		return fmt.Errorf("no key with id %q in %s (see 'caddy zulip-proxy list')", id, s)
	case errors.Is(err, keystore.ErrKeyRevoked):
		return fmt.Errorf("key %q is revoked; a revoked key stays revoked", id)
	case errors.Is(err, keystore.ErrAdminPermissions):
		return fmt.Errorf("key %q is an admin key: it manages keys and never posts, so it has no permissions or topics to change", id)
	}
	return err
}
