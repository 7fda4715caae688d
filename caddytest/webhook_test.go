package caddytest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

// multipartString is a multipart body as a string, and its Content-Type
// header line.
func multipartString(t *testing.T, parts ...part) (body, ctype string) {
	t.Helper()
	r, hdr := multipartBody(t, parts...)
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), hdr
}

// bodyParams lists the names of a request's body parameters in order.
func bodyParams(r emulator.Request) []string {
	var names []string
	for _, p := range r.Params {
		if p.Source == "body" {
			names = append(names, p.Name)
		}
	}
	return names
}

// A webhook URL made by swapping the bot's key for a scoped key posts to
// the key's stream only.
func TestWebhooks(t *testing.T) {
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	admin, _ := adminKey(t, store)
	start(t, config{store: store})
	gen := streamID(t, "general")
	payload := `{"action":"completed","workflow":"ci","conclusion":"success"}`
	jsonCT := "Content-Type: application/json"
	formCT := "Content-Type: application/x-www-form-urlencoded"
	withAPIKey := "api_key=" + url.QueryEscape(key)
	hook := func(query string) string { return "/api/v1/external/github?" + query }
	teamcity := func(personal string) string {
		return `{"build":{"buildFullName":"proj :: tests","buildNumber":"7","buildResult":"success",` +
			`"teamcityProperties":[{"name":"env.BUILD_IS_PERSONAL","value":"` + personal + `"}],"triggeredBy":"Owner"}}`
	}

	// Resolve the key's stream once, so the attacks below prove nothing
	// reaches Zulip.
	if r := zreq(t, "POST", hook(withAPIKey), "", payload, jsonCT); r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}

	t.Run("json payload, no stream given", func(t *testing.T) {
		mark := zulipMark()
		r := zreq(t, "POST", hook(withAPIKey+"&topic=builds"), "", payload, jsonCT)
		if r.Status != 200 || r.JSON(t)["result"] != "success" {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
		m := lastMessage(t)
		if m.Type != "stream" || m.StreamID != gen || m.Topic != "builds" || m.SenderEmail != emulator.DemoBotEmail {
			t.Errorf("not in the key's stream (a webhook with no stream is a DM to the bot's owner): %+v", m)
		}
		reqs := zulipRequests(mark)
		if len(reqs) != 1 {
			t.Fatalf("%d requests reached Zulip", len(reqs))
		}
		q := reqs[0]
		if v, _, _ := q.Param("api_key"); v != emulator.DemoBotKey {
			t.Errorf("Zulip did not get the bot's key")
		}
		if v, _, _ := q.Param("stream"); v != fmt.Sprint(gen) {
			t.Errorf("stream sent to Zulip: %q", v)
		}
		if strings.Contains(q.Query, key) || q.Body != payload {
			t.Errorf("query %q body %q", q.Query, q.Body)
		}
	})
	t.Run("the caller's own key is never forwarded", func(t *testing.T) {
		// GitHub's ping quotes the hook's URL, api_key and all. (A key in
		// a header is replaced too, webhook_test.go in the root package:
		// here Caddy's access log would record it before the proxy runs.)
		ping := `{"zen":"Keep it logically awesome.","hook_id":1,"hook":{"config":{"url":"https://zwop.example.org/api/v1/external/github?api_key=` + key + `&topic=ci"}}}`
		for name, body := range map[string]struct{ body, ctype string }{
			"json":       {ping, jsonCT},
			"form":       {"payload=" + url.QueryEscape(ping), formCT},
			"url-quoted": {`{"url":"` + url.QueryEscape("https://x/?api_key="+key) + `"}`, jsonCT},
		} {
			mark := zulipMark()
			path := hook(withAPIKey)
			if body.ctype == formCT {
				path = "/api/v1/external/slack_incoming?" + withAPIKey
			}
			r := zreq(t, "POST", path, "", body.body, body.ctype, "X-GitHub-Event: ping")
			if r.Status != 200 {
				t.Fatalf("%s: %d %s", name, r.Status, r.Body)
			}
			reqs := zulipRequests(mark)
			if len(reqs) != 1 {
				t.Fatalf("%s: %d requests reached Zulip", name, len(reqs))
			}
			q := reqs[0]
			all := q.Query + q.Body + fmt.Sprint(q.Header) + fmt.Sprint(q.Params)
			if strings.Contains(all, key) {
				t.Errorf("%s: the caller's key reached Zulip", name)
			}
			if !strings.Contains(all, "zwop_REDACTED") {
				t.Errorf("%s: no marker where the key was: %s", name, all)
			}
		}
	})
	t.Run("the sender's event headers reach the integration, the proxy's do not", func(t *testing.T) {
		mark := zulipMark()
		r := zreq(t, "POST", hook(withAPIKey), "", `{"zen":"ok"}`, jsonCT,
			"X-GitHub-Event: ping", "X-GitHub-Delivery: 42", "X-API-key: "+key,
			"X-Forwarded-For: 10.9.8.7", "Cookie: sessionid=x")
		if r.Status != 200 {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
		q := zulipRequests(mark)[0]
		if q.Header.Get("X-Github-Event") != "ping" || q.Header.Get("X-Github-Delivery") != "42" {
			t.Errorf("event headers lost: %v", q.Header)
		}
		for _, h := range []string{"X-Api-Key", "X-Forwarded-For", "Cookie"} {
			if v := q.Header.Get(h); v != "" {
				t.Errorf("%s reached Zulip: %q", h, v)
			}
		}
	})
	for _, own := range []string{"+GENERAL+", fmt.Sprint(gen), "general"} {
		t.Run("own stream given as "+own, func(t *testing.T) {
			r := zreq(t, "POST", hook(withAPIKey+"&stream="+own), "", payload, jsonCT)
			if r.Status != 200 || lastMessage(t).StreamID != gen {
				t.Errorf("%d %s", r.Status, r.Body)
			}
		})
	}
	t.Run("form payload with the key in the body", func(t *testing.T) {
		mark := zulipMark()
		body := "payload=" + url.QueryEscape(payload) + "&" + withAPIKey + "&topic=formtopic&stream=general"
		r := zreq(t, "POST", "/api/v1/external/slack_incoming", "", body)
		if r.Status != 200 {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
		if m := lastMessage(t); m.StreamID != gen || m.Topic != "formtopic" {
			t.Errorf("%+v", m)
		}
		q := zulipRequests(mark)[0]
		if v, src, _ := q.Param("stream"); v != fmt.Sprint(gen) || src != "body" {
			t.Errorf("stream %q from %s: Zulip reads the body first, so the stream belongs there", v, src)
		}
		if got := strings.Join(bodyParams(q), ","); got != "stream,payload,topic" {
			t.Errorf("body fields %s: want the stream first and the sender's fields in order, without api_key", got)
		}
		if v, _, _ := q.Param("payload"); v != payload {
			t.Errorf("payload changed: %q", v)
		}
	})
	t.Run("multipart payload, as Jotform sends", func(t *testing.T) {
		mark := zulipMark()
		body, ctype := multipartString(t,
			part{name: "formTitle", data: []byte("Tutor Appointment Form")},
			part{name: "submissionID", data: []byte("6084250982513018472")},
			part{name: "pretty", data: []byte("Name:Ada, Subject:Math")})
		r := zreq(t, "POST", "/api/v1/external/jotform?"+withAPIKey, "", body, ctype)
		if r.Status != 200 {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
		q := zulipRequests(mark)[0]
		if !strings.HasPrefix(q.ContentType, "multipart/form-data") {
			t.Errorf("content type %q", q.ContentType)
		}
		if got := strings.Join(bodyParams(q), ","); got != "stream,formTitle,submissionID,pretty" {
			t.Errorf("body fields %s", got)
		}
		if v, src, _ := q.Param("stream"); v != fmt.Sprint(gen) || src != "body" {
			t.Errorf("stream %q from %s", v, src)
		}
		if v, _, _ := q.Param("pretty"); v != "Name:Ada, Subject:Math" {
			t.Errorf("field changed: %q", v)
		}
		if m := lastMessage(t); m.StreamID != gen {
			t.Errorf("%+v", m)
		}
	})
	t.Run("HTTP Basic integration", func(t *testing.T) {
		mark := zulipMark()
		r := zreq(t, "POST", "/api/v1/external/zendesk?topic=tickets", key, "ticket_title=Printer+on+fire&message=help")
		if r.Status != 200 {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
		q := zulipRequests(mark)[0]
		if q.User != emulator.DemoBotEmail || strings.Contains(q.Header.Get("Authorization"), key) {
			t.Errorf("Zulip saw user %q", q.User)
		}
		if _, _, ok := q.Param("api_key"); ok {
			t.Error("an api_key went with HTTP Basic")
		}
	})
	t.Run("slack mapping channels to topics", func(t *testing.T) {
		r := zreq(t, "POST", "/api/v1/external/slack?channels_map_to_topics=1&"+withAPIKey, "", "channel_name=other&user_name=u&text=t")
		if r.Status != 200 || lastMessage(t).StreamID != gen {
			t.Errorf("%d %s", r.Status, r.Body)
		}
	})
	t.Run("teamcity build that is not personal", func(t *testing.T) {
		mark := zulipMark()
		r := zreq(t, "POST", "/api/v1/external/teamcity?"+withAPIKey, "", teamcity("false"), jsonCT)
		if r.Status != 200 || lastMessage(t).StreamID != gen {
			t.Errorf("%d %s", r.Status, r.Body)
		}
		if q := zulipRequests(mark)[0]; q.Body != teamcity("false") {
			t.Errorf("payload changed: %q", q.Body)
		}
	})

	multipartStream, multipartStreamCT := multipartString(t, part{name: "formTitle", data: []byte("F")}, part{name: "stream", data: []byte("other")})
	multipartFile, multipartFileCT := multipartString(t, part{name: "upload", filename: "a.txt", data: []byte("x")})
	attacks := []struct {
		name, path, body, ctype string
		key                     string
		status                  int
	}{
		{"another stream in the query", hook(withAPIKey + "&stream=other"), payload, jsonCT, "", 403},
		{"another stream by id in the query", hook(withAPIKey + "&stream=2"), payload, jsonCT, "", 403},
		{"another stream in the body", "/api/v1/external/slack_incoming?" + withAPIKey, "stream=other&payload=x", formCT, "", 403},
		{"another stream in the body, own in the query", "/api/v1/external/slack_incoming?stream=general&" + withAPIKey, "stream=other&payload=x", formCT, "", 403},
		{"another stream in a multipart body", hook(withAPIKey), multipartStream, multipartStreamCT, "", 403},
		{"stream twice", hook(withAPIKey + "&stream=general&stream=other"), payload, jsonCT, "", 400},
		{"api_key twice", hook(withAPIKey + "&api_key=x"), payload, jsonCT, "", 400},
		{"api_key in query and body", "/api/v1/external/slack_incoming?" + withAPIKey, withAPIKey, formCT, "", 400},
		{"api_key and HTTP Basic", hook(withAPIKey), payload, jsonCT, key, 400},
		{"method override in the query", hook(withAPIKey + "&method=GET"), payload, jsonCT, "", 400},
		{"method override in a form body", "/api/v1/external/slack_incoming?" + withAPIKey, "method=GET&payload=x", formCT, "", 400},
		{"a field in both body and query", "/api/v1/external/slack_incoming?topic=a&" + withAPIKey, "topic=b&payload=x", formCT, "", 400},
		{"a field twice in the body", "/api/v1/external/slack_incoming?" + withAPIKey, "payload=x&payload=y", formCT, "", 400},
		{"a file in a multipart body", hook(withAPIKey), multipartFile, multipartFileCT, "", 400},
		// Django reads this as a form, with stream=other in it; Go's
		// parser does not, so the proxy refuses what it cannot read.
		{"a Content-Type the proxy cannot parse", hook(withAPIKey), "stream=other&payload=x", formCT + "; charset", "", 415},
		{"dialogflow, which sends only direct messages", "/api/v1/external/dialogflow?email=owner%40zulip.example.com&" + withAPIKey, payload, jsonCT, "", 403},
		{"yo, which sends only direct messages", "/api/v1/external/yo?email=owner%40zulip.example.com&" + withAPIKey, "", "", "", 403},
		{"slack mapping channels to streams, in the query", "/api/v1/external/slack?channels_map_to_topics=0&" + withAPIKey, "channel_name=other&user_name=u&text=t", formCT, "", 403},
		{"slack mapping channels to streams, in the body", "/api/v1/external/slack?" + withAPIKey, "channels_map_to_topics=0&channel_name=other&user_name=u&text=t", formCT, "", 403},
		// Zulip's Slack integration has since renamed the option above:
		// mapping=channels posts to the stream a Slack channel names.
		{"slack's mapping=channels, in the query", "/api/v1/external/slack?mapping=channels&" + withAPIKey, "channel_name=other&user_name=u&text=t", formCT, "", 400},
		{"slack's mapping=channels, in the body", "/api/v1/external/slack?" + withAPIKey, "mapping=channels&channel_name=other&user_name=u&text=t", formCT, "", 400},
		{"an option no integration of Zulip 10 reads", hook(withAPIKey + "&route_to=other"), payload, jsonCT, "", 400},
		{"teamcity personal build, a direct message to whoever started it", "/api/v1/external/teamcity?" + withAPIKey, teamcity("true"), jsonCT, "", 403},
		{"teamcity payload that is not JSON", "/api/v1/external/teamcity?" + withAPIKey, "build=x", "Content-Type: text/plain", "", 400},
		{"no key", hook("topic=x"), payload, jsonCT, "", 401},
		{"unknown key", hook("api_key=zwop_nope"), payload, jsonCT, "", 401},
		{"the bot's own key is not a scoped key", hook("api_key=" + emulator.DemoBotKey), payload, jsonCT, "", 401},
		{"admin key", hook("api_key=" + url.QueryEscape(admin)), payload, jsonCT, "", 403},
		{"bad integration name", "/api/v1/external/Git-Hub?" + withAPIKey, payload, jsonCT, "", 404},
		{"another method", "/api/v1/external/github?" + withAPIKey, payload, jsonCT, "", 405},
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			mark := zulipMark()
			method := "POST"
			if a.status == 405 {
				method = "PUT"
			}
			var hdrs []string
			if a.ctype != "" {
				hdrs = append(hdrs, a.ctype)
			}
			r := zreq(t, method, a.path, a.key, a.body, hdrs...)
			assertError(t, r, a.status, "")
			assertNothingReachedZulip(t, mark)
		})
	}
}

// A webhook's key is checked before its body is read: a caller without
// one never makes the proxy read more than a webhook field's bound. A
// 20 MiB body that stalls after 64 KiB, as JSON or as a form with no
// key in the URL, gets its 401 while the client still stalls (the
// config's client_idle_timeout is a minute), and nothing reaches Zulip.
func TestWebhookKeyBeforeBody(t *testing.T) {
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	start(t, config{store: store, extra: "client_idle_timeout 60s"})
	mark := zulipMark()
	for _, ctype := range []string{"application/json", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"} {
		t.Run(ctype, func(t *testing.T) {
			conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "POST /api/v1/external/github HTTP/1.1\r\nHost: localhost\r\nContent-Type: %s\r\nContent-Length: %d\r\nX-GitHub-Event: push\r\n\r\n", ctype, 20<<20)
			if _, err := conn.Write(make([]byte, 64<<10)); err != nil {
				t.Fatal(err)
			}
			// The client stalls here. A proxy that waits for the body
			// answers only after client_idle_timeout, a minute away.
			_ = conn.SetReadDeadline(time.Now().Add(15 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("no answer while the client stalls: %v", err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 401 {
				t.Errorf("status %d, want 401", resp.StatusCode)
			}
		})
	}
	assertNothingReachedZulip(t, mark)

	// A form with its key in the body, under the bound, still works.
	body := "api_key=" + url.QueryEscape(key) + "&payload=" + url.QueryEscape(`{"zen": "Keep it logically awesome."}`)
	r := request(t, "POST", "/api/v1/external/github?topic=forms", strings.NewReader(body),
		"Content-Type: application/x-www-form-urlencoded", "X-GitHub-Event: ping")
	if r.Status != 200 {
		t.Errorf("a form with its key in the body: %d %s", r.Status, r.Body)
	}
}
