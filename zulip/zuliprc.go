package zulip

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// maxZuliprcBytes bounds a zuliprc read: the real thing is a few lines,
// and a path pointing at something huge should fail, not fill memory.
const maxZuliprcBytes = 64 << 10

// ParseZuliprc reads Zulip's INI credentials file, the one Zulip offers
// for download in a bot's settings:
//
//	[api]
//	email=bot-name-bot@chat.example.org
//	key=0123456789abcdefABCDEF0123456789
//	site=https://chat.example.org
//	cert_bundle=/etc/ssl/private-ca.pem   (optional: a Zulip with a private CA)
//
// It follows Python's configparser, which Zulip's own client uses: "="
// or ":" separators, "#" and ";" comment lines, case-insensitive names,
// duplicate sections or keys are errors. Other sections and keys are
// ignored. Errors name the line and the field, never a value.
func ParseZuliprc(r io.Reader) (Config, error) {
	var (
		cfg        Config
		section    string
		seenSecs   = map[string]bool{}
		seenKeys   = map[string]bool{}
		sawAPI     bool
		lineNo     int
		lastWasKey bool
	)
	sc := bufio.NewScanner(io.LimitReader(r, maxZuliprcBytes+1))
	sc.Buffer(make([]byte, 0, 4096), maxZuliprcBytes+1)
	read := 0
	for sc.Scan() {
		lineNo++
		raw := sc.Text()
		read += len(raw) + 1
		if read > maxZuliprcBytes {
			return Config{}, errors.New("zuliprc: file too large")
		}
		if lineNo == 1 {
			raw = strings.TrimPrefix(raw, "\uFEFF")
		}
		line := strings.TrimSpace(raw)
		if line == "" || line[0] == '#' || line[0] == ';' {
			lastWasKey = false
			continue
		}
		if raw[0] == ' ' || raw[0] == '\t' {
			if lastWasKey && section == "api" {
				// configparser would append this to the previous value,
				// which no valid email, key or site contains.
				return Config{}, fmt.Errorf("zuliprc: line %d: continuation lines are not supported", lineNo)
			}
			continue
		}
		lastWasKey = false
		if line[0] == '[' {
			if !strings.HasSuffix(line, "]") {
				return Config{}, fmt.Errorf("zuliprc: line %d: malformed section header", lineNo)
			}
			section = strings.TrimSpace(line[1 : len(line)-1])
			if seenSecs[section] {
				return Config{}, fmt.Errorf("zuliprc: line %d: duplicate section [%s]", lineNo, section)
			}
			seenSecs[section] = true
			if section == "api" {
				sawAPI = true
			}
			continue
		}
		if section == "" {
			return Config{}, fmt.Errorf("zuliprc: line %d: key outside any section", lineNo)
		}
		i := strings.IndexAny(line, "=:")
		if i <= 0 {
			return Config{}, fmt.Errorf("zuliprc: line %d: expected name=value", lineNo)
		}
		lastWasKey = true
		if section != "api" {
			continue
		}
		name := strings.ToLower(strings.TrimSpace(line[:i]))
		value := strings.TrimSpace(line[i+1:])
		if seenKeys[name] {
			return Config{}, fmt.Errorf("zuliprc: line %d: duplicate key %q in [api]", lineNo, name)
		}
		seenKeys[name] = true
		switch name {
		case "email":
			cfg.Email = value
		case "key":
			cfg.APIKey = value
		case "site":
			cfg.Site = value
		case "cert_bundle":
			cfg.CertBundle = value
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return Config{}, errors.New("zuliprc: file too large")
		}
		return Config{}, fmt.Errorf("zuliprc: %w", err)
	}
	if !sawAPI {
		return Config{}, errors.New("zuliprc: no [api] section")
	}
	var missing []string
	for _, f := range []struct{ name, v string }{{"email", cfg.Email}, {"key", cfg.APIKey}, {"site", cfg.Site}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return Config{}, fmt.Errorf("zuliprc: [api] section is missing %s", strings.Join(missing, ", "))
	}
	if _, err := normalizeSite(cfg.Site); err != nil {
		return Config{}, fmt.Errorf("zuliprc: %w", err)
	}
	if err := validateCredentials(cfg.Email, cfg.APIKey); err != nil {
		return Config{}, fmt.Errorf("zuliprc: %w", err)
	}
	return cfg, nil
}

// LoadZuliprc reads ParseZuliprc's format from a file; errors name the path.
func LoadZuliprc(path string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, fmt.Errorf("reading zuliprc: %w", err)
	}
	defer f.Close()
	cfg, err := ParseZuliprc(f)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	// A relative cert_bundle sits beside the zuliprc: a service's working
	// folder is rarely the one the operator had in mind.
	if cfg.CertBundle != "" && !filepath.IsAbs(cfg.CertBundle) {
		cfg.CertBundle = filepath.Join(filepath.Dir(path), cfg.CertBundle)
	}
	return cfg, nil
}
