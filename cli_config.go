package zulipproxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
)

// storeLocation is where the CLI finds the key store: a file, or Caddy's
// configured storage, found the way the server would find it.
type storeLocation struct {
	path       string          // file store; empty for a storage store
	storageRaw json.RawMessage // the config's `storage`; nil means Caddy's default
	config     string          // the config file, for messages
	bots       map[string]bool // bots the config defines; nil when unknown
}

func locateStore(storePath, configFile, adapter string) (*storeLocation, error) {
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
	cfgJSON, _, _, err := caddycmd.LoadConfig(configFile, adapter)
	if err != nil {
		return nil, fmt.Errorf("loading config %s: %w", configFile, err)
	}
	return storeFromConfig(cfgJSON, configFile)
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
	loc := &storeLocation{config: configFile, bots: map[string]bool{}}
	stores := map[string]bool{}
	for _, hd := range found {
		s, _ := hd["store"].(string)
		stores[s] = true
		if bots, ok := hd["bots"].(map[string]any); ok {
			for name := range bots {
				loc.bots[name] = true
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

// open opens the store without its watcher: a command reads the freshest
// document under the lock for each change, and exits.
func (l *storeLocation) open(newStore bool) (*keystore.Store, func() error, error) {
	opt := keystore.Options{NewStore: newStore}
	if l.path != "" {
		s, err := keystore.OpenFile(l.path, opt)
		if err != nil {
			return nil, nil, err
		}
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
	return s, s.Close, nil
}
