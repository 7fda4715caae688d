package zulipproxy

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
	"github.com/zwop/caddy-zulip-proxy/zulip"
)

// authorize's access matrix: each kind of route (public, any key, scoped,
// admin) with each way of presenting a key (X-API-key, HTTP Basic, a
// webhook's api_key), and each caller (none, an unknown key, a scoped
// key, an admin key).
func TestAuthorizeMatrix(t *testing.T) {
	t.Parallel()
	store, err := keystore.OpenFile(filepath.Join(t.TempDir(), "clients.json"), keystore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	scopedKey, _, err := store.Add(context.Background(), keystore.NewEntry{Stream: "general"})
	if err != nil {
		t.Fatal(err)
	}
	adminKey, _, err := store.Add(context.Background(), keystore.NewEntry{Admin: true})
	if err != nil {
		t.Fatal(err)
	}
	client, err := zulip.NewClient(zulip.Config{Site: "https://zulip.invalid", Email: "bot@zulip.invalid", APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	bt := newBot("default", client)
	h := &Handler{store: store, logger: zap.NewNop(), body: bodyReader{maxUpload: 1 << 20},
		bots: botSet{byName: map[string]*bot{"default": bt}, def: "default", fallback: bt}}

	callers := map[string]string{"none": "", "unknown": "zwop_notakeynotakeynotakeynotakeynotakeynota", "scoped": scopedKey, "admin": adminKey}
	// want: "" for allowed, else the status.
	want := map[access]map[string]int{
		public: {"none": 0, "unknown": 0, "scoped": 0, "admin": 0},
		anyKey: {"none": 401, "unknown": 401, "scoped": 0, "admin": 0},
		scoped: {"none": 401, "unknown": 401, "scoped": 0, "admin": 403},
		admin:  {"none": 401, "unknown": 401, "scoped": 403, "admin": 0},
	}
	places := map[keyPlace]string{keyHeader: "X-API-key", keyBasic: "Basic", keyWebhook: "webhook"}
	for acc, byCaller := range want {
		for place, placeName := range places {
			for caller, status := range byCaller {
				t.Run(placeName+"/"+caller, func(t *testing.T) {
					key := callers[caller]
					r := httptest.NewRequest("GET", "/x", nil)
					switch {
					case key == "":
					case place == keyHeader:
						r.Header.Set("X-API-key", key)
					case place == keyBasic:
						r.SetBasicAuth("anyone@example.org", key)
					case place == keyWebhook:
						r.URL.RawQuery = url.Values{"api_key": {key}}.Encode()
					}
					c := &call{h: h, route: &route{name: "r", access: acc, key: place}, start: time.Now()}
					err := h.authorize(httptest.NewRecorder(), r, c)
					got := 0
					if err != nil {
						got = err.(*apiError).Status
					}
					if got != status {
						t.Fatalf("access %d: got %d (%v), want %d", acc, got, err, status)
					}
					if status == 401 {
						challenge := `Basic realm="zulip"`
						if place == keyHeader {
							challenge = wwwAuthenticate
						}
						if got := err.(*apiError).Header.Get("WWW-Authenticate"); got != challenge {
							t.Errorf("WWW-Authenticate %q, want %q", got, challenge)
						}
					}
					if status == 0 && acc == scoped && c.bot != bt {
						t.Error("a scoped key was not bound to its bot")
					}
					if status == 0 && acc != public && c.key != key {
						t.Error("the caller's key was not kept for the request")
					}
				})
			}
		}
	}
}

// How a failed call to Zulip is answered: Zulip's own errors passed on,
// its nginx's pages by their status, an unreachable or confused Zulip
// 502, a slow one 504, anything else not Zulip's to answer.
func TestZulipFailure(t *testing.T) {
	t.Parallel()
	raw := &zulip.Response{Status: 400, Header: http.Header{"Content-Type": {"application/json"}},
		Body: []byte(`{"result":"error","msg":"Invalid channel name 'x'","code":"BAD_REQUEST"}`)}
	page := &zulip.Response{Status: 503, Header: http.Header{"Retry-After": {"30"}}, Body: []byte("<html>maintenance</html>")}
	cases := []struct {
		name       string
		err        error
		status     int    // of the answer; 0: not Zulip's failure
		passed     bool   // Zulip's body passed on
		code, want string // the proxy's own answer's code, and a part of its message
	}{
		{"Zulip's error", &zulip.Error{Status: 400, Code: "BAD_REQUEST", Msg: "Invalid channel name 'x'", Raw: raw}, 400, true, "", ""},
		{"Zulip's error without its body", &zulip.Error{Status: 429, Code: "RATE_LIMIT_HIT", Msg: "slow down", RetryAfter: 1500 * time.Millisecond}, 429, false, "RATE_LIMIT_HIT", "slow down"},
		{"nginx's 413", &zulip.BadResponseError{Status: 413, Reason: "not JSON"}, 413, false, codeTooLarge, "too large"},
		{"nginx's 502", &zulip.BadResponseError{Status: 502, Reason: "not JSON"}, 502, false, codeBadUpstream, "HTTP 502"},
		{"maintenance", &zulip.BadResponseError{Status: 503, Reason: "not JSON", Raw: page}, 503, false, codeUnavailable, "HTTP 503"},
		{"nginx's 504", &zulip.BadResponseError{Status: 504, Reason: "not JSON"}, 504, false, codeUpstreamTimeout, "HTTP 504"},
		{"garbage", &zulip.BadResponseError{Status: 200, Reason: "not JSON"}, 502, false, codeBadUpstream, "not Zulip's JSON"},
		{"timeout", &zulip.TransportError{Kind: zulip.ErrTimeout, Err: context.DeadlineExceeded}, 504, false, codeUpstreamTimeout, "within 7s"},
		{"unreachable", &zulip.TransportError{Kind: zulip.ErrUnreachable, Err: context.Canceled}, 502, false, codeUnreachable, "unreachable"},
		{"not Zulip's", context.Canceled, 0, false, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			resp, aerr, ok := zulipFailure(c.err, 7*time.Second)
			if ok != (c.status != 0) {
				t.Fatalf("ok %v, want %v", ok, c.status != 0)
			}
			if !ok {
				return
			}
			if c.passed {
				if resp == nil || resp.Status != c.status || aerr != nil {
					t.Fatalf("got %v %v, want Zulip's answer passed on", resp, aerr)
				}
				return
			}
			if resp != nil || aerr == nil || aerr.Status != c.status || aerr.Code != c.code || !strings.Contains(aerr.Msg, c.want) {
				t.Fatalf("got %v %+v, want %d %s %q", resp, aerr, c.status, c.code, c.want)
			}
			if c.name == "maintenance" && aerr.Header.Get("Retry-After") != "30" {
				t.Errorf("Retry-After %q, want Zulip's 30", aerr.Header.Get("Retry-After"))
			}
			if c.status == 429 && aerr.Header.Get("Retry-After") != "1.5" {
				t.Errorf("Retry-After %q, want 1.5", aerr.Header.Get("Retry-After"))
			}
		})
	}
}
