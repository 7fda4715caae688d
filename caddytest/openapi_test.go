package caddytest

import (
	"fmt"
	"net/http/httptest"
	"os"
	"strings"
	"sync"

	"github.com/zwop/caddy-zulip-proxy/internal/zulipspec"
)

// zulipCheck puts a front before the shared emulator that validates every
// request the proxy sends to Zulip, and every answer, against Zulip's
// OpenAPI description, for the whole run: what the proxy builds from a
// bot's call is checked the way it left the proxy.
var zulipCheck struct {
	h      *zulipspec.Handler
	mu     sync.Mutex
	errors []string
}

// startZulipCheck wraps env.emu. Without zulip.yaml it says so and does
// nothing, unless ZULIP_OPENAPI_REQUIRED=1 (CI), which makes it an error.
func startZulipCheck(tb *mainTB) error {
	path, err := zulipspec.Find()
	if err != nil {
		if os.Getenv("ZULIP_OPENAPI_REQUIRED") == "1" {
			return fmt.Errorf("%s: %w", zulipspec.MissingMarker, err)
		}
		fmt.Fprintf(os.Stderr, "caddytest: requests to Zulip not checked against its OpenAPI description: %v\n", err)
		return nil
	}
	spec, err := zulipspec.LoadFile(path)
	if err != nil {
		return err
	}
	zulipCheck.h = &zulipspec.Handler{Spec: spec, Next: env.emu.Emulator, Errorf: func(format string, args ...any) {
		zulipCheck.mu.Lock()
		defer zulipCheck.mu.Unlock()
		zulipCheck.errors = append(zulipCheck.errors, fmt.Sprintf(format, args...))
	}}
	front := httptest.NewServer(zulipCheck.h)
	tb.Cleanup(front.Close)
	env.emu.URL = front.URL
	return nil
}

// zulipCheckResult fails the run if anything sent to Zulip, or answered,
// did not match the description.
func zulipCheckResult() error {
	if zulipCheck.h == nil {
		return nil
	}
	zulipCheck.mu.Lock()
	defer zulipCheck.mu.Unlock()
	if len(zulipCheck.errors) > 0 {
		return fmt.Errorf("%d exchanges with Zulip do not match its OpenAPI description:\n%s",
			len(zulipCheck.errors), strings.Join(zulipCheck.errors, "\n"))
	}
	fmt.Fprintf(os.Stderr, "caddytest: %d requests to Zulip checked against its OpenAPI description, %d answers against a documented schema\n",
		zulipCheck.h.Seen(), zulipCheck.h.CheckedCount())
	return nil
}
