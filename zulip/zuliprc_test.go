package zulip_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zwop/caddy-zulip-proxy/zulip"
)

const testKey = "0123456789abcdefABCDEF0123456789"

func TestParseZuliprc(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    zulip.Config
		wantErr string
	}{
		{"as Zulip downloads it", "[api]\nemail=bot-bot@chat.example.org\nkey=" + testKey + "\nsite=https://chat.example.org\n",
			zulip.Config{Email: "bot-bot@chat.example.org", APIKey: testKey, Site: "https://chat.example.org"}, ""},
		{"configparser syntax", "\uFEFF# bot\n; comment\n[other]\nkey=ignored\n\n[api]\nEMAIL : bot@x.org \nKey = " + testKey + "\r\nsite: http://localhost:9991\n",
			zulip.Config{Email: "bot@x.org", APIKey: testKey, Site: "http://localhost:9991"}, ""},
		{"unknown keys ignored", "[api]\nemail=b@x\nkey=" + testKey + "\nsite=https://c.org\ninsecure=false\n",
			zulip.Config{Email: "b@x", APIKey: testKey, Site: "https://c.org"}, ""},
		{"no api section", "[zulip]\nemail=b@x\n", zulip.Config{}, "no [api] section"},
		{"missing fields named", "[api]\nemail=b@x\n", zulip.Config{}, "missing key, site"},
		{"empty value is missing", "[api]\nemail=\nkey=" + testKey + "\nsite=https://c.org\n", zulip.Config{}, "missing email"},
		{"duplicate key", "[api]\nemail=b@x\nemail=c@x\nkey=" + testKey + "\nsite=https://c.org\n", zulip.Config{}, `line 3: duplicate key "email"`},
		{"duplicate section", "[api]\n[api]\n", zulip.Config{}, "line 2: duplicate section"},
		{"key outside section", "email=b@x\n", zulip.Config{}, "line 1: key outside any section"},
		{"not name=value", "[api]\njust words\n", zulip.Config{}, "line 2: expected name=value"},
		{"continuation line", "[api]\nkey=abc\n  def\n", zulip.Config{}, "line 3: continuation"},
		{"bad site", "[api]\nemail=b@x\nkey=" + testKey + "\nsite=ftp://c.org\n", zulip.Config{}, "scheme"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := zulip.ParseZuliprc(strings.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want error containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), testKey) || strings.Contains(err.Error(), "abc") {
					t.Errorf("error %q leaks a value", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseZuliprcTooLarge(t *testing.T) {
	big := "[api]\n# " + strings.Repeat("x", 70<<10) + "\n"
	if _, err := zulip.ParseZuliprc(strings.NewReader(big)); err == nil || !strings.Contains(err.Error(), "too large") {
		t.Errorf("got %v", err)
	}
}

func TestLoadZuliprc(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "zuliprc")
	if err := os.WriteFile(good, []byte("[api]\nemail=b@x\nkey="+testKey+"\nsite=https://c.org\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := zulip.LoadZuliprc(good)
	if err != nil || cfg.Email != "b@x" {
		t.Fatalf("%+v, %v", cfg, err)
	}
	bad := filepath.Join(dir, "broken")
	if err := os.WriteFile(bad, []byte("[api]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{bad, filepath.Join(dir, "absent")} {
		if _, err := zulip.LoadZuliprc(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: got %v, want an error naming the path", p, err)
		}
	}
}

// cert_bundle, as Zulip's own clients read it from a zuliprc: a relative
// path is found beside the zuliprc, an absolute one as it is.
func TestZuliprcCertBundle(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct{ given, want string }{
		{"ca.pem", filepath.Join(dir, "ca.pem")},
		{"/etc/ssl/zulip-ca.pem", "/etc/ssl/zulip-ca.pem"},
	} {
		p := filepath.Join(dir, "zuliprc")
		rc := "[api]\nemail=b@x\nkey=" + testKey + "\nsite=https://c.org\ncert_bundle=" + tt.given + "\n"
		if err := os.WriteFile(p, []byte(rc), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := zulip.LoadZuliprc(p)
		if err != nil || cfg.CertBundle != tt.want {
			t.Errorf("cert_bundle=%s: %q, %v; want %q", tt.given, cfg.CertBundle, err, tt.want)
		}
	}
}

// FuzzParseZuliprc: any file reads as a whole config or an error, and the
// error names a line or a field, never the key.
func FuzzParseZuliprc(f *testing.F) {
	f.Add("[api]\nemail=b@x\nkey=" + testKey + "\nsite=https://c.org\n")
	f.Add("[api]\nemail=b@x\nkey=" + testKey + "\nkey=" + testKey + "\n")
	f.Add("\uFEFF[api]\n  continued\ncert_bundle=ca.pem\n")
	f.Fuzz(func(t *testing.T, in string) {
		cfg, err := zulip.ParseZuliprc(strings.NewReader(in))
		if err != nil {
			if strings.Contains(err.Error(), testKey) {
				t.Errorf("the error quotes the key: %v", err)
			}
			return
		}
		if cfg.Email == "" || cfg.APIKey == "" || cfg.Site == "" {
			t.Errorf("a config without email, key or site: %+v", cfg)
		}
	})
}
