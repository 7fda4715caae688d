package caddytest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

// botSite is a second proxy site on port, sharing the run's key store,
// whose only bot is name at Zulip site (over TLS with ca, when given).
func botSite(port int, name, site, ca, apiKey, store string) string {
	bundle := ""
	if ca != "" {
		bundle = "cert_bundle " + ca
	}
	return fmt.Sprintf(`
http://127.0.0.1:%d {
	zulip_proxy {
		bot %s {
			site %s
			email %s
			api_key %s
			%s
		}
		store %s
		access_log_filtered
	}
}`, port, name, site, emulator.DemoBotEmail, apiKey, bundle, store)
}

// healthOfPort reads /health of the site at port.
func healthOfPort(t *testing.T, port int) (int, map[string]any) {
	t.Helper()
	resp, err := fresh.Get(fmt.Sprintf("http://127.0.0.1:%d/health", port))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("/health: %s", raw)
	}
	return resp.StatusCode, m
}

// botState is a bot's state in a /health body.
func botState(m map[string]any, bot string) map[string]any {
	bots, _ := m["bots"].(map[string]any)
	s, _ := bots[bot].(map[string]any)
	return s
}

// botLogLines counts the run's log lines about bot whose message starts
// with msg.
func botLogLines(t *testing.T, bot, msg string) int {
	t.Helper()
	n, _ := logLines(t, msg, "bot", bot)
	return n
}

// A bot whose key Zulip refuses: Caddy starts, /health stays 200 and says
// credentials_rejected, the metric says 0, one error line names the bot
// and its site, and a script with a valid scoped key gets 502 saying the
// proxy's credentials were refused, not a 401 that reads like its own
// key failing.
func TestBotWithRefusedCredentials(t *testing.T) {
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	const wrong = "wrongbotkey0123456789abcdefghijk"
	addSecret(wrong)
	// From the environment, as the README says: Caddy logs a config's
	// literal values.
	t.Setenv("ZWOP_TEST_WRONG_KEY", wrong)
	port := freePort(t)
	start(t, config{store: store, sites: botSite(port, "refused", env.emu.URL, env.caFile, "{env.ZWOP_TEST_WRONG_KEY}", store)})

	var m map[string]any
	eventually(t, 20*time.Second, "/health says the bot's credentials are refused", func() bool {
		var st int
		st, m = healthOfPort(t, port)
		if st != http.StatusOK {
			t.Fatalf("/health %d %v: the proxy can still serve", st, m)
		}
		return botState(m, "refused")["state"] == "credentials_rejected"
	})
	if m["status"] != "degraded" || !strings.Contains(fmt.Sprint(m["msg"]), `bot "refused"`) || botState(m, "refused")["since"] == nil {
		t.Errorf("/health body: %v", m)
	}
	eventually(t, 20*time.Second, "the main site's bot is ok", func() bool {
		st, main := healthOf(t)
		return st == 200 && botState(main, "default")["state"] == "ok"
	})
	if v := metricValue(t, metricsText(t), `caddy_zulip_proxy_bot_up{bot="refused"}`); v != 0 {
		t.Errorf("bot_up %v, want 0", v)
	}
	if !logHas(t, `"level":"error"`, `"bot":"refused"`, `"site":"`+env.emu.URL+`"`, "refuses the bot's credentials") {
		t.Error("no error line naming the bot and its site")
	}

	r := sendAt(t, port, key, "refused", "hello")
	var e map[string]any
	_ = json.Unmarshal([]byte(r.Body), &e)
	if r.Status != http.StatusBadGateway || e["code"] != "BOT_CREDENTIALS_REJECTED" ||
		!strings.Contains(fmt.Sprint(e["msg"]), "refused the proxy's credentials for bot 'refused'") ||
		!strings.Contains(fmt.Sprint(e["msg"]), "not your key") || r.Header.Get("WWW-Authenticate") != "" {
		t.Errorf("a send with a valid key through a refused bot: %d %s", r.Status, r.Body)
	}
	if n := botLogLines(t, "refused", "Zulip refuses the bot's credentials"); n != 1 {
		t.Errorf("%d error lines for the refused bot, want one (when it turned bad)", n)
	}
}

// A bot whose Zulip is down when Caddy starts, and one whose site
// listens nowhere: Caddy starts all the same, /health stays 200 and says
// unreachable since when, with one warning each; when the Zulip is up
// again the re-check finds it, and one line says so.
func TestBotUnreachableThenWell(t *testing.T) {
	store := newStore(t)
	own, o := limitedZulip(t, 1000, time.Minute, store)
	if err := own.SetFault(emulator.Fault{Status: http.StatusBadGateway}); err != nil {
		t.Fatal(err)
	}
	downPort, nowherePort := freePort(t), freePort(t)
	start(t, config{store: store, sites: botSite(downPort, "down", o.site, o.certBundle, "{env."+botKeyEnv+"}", store) +
		botSite(nowherePort, "nowhere", fmt.Sprintf("http://127.0.0.1:%d", freePort(t)), "", "{env."+botKeyEnv+"}", store)})

	for port, bot := range map[int]string{downPort: "down", nowherePort: "nowhere"} {
		var m map[string]any
		eventually(t, 20*time.Second, bot+": /health says unreachable", func() bool {
			var st int
			st, m = healthOfPort(t, port)
			if st != http.StatusOK {
				t.Fatalf("/health %d %v", st, m)
			}
			return botState(m, bot)["state"] == "unreachable"
		})
		s := botState(m, bot)
		since, _ := time.Parse(time.RFC3339, fmt.Sprint(s["since"]))
		if m["status"] != "degraded" || since.IsZero() || time.Since(since) > time.Minute || s["reason"] == "" {
			t.Errorf("%s: /health body %v", bot, m)
		}
		if !logHas(t, `"level":"warn"`, `"bot":"`+bot+`"`, "cannot be reached") {
			t.Errorf("%s: no warning naming the bot", bot)
		}
	}
	if v := metricValue(t, metricsText(t), `caddy_zulip_proxy_bot_up{bot="down"}`); v != 0 {
		t.Errorf("bot_up %v while down", v)
	}

	own.ClearFault()
	eventually(t, 40*time.Second, "the re-check finds the Zulip up again", func() bool {
		_, m := healthOfPort(t, downPort)
		return botState(m, "down")["state"] == "ok"
	})
	if v := metricValue(t, metricsText(t), `caddy_zulip_proxy_bot_up{bot="down"}`); v != 1 {
		t.Errorf("bot_up %v when well again", v)
	}
	eventually(t, 5*time.Second, "a line says the bot is well again", func() bool {
		return botLogLines(t, "down", "the bot's Zulip answers again") == 1
	})
	if n := botLogLines(t, "down", "the bot's Zulip cannot be reached"); n != 1 {
		t.Errorf("%d warnings for the bot that was down, want one however often it was re-checked", n)
	}
	if st, m := healthOfPort(t, nowherePort); st != 200 || botState(m, "nowhere")["state"] != "unreachable" {
		t.Errorf("the bot whose site listens nowhere: %d %v", st, m)
	}
}
