package zulipproxy

import (
	"testing"
	"time"

	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
)

// The CLI keeps the trail as long as the config's handlers do: the
// longest of their audit_retention, the default for one that names none.
func TestCLIAuditRetentionFromConfig(t *testing.T) {
	handler := func(extra string) string {
		return `{"handler": "zulip_proxy", "store": "/k.json"` + extra + `}`
	}
	cfg := func(handlers ...string) []byte {
		s := `{"apps": {"http": {"servers": {"a": {"routes": [`
		for i, h := range handlers {
			if i > 0 {
				s += ","
			}
			s += `{"handle": [` + h + `]}`
		}
		return []byte(s + `]}}}}}`)
	}
	for _, c := range []struct {
		name string
		cfg  []byte
		want time.Duration
	}{
		{"none named", cfg(handler("")), keystore.DefaultAuditRetention},
		{"30 days", cfg(handler(`, "audit_retention": "30d"`)), 30 * 24 * time.Hour},
		{"two years and 30 days", cfg(handler(`, "audit_retention": 63072000000000000`), handler(`, "audit_retention": "30d"`)), 730 * 24 * time.Hour},
		{"30 days and the default", cfg(handler(`, "audit_retention": "30d"`), handler("")), keystore.DefaultAuditRetention},
	} {
		loc, err := storeFromConfig(c.cfg, "test.json")
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if loc.retention != c.want {
			t.Errorf("%s: retention %s, want %s", c.name, loc.retention, c.want)
		}
	}
	if _, err := storeFromConfig(cfg(handler(`, "audit_retention": "-1d"`)), "test.json"); err == nil {
		t.Error("a negative audit_retention accepted")
	}
}
