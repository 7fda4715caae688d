package zulipproxy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/user"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
)

// auditCommand prints the audit trail.
func auditCommand() *cobra.Command {
	audit := &cobra.Command{
		Use:   "audit [--key <id>] [--since <D>] [--until <D>] [--json]",
		Short: "Prints the audit trail: who created, changed or revoked which key, when, from where; newest first",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			f := c.Flags()
			id, _ := f.GetString("key")
			asJSON, _ := f.GetBool("json")
			limit, _ := f.GetInt("limit")
			q := keystore.AuditQuery{KeyID: strings.TrimSpace(id), Limit: limit}
			if limit <= 0 {
				q.Limit = int(^uint(0) >> 1)
			}
			now := time.Now()
			for _, b := range []struct {
				flag string
				to   *time.Time
			}{{"since", &q.Since}, {"until", &q.Until}} {
				if v, _ := f.GetString(b.flag); v != "" {
					t, err := auditTime(v, now, b.flag == "until")
					if err != nil {
						return fmt.Errorf("--%s: %w", b.flag, err)
					}
					*b.to = t
				}
			}
			return withStore(c, func(_ context.Context, s *keystore.Store, _ *storeLocation) error {
				if q.KeyID != "" {
					if _, ok := s.Get(q.KeyID); !ok {
						return lifecycleError(s, q.KeyID, keystore.ErrNotFound)
					}
				}
				recs, _ := s.Audit(q)
				return printAudit(c.OutOrStdout(), recs, asJSON)
			})
		},
	}
	audit.Flags().String("key", "", "only this key's history (its id)")
	audit.Flags().String("since", "", "only changes since: a duration back from now (7d), a date (2026-12-01) or a time (RFC 3339)")
	audit.Flags().String("until", "", "only changes until, as --since (a date: through that day)")
	audit.Flags().Int("limit", 0, "at most this many records, the newest (default: all)")
	audit.Flags().Bool("json", false, "print JSON (an array of records, newest first) instead of a table")
	return audit
}

func printAudit(w io.Writer, recs []keystore.AuditRecord, asJSON bool) error {
	if asJSON {
		if recs == nil {
			recs = []keystore.AuditRecord{}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(recs)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WHEN\tKEY\tACTION\tBY\tFROM\tCHANGES")
	for _, r := range recs {
		by := r.By
		if r.ByName != "" {
			by += " (" + r.ByName + ")"
		}
		key := r.KeyID
		if r.KeyName != "" {
			key += " (" + r.KeyName + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.At.Local().Format("2006-01-02 15:04:05"), dash(key), r.Action,
			dash(by), dash(r.From), dash(changesText(r.Changes)))
	}
	return tw.Flush()
}

// changesText is a record's changes on one line: "expires_at: null →
// 2027-03-01T00:00:00Z; permissions: [...] → [...]".
func changesText(cs []keystore.AuditChange) string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = c.Field + ": " + string(c.Before) + " → " + string(c.After)
	}
	return strings.Join(parts, "; ")
}

// cliActor is who makes a change from the command line, for the audit
// trail: the OS user, from this host.
func cliActor() keystore.Actor {
	name := os.Getenv("USER")
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	if name == "" {
		name = "unknown"
	}
	host, _ := os.Hostname()
	return keystore.Actor{By: "cli:" + name, From: host}
}

// createdBy is a key's created_by when the CLI makes it: "cli:user@host",
// as before the audit trail.
func createdBy(a keystore.Actor) string {
	if a.From == "" {
		return a.By
	}
	return a.By + "@" + a.From
}
