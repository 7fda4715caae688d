package emulator_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

func TestFaultSwitches(t *testing.T) {
	tests := []struct {
		name  string
		fault emulator.Fault
		check func(t *testing.T, resp *http.Response, body []byte, err error)
	}{
		{"drop", emulator.Fault{Drop: true}, func(t *testing.T, resp *http.Response, _ []byte, err error) {
			if err == nil {
				t.Errorf("got an answer %d, want a dropped connection", resp.StatusCode)
			}
		}},
		{"garbage", emulator.Fault{Garbage: true}, func(t *testing.T, resp *http.Response, body []byte, err error) {
			if err != nil || resp.StatusCode != 200 || json.Valid(body) || resp.Header.Get("Content-Type") != "application/json" {
				t.Errorf("%v %d %q", err, resp.StatusCode, body)
			}
		}},
		{"rate limited", emulator.Fault{RateLimited: true, RetryAfter: 0.25}, func(t *testing.T, resp *http.Response, body []byte, err error) {
			if err != nil || resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "0.25" || !strings.Contains(string(body), `"retry-after":0.25`) {
				t.Errorf("%v %d %v %s", err, resp.StatusCode, resp.Header, body)
			}
		}},
		{"500", emulator.Fault{Status: 500}, func(t *testing.T, resp *http.Response, body []byte, err error) {
			if err != nil || resp.StatusCode != 500 || string(body) != `{"result":"error","msg":"Internal server error"}` {
				t.Errorf("%v %d %s", err, resp.StatusCode, body)
			}
		}},
		{"502", emulator.Fault{Status: 502}, func(t *testing.T, resp *http.Response, body []byte, err error) {
			if err != nil || resp.StatusCode != 502 || !strings.Contains(string(body), "<center><h1>502 Bad Gateway</h1></center>") {
				t.Errorf("%v %d %s", err, resp.StatusCode, body)
			}
		}},
		{"503", emulator.Fault{Status: 503}, func(t *testing.T, resp *http.Response, _ []byte, err error) {
			if err != nil || resp.StatusCode != 503 || resp.Header.Get("Content-Type") != "text/html" {
				t.Errorf("%v %d", err, resp.StatusCode)
			}
		}},
		{"other status", emulator.Fault{Status: 418}, func(t *testing.T, resp *http.Response, body []byte, err error) {
			if err != nil || resp.StatusCode != 418 || !strings.Contains(string(body), `"code":"BAD_REQUEST"`) {
				t.Errorf("%v %d %s", err, resp.StatusCode, body)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := emulator.NewServer(t)
			if err := srv.SetFault(tt.fault); err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequest("POST", srv.URL+"/api/v1/messages", strings.NewReader(form("type", "stream", "to", "general", "topic", "t", "content", "c")))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth(emulator.DemoBotEmail, emulator.DemoBotKey)
			resp, err := http.DefaultClient.Do(req)
			var body []byte
			if err == nil {
				body, _ = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			tt.check(t, resp, body, err)
			if n := len(srv.Messages()); n != 0 {
				t.Errorf("%d messages stored behind a fault", n)
			}
			log := srv.Requests()
			if len(log) != 1 || log[0].Fault == "" {
				t.Errorf("log %+v", log)
			}
			if _, active := srv.CurrentFault(); !active {
				t.Error("a fault without Count switched itself off")
			}
		})
	}
}

// A delayed request is still processed after the client gave up, as with
// real Zulip: a send that timed out may have been delivered.
func TestDelayFaultStillDelivers(t *testing.T) {
	srv := emulator.NewServer(t)
	if err := srv.SetFault(emulator.Fault{Delay: 150 * time.Millisecond, Count: 1}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+"/api/v1/messages", strings.NewReader(form("type", "stream", "to", "general", "topic", "t", "content", "late")))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(emulator.DemoBotEmail, emulator.DemoBotKey)
	_, err := http.DefaultClient.Do(req)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the client's deadline", err)
	}
	// A test waits on InFlight before it counts what reaches Zulip, so
	// such a late request is not taken for its own.
	if n := srv.InFlight(); n != 1 {
		t.Errorf("in flight after the client gave up: %d, want 1", n)
	}
	srv.HTTP.Close() // waits for the handler
	if n := srv.InFlight(); n != 0 {
		t.Errorf("in flight once handled: %d, want 0", n)
	}
	if msgs := srv.Messages(); len(msgs) != 1 || msgs[0].Content != "late" {
		t.Errorf("messages %+v", msgs)
	}
	if log := srv.Requests(); len(log) != 1 || log[0].Fault != "delay" || log[0].Status != 200 {
		t.Errorf("log %+v", log)
	}
}

func TestFaultCountAndPath(t *testing.T) {
	e := newEnv(t)
	e.hc = &http.Client{}
	if err := e.srv.SetFault(emulator.Fault{Status: 502, Count: 2, PathPrefix: "/api/v1/users/me"}); err != nil {
		t.Fatal(err)
	}
	if a := e.do(call{path: "/api/v1/server_settings"}); a.status != 200 {
		t.Errorf("another path was faulted: %d", a.status)
	}
	for i, want := range []int{502, 502, 200} {
		if a := e.do(call{path: "/api/v1/users/me"}); a.status != want {
			t.Errorf("request %d: %d, want %d", i, a.status, want)
		}
	}
	if _, active := e.srv.CurrentFault(); active {
		t.Error("still active after Count requests")
	}
}

func TestSetFaultRejectsNonsense(t *testing.T) {
	srv := emulator.NewServer(t)
	for _, f := range []emulator.Fault{{}, {Status: 200}, {Delay: -time.Second}, {Count: -1, Drop: true}, {RateLimited: true, RetryAfter: -1}} {
		if err := srv.SetFault(f); err == nil {
			t.Errorf("%+v accepted", f)
		}
	}
	srv.ClearFault()
	if _, active := srv.CurrentFault(); active {
		t.Error("active after ClearFault")
	}
}

func TestRequestLog(t *testing.T) {
	e := newEnv(t, emulator.WithMaxLogEntries(3))
	for i := 0; i < 5; i++ {
		e.do(call{method: "POST", path: "/api/v1/messages", query: "topic=q", body: form("type", "stream", "to", "general", "content", "c", "content", "d")})
	}
	log := e.srv.Requests()
	if len(log) != 3 || log[0].Seq != 3 || log[2].Seq != 5 {
		t.Fatalf("kept seqs %v", seqs(log))
	}
	r := log[2]
	if v, src, _ := r.Param("content"); v != "d" || src != "body" {
		t.Errorf("content %q from %s: Param must answer as Zulip reads", v, src)
	}
	if v, src, _ := r.Param("topic"); v != "q" || src != "query" {
		t.Errorf("topic %q from %s", v, src)
	}
	if r.User != emulator.DemoBotEmail || r.Status != 200 || r.Method != "POST" || r.Path != "/api/v1/messages" || r.Query != "topic=q" {
		t.Errorf("record %+v", r)
	}
	mark := e.srv.LastSeq()
	e.do(call{path: "/api/v1/users/me"})
	if after := e.srv.RequestsAfter(mark); len(after) != 1 || after[0].Path != "/api/v1/users/me" {
		t.Errorf("after the mark: %v", seqs(after))
	}
	e.srv.ResetRequests()
	if len(e.srv.Requests()) != 0 {
		t.Error("not reset")
	}
	e.do(call{path: "/api/v1/users/me"})
	if log := e.srv.Requests(); len(log) != 1 || log[0].Seq != 7 {
		t.Errorf("numbering restarted: %v", seqs(log))
	}
}

func seqs(rs []emulator.Request) []uint64 {
	var out []uint64
	for _, r := range rs {
		out = append(out, r.Seq)
	}
	return out
}

func TestControlEndpoints(t *testing.T) {
	srv := emulator.NewServer(t)
	ctl := func(method, path, body string) (int, map[string]any) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&v)
		return resp.StatusCode, v
	}
	if st, _ := ctl("GET", "/_emulator/fault", ""); st != 404 {
		t.Errorf("no fault: %d", st)
	}
	if st, v := ctl("POST", "/_emulator/fault", `{"status": 503, "count": 1, "delay": "5ms"}`); st != 200 {
		t.Fatalf("set fault: %d %v", st, v)
	}
	if st, v := ctl("GET", "/_emulator/fault", ""); st != 200 || v["status"] != float64(503) || v["delay"] != "5ms" {
		t.Errorf("fault %d %v", st, v)
	}
	if st, _ := ctl("POST", "/_emulator/fault", `{"status": 200}`); st != 400 {
		t.Errorf("nonsense fault: %d", st)
	}
	req, _ := http.NewRequest("GET", srv.URL+"/api/v1/users/me", nil)
	req.SetBasicAuth(emulator.DemoBotEmail, emulator.DemoBotKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get(emulator.FaultHeader) != "status" {
		t.Errorf("fault not applied: %d", resp.StatusCode)
	}
	st, v := ctl("GET", "/_emulator/requests", "")
	reqs, _ := v["requests"].([]any)
	if st != 200 || len(reqs) != 1 || reqs[0].(map[string]any)["status"] != float64(503) {
		t.Errorf("requests %d %v", st, v)
	}
	if st, v := ctl("GET", "/_emulator/requests?after=1", ""); st != 200 || len(v["requests"].([]any)) != 0 {
		t.Errorf("after=1: %v", v)
	}
	if st, _ := ctl("DELETE", "/_emulator/requests", ""); st != 200 || len(srv.Requests()) != 0 {
		t.Errorf("delete requests: %d", st)
	}
	if st, v := ctl("GET", "/_emulator/state", ""); st != 200 || len(v["users"].([]any)) != 2 || len(v["streams"].([]any)) != 2 ||
		strings.Contains(toJSON(v), emulator.DemoBotKey) {
		t.Errorf("state %d %v", st, v)
	}
	if st, v := ctl("GET", "/_emulator/messages", ""); st != 200 || v["messages"] != nil && len(v["messages"].([]any)) != 0 {
		t.Errorf("messages %d %v", st, v)
	}
	if st, _ := ctl("PUT", "/_emulator/requests", ""); st != 405 {
		t.Errorf("wrong method: %d", st)
	}
	if st, _ := ctl("GET", "/_emulator/nope", ""); st != 404 {
		t.Errorf("unknown control: %d", st)
	}
	// Down and up again, as the demo switches Zulip.
	me := func() int {
		req, _ := http.NewRequest("GET", srv.URL+"/api/v1/users/me", nil)
		req.SetBasicAuth(emulator.DemoBotEmail, emulator.DemoBotKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st, _ := ctl("POST", "/_emulator/down", ""); st != 200 {
		t.Errorf("down: %d", st)
	}
	if got := me(); got != 502 {
		t.Errorf("while down: %d, want 502", got)
	}
	if got := me(); got != 502 {
		t.Errorf("still down: %d, want 502", got)
	}
	if st, _ := ctl("POST", "/_emulator/up", ""); st != 200 {
		t.Errorf("up: %d", st)
	}
	if got := me(); got != 200 {
		t.Errorf("up again: %d, want 200", got)
	}
	if st, _ := ctl("GET", "/_emulator/down", ""); st != 405 {
		t.Errorf("GET down: %d", st)
	}
	srv.ResetRequests()
	if len(srv.Requests()) != 0 {
		t.Error("control requests were logged as Zulip requests")
	}
}

func toJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

func TestWebhooks(t *testing.T) {
	tests := []struct {
		name        string
		integration string
		as          string // "-" for none: api_key in query instead
		query       string
		body        string
		ctype       string
		// want is "stream:<name>/<topic>" or "dm:<recipient email>", or an error code.
		want string
	}{
		{"stream and topic from the query", "github", "-", "api_key=" + emulator.DemoBotKey + "&stream=general&topic=ci", `{"a":1}`, "application/json", "stream:general/ci"},
		{"no stream: direct message to the owner", "github", "-", "api_key=" + emulator.DemoBotKey, `{"a":1}`, "application/json", "dm:" + emulator.DemoOwnerEmail},
		{"form body beats the query", "slack", "-", "api_key=" + emulator.DemoBotKey + "&stream=general", form("stream", "other", "text", "hi"), "", "stream:other/slack"},
		{"stream by id", "github", "-", "api_key=" + emulator.DemoBotKey + "&stream=2", `{}`, "application/json", "stream:other/github"},
		{"unknown stream", "github", "-", "api_key=" + emulator.DemoBotKey + "&stream=nope", `{}`, "application/json", "STREAM_DOES_NOT_EXIST"},
		{"no api_key", "github", "-", "stream=general", `{}`, "application/json", "REQUEST_VARIABLE_MISSING"},
		{"wrong api_key", "github", "-", "api_key=" + strings.Repeat("z", 32), `{}`, "application/json", "INVALID_API_KEY"},
		{"Basic-auth integration", "zendesk", "", "stream=general", `{}`, "application/json", "stream:general/zendesk"},
		{"Basic-auth integration ignores api_key", "zendesk", "-", "api_key=" + emulator.DemoBotKey + "&stream=general", `{}`, "application/json", "UNAUTHORIZED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			a := e.do(call{method: "POST", path: "/api/v1/external/" + tt.integration, as: tt.as, query: tt.query, body: tt.body, ctype: tt.ctype})
			if !strings.Contains(tt.want, ":") {
				if a.str("code") != tt.want {
					t.Errorf("%d %s, want %s", a.status, a.raw, tt.want)
				}
				return
			}
			if a.status != 200 {
				t.Fatalf("%d %s", a.status, a.raw)
			}
			m := e.srv.Messages()[0]
			var got string
			if m.Type == "stream" {
				for _, s := range e.srv.Streams() {
					if s.ID == m.StreamID {
						got = "stream:" + s.Name + "/" + m.Topic
					}
				}
			} else {
				for _, u := range e.srv.Users() {
					if u.ID == m.Recipients[len(m.Recipients)-1] {
						got = "dm:" + u.Email
					}
				}
			}
			if got != tt.want {
				t.Errorf("delivered to %s, want %s", got, tt.want)
			}
		})
	}
}
