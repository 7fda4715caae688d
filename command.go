package zulipproxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "zulip-proxy",
		Usage: "<add-client|add-admin|list|revoke|rotate|expire|import-legacy> [--store <file> | --config <file> [--adapter <name>]]",
		Short: "Manages the Zulip proxy's scoped keys",
		Long: `
Creates, lists, rotates, expires and revokes the keys of the zulip_proxy handler, on the same
store the server uses. A running server picks up changes within 5 seconds.

Name the store with --store FILE, or let the command find it in your config
with --config FILE (and --adapter, inferred from the file name as 'caddy run'
does). When the config's zulip_proxy has no 'store', the keys live in Caddy's
configured storage, and the command uses that storage too.

Keys are printed once, when created; only their SHA-256 is stored.
`,
		CobraFunc: configureCLI,
	})
}

// configureCLI builds the `zulip-proxy` command tree on cmd. Tests build the
// same tree to run the commands without a Caddy binary.
func configureCLI(cmd *cobra.Command) {
	pf := cmd.PersistentFlags()
	pf.String("store", "", "path of the key store file")
	pf.StringP("config", "c", "", "Caddy config file in which to find the store")
	pf.StringP("adapter", "a", "", "name of the config adapter (inferred from the file name when empty)")
	pf.Bool("new-store", false, "start a new, empty store where the file is empty, or missing although a store was there before")
	pf.BoolP("verbose", "v", false, "also print what loading the config says (its adapter's warnings)")
	// Without these, cobra would print the help and exit 0 for a
	// mistyped command, and a script would never know.
	cmd.Args = func(c *cobra.Command, args []string) error {
		if len(args) > 0 {
			return fmt.Errorf("unknown command %q for %q; the commands are add-client, add-admin, list, revoke, rotate, expire, allow, topics, import-legacy, audit", args[0], c.CommandPath())
		}
		return nil
	}
	cmd.RunE = func(c *cobra.Command, _ []string) error {
		_ = c.Help()
		return errors.New("no command given")
	}

	addClient := &cobra.Command{
		Use:   "add-client --stream <stream> [--name <name>] [--proposal <n>] [--bot <bot>] [--expires <duration>] [--allow send,edit] [--topic-prefix P] [--queued]",
		Short: "Creates a key that may write to one stream, and prints it once",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			f := c.Flags()
			stream, _ := f.GetString("stream")
			name, _ := f.GetString("name")
			proposal, _ := f.GetInt64("proposal")
			botName, _ := f.GetString("bot")
			expires, _ := f.GetString("expires")
			rateLimit, _ := f.GetString("rate-limit")
			queued, _ := f.GetBool("queued")
			allow, _ := f.GetString("allow")
			topicPrefix, _ := f.GetString("topic-prefix")
			if strings.TrimSpace(stream) == "" {
				return errors.New("--stream is required: the one stream this key may write to")
			}
			if proposal < 0 {
				return errors.New("--proposal must be a positive number")
			}
			if name == "" && proposal > 0 {
				name = "proposal " + strconv.FormatInt(proposal, 10)
			}
			n := keystore.NewEntry{Name: name, ProposalNo: proposal, Stream: strings.TrimSpace(stream), Bot: botName}
			if queued {
				n.Delivery = keystore.DeliveryQueued
			}
			if allow != "" {
				perms, err := allowArg(allow)
				if err != nil {
					return fmt.Errorf("--allow: %w", err)
				}
				n.Permissions = perms
			}
			if f.Changed("topic-prefix") {
				p, err := keystore.ParseTopicPrefix(topicPrefix)
				if err != nil {
					return fmt.Errorf("--topic-prefix: %w", err)
				}
				n.TopicPrefix = p
			}
			if rateLimit != "" {
				rl, err := parseRateLimit(rateLimit)
				if err != nil {
					return fmt.Errorf("--rate-limit: %w", err)
				}
				n.RateLimit = rl.String()
			}
			return runAdd(c, n, expires)
		},
	}
	addClient.Flags().String("stream", "", "the Zulip stream the key may write to (required)")
	addClient.Flags().String("name", "", "free text shown in lists and logs, e.g. 'beamline 3 monitor'")
	addClient.Flags().Int64("proposal", 0, "proposal number (upstream compatibility)")
	addClient.Flags().String("bot", "", "name of the configured bot the key speaks as (default: the default bot)")
	addClient.Flags().String("expires", "", "lifetime, e.g. 90d or 12h (default: never expires)")
	addClient.Flags().String("topic-prefix", "", "hold the key to the topics that start with this, e.g. 'BL3/' (compared as Zulip compares topics)")
	addClient.Flags().String("allow", "", "what the key may do: some of send, upload, edit, read, topics, comma-separated (default: all), e.g. send for a CI job")
	addClient.Flags().Bool("queued", false, "queue this key's sends while Zulip cannot take them (down, slow, out of budget) and deliver them later, rather than fail")
	addClient.Flags().String("rate-limit", "", "this key's own rate limit, <events>/<window> such as 10/1m (default: the server's rate_limit)")

	addAdmin := &cobra.Command{
		Use:   "add-admin [--name <name>] [--expires <duration>]",
		Short: "Creates an admin key, which manages keys and never posts, and prints it once",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			name, _ := c.Flags().GetString("name")
			expires, _ := c.Flags().GetString("expires")
			return runAdd(c, keystore.NewEntry{Name: name, Admin: true}, expires)
		},
	}
	addAdmin.Flags().String("name", "", "free text shown in lists and logs")
	addAdmin.Flags().String("expires", "", "lifetime, e.g. 90d or 12h (default: never expires)")

	list := &cobra.Command{
		Use:   "list [--json]",
		Short: "Lists keys (never the keys themselves)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			asJSON, _ := c.Flags().GetBool("json")
			return withStore(c, func(_ context.Context, s *keystore.Store, _ *storeLocation) error {
				return printList(c.OutOrStdout(), s.List(), asJSON, time.Now())
			})
		},
	}
	list.Flags().Bool("json", false, "print JSON instead of a table")

	revoke := &cobra.Command{
		Use:   "revoke <id>",
		Short: "Revokes a key; a running server refuses it within 5 seconds",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return withStore(c, func(ctx context.Context, s *keystore.Store, _ *storeLocation) error {
				e, err := s.Revoke(ctx, args[0])
				if err != nil {
					return lifecycleError(s, args[0], err)
				}
				fmt.Fprintf(c.OutOrStdout(), "revoked %s (%s) at %s\n", e.ID, describe(&e), e.RevokedAt.Format(time.RFC3339))
				return nil
			})
		},
	}

	importLegacy := &cobra.Command{
		Use:   "import-legacy <file>",
		Short: "Imports the upstream service's plain-key clients.json; the old keys keep working",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return fmt.Errorf("opening legacy file: %w", err)
			}
			defer f.Close()
			return withStore(c, func(ctx context.Context, s *keystore.Store, _ *storeLocation) error {
				imported, skipped, err := s.ImportLegacy(ctx, f, createdBy(cliActor()))
				if err != nil {
					return fmt.Errorf("importing %s: %w", args[0], err)
				}
				fmt.Fprintf(c.OutOrStdout(), "imported %d keys, skipped %d already present, into %s\n", imported, skipped, s)
				if imported > 0 {
					fmt.Fprintln(c.ErrOrStderr(), "The legacy file still holds the keys in plain text: delete it once the import is checked.")
				}
				return nil
			})
		},
	}

	cmd.AddCommand(addClient, addAdmin, list, revoke, importLegacy)
	cmd.AddCommand(lifecycleCommands()...)
	cmd.AddCommand(auditCommand())
}

// runAdd creates a key and prints it: the only time anyone sees it.
func runAdd(c *cobra.Command, n keystore.NewEntry, expires string) error {
	if expires != "" {
		d, err := caddy.ParseDuration(expires)
		if err != nil {
			return fmt.Errorf("--expires: %w", err)
		}
		if d <= 0 {
			return fmt.Errorf("--expires must be positive, got %q", expires)
		}
		t := time.Now().Add(d).UTC()
		n.ExpiresAt = &t
	}
	n.CreatedBy = createdBy(cliActor())
	return withStore(c, func(ctx context.Context, s *keystore.Store, loc *storeLocation) error {
		if n.Bot != "" && loc.bots != nil && !loc.bots[n.Bot] {
			return fmt.Errorf("--bot %q is not configured in %s", n.Bot, loc.config)
		}
		if !n.Admin {
			if err := loc.checkStream(ctx, c.ErrOrStderr(), n.Bot, n.Stream); err != nil {
				return err
			}
		}
		key, e, err := s.Add(ctx, n)
		if err != nil {
			return err
		}
		out := c.OutOrStdout()
		fmt.Fprintf(out, "id:     %s\n", e.ID)
		if e.Admin {
			fmt.Fprintf(out, "admin:  true\n")
		} else {
			fmt.Fprintf(out, "stream: %s\n", e.Stream)
		}
		if e.ExpiresAt != nil {
			fmt.Fprintf(out, "expires: %s\n", e.ExpiresAt.Format(time.RFC3339))
		}
		fmt.Fprintf(out, "key:    %s\n", key)
		fmt.Fprintln(c.ErrOrStderr(), "The key is shown only this once; only its hash is stored.")
		return nil
	})
}

// withStore opens the store the flags name, runs fn, and closes it.
func withStore(c *cobra.Command, fn func(context.Context, *keystore.Store, *storeLocation) error) error {
	storePath, _ := c.Flags().GetString("store")
	configFile, _ := c.Flags().GetString("config")
	adapter, _ := c.Flags().GetString("adapter")
	verbose, _ := c.Flags().GetBool("verbose")
	var notes io.Writer
	if verbose {
		notes = c.ErrOrStderr()
	}
	loc, err := locateStore(storePath, configFile, adapter, notes)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.Context(), 2*time.Minute)
	defer cancel()
	ctx = keystore.WithActor(ctx, cliActor())
	newStore, _ := c.Flags().GetBool("new-store")
	loc.warnOtherUser(c.ErrOrStderr())
	s, closeFn, err := loc.open(newStore)
	if err != nil {
		return err
	}
	err = fn(ctx, s, loc)
	if s.Created() {
		fmt.Fprintf(c.ErrOrStderr(), "created new key store %s\n", s)
	}
	if cerr := closeFn(); err == nil && cerr != nil {
		err = cerr
	}
	return err
}

func describe(e *keystore.Entry) string {
	switch {
	case e.Admin && e.Name != "":
		return "admin key " + strconv.Quote(e.Name)
	case e.Admin:
		return "admin key"
	case e.Name != "":
		return strconv.Quote(e.Name) + " for stream " + strconv.Quote(e.Stream)
	}
	return "key for stream " + strconv.Quote(e.Stream)
}

func printList(w io.Writer, entries []keystore.Entry, asJSON bool, now time.Time) error {
	if asJSON {
		rows := make([]entryView, len(entries))
		for i := range entries {
			rows[i] = viewOf(&entries[i], viewDefaults{})
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSTREAM\tBOT\tADMIN\tCREATED\tEXPIRES\tREVOKED\tLAST USED\tRATE LIMIT\tDELIVERY\tPERMISSIONS\tTOPICS\tROTATED")
	for _, e := range entries {
		bot := e.Bot
		if bot == "" && !e.Admin {
			bot = "(default)"
		}
		admin := "no"
		if e.Admin {
			admin = "yes"
		}
		delivery, perms, topics := "-", "-", "-"
		if !e.Admin {
			delivery = deliveryOf(&e)
			perms = "all"
			if e.Permissions != nil {
				perms = strings.Join(e.Permissions, ",")
			}
			topics = "any"
			if e.TopicPrefix != "" {
				topics = dash(e.TopicPrefix) + "*"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", dash(e.ID), dash(e.Name), dash(e.Stream), dash(bot), admin,
			e.CreatedAt.Format("2006-01-02 15:04"), timeCell(e.ExpiresAt, now, true), timeCell(e.RevokedAt, now, false), timeCell(e.LastUsedAt, now, false), dash(e.RateLimit),
			delivery, perms, topics, rotatedCell(&e, now))
	}
	return tw.Flush()
}

// dash is a table cell: "-" for nothing, and control characters (a
// newline, ESC, a tab) and other unprintable runes written as Go escapes,
// so a key's name cannot forge a row, hide one, or drive the terminal.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) || r == '\\' }) < 0 {
		return s
	}
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

// rotatedCell says when a key was rotated, and until when each old
// secret that still works does.
func rotatedCell(e *keystore.Entry, now time.Time) string {
	if e.RotatedAt == nil {
		return "-"
	}
	s := e.RotatedAt.Local().Format("2006-01-02 15:04")
	var until []string
	for _, r := range e.Retired {
		if now.Before(r.Until) {
			until = append(until, r.Until.Local().Format("2006-01-02 15:04"))
		}
	}
	switch len(until) {
	case 0:
	case 1:
		s += " (old key until " + until[0] + ")"
	default:
		s += " (" + strconv.Itoa(len(until)) + " old keys, until " + strings.Join(until, ", ") + ")"
	}
	return s
}

func timeCell(t *time.Time, now time.Time, expiry bool) string {
	if t == nil {
		if expiry {
			return "never"
		}
		return "-"
	}
	s := t.Local().Format("2006-01-02 15:04")
	if expiry && !t.After(now) {
		s += " (expired)"
	}
	return s
}
