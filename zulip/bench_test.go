package zulip_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"testing"

	"github.com/zwop/caddy-zulip-proxy/zulip"
	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

// BenchmarkSendMessage is one send through the client to the emulator
// on loopback: the proxy's hot path, side by side over plain HTTP/1.1,
// TLS with HTTP/1.1 keep-alive, and TLS with HTTP/2 (what a real Zulip
// offers), each serial and with 32 calls in parallel. Allocations include
// the emulator's side, which shares the process; see
// BenchmarkSendMessageClientOnly.
func BenchmarkSendMessage(b *testing.B) {
	opts := []emulator.Option{emulator.WithRateLimit(0, 0), emulator.WithMaxMessages(1000), emulator.WithMaxLogEntries(1000)}
	plain := emulator.NewServer(b, opts...)
	secure := emulator.NewTLSServer(b, opts...)
	general, _ := plain.StreamByName(emulator.DemoStream)
	m := zulip.SendMessage{StreamID: general.ID, Topic: "bench", Content: "scan 42 finished: 1.2 GB written"}
	roots := x509.NewCertPool()
	roots.AddCert(secure.HTTP.Certificate())
	for _, path := range []struct {
		name  string
		site  string
		http1 bool
	}{
		{"http", plain.URL, true},
		{"https-http1", secure.URL, true},
		{"https-http2", secure.URL, false},
	} {
		c, err := zulip.NewClient(zulip.Config{Site: path.site, Email: emulator.DemoBotEmail, APIKey: emulator.DemoBotKey,
			HTTP2: !path.http1, TLSClientConfig: &tls.Config{RootCAs: roots}})
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		b.Run(path.name+"/serial", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.SendMessage(ctx, m); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(path.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(16) // 32 callers on 2 cores
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := c.SendMessage(ctx, m); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
		c.CloseIdleConnections()
	}
}

// BenchmarkSendMessageClientOnly measures the client's own share: the
// same call against a canned answer, without the emulator's work.
func BenchmarkSendMessageClientOnly(b *testing.B) {
	c, err := zulip.NewClient(zulip.Config{Site: "http://zulip.invalid", Email: emulator.DemoBotEmail, APIKey: emulator.DemoBotKey,
		Transport: cannedTransport{}})
	if err != nil {
		b.Fatal(err)
	}
	m := zulip.SendMessage{StreamID: 1, Topic: "bench", Content: "scan 42 finished: 1.2 GB written"}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.SendMessage(ctx, m); err != nil {
			b.Fatal(err)
		}
	}
}
