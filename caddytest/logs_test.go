package caddytest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

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
