package caddytest

import (
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

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
	hook := func(query string) string { return "/api/v1/external/github?" + query }

	// Resolve the key's stream once, so the attacks below prove nothing
	// reaches Zulip.
	if r := zreq(t, "POST", hook("api_key="+url.QueryEscape(key)), "", payload, jsonCT); r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}

	t.Run("json payload, no stream given", func(t *testing.T) {
		mark := zulipMark()
		r := zreq(t, "POST", hook("api_key="+url.QueryEscape(key)+"&topic=builds"), "", payload, jsonCT)
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
		if strings.Contains(q.Query, key) || !strings.Contains(q.Body, `"workflow":"ci"`) {
			t.Errorf("query %q body %q", q.Query, q.Body)
		}
	})
	t.Run("own stream named in another case", func(t *testing.T) {
		r := zreq(t, "POST", hook("api_key="+url.QueryEscape(key)+"&stream=+GENERAL+"), "", payload, jsonCT)
		if r.Status != 200 || lastMessage(t).StreamID != gen {
			t.Errorf("%d %s", r.Status, r.Body)
		}
	})
	t.Run("form payload with the key in the body", func(t *testing.T) {
		mark := zulipMark()
		body := "api_key=" + url.QueryEscape(key) + "&payload=" + url.QueryEscape(payload) + "&topic=formtopic"
		r := zreq(t, "POST", "/api/v1/external/slack", "", body)
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
	})

	attacks := []struct {
		name, path, body, ctype string
		key                     string
		status                  int
	}{
		{"another stream in the query", hook("api_key=" + url.QueryEscape(key) + "&stream=other"), payload, jsonCT, "", 403},
		{"another stream by id in the query", hook("api_key=" + url.QueryEscape(key) + "&stream=2"), payload, jsonCT, "", 403},
		{"another stream in the body", "/api/v1/external/slack?api_key=" + url.QueryEscape(key), "stream=other&payload=x", "Content-Type: application/x-www-form-urlencoded", "", 403},
		{"stream twice", hook("api_key=" + url.QueryEscape(key) + "&stream=general&stream=other"), payload, jsonCT, "", 400},
		{"api_key twice", hook("api_key=" + url.QueryEscape(key) + "&api_key=x"), payload, jsonCT, "", 400},
		{"api_key in query and body", "/api/v1/external/slack?api_key=" + url.QueryEscape(key), "api_key=" + url.QueryEscape(key), "Content-Type: application/x-www-form-urlencoded", "", 400},
		{"method override", hook("api_key=" + url.QueryEscape(key) + "&method=GET"), payload, jsonCT, "", 400},
		{"no key", hook("topic=x"), payload, jsonCT, "", 401},
		{"unknown key", hook("api_key=zwop_nope"), payload, jsonCT, "", 401},
		{"the bot's own key is not a scoped key", hook("api_key=" + emulator.DemoBotKey), payload, jsonCT, "", 401},
		{"admin key", hook("api_key=" + url.QueryEscape(admin)), payload, jsonCT, "", 403},
		{"bad integration name", "/api/v1/external/../users?api_key=" + url.QueryEscape(key), payload, jsonCT, "", 404},
		{"multipart payload", hook("api_key=" + url.QueryEscape(key)), "--x--", "Content-Type: multipart/form-data; boundary=x", "", 415},
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			mark := zulipMark()
			r := zreq(t, "POST", a.path, a.key, a.body, a.ctype)
			if r.Status != a.status {
				t.Fatalf("%d, want %d: %s", r.Status, a.status, r.Body)
			}
			if a.status != 404 {
				assertError(t, r, a.status, "")
			}
			assertNothingReachedZulip(t, mark)
		})
	}
}
