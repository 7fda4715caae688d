package caddytest

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

// logLines counts the run's log lines whose message starts with msg and
// that have each field given (pairs: "bot", "down"), and returns the last
// of them.
func logLines(t *testing.T, msg string, fields ...string) (int, map[string]any) {
	t.Helper()
	raw, err := os.ReadFile(env.logFile)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	n, last := 0, map[string]any(nil)
next:
	for _, line := range strings.Split(string(raw), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil || !strings.HasPrefix(fmt.Sprint(m["msg"]), msg) {
			continue
		}
		for i := 0; i+1 < len(fields); i += 2 {
			if m[fields[i]] != fields[i+1] {
				continue next
			}
		}
		n, last = n+1, m
	}
	return n, last
}

// checkLogs reads every log line of the run and fails if any holds a key
// or a bot credential. It runs after all tests, from TestMain.
func checkLogs() error {
	raw, err := os.ReadFile(env.logFile)
	if err != nil {
		return fmt.Errorf("reading the run's log: %w", err)
	}
	lines := strings.Count(string(raw), "\n")
	if lines == 0 {
		return fmt.Errorf("the run wrote no log line: logging is not set up as the test expects")
	}
	for _, s := range secrets() {
		if i := strings.Index(string(raw), s); i >= 0 {
			start := strings.LastIndexByte(string(raw[:i]), '\n') + 1
			end := i + strings.IndexByte(string(raw[i:]), '\n')
			if end < i {
				end = len(raw)
			}
			return fmt.Errorf("a secret reached the log:\n%s", strings.ReplaceAll(string(raw[start:end]), s, "<SECRET>"))
		}
	}
	fmt.Printf("checked %d log lines for %d secrets: none found\n", lines, len(secrets()))
	return nil
}

// The access log names the key by its id, never by the key.
func TestAccessLogNamesKeyID(t *testing.T) {
	store := newStore(t)
	key, id := scopedKey(t, store, "general")
	start(t, config{store: store})
	body, ct := form("content", "logged")
	request(t, "POST", "/send_message?topic=log", body, withKey(key), ct)

	var access, call map[string]any
	eventually(t, 5*time.Second, "log lines written", func() bool {
		access, call = nil, nil
		f, err := os.Open(env.logFile)
		if err != nil {
			return false
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				continue
			}
			if m["user_id"] == id {
				access = m
			}
			if m["msg"] == "zulip call" && m["key_id"] == id {
				call = m
			}
		}
		return access != nil && call != nil
	})
	hdrs, _ := access["request"].(map[string]any)["headers"].(map[string]any)
	if _, ok := hdrs["X-Api-Key"]; ok {
		t.Errorf("access log keeps the X-API-key header: %v", hdrs)
	}
	if call["stream"] != "general" || call["endpoint"] != "send_message" || call["zulip_status"] != float64(200) || call["duration"] == nil {
		t.Errorf("zulip call line: %v", call)
	}
}

// A Zulip (or a proxy before it) that echoes the request back puts the
// bot's own key in its answer: a webhook call's URL carries api_key, and
// every other call carries HTTP Basic credentials. Neither reaches the
// caller nor any log line, whatever Zulip answers.
func TestZulipEchoesStayInside(t *testing.T) {
	basic := base64.StdEncoding.EncodeToString([]byte(emulator.DemoBotEmail + ":" + emulator.DemoBotKey))
	addSecret(basic)
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		said := r.URL.RequestURI() + " " + r.Header.Get("Authorization")
		switch {
		case r.URL.Path == "/api/v1/get_stream_id":
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"result":"success","msg":"","stream_id":7}`)
		case strings.HasPrefix(r.URL.Path, "/api/v1/external/"):
			w.Header().Set("Location", "https://sso.example.org/login?next="+url.QueryEscape(r.URL.RequestURI()))
			w.WriteHeader(http.StatusFound)
			_, _ = io.WriteString(w, "<a href=\"/login?next="+said+"\">moved</a>")
		default:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			b, _ := json.Marshal(map[string]string{"result": "error", "code": "BAD_REQUEST", "msg": "cannot handle " + said})
			_, _ = w.Write(b)
		}
	}))
	defer echo.Close()
	store := newStore(t)
	key, id := scopedKey(t, store, "general")
	start(t, config{store: store, site: echo.URL})

	hook := request(t, "POST", "/api/v1/external/github?api_key="+key+"&topic=builds",
		strings.NewReader(`{"zen":"hi"}`), "Content-Type: application/json", "X-GitHub-Event: ping")
	if hook.Status != http.StatusBadGateway {
		t.Errorf("webhook answered with a redirect: status %d, want 502", hook.Status)
	}
	body, ct := form("content", "echo")
	send := request(t, "POST", "/send_message?topic=echo", body, withKey(key), ct)
	if send.Status != http.StatusBadRequest {
		t.Errorf("send answered with an error: status %d, want Zulip's 400", send.Status)
	}
	for name, r := range map[string]reply{"webhook": hook, "send_message": send} {
		all := r.Body + fmt.Sprint(r.Header)
		for _, secret := range []string{emulator.DemoBotKey, basic} {
			if strings.Contains(all, secret) {
				t.Errorf("%s: the answer carries the bot's credentials: %s", name, all)
			}
		}
	}

	// Both calls are logged; neither line may hold the bot's key.
	var lines []string
	eventually(t, 5*time.Second, "both calls logged", func() bool {
		raw, _ := os.ReadFile(env.logFile)
		lines = nil
		for _, l := range strings.Split(string(raw), "\n") {
			if strings.Contains(l, `"key_id":"`+id+`"`) {
				lines = append(lines, l)
			}
		}
		return len(lines) >= 2
	})
	for _, l := range lines {
		for _, secret := range []string{emulator.DemoBotKey, basic, "api_key="} {
			if strings.Contains(l, secret) {
				t.Errorf("a log line carries %q:\n%s", secret[:8], l)
			}
		}
	}
}

// A site that logs and takes keys gets a warning with the filter to add,
// unless the config says its log has the filter.
func TestAccessLogWarning(t *testing.T) {
	countWarnings := func() (int, map[string]any) {
		return logLines(t, "access logging is on for a server that takes keys")
	}
	store := newStore(t)

	before, _ := countWarnings()
	start(t, config{store: store})
	if n, _ := countWarnings(); n != before {
		t.Fatalf("a config with access_log_filtered warned %d times", n-before)
	}

	start(t, config{store: store, logUnchecked: true})
	var w map[string]any
	eventually(t, 5*time.Second, "warning logged", func() bool {
		var n int
		n, w = countWarnings()
		return n == before+1
	})
	if w["level"] != "warn" || w["server"] == "" {
		t.Errorf("warning %v: want level warn and the server's name", w)
	}
	snippet := fmt.Sprint(w["add_to_the_site"])
	for _, want := range []string{"format filter", "request>headers>X-Api-Key delete", "delete api_key"} {
		if !strings.Contains(snippet, want) {
			t.Errorf("snippet %q lacks %q", snippet, want)
		}
	}
	if !strings.Contains(fmt.Sprint(w["silence"]), "access_log_filtered") {
		t.Errorf("warning does not say how to silence it: %v", w)
	}
}
