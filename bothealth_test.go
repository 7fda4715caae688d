package zulipproxy

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/zwop/caddy-zulip-proxy/zulip"
)

func TestRecheckAfter(t *testing.T) {
	want := []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}
	for i, w := range want {
		if got := recheckAfter(i + 1); got != w {
			t.Errorf("after %d bad checks: %v, want %v", i+1, got, w)
		}
	}
}

// What the answer to GET /users/me says of a bot: only a 401 is its
// credentials; any other answer in Zulip's JSON is a Zulip that takes
// them; a page that is not Zulip's, a timeout or no connection is a site
// that cannot be reached. The reason never repeats what the site sent.
func TestStateOf(t *testing.T) {
	cases := []struct {
		err  error
		want botState
	}{
		{nil, botOK},
		{&zulip.Error{Status: http.StatusUnauthorized, Code: "UNAUTHORIZED", Msg: "Invalid API key"}, botRejected},
		{&zulip.Error{Status: http.StatusTooManyRequests, Code: "RATE_LIMIT_HIT"}, botOK},
		{&zulip.BadResponseError{Status: http.StatusNotFound, Reason: "not JSON: <html>secret?token=1"}, botUnreachable},
		{fmt.Errorf("GET /users/me: %w", zulip.ErrTimeout), botUnreachable},
		{fmt.Errorf("GET /users/me: %w", zulip.ErrUnreachable), botUnreachable},
	}
	for _, c := range cases {
		got, reason := stateOf(c.err)
		if got != c.want {
			t.Errorf("%v: %s, want %s", c.err, got, c.want)
		}
		if got != botOK && (reason == "" || len(reason) > 80 || strings.Contains(reason, "secret") || strings.Contains(reason, "Invalid API key")) {
			t.Errorf("%v: reason %q", c.err, reason)
		}
	}
}

// A bot's state changes are logged once each: turning bad (an error for
// refused credentials, a warning for an unreachable site, naming the bot
// and its site), and well again (with how long it was bad); the same bad
// state found again by a re-check is not logged again.
func TestBotHealthLogsChanges(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	bh := newBotHealth("beamline", "https://zulip.example.com")
	bh.logger.Store(zap.New(core))
	t0 := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)

	bh.set(botOK, "", t0)
	bh.set(botUnreachable, "Zulip did not answer in time", t0.Add(time.Minute))
	bh.set(botUnreachable, "Zulip did not answer in time", t0.Add(2*time.Minute))
	v := bh.view()
	if v.State != botUnreachable || v.Since == nil || !v.Since.Equal(t0.Add(time.Minute)) || v.Reason == "" {
		t.Errorf("view while unreachable: %+v", v)
	}
	bh.set(botRejected, "Zulip answered 401 to the bot's email and api_key", t0.Add(3*time.Minute))
	bh.set(botOK, "", t0.Add(5*time.Minute))
	if v := bh.view(); v.State != botOK || v.Since != nil || v.Reason != "" {
		t.Errorf("view when well: %+v", v)
	}

	var got []string
	for _, e := range logs.All() {
		f := e.ContextMap()
		if f["bot"] != "beamline" || f["site"] != "https://zulip.example.com" {
			t.Errorf("%q does not name the bot and its site: %v", e.Message, f)
		}
		got = append(got, e.Level.String()+" "+fmt.Sprint(f["was"], " ", f["for"]))
	}
	want := []string{"warn <nil> <nil>", "error <nil> <nil>", "info credentials_rejected 2m0s"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("log lines %v, want %v", got, want)
	}
}

// Calls the bot makes between checks tell: a 401 turns it bad at once;
// an answer in Zulip's JSON turns it well; a call that got no answer
// wakes its checker; anonymous calls say nothing of its credentials.
func TestBotHealthObservesCalls(t *testing.T) {
	bh := newBotHealth("b", "https://zulip.example.com")
	now := time.Now()
	json := http.Header{"Content-Type": {"application/json"}}
	bh.observe(zulip.Call{Anonymous: true, Sent: true, Response: &zulip.Response{Status: 401, Header: json}}, now)
	if s := bh.view().State; s != botChecking {
		t.Errorf("after an anonymous 401: %s", s)
	}
	bh.observe(zulip.Call{Sent: true, Response: &zulip.Response{Status: 401, Header: json}}, now)
	if s := bh.view().State; s != botRejected {
		t.Errorf("after a 401 to the bot: %s", s)
	}
	bh.observe(zulip.Call{Sent: true, Response: &zulip.Response{Status: 400, Header: json}}, now)
	if s := bh.view().State; s != botOK {
		t.Errorf("after Zulip's JSON 400: %s", s)
	}
	bh.observe(zulip.Call{Sent: true, Response: &zulip.Response{Status: 502, Header: http.Header{"Content-Type": {"text/html"}}}}, now)
	if s := bh.view().State; s != botOK {
		t.Errorf("one failing call turned the bot bad without a check: %s", s)
	}

	// A started checker is woken by a call that got no answer.
	checks := make(chan struct{}, 4)
	bh.check = func(context.Context) (botState, string) {
		checks <- struct{}{}
		return botOK, ""
	}
	bh.checkSoon(nil)
	defer bh.close()
	<-checks // the first check
	bh.observe(zulip.Call{Sent: false}, now)
	select {
	case <-checks:
	case <-time.After(10 * time.Second):
		t.Error("a call that got no answer did not have the bot checked")
	}
}
