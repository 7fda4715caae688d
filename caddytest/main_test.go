package caddytest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/caddyserver/caddy/v2/caddytest"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/zwop/caddy-zulip-proxy"
	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

// env is what every test shares: one emulator, one folder for stores and
// logs, and every secret the run handed out, so the last check can prove
// none reached a log.
var env struct {
	dir string
	// emu is the emulated Zulip. Its URL is https, as production Zulip
	// is, with a certificate from the run's own CA (caFile); plainURL
	// reaches the same emulator over plain http.
	emu      *emulator.Server
	caFile   string
	plainURL string
	// overTLS counts the requests Zulip received over https.
	overTLS atomic.Int64
	logFile string
	// httpPort and httpsPort are Caddy's, free ones found at the start.
	httpPort, httpsPort int

	mu      sync.Mutex
	secrets []string
}

// mainTB lets the emulator's test helpers run in TestMain.
type mainTB struct{ cleanups []func() }

func (m *mainTB) Helper()          {}
func (m *mainTB) Cleanup(f func()) { m.cleanups = append(m.cleanups, f) }

func TestMain(m *testing.M) {
	if args := os.Getenv(cliEnv); args != "" {
		// The caddy command of a test's own, in this process.
		os.Args = append([]string{"caddy"}, strings.Split(args, "\x1f")...)
		caddycmd.Main()
		return
	}
	if path := os.Getenv(childEnv); path != "" {
		// A Caddy of a test's own, in this process (queue_process_test.go).
		os.Args = []string{"caddy", "run", "--config", path, "--adapter", "caddyfile"}
		caddycmd.Main()
		return
	}
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
	if err := choosePorts(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
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
	if err := serveZulipOverTLS(tb); err != nil {
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
	if err := apiCheckResult(); err != nil && code == 0 {
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

// serveZulipOverTLS puts the emulator (behind the OpenAPI check, when
// there is one) on https, so the whole suite reaches Zulip as production
// does; plainURL keeps the plain-http way in.
func serveZulipOverTLS(tb *mainTB) error {
	ca, err := newTestCA(env.dir)
	if err != nil {
		return err
	}
	var next http.Handler = env.emu.Emulator
	if zulipCheck.h != nil {
		next = zulipCheck.h
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil {
			env.overTLS.Add(1)
		}
		next.ServeHTTP(w, r)
	})
	ts, err := serveTLS(tb, ca, h)
	if err != nil {
		return err
	}
	env.plainURL, env.emu.URL, env.caFile = env.emu.URL, ts.URL, ca.file
	return nil
}

// choosePorts finds free ports for Caddy's admin endpoint, its http site
// and its https port. The system hands each out and they are closed at
// once: another process could take one in between, which a fixed port
// risks far more.
func choosePorts() error {
	var ports [3]int
	for i := range ports {
		l, err := net.Listen("tcp", "localhost:0")
		if err != nil {
			return fmt.Errorf("finding a free port: %w", err)
		}
		defer l.Close()
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	adminAddr = fmt.Sprintf("localhost:%d", ports[0])
	caddytest.Default.AdminPort = ports[0]
	env.httpPort, env.httpsPort = ports[1], ports[2]
	base = fmt.Sprintf("http://localhost:%d", ports[1])
	return nil
}
