package zulip_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/zwop/caddy-zulip-proxy/internal/zulipspec"
	"github.com/zwop/caddy-zulip-proxy/zulip"
	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

// TestOpenAPIValidation runs every client call against the emulator
// through a transport that validates the request the client sends and
// the answer the emulator gives against Zulip's own OpenAPI description
// (zulip.yaml, Zulip 10.2), success and error answers alike. It skips
// when the file is missing, and fails then if ZULIP_OPENAPI_REQUIRED=1,
// as CI sets. The exceptions made for places where the description is
// narrower than real Zulip are listed, with reasons, in
// internal/zulipspec/exceptions.go; webhooks (/external/...) are not
// described at all, so only the other calls are checked.
func TestOpenAPIValidation(t *testing.T) {
	zulipspec.Load(t) // skip or fail here, with the message saying where the file goes
	srv := emulator.NewServer(t)
	c, v := client(t, srv)
	if v == nil {
		t.Fatal("no validating transport although the description loaded")
	}
	bad := func(t *testing.T) (*zulip.Client, checker) {
		return clientAs(t, srv, emulator.DemoBotEmail, strings.Repeat("x", 32))
	}
	openAPICalls(t, srv, c, v, bad)
}

// TestOpenAPIValidationOnTheWire runs the same calls through the client's
// own transport to a Zulip on https with HTTP/2 offered, as production
// reaches Zulip, and validates each request as the emulator received it.
func TestOpenAPIValidationOnTheWire(t *testing.T) {
	spec := zulipspec.Load(t)
	srv := emulator.NewServer(t)
	h := &zulipspec.Handler{Spec: spec, Next: srv.Emulator, Errorf: t.Errorf}
	front := httptest.NewUnstartedServer(h)
	front.EnableHTTP2 = true
	front.StartTLS()
	t.Cleanup(front.Close)
	roots := x509.NewCertPool()
	roots.AddCert(front.Certificate())
	tlsCfg := &tls.Config{RootCAs: roots}
	c, err := zulip.NewClient(zulip.Config{Site: front.URL, Email: emulator.DemoBotEmail, APIKey: emulator.DemoBotKey, TLSClientConfig: tlsCfg})
	if err != nil {
		t.Fatal(err)
	}
	bad := func(t *testing.T) (*zulip.Client, checker) {
		b, err := zulip.NewClient(zulip.Config{Site: front.URL, Email: emulator.DemoBotEmail, APIKey: strings.Repeat("x", 32), TLSClientConfig: tlsCfg})
		if err != nil {
			t.Fatal(err)
		}
		return b, &countFrom{h: h, base: h.CheckedCount()}
	}
	openAPICalls(t, srv, c, h, bad)
	if h.Seen() < 20 {
		t.Errorf("the validating front saw %d requests", h.Seen())
	}
}

type checker interface{ CheckedCount() int }

// countFrom counts a shared checker's answers from a starting point.
type countFrom struct {
	h    checker
	base int
}

func (c *countFrom) CheckedCount() int { return c.h.CheckedCount() - c.base }

// openAPICalls makes every client call against srv (through c) and
// expects v to have checked each answer against a documented schema.
func openAPICalls(t *testing.T, srv *emulator.Server, c *zulip.Client, v checker, badClient func(*testing.T) (*zulip.Client, checker)) {
	ctx := context.Background()
	general := streamID(t, srv, emulator.DemoStream)
	first := send(t, c, zulip.SendMessage{StreamID: general, Topic: "t", Content: "hello"})
	bot, _ := srv.UserByEmail(emulator.DemoBotEmail)

	calls := []struct {
		name string
		call func() error
	}{
		{"send", func() error {
			_, err := c.SendMessage(ctx, zulip.SendMessage{StreamID: general, Topic: "t", Content: "x"})
			return err
		}},
		{"send to a missing stream id", func() error {
			_, err := c.SendMessage(ctx, zulip.SendMessage{StreamID: 9999, Topic: "t", Content: "x"})
			return wantZulipError(err, "STREAM_DOES_NOT_EXIST")
		}},
		{"send empty content", func() error {
			_, err := c.SendMessage(ctx, zulip.SendMessage{StreamID: general, Topic: "t", Content: "  "})
			return wantZulipError(err, "BAD_REQUEST")
		}},
		{"upload", func() error {
			_, err := c.UploadFile(ctx, "a.txt", "text/plain", strings.NewReader("data"))
			return err
		}},
		{"get stream id", func() error { _, _, err := c.GetStreamID(ctx, emulator.DemoStream); return err }},
		{"get missing stream id", func() error {
			_, _, err := c.GetStreamID(ctx, "nope")
			return wantZulipError(err, "BAD_REQUEST")
		}},
		{"topics", func() error { _, err := c.StreamTopicsWith(ctx, general, zulip.ReadOptions{}); return err }},
		{"topics of a missing stream", func() error {
			_, err := c.StreamTopicsWith(ctx, 9999, zulip.ReadOptions{})
			return wantZulipError(err, "BAD_REQUEST")
		}},
		{"get message", func() error { _, _, err := c.GetMessage(ctx, first.ID); return err }},
		{"get missing message", func() error {
			_, _, err := c.GetMessage(ctx, 9999)
			return wantZulipError(err, "BAD_REQUEST")
		}},
		{"get messages", func() error {
			_, err := c.GetMessages(ctx, zulip.GetMessages{NumBefore: 10, Narrow: []zulip.NarrowTerm{
				{Operator: "channel", Operand: general}, {Operator: "sender", Operand: bot.ID}, {Operator: "topic", Operand: "t"}}})
			return err
		}},
		{"get messages, raw markdown", func() error {
			_, err := c.GetMessages(ctx, zulip.GetMessages{Anchor: "oldest", NumAfter: 5, ReadOptions: zulip.ReadOptions{ApplyMarkdown: ptr(false)}})
			return err
		}},
		{"get messages, unknown channel", func() error {
			_, err := c.GetMessages(ctx, zulip.GetMessages{Narrow: []zulip.NarrowTerm{{Operator: "channel", Operand: "nope"}}})
			return wantZulipError(err, "BAD_NARROW")
		}},
		{"update topic", func() error {
			_, err := c.UpdateMessage(ctx, first.ID, zulip.UpdateMessage{Topic: ptr("t2"), PropagateMode: "change_all"})
			return err
		}},
		{"update content", func() error {
			_, err := c.UpdateMessage(ctx, first.ID, zulip.UpdateMessage{Content: ptr("edited")})
			return err
		}},
		{"update nothing", func() error {
			_, err := c.UpdateMessage(ctx, first.ID, zulip.UpdateMessage{})
			return wantZulipError(err, "BAD_REQUEST")
		}},
		{"me", func() error { _, _, err := c.Me(ctx); return err }},
		{"server settings", func() error { _, err := c.ServerSettings(ctx); return err }},
	}
	for _, tt := range calls {
		t.Run(tt.name, func(t *testing.T) {
			before := v.CheckedCount()
			if err := tt.call(); err != nil {
				t.Fatal(err)
			}
			if v.CheckedCount() != before+1 {
				t.Error("the answer was not checked against a documented schema")
			}
		})
	}

	// Errors every endpoint can give, checked against the components.
	t.Run("401", func(t *testing.T) {
		bad, v := badClient(t)
		_, _, err := bad.Me(ctx)
		if err := wantZulipError(err, "UNAUTHORIZED"); err != nil {
			t.Fatal(err)
		}
		if v.CheckedCount() != 1 {
			t.Error("the 401 was not checked")
		}
	})
	t.Run("429", func(t *testing.T) {
		if err := srv.SetFault(emulator.Fault{RateLimited: true, Count: 1}); err != nil {
			t.Fatal(err)
		}
		before := v.CheckedCount()
		_, _, err := c.Me(ctx)
		if err := wantZulipError(err, "RATE_LIMIT_HIT"); err != nil {
			t.Fatal(err)
		}
		if v.CheckedCount() != before+1 {
			t.Error("the 429 was not checked")
		}
	})
	t.Run("webhook is not described", func(t *testing.T) {
		_, err := c.Webhook(ctx, zulip.WebhookCall{Integration: "github", Query: url.Values{"stream": {emulator.DemoStream}}})
		if err != nil {
			t.Fatal(err)
		}
	})
}

func wantZulipError(err error, code string) error {
	ze, ok := err.(*zulip.Error)
	if !ok {
		return &unexpected{err: err, want: code}
	}
	if ze.Code != code {
		return &unexpected{err: err, want: code}
	}
	return nil
}

type unexpected struct {
	err  error
	want string
}

func (u *unexpected) Error() string {
	if u.err == nil {
		return "no error, want Zulip error " + u.want
	}
	return "got " + u.err.Error() + ", want Zulip error " + u.want
}
