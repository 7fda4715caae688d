package caddytest

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

// zulipDown makes the run's Zulip answer 502 to every call until the test
// ends or zulipUp, as a Zulip being upgraded does (its nginx's page).
func zulipDown(t *testing.T) {
	t.Helper()
	if err := env.emu.SetFault(emulator.Fault{Status: http.StatusBadGateway}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.emu.ClearFault)
}

func zulipUp() { env.emu.ClearFault() }

// sendTo posts content to topic with key; more headers follow.
func sendTo(t *testing.T, key, topic, content string, more ...string) reply {
	t.Helper()
	body, ct := form("content", content)
	return request(t, "POST", "/send_message?topic="+topic, body, append([]string{withKey(key), ct}, more...)...)
}

// assertQueued checks a 202 as SPEC.md gives it and returns the queue id.
func assertQueued(t *testing.T, r reply, prefix string, asked bool) string {
	t.Helper()
	if r.Status != http.StatusAccepted {
		t.Fatalf("want 202, got %d %s", r.Status, r.Body)
	}
	m := r.JSON(t)
	id, _ := m["queue_id"].(string)
	if m["result"] != "success" || m["queued"] != true || id == "" || m["msg"] != "" {
		t.Errorf("202 body: %s", r.Body)
	}
	if loc := r.Header.Get("Location"); loc != prefix+"/queue/"+id {
		t.Errorf("Location %q, want %q", loc, prefix+"/queue/"+id)
	}
	if got := r.Header.Get("Preference-Applied"); (got == "respond-async") != asked || (got != "" && got != "respond-async") {
		t.Errorf("Preference-Applied %q when the request asked: %v", got, asked)
	}
	return id
}

// queuedSend reads GET /queue/{id} as key.
func queuedSend(t *testing.T, key, id string) (int, map[string]any) {
	t.Helper()
	r := request(t, "GET", "/queue/"+id, nil, withKey(key))
	if r.Status != 200 {
		return r.Status, nil
	}
	return r.Status, r.JSON(t)
}

// queueOf lists GET /queue as key.
func queueOf(t *testing.T, key string) []map[string]any {
	t.Helper()
	r := request(t, "GET", "/queue", nil, withKey(key))
	if r.Status != 200 {
		t.Fatalf("GET /queue: %d %s", r.Status, r.Body)
	}
	var out []map[string]any
	for _, s := range r.JSON(t)["sends"].([]any) {
		out = append(out, s.(map[string]any))
	}
	return out
}

// messagesWith are Zulip's messages whose content starts with prefix, in
// the order Zulip took them.
func messagesWith(prefix string) []emulator.Message {
	var out []emulator.Message
	for _, m := range env.emu.Messages() {
		if strings.HasPrefix(m.Content, prefix) {
			out = append(out, m)
		}
	}
	return out
}

func metricsText(t *testing.T) string {
	t.Helper()
	resp, err := http.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return string(raw)
}

func metricValue(t *testing.T, text, series string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("/metrics lacks %s", series)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// Zulip down; 200 sends from 4 keys (two created with --queued, two
// asking Prefer: respond-async) are queued; Zulip up: every send lands
// once, each key's in the order it made them.
func TestQueuedSendsSurviveAnOutage(t *testing.T) {
	store := newStore(t)
	var keys []string
	for i := range 4 {
		var more []string
		if i < 2 {
			more = []string{"--queued"}
		}
		k, _ := scopedKey(t, store, "general", more...)
		keys = append(keys, k)
	}
	start(t, config{store: store})
	delivered := metricValue(t, metricsText(t), "caddy_zulip_proxy_queue_delivered_total")
	zulipDown(t)

	const per = 50
	ids := make([][]string, len(keys))
	var wg sync.WaitGroup
	for k, key := range keys {
		wg.Go(func() {
			var more []string
			if k >= 2 {
				more = []string{"Prefer: respond-async, wait=5"}
			}
			for i := range per {
				r := sendTo(t, key, fmt.Sprintf("outage-%d", k), fmt.Sprintf("outage k%d #%03d", k, i), more...)
				ids[k] = append(ids[k], assertQueued(t, r, "", k >= 2))
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if q := queueOf(t, keys[0]); len(q) != per || q[0]["state"] != "queued" || q[0]["queue_id"] != ids[0][0] {
		t.Fatalf("the first key's queue during the outage: %d sends, first %v", len(q), q[0])
	}
	text := metricsText(t)
	if n := metricValue(t, text, `caddy_zulip_proxy_queue_sends{store="`+store+`"}`); n != 4*per {
		t.Errorf("queue_sends %v, want %d", n, 4*per)
	}
	if age := metricValue(t, text, `caddy_zulip_proxy_queue_oldest_age_seconds{store="`+store+`"}`); age <= 0 {
		t.Errorf("oldest queued age %v", age)
	}
	if len(messagesWith("outage ")) != 0 {
		t.Fatal("a send reached Zulip while it was down")
	}

	zulipUp()
	eventually(t, 2*time.Minute, "all 200 delivered", func() bool { return len(messagesWith("outage ")) >= 4*per })
	time.Sleep(200 * time.Millisecond) // a duplicate would come now
	msgs := messagesWith("outage ")
	if len(msgs) != 4*per {
		t.Fatalf("Zulip holds %d messages, want %d", len(msgs), 4*per)
	}
	for k := range keys {
		var got []string
		for _, m := range msgs {
			if m.Topic == fmt.Sprintf("outage-%d", k) {
				got = append(got, m.Content)
			}
		}
		for i := range per {
			if want := fmt.Sprintf("outage k%d #%03d", k, i); i >= len(got) || got[i] != want {
				t.Fatalf("key %d: message %d is %q, want %q (order kept, each once)", k, i, got[min(i, len(got)-1)], want)
			}
		}
	}
	st, s := queuedSend(t, keys[3], ids[3][7])
	if st != 200 || s["state"] != "delivered" || s["message_id"] == nil || s["attempts"].(float64) < 1 {
		t.Errorf("GET /queue/{id} after delivery: %d %v", st, s)
	}
	if q := queueOf(t, keys[1]); len(q) != 0 {
		t.Errorf("a key's queue after delivery: %v", q)
	}
	text = metricsText(t)
	if n := metricValue(t, text, "caddy_zulip_proxy_queue_delivered_total") - delivered; n != 4*per {
		t.Errorf("delivered_total grew by %v, want %d", n, 4*per)
	}
	if n := metricValue(t, text, `caddy_zulip_proxy_queue_sends{store="`+store+`"}`); n != 0 {
		t.Errorf("queue_sends %v after delivery", n)
	}
	if !logHas(t, `"msg":"queued send delivered"`, `"queue_id":"`+ids[2][0]+`"`) {
		t.Error("no log line for a delivered queued send")
	}
}

// logHas says whether a line of the run's log has every part.
func logHas(t *testing.T, parts ...string) bool {
	t.Helper()
	raw, err := readLog()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(raw, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}

// The queue's endpoints and its bounds: another key's queue id is a 404,
// the Zulip API's sends queue too, a send over a bound is a 503 with
// nothing stored, a send not delivered can be cancelled, an admin sees a
// key's queue, and a retry with an Idempotency-Key gets the same queue id.
func TestQueueEndpointsAndBounds(t *testing.T) {
	store := newStore(t)
	key, keyID := scopedKey(t, store, "general", "--queued")
	other, _ := scopedKey(t, store, "general")
	admin, _ := adminKey(t, store)
	start(t, config{store: store, extra: "queue {\n\t\t\tmax_per_key 4\n\t\t}"})
	zulipDown(t)

	first := assertQueued(t, sendTo(t, key, "endpoints", "ep one"), "", false)
	if st, _ := queuedSend(t, other, first); st != 404 {
		t.Errorf("another key's queue id: %d", st)
	}
	if st, _ := queuedSend(t, key, first+"0"); st != 404 {
		t.Errorf("a queue id that never was: %d", st)
	}
	st, s := queuedSend(t, key, first)
	if st != 200 || s["state"] != "queued" || s["attempts"].(float64) < 1 || s["next_attempt_at"] == nil || s["queued_at"] == nil {
		t.Errorf("GET /queue/{id}: %d %v", st, s)
	}
	if st, s := queuedSend(t, admin, first); st != 200 || s["queue_id"] != first {
		t.Errorf("an admin's GET /queue/{id}: %d %v", st, s)
	}
	// Under /api, and through Zulip's own API with HTTP Basic.
	body, ct := form("content", "ep two")
	second := assertQueued(t, request(t, "POST", "/api/send_message?topic=endpoints", body, withKey(key), ct), "/api", false)
	zbody, zct := form("type", "stream", "to", "general", "topic", "endpoints", "content", "ep three")
	req, _ := http.NewRequest("POST", base+"/api/v1/messages", zbody)
	req.Header.Set("Content-Type", strings.TrimPrefix(zct, "Content-Type: "))
	req.SetBasicAuth("script@example.org", key)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	third := assertQueued(t, reply{Status: resp.StatusCode, Header: resp.Header, Body: string(raw)}, "/api", false)
	req, _ = http.NewRequest("GET", base+resp.Header.Get("Location"), nil)
	req.SetBasicAuth("script@example.org", key)
	if resp, err := client.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("following the Location with HTTP Basic: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// A direct key fails as before, unless it asks.
	if r := sendTo(t, other, "endpoints", "not queued"); r.Status != http.StatusBadGateway {
		t.Errorf("a direct key while Zulip is down: %d %s", r.Status, r.Body)
	}
	asked := assertQueued(t, sendTo(t, other, "endpoints", "asked", "Prefer: respond-async"), "", true)

	// The same Idempotency-Key again: the same queue id, nothing more queued.
	idem := assertQueued(t, sendTo(t, key, "endpoints", "ep four", "Idempotency-Key: ep-4"), "", false)
	again := sendTo(t, key, "endpoints", "ep four", "Idempotency-Key: ep-4")
	if again.Status != 202 || again.Header.Get("Idempotent-Replayed") != "true" || again.JSON(t)["queue_id"] != idem {
		t.Errorf("replayed: %d %s %v", again.Status, again.Body, again.Header)
	}
	if q := queueOf(t, key); len(q) != 4 {
		t.Fatalf("%d queued, want 4", len(q))
	}

	// Full: a 503 with Retry-After, and nothing stored.
	full := sendTo(t, key, "endpoints", "ep five")
	m := assertError(t, full, http.StatusServiceUnavailable, "queue is full")
	if m["code"] != "QUEUE_FULL" || full.Header.Get("Retry-After") == "" {
		t.Errorf("QUEUE_FULL: %v %v", m, full.Header)
	}
	if q := queueOf(t, key); len(q) != 4 {
		t.Errorf("%d queued after a refusal, want 4", len(q))
	}

	// Cancelling: not another key's, yes the key's own; then it is gone.
	if r := request(t, "DELETE", "/queue/"+second, nil, withKey(other)); r.Status != 404 {
		t.Errorf("DELETE another key's send: %d", r.Status)
	}
	if r := request(t, "DELETE", "/queue/"+second, nil, withKey(key)); r.Status != 200 {
		t.Errorf("DELETE: %d %s", r.Status, r.Body)
	}
	if st, _ := queuedSend(t, key, second); st != 404 {
		t.Errorf("a cancelled send: %d", st)
	}
	r := request(t, "GET", "/clients/"+keyID+"/queue", nil, withKey(admin))
	if r.Status != 200 || len(r.JSON(t)["sends"].([]any)) != 3 {
		t.Errorf("admin GET /clients/{id}/queue: %d %s", r.Status, r.Body)
	}
	if r := request(t, "GET", "/clients/"+keyID+"/queue", nil, withKey(key)); r.Status != 403 {
		t.Errorf("a scoped key on the admin's queue view: %d", r.Status)
	}

	zulipUp()
	for _, id := range []string{first, third, idem} {
		eventually(t, time.Minute, "delivery of "+id, func() bool { _, s := queuedSend(t, key, id); return s["state"] == "delivered" })
	}
	eventually(t, time.Minute, "delivery of the asked one", func() bool { _, s := queuedSend(t, other, asked); return s["state"] == "delivered" })
	if r := request(t, "DELETE", "/queue/"+first, nil, withKey(key)); r.Status != http.StatusConflict {
		t.Errorf("DELETE a delivered send: %d %s", r.Status, r.Body)
	}
	for _, c := range []string{"ep one", "ep three", "ep four", "asked"} {
		if n := len(messagesWith(c)); n != 1 {
			t.Errorf("%q is in Zulip %d times", c, n)
		}
	}
	if n := len(messagesWith("ep two")); n != 0 {
		t.Errorf("a cancelled send reached Zulip")
	}
	// Up again, a queued key's send goes at once.
	if r := sendTo(t, key, "endpoints", "ep six"); r.Status != 200 {
		t.Errorf("with Zulip up: %d %s", r.Status, r.Body)
	}
}

// Zulip's own refusal of a queued send is final: one attempt, failed
// with Zulip's answer. A send older than max_age fails as expired.
func TestQueuedSendsThatFail(t *testing.T) {
	store := newStore(t)
	key, _ := scopedKey(t, store, "general", "--queued")
	start(t, config{store: store, extra: "queue {\n\t\t\tmax_age 3s\n\t\t}"})
	failedBefore := metricsText(t)

	zulipDown(t)
	refused := assertQueued(t, sendTo(t, key, "failing", "refused one"), "", false)
	// Zulip is up again, and refuses the send.
	if err := env.emu.SetFault(emulator.Fault{Status: 400, PathPrefix: "/api/v1/messages", Method: "POST"}); err != nil {
		t.Fatal(err)
	}
	mark := zulipMark()
	var s map[string]any
	eventually(t, time.Minute, "the refusal", func() bool { _, s = queuedSend(t, key, refused); return s["state"] == "failed" })
	e, _ := s["error"].(map[string]any)
	if e == nil || e["status"] != float64(400) || e["code"] == "" {
		t.Errorf("failed with %v", s)
	}
	time.Sleep(300 * time.Millisecond)
	posts := 0
	for _, r := range env.emu.RequestsAfter(mark) {
		if r.Path == "/api/v1/messages" && r.Method == "POST" {
			posts++
		}
	}
	if posts != 1 {
		t.Errorf("%d attempts reached Zulip after its refusal, want 1", posts)
	}
	if q := queueOf(t, key); len(q) != 1 || q[0]["state"] != "failed" {
		t.Errorf("GET /queue lists the failed send: %v", q)
	}

	zulipDown(t)
	expiring := assertQueued(t, sendTo(t, key, "failing", "expiring one"), "", false)
	eventually(t, 30*time.Second, "expiry", func() bool { _, s = queuedSend(t, key, expiring); return s["state"] == "failed" })
	if e, _ := s["error"].(map[string]any); e == nil || e["code"] != "expired" {
		t.Errorf("expired with %v", s)
	}
	zulipUp()
	text := metricsText(t)
	for reason, want := range map[string]float64{"refused": 1, "expired": 1} {
		series := `caddy_zulip_proxy_queue_failed_total{reason="` + reason + `"}`
		if n := metricValue(t, text, series) - metricValue(t, failedBefore, series); n != want {
			t.Errorf("%s grew by %v, want %v", series, n, want)
		}
	}
	if !logHas(t, `"msg":"queued send failed"`, `"queue_id":"`+expiring+`"`, `"reason":"expired"`) {
		t.Error("no log line for an expired send")
	}
	if len(messagesWith("refused one"))+len(messagesWith("expiring one")) != 0 {
		t.Error("a failed send reached Zulip")
	}
}

// A backlog drains at the pace Zulip's budget allows, without Zulip
// having to refuse the proxy: the sends over the budget wait in the queue.
func TestQueueDrainsAtTheBudgetsPace(t *testing.T) {
	store := newStore(t)
	emu, cfg := limitedZulip(t, 10, 2*time.Second, store)
	key, _ := scopedKey(t, store, "general", "--queued")
	start(t, cfg)
	const n = 30
	queued := 0
	for i := range n {
		r := sendTo(t, key, "paced", fmt.Sprintf("paced #%02d", i))
		switch r.Status {
		case 200:
		case 202:
			queued++
		default:
			t.Fatalf("send %d: %d %s", i, r.Status, r.Body)
		}
	}
	if queued == 0 {
		t.Fatal("nothing was queued: the budget let 30 sends through at once")
	}
	in := func() []emulator.Message {
		var out []emulator.Message
		for _, m := range emu.Messages() {
			if strings.HasPrefix(m.Content, "paced #") {
				out = append(out, m)
			}
		}
		return out
	}
	eventually(t, time.Minute, "the backlog drained", func() bool { return len(in()) >= n })
	msgs := in()
	for i, m := range msgs {
		if want := fmt.Sprintf("paced #%02d", i); m.Content != want {
			t.Fatalf("message %d is %q, want %q", i, m.Content, want)
		}
	}
	if len(msgs) != n {
		t.Errorf("Zulip holds %d, want %d", len(msgs), n)
	}
	if r := zulipRefusals(emu); r > 1 {
		t.Errorf("Zulip refused %d calls: the deliverer did not keep to the budget", r)
	}
}

func readLog() (string, error) {
	raw, err := os.ReadFile(env.logFile)
	return string(raw), err
}

// Two sites of one config share a key store but each has its own bot
// "default", at its own Zulip: each site's queued send is delivered by
// the bot that site would have sent it with, to that site's Zulip.
func TestQueuedSendGoesThroughTheBotThatQueuedIt(t *testing.T) {
	store := newStore(t)
	key, _ := scopedKey(t, store, "general", "--queued")
	other, o := limitedZulip(t, 1000, time.Minute, store)
	port := freePort(t)
	cfg := config{store: store, sites: botSite(port, "default", o.site, o.certBundle, "{env."+botKeyEnv+"}", store)}
	start(t, cfg)
	zulipDown(t)
	if err := other.SetFault(emulator.Fault{Status: http.StatusBadGateway}); err != nil {
		t.Fatal(err)
	}
	assertQueued(t, sendTo(t, key, "via", "via the main site"), "", false)
	if r := sendAt(t, port, key, "via", "via the other site"); r.Status != http.StatusAccepted {
		t.Fatalf("the other site's send: %d %s, want 202", r.Status, r.Body)
	}
	zulipUp()
	other.ClearFault()
	holds := func(emu *emulator.Server, content string) int {
		n := 0
		for _, m := range emu.Messages() {
			if m.Content == content {
				n++
			}
		}
		return n
	}
	eventually(t, time.Minute, "both delivered", func() bool {
		return holds(env.emu, "via the main site")+holds(other, "via the main site") > 0 &&
			holds(env.emu, "via the other site")+holds(other, "via the other site") > 0
	})
	if holds(env.emu, "via the main site") != 1 || holds(other, "via the main site") != 0 {
		t.Error("the main site's queued send did not go to the main site's Zulip (only)")
	}
	if holds(other, "via the other site") != 1 || holds(env.emu, "via the other site") != 0 {
		t.Error("the other site's queued send did not go to the other site's Zulip (only)")
	}
}
