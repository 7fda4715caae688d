package caddytest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/zwop/caddy-zulip-proxy"
	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

// env is what every test shares: one emulator, one folder for stores and
// logs, and every secret the run handed out, so the last check can prove
// none reached a log.
var env struct {
	dir     string
	emu     *emulator.Server
	logFile string

	mu      sync.Mutex
	secrets []string
}

// mainTB lets the emulator's test helpers run in TestMain.
type mainTB struct{ cleanups []func() }

func (m *mainTB) Helper()          {}
func (m *mainTB) Cleanup(f func()) { m.cleanups = append(m.cleanups, f) }

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "zwop-caddytest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// Caddy keeps data and config under these; never the user's own.
	for _, v := range []string{"XDG_DATA_HOME", "XDG_CONFIG_HOME"} {
		if os.Getenv(v) == "" {
			p := filepath.Join(dir, strings.ToLower(v))
			_ = os.MkdirAll(p, 0o700)
			os.Setenv(v, p)
		}
	}
	env.dir = dir
	env.logFile = filepath.Join(dir, "caddy.log")
	tb := &mainTB{}
	defer func() {
		for i := len(tb.cleanups) - 1; i >= 0; i-- {
			tb.cleanups[i]()
		}
	}()
	// Zulip's rate limit is off unless a test turns it on: the suite sends
	// more than 200 requests a minute.
	env.emu = emulator.NewServer(tb, emulator.WithRateLimit(0, 0))
	if err := startZulipCheck(tb); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	addSecret(emulator.DemoBotKey)
	addSecret(emulator.DemoOwnerKey)
	code := m.Run()
	if err := checkLogs(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	if err := zulipCheckResult(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	return code
}

// addSecret records a key or credential that must never appear in a log.
func addSecret(s string) {
	env.mu.Lock()
	defer env.mu.Unlock()
	env.secrets = append(env.secrets, s)
}

func secrets() []string {
	env.mu.Lock()
	defer env.mu.Unlock()
	return append([]string(nil), env.secrets...)
}
