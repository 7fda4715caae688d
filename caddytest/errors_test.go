package caddytest

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

// How Zulip's failures reach a bot: Zulip's own errors unchanged, an
// unreachable or confused Zulip as 502, a slow one as 504.
func TestZulipFailures(t *testing.T) {
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	deadKey, _ := scopedKey(t, store, "general", "--bot", "dead")
	start(t, config{store: store, extra: `timeout 1s
		bot dead {
			site http://127.0.0.1:1
			email dead-bot@example.com
			api_key {env.` + botKeyEnv + `}
		}`})
	send := func(k string) reply {
		body, ct := form("content", "x")
		return request(t, "POST", "/send_message?topic=faults", body, withKey(k), ct)
	}
	// Resolve and cache the stream id first, so each fault hits the send.
	if r := send(key); r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	t.Cleanup(env.emu.ClearFault)

	cases := []struct {
		name   string
		fault  emulator.Fault
		status int
		check  func(t *testing.T, r reply)
	}{
		{"Zulip's own 500, which has no code", emulator.Fault{Status: 500, Count: 1, PathPrefix: sendPath}, 500, func(t *testing.T, r reply) {
			// Zulip's words, in both shapes.
			assertError(t, r, 500, "Internal server error")
		}},
		{"nginx 502 page", emulator.Fault{Status: 502, Count: 1, PathPrefix: sendPath}, 502, func(t *testing.T, r reply) {
			assertError(t, r, 502, "HTTP 502")
		}},
		{"503 for maintenance", emulator.Fault{Status: 503, RetryAfter: 30, Count: 1, PathPrefix: sendPath}, 503, func(t *testing.T, r reply) {
			assertError(t, r, 503, "HTTP 503")
			if r.Header.Get("Retry-After") != "30" {
				t.Errorf("Retry-After %q, want Zulip's 30", r.Header.Get("Retry-After"))
			}
		}},
		{"garbage", emulator.Fault{Garbage: true, Count: 1, PathPrefix: sendPath}, 502, func(t *testing.T, r reply) {
			assertError(t, r, 502, "not Zulip's JSON")
		}},
		{"dropped connection", emulator.Fault{Drop: true, Count: 1, PathPrefix: sendPath}, 502, func(t *testing.T, r reply) {
			assertError(t, r, 502, "")
		}},
		{"too slow", emulator.Fault{Delay: 3 * time.Second, Count: 1, PathPrefix: sendPath}, 504, func(t *testing.T, r reply) {
			assertError(t, r, 504, "did not answer within 1s")
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := env.emu.SetFault(c.fault); err != nil {
				t.Fatal(err)
			}
			defer env.emu.ClearFault()
			mark := zulipMark()
			r := send(key)
			if c.fault.Delay > 0 {
				// Zulip finishes a send the proxy gave up on, and logs it
				// then: wait, or it lands in a later test's window.
				defer eventually(t, c.fault.Delay+5*time.Second, "the held-back send finished in Zulip", func() bool {
					return len(env.emu.RequestsAfter(mark)) > 0
				})
			}
			if r.Status != c.status {
				t.Fatalf("%d, want %d: %s", r.Status, c.status, r.Body)
			}
			if strings.Contains(r.Body, "goroutine") || strings.Contains(r.Body, emulator.DemoBotKey) {
				t.Errorf("leaks internals: %s", r.Body)
			}
			c.check(t, r)
		})
	}
	t.Run("rate limited, then the bot waits as Zulip asked", func(t *testing.T) {
		if err := env.emu.SetFault(emulator.Fault{RateLimited: true, RetryAfter: 0.8, Count: 1, PathPrefix: sendPath}); err != nil {
			t.Fatal(err)
		}
		defer env.emu.ClearFault()
		r := send(key)
		if r.Status != 429 || r.Header.Get("Retry-After") != "0.8" || r.JSON(t)["code"] != "RATE_LIMIT_HIT" {
			t.Errorf("not Zulip's 429: %d %v %s", r.Status, r.Header, r.Body)
		}
		// Until Zulip's Retry-After is over, the proxy answers for it.
		mark := zulipMark()
		assertError(t, send(key), 429, "Zulip asked bot 'default' to wait")
		assertNothingReachedZulip(t, mark)
		time.Sleep(900 * time.Millisecond)
		if r := send(key); r.Status != 200 {
			t.Errorf("after Retry-After: %d %s", r.Status, r.Body)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		assertError(t, send(deadKey), 502, "unreachable")
	})
	t.Run("Zulip's own error passes through, in both shapes", func(t *testing.T) {
		gone, _ := scopedKey(t, store, "nowhere")
		eventually(t, 5*time.Second, "key picked up", func() bool {
			return request(t, "GET", "/me", nil, withKey(gone)).Status == 200
		})
		r := send(gone)
		if m := r.JSON(t); r.Status != 400 || m["msg"] != "Invalid channel name 'nowhere'" || m["detail"] != m["msg"] || m["code"] != "BAD_REQUEST" {
			t.Errorf("%d %s", r.Status, r.Body)
		}
	})
}

func TestUploadLimits(t *testing.T) {
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	start(t, config{store: store, extra: "max_upload 1MiB"})
	big := make([]byte, 2<<20)
	_, _ = rand.Read(big)

	t.Run("declared too large", func(t *testing.T) {
		mark := zulipMark()
		body, ct := multipartBody(t, part{name: "file", filename: "big.bin", data: big})
		assertError(t, request(t, "POST", "/upload_file", body, withKey(key), ct), 413, "1.0 MiB")
		assertNothingReachedZulip(t, mark)
	})
	t.Run("streamed, found too large part-way", func(t *testing.T) {
		before := len(env.emu.Messages())
		pr, pw := io.Pipe()
		mw := multipart.NewWriter(pw)
		go func() {
			_ = mw.WriteField("content", "with a huge image")
			w, _ := mw.CreateFormFile("image", "huge.bin")
			_, _ = io.Copy(w, bytes.NewReader(big))
			_ = mw.Close()
			_ = pw.Close()
		}()
		req, _ := http.NewRequest("POST", base+"/send_message?topic=big", pr)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		req.Header.Set("X-API-key", key)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		assertError(t, reply{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}, 413, "max_upload")
		if after := len(env.emu.Messages()); after != before {
			t.Errorf("a message was sent anyway")
		}
	})
	t.Run("within the limit", func(t *testing.T) {
		body, ct := multipartBody(t, part{name: "file", filename: "ok.bin", data: big[:512<<10]})
		if r := request(t, "POST", "/upload_file", body, withKey(key), ct); r.Status != 200 {
			t.Errorf("%d %s", r.Status, r.Body)
		}
	})
}

// timeout measures Zulip, not the client: an upload to a Zulip that
// hangs fails after timeout (it once waited 5 minutes, then blamed Zulip
// for 2 s), and a client that stalls its body gets 408, its fault, with
// nothing kept in Zulip.
func TestTimeoutsMeasureZulipNotTheClient(t *testing.T) {
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	start(t, config{store: store, extra: "timeout 2s\n\t\tclient_idle_timeout 1s"})
	t.Cleanup(env.emu.ClearFault)

	t.Run("a hung Zulip, a 10-byte upload", func(t *testing.T) {
		if err := env.emu.SetFault(emulator.Fault{Delay: 5 * time.Second, Count: 1, PathPrefix: "/api/v1/user_uploads"}); err != nil {
			t.Fatal(err)
		}
		defer env.emu.ClearFault()
		body, ct := multipartBody(t, part{name: "file", filename: "tiny.txt", data: []byte("0123456789")})
		// Zulip answers after 5 s, which an upload bounded by anything
		// but timeout (2 s) would wait for.
		assertError(t, request(t, "POST", "/upload_file", body, withKey(key), ct), 504, "within 2s")
	})

	t.Run("a client that stalls", func(t *testing.T) {
		before := env.emu.UploadCount()
		pr, pw := io.Pipe()
		mw := multipart.NewWriter(pw)
		go func() {
			w, _ := mw.CreateFormFile("file", "slow.bin")
			_, _ = w.Write(bytes.Repeat([]byte("x"), 1000))
			time.Sleep(4 * time.Second) // past client_idle_timeout
			_ = pw.CloseWithError(errors.New("gave up"))
		}()
		req, _ := http.NewRequest("POST", base+"/upload_file", pr)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		req.Header.Set("X-API-key", key)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("no answer to a stalled upload: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assertError(t, reply{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}, 408, "client_idle_timeout")
		time.Sleep(100 * time.Millisecond)
		if n := env.emu.UploadCount(); n != before {
			t.Errorf("a stalled upload was stored: %d files, were %d", n, before)
		}
	})
}

// A key has at most max_uploads_per_key uploads in flight; the next is
// refused with 429 before anything of it reaches Zulip.
func TestUploadsPerKeyAreBounded(t *testing.T) {
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	other, _ := scopedKey(t, store, "general")
	start(t, config{store: store, extra: "max_uploads_per_key 1"})
	// The bot has answered once, so nothing waits to learn its budget.
	if r := request(t, "GET", "/get_stream_topics", nil, withKey(key)); r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	started := make(chan struct{})
	go func() {
		w, _ := mw.CreateFormFile("file", "long.bin")
		_, _ = w.Write([]byte("part one"))
		close(started)
		time.Sleep(1500 * time.Millisecond)
		_, _ = w.Write([]byte("part two"))
		_ = mw.Close()
		_ = pw.Close()
	}()
	first := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("POST", base+"/upload_file", pr)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		req.Header.Set("X-API-key", key)
		resp, err := client.Do(req)
		if err != nil {
			first <- 0
			return
		}
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	<-started
	time.Sleep(300 * time.Millisecond) // the first upload is under way
	mark := zulipMark()
	body, ct := multipartBody(t, part{name: "file", filename: "second.txt", data: []byte("second")})
	r := request(t, "POST", "/upload_file", body, withKey(key), ct)
	assertError(t, r, 429, "max_uploads_per_key")
	if r.Header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	assertNothingReachedZulip(t, mark)
	body, ct = multipartBody(t, part{name: "file", filename: "other.txt", data: []byte("other key")})
	if r := request(t, "POST", "/upload_file", body, withKey(other), ct); r.Status != 200 {
		t.Errorf("another key's upload: %d %s", r.Status, r.Body)
	}
	if st := <-first; st != 200 {
		t.Errorf("the first upload: %d", st)
	}
	body, ct = multipartBody(t, part{name: "file", filename: "third.txt", data: []byte("after")})
	if r := request(t, "POST", "/upload_file", body, withKey(key), ct); r.Status != 200 {
		t.Errorf("an upload once the first is done: %d %s", r.Status, r.Body)
	}
}

// A request answered with an error leaves nothing in Zulip: a file that
// was already stored when the error showed is deleted again.
func TestErrorAnswersStoreNothing(t *testing.T) {
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	start(t, config{store: store})
	cases := map[string]struct {
		path  string
		parts []part
	}{
		"two files to upload_file": {"/upload_file", []part{
			{name: "file", filename: "a.txt", data: []byte("a")}, {name: "file", filename: "b.txt", data: []byte("b")}}},
		"a file, then a field upload_file does not take": {"/upload_file", []part{
			{name: "file", filename: "a.txt", data: []byte("a")}, {name: "comment", data: []byte("x")}}},
		"an image, then a bad field": {"/send_message?topic=t", []part{
			{name: "image", filename: "plot.png", data: []byte("png")}, {name: "to", data: []byte("other")}}},
		"an image, and no content": {"/send_message?topic=t", []part{
			{name: "image", filename: "plot.png", data: []byte("png")}}},
		"an image, then content over Zulip's limit": {"/send_message?topic=t", []part{
			{name: "image", filename: "plot.png", data: []byte("png")}, {name: "content", data: bytes.Repeat([]byte("x"), 10001)}}},
		"two files to Zulip's user_uploads": {"/api/v1/user_uploads", []part{
			{name: "a", filename: "a.txt", data: []byte("a")}, {name: "b", filename: "b.txt", data: []byte("b")}}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			before := env.emu.UploadCount()
			body, ct := multipartBody(t, tc.parts...)
			var r reply
			if strings.HasPrefix(tc.path, "/api/v1/") {
				req, _ := http.NewRequest("POST", base+tc.path, body)
				req.Header.Set("Content-Type", strings.TrimPrefix(ct, "Content-Type: "))
				req.SetBasicAuth("bot@example.com", key)
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				r = reply{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}
			} else {
				r = request(t, "POST", tc.path, body, withKey(key), ct)
			}
			assertError(t, r, 400, "")
			if n := env.emu.UploadCount(); n != before {
				t.Errorf("the request was refused, yet %d file(s) stayed in Zulip", n-before)
			}
		})
	}
}
