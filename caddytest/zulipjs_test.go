package caddytest

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The official JavaScript client, zulip-js 2.1.0 (pinned in
// zulipjs/package-lock.json), with `realm` the proxy and `apiKey` a scoped
// key: everything on the allow-list works, and a send to another stream
// fails with Zulip's error, which the client surfaces.
func TestZulipJS(t *testing.T) {
	node := requireTool(t, "node")
	dir, err := filepath.Abs("zulipjs")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "zulip-js")); err != nil {
		npm := requireTool(t, "npm")
		runScript(t, dir, os.Environ(), npm, "ci", "--no-audit", "--no-fund")
	}
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	start(t, config{store: store})
	before := len(env.emu.Messages())
	mark := zulipMark()

	environ := append(os.Environ(), "ZWOP_REALM="+base, "ZWOP_KEY="+key, "ZWOP_STREAM=general", "ZWOP_OTHER_STREAM=other")
	out := runScript(t, dir, environ, node, "run.js")
	var res map[string]map[string]any
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("zulip-js output: %v\n%s", err, out)
	}
	for _, call := range []string{"send", "update", "retrieve", "streamId", "topics", "me", "server"} {
		if res[call]["result"] != "success" {
			t.Errorf("%s: %v", call, res[call])
		}
	}
	id := res["send"]["id"].(float64)
	if m, ok := envMessage(int64(id)); !ok || m != "edited by zulip-js" {
		t.Errorf("message %v in Zulip: %q", id, m)
	}
	msgs, _ := res["retrieve"]["messages"].([]any)
	if len(msgs) == 0 || !strings.Contains(out, "edited by zulip-js") {
		t.Errorf("retrieve: %v", res["retrieve"])
	}
	if res["streamId"]["stream_id"] != float64(streamID(t, "general")) || !strings.Contains(out, `"name":"zulip-js"`) {
		t.Errorf("stream id / topics: %v %v", res["streamId"], res["topics"])
	}
	for _, call := range []string{"forbiddenSend", "forbiddenSubscribe"} {
		if res[call]["result"] != "error" || res[call]["msg"] == "" {
			t.Errorf("%s was not refused with Zulip's error shape: %v", call, res[call])
		}
	}
	if !strings.Contains(res["forbiddenSend"]["msg"].(string), "general") {
		t.Errorf("the refusal does not say which stream the key may use: %v", res["forbiddenSend"])
	}
	if after := len(env.emu.Messages()); after != before+1 {
		t.Errorf("%d messages reached Zulip, want 1", after-before)
	}
	for _, r := range zulipRequests(mark) {
		if strings.Contains(r.Path, "subscriptions") {
			t.Errorf("the subscription reached Zulip")
		}
	}
}

func envMessage(id int64) (string, bool) {
	m, ok := env.emu.Message(id)
	return m.Content, ok
}

// requireTool finds a program the real-client tests need. CI installs
// them and sets ZWOP_REQUIRE_NODE=1, so there a missing one fails.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	msg := name + " not found: install Node.js and npm to run the zulip-js test"
	if os.Getenv("ZWOP_REQUIRE_NODE") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}
