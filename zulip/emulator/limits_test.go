package emulator_test

import (
	"bytes"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

func TestRateLimit(t *testing.T) {
	clk := newClock()
	e := newEnv(t, emulator.WithRateLimit(3, time.Minute), emulator.WithClock(clk.Now))
	for i, want := range []string{"2", "1", "0"} {
		a := e.do(call{path: "/api/v1/users/me"})
		if a.status != 200 || a.header.Get("X-RateLimit-Remaining") != want || a.header.Get("X-RateLimit-Limit") != "3" {
			t.Fatalf("request %d: %d remaining %q", i, a.status, a.header.Get("X-RateLimit-Remaining"))
		}
		// As Zulip's Redis limiter: the window is all free again when
		// the newest request (this one) leaves it.
		if reset := a.header.Get("X-RateLimit-Reset"); reset != strconv.FormatInt(clk.Now().Add(time.Minute).Unix(), 10) {
			t.Errorf("request %d: X-RateLimit-Reset %s", i, reset)
		}
		clk.Advance(10 * time.Second)
	}
	a := e.do(call{path: "/api/v1/users/me"})
	wantError(t, a, 429, "RATE_LIMIT_HIT", "API usage exceeded rate limit")
	if ra := a.header.Get("Retry-After"); ra != "30" || a.num("retry-after") != 30 {
		t.Errorf("Retry-After %q, body %v", ra, a.json["retry-after"])
	}
	// Another user has a budget of their own.
	if a := e.do(call{path: "/api/v1/users/me", as: owner()}); a.status != 200 {
		t.Errorf("owner: %d", a.status)
	}
	clk.Advance(29500 * time.Millisecond)
	a = e.do(call{path: "/api/v1/users/me"})
	if ra := a.header.Get("Retry-After"); a.status != 429 || ra != "0.5" {
		// A float string, as Zulip sends it.
		t.Errorf("%d Retry-After %q", a.status, ra)
	}
	clk.Advance(time.Second)
	if a := e.do(call{path: "/api/v1/users/me"}); a.status != 200 {
		t.Errorf("after the window: %d", a.status)
	}
	// Unauthenticated requests do not count.
	e.srv.SetRateLimit(1, time.Minute)
	for i := 0; i < 3; i++ {
		e.do(call{path: "/api/v1/users/me", as: "-"})
		e.do(call{path: "/api/v1/server_settings", as: "-"})
	}
	if a := e.do(call{path: "/api/v1/users/me"}); a.status != 200 {
		t.Errorf("after unauthenticated requests: %d", a.status)
	}
}

func TestRateLimitOff(t *testing.T) {
	e := newEnv(t, emulator.WithRateLimit(0, 0))
	for i := 0; i < 250; i++ {
		if a := e.do(call{path: "/api/v1/users/me"}); a.status != 200 || a.header.Get("X-RateLimit-Limit") != "" {
			t.Fatalf("request %d: %d", i, a.status)
		}
	}
}

func multipartBody(t *testing.T, files map[string]string) (string, string) {
	t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	for name, content := range files {
		w, err := mw.CreateFormFile("file", name)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(w, content)
	}
	_ = mw.Close()
	return b.String(), mw.FormDataContentType()
}

func TestUploads(t *testing.T) {
	e := newEnv(t, emulator.WithMaxUpload(4096))
	body, ct := multipartBody(t, map[string]string{"résumé (v2).pdf": "%PDF-1.7 ..."})
	a := e.do(call{method: "POST", path: "/api/v1/user_uploads", body: body, ctype: ct})
	if a.status != 200 {
		t.Fatalf("%d %s", a.status, a.raw)
	}
	uri := a.str("uri")
	if !strings.HasPrefix(uri, "/user_uploads/2/") || a.str("url") != uri || a.str("filename") != "résumé-v2.pdf" {
		t.Errorf("%s", a.raw)
	}
	got := e.do(call{path: uri})
	if got.status != 200 || string(got.raw) != "%PDF-1.7 ..." {
		t.Errorf("served back: %d %q", got.status, got.raw)
	}
	if a := e.do(call{path: uri, as: "-"}); a.status != 401 {
		t.Errorf("served without credentials: %d", a.status)
	}
	if a := e.do(call{path: "/user_uploads/2/00/nothing/x.txt"}); a.status != 404 {
		t.Errorf("missing upload: %d", a.status)
	}

	none, ct := multipartBody(t, nil)
	wantError(t, e.do(call{method: "POST", path: "/api/v1/user_uploads", body: none, ctype: ct}), 400, "BAD_REQUEST", "You must specify a file to upload")
	two, ct := multipartBody(t, map[string]string{"a": "1", "b": "2"})
	wantError(t, e.do(call{method: "POST", path: "/api/v1/user_uploads", body: two, ctype: ct}), 400, "BAD_REQUEST", "You may only upload one file at a time")
}

// Bodies over the cap get nginx's HTML 413, with or without a
// Content-Length, and nothing reaches "Zulip" behind it.
func TestUploadCap(t *testing.T) {
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			e := newEnv(t, emulator.WithMaxUpload(4096))
			body, ct := multipartBody(t, map[string]string{"big.bin": strings.Repeat("x", 5000)})
			var r io.Reader = strings.NewReader(body)
			if chunked {
				r = io.MultiReader(r) // hides the length
			}
			req, _ := http.NewRequest("POST", e.srv.URL+"/api/v1/user_uploads", r)
			req.Header.Set("Content-Type", ct)
			req.SetBasicAuth(emulator.DemoBotEmail, emulator.DemoBotKey)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			page, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 413 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(page), "nginx") {
				t.Errorf("%d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), page)
			}
			log := e.srv.Requests()
			if len(log) != 1 || log[0].Status != 413 || log[0].User != "" {
				t.Errorf("log %+v", log)
			}
		})
	}
}

func TestMessagesAreBounded(t *testing.T) {
	e := newEnv(t, emulator.WithMaxMessages(3))
	var ids []int64
	for i := 0; i < 5; i++ {
		ids = append(ids, e.send("", "general", fmt.Sprint("t", i%2), "x"))
	}
	msgs := e.srv.Messages()
	if len(msgs) != 3 || msgs[0].ID != ids[2] {
		t.Errorf("kept %d messages from id %d", len(msgs), msgs[0].ID)
	}
	a := e.do(call{path: "/api/v1/users/me/1/topics"})
	if !strings.Contains(string(a.raw), `"max_id":5,"name":"t0"`) || !strings.Contains(string(a.raw), `"max_id":4,"name":"t1"`) {
		t.Errorf("%s", a.raw)
	}
}
