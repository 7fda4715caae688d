package caddytest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zwop/caddy-zulip-proxy/internal/clitest"
)

// Keys of the upstream Python service keep working after import.
func TestLegacyKeysImportedThenUsed(t *testing.T) {
	store := newStore(t)
	legacy := filepath.Join(filepath.Dir(store), "legacy-clients.json")
	plain, plainAdmin := "GXXQoc8YlXJv2VDksX2Y7NzQAWdkdNeZ5fFvBLrCe6A", "legacyAdminKeyFromThePythonService0001"
	addSecret(plain)
	addSecret(plainAdmin)
	doc := `{"` + plain + `": {"proposal_no": 1234, "stream": "general"}, "` + plainAdmin + `": {"admin": true}}`
	if err := os.WriteFile(legacy, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := clitest.Run("import-legacy", "--store", store, legacy)
	if err != nil || !strings.Contains(out, "imported 2") {
		t.Fatalf("import: %v %s %s", err, out, errOut)
	}
	start(t, config{store: store})

	body, ct := form("content", "still working after the migration")
	if r := request(t, "POST", "/send_message?topic=legacy", body, withKey(plain), ct); r.Status != 200 {
		t.Fatalf("legacy key: %d %s", r.Status, r.Body)
	}
	r := request(t, "GET", "/me", nil, withKey(plain))
	if m := r.JSON(t); m["proposal_no"] != float64(1234) || m["legacy"] != true {
		t.Errorf("/me: %s", r.Body)
	}
	if r := request(t, "GET", "/clients", nil, withKey(plainAdmin)); r.Status != 200 {
		t.Errorf("legacy admin key: %d %s", r.Status, r.Body)
	}
	raw, _ := os.ReadFile(store)
	if strings.Contains(string(raw), plain) || strings.Contains(string(raw), plainAdmin) {
		t.Error("the store holds a plain legacy key")
	}
}
