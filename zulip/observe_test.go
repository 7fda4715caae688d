package zulip_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/zwop/caddy-zulip-proxy/zulip"
	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

type ctxMark struct{}

// The observer sees every call, with the caller's context: whether it
// carried the bot's credentials (server_settings does not; a webhook's
// api_key does), Zulip's answer, and, when none came, whether the call
// may have reached Zulip at all.
func TestObserveSeesEveryCall(t *testing.T) {
	srv := emulator.NewServer(t)
	c, err := zulip.NewClient(zulip.Config{Site: srv.URL, Email: emulator.DemoBotEmail, APIKey: emulator.DemoBotKey, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var seen []zulip.Call
	var marks []any
	c.Observe(func(ctx context.Context, call zulip.Call) {
		seen = append(seen, call)
		marks = append(marks, ctx.Value(ctxMark{}))
	})
	ctx := context.WithValue(context.Background(), ctxMark{}, "request 1")
	last := func() zulip.Call {
		t.Helper()
		if len(seen) == 0 {
			t.Fatal("the observer saw nothing")
		}
		if marks[len(marks)-1] != "request 1" {
			t.Errorf("the observer did not get the call's context")
		}
		return seen[len(seen)-1]
	}

	if _, err := c.ServerSettings(ctx); err != nil {
		t.Fatal(err)
	}
	if call := last(); !call.Anonymous || !call.Sent || call.Response == nil || call.Response.Status != 200 {
		t.Errorf("server_settings: %+v", call)
	}
	if _, _, err := c.Me(ctx); err != nil {
		t.Fatal(err)
	}
	if call := last(); call.Anonymous || call.Response == nil {
		t.Errorf("users/me: %+v", call)
	}
	body := `{"action": "completed"}`
	if _, err := c.Webhook(ctx, zulip.WebhookCall{Integration: "github", ContentType: "application/json",
		Body: strings.NewReader(body), ContentLength: int64(len(body))}); err != nil {
		t.Fatal(err)
	}
	if call := last(); call.Anonymous {
		t.Errorf("a webhook's api_key is the bot's credential: %+v", call)
	}

	// Sent, and no answer in time: Zulip may have taken it.
	if err := srv.SetFault(emulator.Fault{Delay: time.Second, Count: 1}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Me(ctx); !errors.Is(err, zulip.ErrTimeout) {
		t.Fatalf("slow Zulip: %v", err)
	}
	if call := last(); call.Response != nil || !call.Sent {
		t.Errorf("timed out: %+v", call)
	}

	// Nothing listens: nothing was sent.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dead, err := zulip.NewClient(zulip.Config{Site: "http://" + addr, Email: emulator.DemoBotEmail, APIKey: emulator.DemoBotKey})
	if err != nil {
		t.Fatal(err)
	}
	dead.Observe(func(ctx context.Context, call zulip.Call) {
		seen = append(seen, call)
		marks = append(marks, ctx.Value(ctxMark{}))
	})
	if _, _, err := dead.Me(ctx); !errors.Is(err, zulip.ErrUnreachable) {
		t.Fatalf("unreachable: %v", err)
	}
	if call := last(); call.Response != nil || call.Sent {
		t.Errorf("unreachable: %+v", call)
	}
}
