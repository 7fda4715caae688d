package caddytest

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

// writesAfter counts the requests that changed something in Zulip since
// mark (anything but GET).
func writesAfter(mark uint64) int {
	n := 0
	for _, r := range env.emu.RequestsAfter(mark) {
		if r.EffectiveMethod != "GET" {
			n++
		}
	}
	return n
}

func sendWith(t *testing.T, key, idem, content string, more ...string) reply {
	t.Helper()
	body, ct := form("content", content)
	hdrs := append([]string{withKey(key), ct}, more...)
	if idem != "" {
		hdrs = append(hdrs, "Idempotency-Key: "+idem)
	}
	return request(t, "POST", "/send_message?topic=idempotent", body, hdrs...)
}

// A write with an Idempotency-Key happens once: the same request again
// gets the first answer, said to be replayed, and nothing reaches Zulip;
// the key for another request is a 422; each key entry has keys of its
// own; a malformed header is a 400.
func TestIdempotentWrites(t *testing.T) {
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	other, _ := scopedKey(t, store, "general")
	start(t, config{store: store})

	first := sendWith(t, key, "run-17-done", "scan 17 finished")
	if first.Status != 200 || first.Header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("first: %d %s %v", first.Status, first.Body, first.Header)
	}
	mark := zulipMark()
	again := sendWith(t, key, "run-17-done", "scan 17 finished")
	if again.Status != 200 || again.Body != first.Body || again.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("the same request again: %d %s %v", again.Status, again.Body, again.Header)
	}
	assertNothingReachedZulip(t, mark)
	m := assertError(t, sendWith(t, key, "run-17-done", "scan 18 finished"), 422, "another request")
	if m["code"] != "IDEMPOTENCY_KEY_REUSED" {
		t.Errorf("code %v", m["code"])
	}
	// The same route with another query is another request too.
	body, ct := form("content", "scan 17 finished")
	assertError(t, request(t, "POST", "/send_message?topic=elsewhere", body, withKey(key), ct, "Idempotency-Key: run-17-done"), 422, "another request")
	assertNothingReachedZulip(t, mark)
	// Another key entry's Idempotency-Keys are its own.
	if r := sendWith(t, other, "run-17-done", "scan 17 finished"); r.Status != 200 || r.Header.Get("Idempotent-Replayed") != "" || r.Body == first.Body {
		t.Errorf("another key with the same Idempotency-Key: %d %s", r.Status, r.Body)
	}

	t.Run("malformed header", func(t *testing.T) {
		mark := zulipMark()
		for name, v := range map[string]string{"empty": "", "too long": strings.Repeat("k", 256), "a space": "run 17"} {
			m := assertError(t, sendWith(t, key, "", "x", "Idempotency-Key: "+v), 400, "Idempotency-Key")
			if m["var_name"] != "Idempotency-Key" {
				t.Errorf("%s: var_name %v", name, m["var_name"])
			}
		}
		req, _ := http.NewRequest("POST", base+"/send_message?topic=idempotent", strings.NewReader("content=x"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-API-key", key)
		req.Header.Add("Idempotency-Key", "one")
		req.Header.Add("Idempotency-Key", "two")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("two Idempotency-Key headers: %d", resp.StatusCode)
		}
		if n := writesAfter(mark); n != 0 {
			t.Errorf("%d writes reached Zulip", n)
		}
	})

	t.Run("a file, retried with a new multipart boundary", func(t *testing.T) {
		parts := []part{{name: "content", data: []byte("with a plot")},
			{name: "image", filename: "plot.png", contentType: "image/png", data: []byte("png bytes")}}
		body, ct := multipartBody(t, parts...)
		r1 := request(t, "POST", "/send_message?topic=idempotent", body, withKey(key), ct, "Idempotency-Key: plot-1")
		if r1.Status != 200 {
			t.Fatalf("%d %s", r1.Status, r1.Body)
		}
		mark, uploads := zulipMark(), env.emu.UploadCount()
		body, ct = multipartBody(t, parts...)
		r2 := request(t, "POST", "/send_message?topic=idempotent", body, withKey(key), ct, "Idempotency-Key: plot-1")
		if r2.Status != 200 || r2.Body != r1.Body || r2.Header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("retried: %d %s", r2.Status, r2.Body)
		}
		assertNothingReachedZulip(t, mark)
		if env.emu.UploadCount() != uploads {
			t.Error("the file was uploaded again")
		}
	})

	t.Run("an upload", func(t *testing.T) {
		body, ct := multipartBody(t, part{name: "file", filename: "data.csv", data: []byte("x,y\n1,2\n")})
		r1 := request(t, "POST", "/upload_file", body, withKey(key), ct, "Idempotency-Key: csv-1")
		if r1.Status != 200 || !strings.Contains(r1.Body, "/user_uploads/") {
			t.Fatalf("%d %s", r1.Status, r1.Body)
		}
		mark := zulipMark()
		body, ct = multipartBody(t, part{name: "file", filename: "data.csv", data: []byte("x,y\n1,2\n")})
		r2 := request(t, "POST", "/api/upload_file", body, withKey(key), ct, "Idempotency-Key: csv-1")
		if r2.Status != 200 || r2.Body != r1.Body || r2.Header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("the upload again, under /api: %d %s", r2.Status, r2.Body)
		}
		assertNothingReachedZulip(t, mark)
	})

	t.Run("Zulip's API", func(t *testing.T) {
		r1 := zreq(t, "POST", "/api/v1/messages", key, "type=stream&to=general&topic=idempotent&content=from+zulip-js", "Idempotency-Key: zjs-1")
		if r1.Status != 200 {
			t.Fatalf("%d %s", r1.Status, r1.Body)
		}
		mark := zulipMark()
		r2 := zreq(t, "POST", "/api/v1/messages", key, "type=stream&to=general&topic=idempotent&content=from+zulip-js", "Idempotency-Key: zjs-1")
		if r2.Status != 200 || r2.Body != r1.Body || r2.Header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("again: %d %s", r2.Status, r2.Body)
		}
		assertNothingReachedZulip(t, mark)
	})
}

// While the first request with a key is served, the same again is a 409
// with Retry-After, and nothing of it reaches Zulip.
func TestIdempotencyKeyInUse(t *testing.T) {
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	start(t, config{store: store})
	if r := sendWith(t, key, "", "warm the stream id up"); r.Status != 200 {
		t.Fatal(r.Status)
	}
	if err := env.emu.SetFault(emulator.Fault{Delay: 1500 * time.Millisecond, Count: 1, PathPrefix: "/api/v1/messages"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.emu.ClearFault)
	var wg sync.WaitGroup
	var first reply
	wg.Go(func() { first = sendWith(t, key, "slow-1", "a slow one") })
	time.Sleep(500 * time.Millisecond) // the first is with Zulip now
	mark := zulipMark()
	r := sendWith(t, key, "slow-1", "a slow one")
	m := assertError(t, r, 409, "still being processed")
	if m["code"] != "IDEMPOTENCY_KEY_IN_USE" || r.Header.Get("Retry-After") == "" {
		t.Errorf("409: %v %v", m["code"], r.Header)
	}
	wg.Wait()
	if first.Status != 200 {
		t.Fatalf("the first: %d %s", first.Status, first.Body)
	}
	// The first one's send is logged when it ends, after mark.
	if n := writesAfter(mark); n != 1 || countMessages("a slow one") != 1 {
		t.Errorf("%d writes reached Zulip, %d messages; want the first alone", n, countMessages("a slow one"))
	}
	if r := sendWith(t, key, "slow-1", "a slow one"); r.Status != 200 || r.Body != first.Body {
		t.Errorf("once the first is done: %d %s", r.Status, r.Body)
	}
}

// When nothing reached Zulip (the proxy's own 4xx, Zulip's 429, Zulip
// unreachable), nothing is kept: a retry is served anew.
func TestIdempotencyKeepsNothingWhenNothingReachedZulip(t *testing.T) {
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	deadKey, _ := scopedKey(t, store, "general", "--bot", "dead")
	start(t, config{store: store, extra: `bot dead {
			site http://127.0.0.1:1
			email dead-bot@example.com
			api_key {env.` + botKeyEnv + `}
		}`})
	// The proxy's own 400: served anew, and once fixed, sent.
	body, ct := form("topic", "no content")
	for range 2 {
		r := request(t, "POST", "/send_message?topic=idempotent", body, withKey(key), ct, "Idempotency-Key: fixable")
		if r.Status != 400 || r.Header.Get("Idempotent-Replayed") != "" {
			t.Errorf("a refused request: %d %v", r.Status, r.Header)
		}
		body, ct = form("topic", "no content")
	}
	// Zulip's 429.
	if r := sendWith(t, key, "", "warm up"); r.Status != 200 {
		t.Fatal(r.Status)
	}
	if err := env.emu.SetFault(emulator.Fault{RateLimited: true, RetryAfter: 0.2, Count: 1, PathPrefix: "/api/v1/messages"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.emu.ClearFault)
	if r := sendWith(t, key, "after-429", "rate limited first"); r.Status != 429 {
		t.Fatalf("under Zulip's 429: %d %s", r.Status, r.Body)
	}
	time.Sleep(300 * time.Millisecond) // Zulip's Retry-After
	mark := zulipMark()
	if r := sendWith(t, key, "after-429", "rate limited first"); r.Status != 200 || r.Header.Get("Idempotent-Replayed") != "" {
		t.Errorf("after Zulip's 429: %d %s", r.Status, r.Body)
	}
	if n := writesAfter(mark); n != 1 {
		t.Errorf("%d writes reached Zulip, want the one send", n)
	}
	// Zulip unreachable (502): nothing reached it, so a retry is served
	// anew, not answered 409 or replayed.
	for range 2 {
		r := sendWith(t, deadKey, "unreachable-1", "to a Zulip that is down")
		if r.Status != 502 || r.Header.Get("Idempotent-Replayed") != "" {
			t.Errorf("unreachable: %d %s", r.Status, r.Body)
		}
	}
}

// countMessages counts Zulip's messages whose content is content.
func countMessages(content string) int {
	n := 0
	for _, m := range env.emu.Messages() {
		if m.Content == content {
			n++
		}
	}
	return n
}

// zulipIdle waits until Zulip has finished what it was handling: a write
// the proxy gave up on lands then.
func zulipIdle(t *testing.T) {
	t.Helper()
	eventually(t, 10*time.Second, "Zulip finished what it was handling", func() bool { return env.emu.InFlight() == 0 })
}

// A write whose outcome is uncertain (sent, then no answer in time, or
// the connection lost) is looked for in Zulip before it is made again:
// found, it is the answer, and Zulip holds one copy; not found, it is made.
// And the file of a send whose message timed out is never deleted: Zulip
// may post the message yet, which links it.
func TestUncertainWritesAreResolved(t *testing.T) {
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	start(t, config{store: store, extra: "timeout 1s"})
	if r := sendWith(t, key, "", "warm up"); r.Status != 200 {
		t.Fatal(r.Status)
	}
	t.Cleanup(env.emu.ClearFault)
	slow := func(path, method string) {
		t.Helper()
		if err := env.emu.SetFault(emulator.Fault{Delay: 2 * time.Second, Count: 1, PathPrefix: path, Method: method}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("a send that landed after the timeout", func(t *testing.T) {
		slow("/api/v1/messages", "POST")
		assertError(t, sendWith(t, key, "maybe-landed", "landed late"), 504, "did not answer")
		zulipIdle(t)
		if n := countMessages("landed late"); n != 1 {
			t.Fatalf("%d copies in Zulip before the retry", n)
		}
		r := sendWith(t, key, "maybe-landed", "landed late")
		if r.Status != 200 || r.Header.Get("Idempotent-Replayed") != "true" || !strings.Contains(r.Body, `"id":`) {
			t.Errorf("the retry: %d %s %v", r.Status, r.Body, r.Header)
		}
		if n := countMessages("landed late"); n != 1 {
			t.Errorf("%d copies in Zulip, want 1", n)
		}
		if m := lastMessageWith(t, "landed late"); !strings.Contains(r.Body, `"id":`+itoa(int(m.ID))) {
			t.Errorf("the retry answered %s, not the landed message %d", r.Body, m.ID)
		}
		// Once resolved, it is replayed like any other.
		if again := sendWith(t, key, "maybe-landed", "landed late"); again.Body != r.Body || again.Header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("again: %d %s", again.Status, again.Body)
		}
	})

	t.Run("a send whose connection was lost, which did not land", func(t *testing.T) {
		if err := env.emu.SetFault(emulator.Fault{Drop: true, Count: 1, PathPrefix: "/api/v1/messages", Method: "POST"}); err != nil {
			t.Fatal(err)
		}
		if r := sendWith(t, key, "maybe-lost", "lost on the way"); r.Status != 502 {
			t.Fatalf("under a dropped connection: %d %s", r.Status, r.Body)
		}
		r := sendWith(t, key, "maybe-lost", "lost on the way")
		if r.Status != 200 || r.Header.Get("Idempotent-Replayed") != "" {
			t.Errorf("the retry: %d %s", r.Status, r.Body)
		}
		if n := countMessages("lost on the way"); n != 1 {
			t.Errorf("%d copies in Zulip, want 1", n)
		}
	})

	t.Run("an upload that landed after the timeout", func(t *testing.T) {
		before := env.emu.UploadCount()
		slow("/api/v1/user_uploads", "POST")
		body, ct := multipartBody(t, part{name: "file", filename: "late.csv", data: []byte("a,b\n3,4\n")})
		assertError(t, request(t, "POST", "/upload_file", body, withKey(key), ct, "Idempotency-Key: late-csv"), 504, "did not answer")
		zulipIdle(t)
		body, ct = multipartBody(t, part{name: "file", filename: "late.csv", data: []byte("a,b\n3,4\n")})
		r := request(t, "POST", "/upload_file", body, withKey(key), ct, "Idempotency-Key: late-csv")
		if r.Status != 200 || r.Header.Get("Idempotent-Replayed") != "true" || !strings.Contains(r.Body, "late.csv") {
			t.Errorf("the retry: %d %s", r.Status, r.Body)
		}
		if n := env.emu.UploadCount() - before; n != 1 {
			t.Errorf("%d files in Zulip, want 1", n)
		}
		uri := r.JSON(t)["uri"].(string)
		if _, ok := env.emu.Upload(uri); !ok {
			t.Errorf("the answer's %s is not the file Zulip has", uri)
		}
	})

	t.Run("a send with a file whose message timed out", func(t *testing.T) {
		before := env.emu.UploadCount()
		slow("/api/v1/messages", "POST")
		parts := []part{{name: "content", data: []byte("late plot")}, {name: "image", filename: "late.png", data: []byte("png")}}
		body, ct := multipartBody(t, parts...)
		assertError(t, request(t, "POST", "/send_message?topic=idempotent", body, withKey(key), ct, "Idempotency-Key: late-plot"), 504, "did not answer")
		zulipIdle(t)
		m := lastMessageWith(t, "late plot")
		uri := m.Content[strings.Index(m.Content, "(")+1 : len(m.Content)-1]
		if _, ok := env.emu.Upload(uri); !ok {
			t.Fatalf("the message that landed links %s, which was deleted", uri)
		}
		body, ct = multipartBody(t, parts...)
		r := request(t, "POST", "/send_message?topic=idempotent", body, withKey(key), ct, "Idempotency-Key: late-plot")
		if r.Status != 200 || r.Header.Get("Idempotent-Replayed") != "true" || !strings.Contains(r.Body, `"id":`+itoa(int(m.ID))) {
			t.Errorf("the retry: %d %s, want message %d", r.Status, r.Body, m.ID)
		}
		if n := env.emu.UploadCount() - before; n != 1 {
			t.Errorf("%d files in Zulip, want 1", n)
		}
		if n := countPrefix("late plot"); n != 1 {
			t.Errorf("%d copies of the message, want 1", n)
		}
	})

	t.Run("an edit made after the timeout", func(t *testing.T) {
		sent := sendWith(t, key, "", "to be edited")
		id := int64(sent.JSON(t)["id"].(float64))
		slow("/api/v1/messages/", "PATCH")
		path := "/update_message?message_id=" + itoa(int(id))
		hdrs := []string{withKey(key), "Content-Type: text/plain", "Idempotency-Key: edit-late"}
		assertError(t, request(t, "PATCH", path, strings.NewReader("edited late"), hdrs...), 504, "did not answer")
		zulipIdle(t)
		mark := zulipMark()
		r := request(t, "PATCH", path, strings.NewReader("edited late"), hdrs...)
		if r.Status != 200 || r.Header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("the retry: %d %s", r.Status, r.Body)
		}
		if n := writesAfter(mark); n != 0 {
			t.Errorf("the edit was made again (%d writes)", n)
		}
	})
}

func lastMessageWith(t *testing.T, prefix string) emulator.Message {
	t.Helper()
	msgs := env.emu.Messages()
	for i := len(msgs) - 1; i >= 0; i-- {
		if strings.HasPrefix(msgs[i].Content, prefix) {
			return msgs[i]
		}
	}
	t.Fatalf("no message %q in Zulip", prefix)
	return emulator.Message{}
}

func countPrefix(prefix string) int {
	n := 0
	for _, m := range env.emu.Messages() {
		if strings.HasPrefix(m.Content, prefix) {
			n++
		}
	}
	return n
}
