package zulip

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

// Connection settings for calls to Zulip. Every one is net/http's own
// machinery, tuned for a proxy that sends many small calls to one host.
const (
	// idleConnTimeout stays below the keep-alive timeout of Zulip's
	// nginx (75 s), so the proxy drops an idle connection before Zulip
	// closes it, and a call never goes out on a connection Zulip is
	// closing at that moment.
	idleConnTimeout = 60 * time.Second
	// maxIdlePerHost keeps enough connections for a busy proxy over
	// HTTP/1.1, where each call in flight holds one; HTTP/2 needs one.
	maxIdlePerHost = 256
	// maxResponseHeaderBytes bounds an answer's headers: Zulip's are
	// well under 2 KiB, and net/http's default of 1 MiB is far more than
	// a broken upstream should make the proxy hold.
	maxResponseHeaderBytes = 64 << 10
	// h2PingAfter and h2PingTimeout find an HTTP/2 connection that died
	// without a FIN (a NAT that forgot it, a Zulip host that vanished):
	// without a ping, every call on it would wait for its own timeout.
	h2PingAfter   = 30 * time.Second
	h2PingTimeout = 10 * time.Second
	// bufferBytes sizes each HTTP/1.1 connection's buffers: an upload
	// streams through them, and 32 KiB (eight times the default) cuts the
	// system calls of a 25 MiB upload by the same factor.
	bufferBytes = 32 << 10
	// tlsSessions is the size of the TLS session cache: resumed
	// handshakes after a connection was dropped save a round trip and
	// the certificate check.
	tlsSessions = 64
)

// newTransport builds the client's connection pool. Calls go over
// HTTP/1.1 keep-alive connections unless cfg.HTTP2 says otherwise:
// measured to a Zulip that offers HTTP/2, HTTP/1.1 took 0.5 to 0.7 of the
// CPU per call (bench/README.md), and with up to 256 idle connections
// kept, multiplexing saves no handshakes under a steady load.
func newTransport(cfg Config) (*http.Transport, error) {
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.TLSClientConfig != nil {
		tlsCfg = cfg.TLSClientConfig.Clone()
	}
	if tlsCfg.ClientSessionCache == nil {
		tlsCfg.ClientSessionCache = tls.NewLRUClientSessionCache(tlsSessions)
	}
	if cfg.CertBundle != "" {
		pool, err := loadCertBundle(cfg.CertBundle)
		if err != nil {
			return nil, err
		}
		tlsCfg.RootCAs = pool
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	t := &http.Transport{
		Proxy:                  http.ProxyFromEnvironment,
		DialContext:            dialer.DialContext,
		TLSClientConfig:        tlsCfg,
		ForceAttemptHTTP2:      cfg.HTTP2,
		MaxIdleConns:           2 * maxIdlePerHost,
		MaxIdleConnsPerHost:    maxIdlePerHost,
		IdleConnTimeout:        idleConnTimeout,
		TLSHandshakeTimeout:    10 * time.Second,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: maxResponseHeaderBytes,
		// Zulip's answers are small JSON, and the proxy passes them on
		// as they are: asking for gzip would cost a decompression per
		// call for bytes that mostly cross a local network.
		DisableCompression: true,
		WriteBufferSize:    bufferBytes,
		ReadBufferSize:     bufferBytes,
		HTTP2: &http.HTTP2Config{
			SendPingTimeout: h2PingAfter,
			PingTimeout:     h2PingTimeout,
		},
	}
	if !cfg.HTTP2 {
		var p http.Protocols
		p.SetHTTP1(true)
		t.Protocols = &p
	}
	// Bounds the wait for Zulip's answer once the whole request is sent,
	// so a long upload from a slow client is not counted against Zulip.
	t.ResponseHeaderTimeout = cfg.Timeout
	return t, nil
}

// loadCertBundle reads the PEM certificates a private Zulip's chain ends
// in; they replace the system's roots for this site only.
func loadCertBundle(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading cert_bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("cert_bundle " + path + ": no PEM certificate in it")
	}
	return pool, nil
}
