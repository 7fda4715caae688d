package zulip_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/zwop/caddy-zulip-proxy/zulip"
	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

// BenchmarkSendMessage is one send through the client to the emulator
// on loopback: the proxy's hot path, side by side over the client's own
// HTTP/1.1 code ("wire", what a plain-HTTP site gets) and over net/http
// (what https gets, and every site before wire.go). Allocations include
// the emulator's side, which shares the process; see
// BenchmarkSendMessageClientOnly.
func BenchmarkSendMessage(b *testing.B) {
	srv := emulator.NewServer(b, emulator.WithRateLimit(0, 0), emulator.WithMaxMessages(1000), emulator.WithMaxLogEntries(1000))
	general, _ := srv.StreamByName(emulator.DemoStream)
	m := zulip.SendMessage{StreamID: general.ID, Topic: "bench", Content: "scan 42 finished: 1.2 GB written"}
	for _, path := range []struct {
		name string
		rt   http.RoundTripper
	}{
		{"wire", nil},
		{"net-http", &http.Transport{MaxIdleConnsPerHost: 64}},
	} {
		b.Run(path.name, func(b *testing.B) {
			c, err := zulip.NewClient(zulip.Config{Site: srv.URL, Email: emulator.DemoBotEmail, APIKey: emulator.DemoBotKey, Transport: path.rt})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.SendMessage(ctx, m); err != nil {
					b.Fatal(err)
				}
			}
		})
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
