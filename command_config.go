package zulipproxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
	"github.com/zwop/caddy-zulip-proxy/zulip"
)

// storeLocation is where the CLI finds the key store: a file, or Caddy's
// configured storage, found the way the server would find it.
type storeLocation struct {
	path       string          // file store; empty for a storage store
	storageRaw json.RawMessage // the config's `storage`; nil means Caddy's default
	config     string          // the config file, for messages
	bots       map[string]bool // bots the config defines; nil when unknown
	// botCfgs are those bots' settings, to ask Zulip whether a stream
	// exists; nil when unknown.
	botCfgs map[string]*Bot
	// readOnly: the config says keys are managed elsewhere.
	readOnly bool
	// retention is the config's audit_retention (its default when the
	// config names none); 0 without a config, which keeps and shows the
	// whole trail rather than drop what a server keeps longer.
	retention time.Duration
}

func locateStore(storePath, configFile, adapter string, notes io.Writer) (*storeLocation, error) {
	switch {
	case storePath != "" && configFile != "":
		return nil, errors.New("give either --store or --config, not both")
	case storePath != "":
		if adapter != "" {
			return nil, errors.New("--adapter goes with --config")
		}
		return &storeLocation{path: storePath}, nil
	case configFile == "":
		return nil, errors.New("no store given: use --store FILE, or --config FILE to find the store in your Caddy config")
	}
	cfgJSON, err := loadConfig(configFile, adapter, notes)
	if err != nil {
		return nil, fmt.Errorf("loading config %s: %w", configFile, err)
	}
	return storeFromConfig(cfgJSON, configFile)
}

// isCaddyfileName is caddy run's rule for a config file without
// --adapter: a name that starts with "Caddyfile" or ends in ".caddyfile",
// either case, and is not ".json".
func isCaddyfileName(file string) bool {
	base := strings.ToLower(filepath.Base(file))
	if filepath.Ext(base) == ".json" {
		return false
	}
	return strings.HasPrefix(base, "caddyfile") || strings.HasSuffix(base, ".caddyfile")
}

// loadConfig reads a config file as `caddy run` would (the adapter named,
// or the Caddyfile's when the file's name says so, else JSON), without
// the log lines Caddy's loader writes, which would land between the
// lines a person reads (the key, its id). The adapter's warnings go to
// notes, when given (--verbose).
func loadConfig(file, adapter string, notes io.Writer) ([]byte, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	if adapter == "" && isCaddyfileName(file) {
		adapter = "caddyfile"
	}
	if adapter == "" {
		return raw, nil
	}
	a := caddyconfig.GetAdapter(adapter)
	if a == nil {
		return nil, fmt.Errorf("unknown config adapter %q", adapter)
	}
	out, warnings, err := a.Adapt(raw, map[string]any{"filename": file})
	if err != nil {
		return nil, err
	}
	if notes != nil {
		for _, w := range warnings {
			fmt.Fprintf(notes, "config %s: %s\n", file, w)
		}
	}
	return out, nil
}

// storeFromConfig finds the zulip_proxy handlers in a JSON config. They may
// sit at any depth (routes inside subroutes inside handle blocks), so the
// whole document is searched.
func storeFromConfig(cfgJSON []byte, configFile string) (*storeLocation, error) {
	var doc any
	if err := json.Unmarshal(cfgJSON, &doc); err != nil {
		return nil, fmt.Errorf("config %s: %w", configFile, err)
	}
	var found []map[string]any
	var walk func(v any)
	walk = func(v any) {
		switch t := v.(type) {
		case map[string]any:
			if t["handler"] == "zulip_proxy" {
				found = append(found, t)
			}
			for _, c := range t {
				walk(c)
			}
		case []any:
			for _, c := range t {
				walk(c)
			}
		}
	}
	walk(doc)
	if len(found) == 0 {
		return nil, fmt.Errorf("config %s has no zulip_proxy handler; use --store FILE", configFile)
	}
	loc := &storeLocation{config: configFile, bots: map[string]bool{}, botCfgs: map[string]*Bot{}}
	stores := map[string]bool{}
	for _, hd := range found {
		// The longest any handler keeps: the CLI drops nothing one keeps.
		retention := keystore.DefaultAuditRetention
		if raw, ok := hd["audit_retention"]; ok {
			b, _ := json.Marshal(raw)
			var d caddy.Duration
			if err := json.Unmarshal(b, &d); err != nil || d <= 0 {
				return nil, fmt.Errorf("config %s: audit_retention %s is not a positive duration", configFile, b)
			}
			retention = time.Duration(d)
		}
		loc.retention = max(loc.retention, retention)
		s, _ := hd["store"].(string)
		stores[s] = true
		if ro, _ := hd["store_read_only"].(bool); ro {
			loc.readOnly = true
		}
		if bots, ok := hd["bots"].(map[string]any); ok {
			for name, raw := range bots {
				loc.bots[name] = true
				if b, err := json.Marshal(raw); err == nil {
					var cfg Bot
					if json.Unmarshal(b, &cfg) == nil {
						loc.botCfgs[name] = &cfg
					}
				}
			}
		}
	}
	if len(stores) > 1 {
		names := make([]string, 0, len(stores))
		for s := range stores {
			if s == "" {
				s = "(caddy storage)"
			}
			names = append(names, s)
		}
		sort.Strings(names)
		return nil, fmt.Errorf("config %s has zulip_proxy handlers with different stores (%s); choose one with --store", configFile, strings.Join(names, ", "))
	}
	for s := range stores {
		loc.path = s
	}
	if loc.path == "" {
		if top, ok := doc.(map[string]any); ok && top["storage"] != nil {
			raw, err := json.Marshal(top["storage"])
			if err != nil {
				return nil, fmt.Errorf("config %s: storage: %w", configFile, err)
			}
			loc.storageRaw = raw
		}
	}
	return loc, nil
}

// warnOtherUser says where the store is when it is in Caddy's default
// storage and the command runs as root: that storage is in the home
// folder of the user who runs Caddy, so root's is not the service's
// (Debian's caddy runs as caddy, its data in /var/lib/caddy).
func (l *storeLocation) warnOtherUser(errOut io.Writer) {
	if l.path != "" || l.storageRaw != nil || os.Geteuid() != 0 {
		return
	}
	fmt.Fprintf(errOut, "note: the keys go to Caddy's default storage of the user running this command (root: %s);\n"+
		"      a Caddy service running as another user has its own (for Debian's caddy: /var/lib/caddy/.local/share/caddy).\n"+
		"      Run this as that user (sudo -u caddy caddy zulip-proxy ...), or give the config a `store` file or a `storage` of its own.\n",
		caddy.AppDataDir())
}

// open opens the store without its watcher: a command reads the freshest
// document under the lock for each change, and exits.
func (l *storeLocation) open(newStore bool) (*keystore.Store, func() error, error) {
	opt := keystore.Options{NewStore: newStore, ReadOnly: l.readOnly}
	if l.path != "" {
		s, err := keystore.OpenFile(l.path, opt)
		if err != nil {
			return nil, nil, err
		}
		s.SetAuditRetention(l.retention)
		return s, s.Close, nil
	}
	ctx, err := caddy.ProvisionContext(&caddy.Config{StorageRaw: l.storageRaw})
	if err != nil {
		return nil, nil, fmt.Errorf("config %s: setting up caddy storage: %w", l.config, err)
	}
	s, err := keystore.OpenStorage(ctx.Storage(), opt)
	if err != nil {
		return nil, nil, err
	}
	s.SetAuditRetention(l.retention)
	return s, s.Close, nil
}

// checkStream asks the key's bot's Zulip whether the stream exists, as
// create_client does, so a typo fails now rather than on the bot's first
// message, and subscribes the bot to it. A Zulip that cannot be reached from here (or credentials only
// the server's environment has) is no reason to refuse: the key is made,
// with a note.
func (l *storeLocation) checkStream(ctx context.Context, errOut io.Writer, botName, stream string) error {
	if l.botCfgs == nil {
		return nil
	}
	if botName == "" {
		botName = defaultBotOf(l.botCfgs)
	}
	b := l.botCfgs[botName]
	if b == nil {
		return nil
	}
	cfg, err := resolveBot(botName, b)
	if err != nil {
		fmt.Fprintf(errOut, "note: stream %q not checked with Zulip: %v\n", stream, err)
		return nil
	}
	cfg.Timeout = 10 * time.Second
	c, err := zulip.NewClient(cfg)
	if err != nil {
		fmt.Fprintf(errOut, "note: stream %q not checked with Zulip: %v\n", stream, err)
		return nil
	}
	defer c.CloseIdleConnections()
	_, _, err = c.GetStreamID(ctx, stream)
	if err == nil {
		// The bot joins the stream, as create_client makes it.
		_, err = c.Subscribe(ctx, stream)
	}
	var zerr *zulip.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &zerr) && zerr.Status == http.StatusUnauthorized:
		return fmt.Errorf("Zulip (%s) refused the proxy's credentials for bot %q: a configuration problem of the proxy (check the bot's email and api_key, or its zuliprc), not the stream; no key made", c.Site(), botName)
	case errors.As(err, &zerr):
		return fmt.Errorf("stream %q: Zulip (%s) says: %s", stream, c.Site(), zerr.Msg)
	}
	fmt.Fprintf(errOut, "note: stream %q not checked, Zulip at %s did not answer: %v\n", stream, c.Site(), err)
	return nil
}
