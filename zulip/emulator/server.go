package emulator

import (
	"net/http/httptest"
)

// TB is the part of testing.TB the helpers need; taking an interface
// keeps the testing package out of binaries that embed the emulator.
type TB interface {
	Helper()
	Cleanup(func())
}

// Server is an emulator served over loopback HTTP, for tests.
type Server struct {
	*Emulator
	HTTP *httptest.Server
	// URL is the site base URL, e.g. "http://127.0.0.1:41234"; Zulip's
	// API is at URL + "/api/v1".
	URL string
}

// NewServer starts an emulator on a loopback port (HTTP/1.1, so the
// dropped-connection fault can hijack) and stops it when the test ends.
func NewServer(tb TB, opts ...Option) *Server {
	tb.Helper()
	e := New(opts...)
	ts := httptest.NewServer(e)
	tb.Cleanup(ts.Close)
	return &Server{Emulator: e, HTTP: ts, URL: ts.URL}
}

// NewTLSServer is NewServer over HTTPS with HTTP/2 offered; use
// HTTP.Certificate() (or HTTP.Client()) to trust it.
func NewTLSServer(tb TB, opts ...Option) *Server {
	tb.Helper()
	e := New(opts...)
	ts := httptest.NewUnstartedServer(e)
	ts.EnableHTTP2 = true
	ts.StartTLS()
	tb.Cleanup(ts.Close)
	return &Server{Emulator: e, HTTP: ts, URL: ts.URL}
}
