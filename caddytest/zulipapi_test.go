package caddytest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/zwop/caddy-zulip-proxy/zulip"
	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

// zreq sends a request to the Zulip-compatible API with HTTP Basic, as
// Zulip's clients do.
func zreq(t *testing.T, method, path, key, body string, headers ...string) reply {
	t.Helper()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.SetBasicAuth("anyone@example.com", key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}
}

// Our own Zulip client, pointed at the proxy with a scoped key, works as
// against Zulip for everything on the allow-list.
func TestZulipAPIWithAZulipClient(t *testing.T) {
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	start(t, config{store: store})
	c, err := zulip.NewClient(zulip.Config{Site: base, Email: "whoever@example.com", APIKey: key})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	gen := streamID(t, "general")

	id, _, err := c.GetStreamID(ctx, " General ")
	if err != nil || id != gen {
		t.Fatalf("get_stream_id: %d %v", id, err)
	}
	sent, err := c.SendMessage(ctx, zulip.SendMessage{StreamID: gen, Topic: "zulip api", Content: "via the Zulip API"})
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	if m, _ := env.emu.Message(sent.ID); m.StreamID != gen || m.Content != "via the Zulip API" || m.SenderEmail != emulator.DemoBotEmail {
		t.Errorf("stored: %+v", m)
	}
	if _, err := c.StreamTopicsWith(ctx, gen, zulip.ReadOptions{}); err != nil {
		t.Errorf("topics: %v", err)
	}
	msg, _, err := c.GetMessage(ctx, sent.ID)
	if err != nil || msg.ID != sent.ID {
		t.Errorf("get message: %v %+v", err, msg)
	}
	topic, content := "zulip api renamed", "edited via the Zulip API"
	if _, err := c.UpdateMessage(ctx, sent.ID, zulip.UpdateMessage{Topic: &topic, Content: &content}); err != nil {
		t.Errorf("update: %v", err)
	}
	if m, _ := env.emu.Message(sent.ID); m.Topic != topic || m.Content != content {
		t.Errorf("after update: %+v", m)
	}
	resp, err := c.GetMessages(ctx, zulip.GetMessages{Anchor: "newest", NumBefore: 50,
		Narrow: []zulip.NarrowTerm{{Operator: "stream", Operand: "general"}, {Operator: "topic", Operand: topic}}})
	if err != nil || !strings.Contains(string(resp.Body), "edited via the Zulip API") {
		t.Errorf("get messages: %v %s", err, resp.Body)
	}
	me, _, err := c.Me(ctx)
	if err != nil || me.Email != emulator.DemoBotEmail {
		t.Errorf("users/me: %v %+v", err, me)
	}
	up, err := c.UploadFile(ctx, "notes.txt", "text/plain", strings.NewReader("notes"))
	if err != nil || !strings.HasPrefix(up.URI, "/user_uploads/") {
		t.Errorf("upload: %v %+v", err, up)
	}
	if _, err := c.ServerSettings(ctx); err != nil {
		t.Errorf("server_settings: %v", err)
	}
}

func TestZulipAPIAuthentication(t *testing.T) {
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	admin, _ := adminKey(t, store)
	start(t, config{store: store})
	mark := zulipMark()
	for name, r := range map[string]reply{
		"no credentials":         zreq(t, "GET", "/api/v1/users/me", "", ""),
		"unknown key":            zreq(t, "GET", "/api/v1/users/me", "zwop_nope", ""),
		"X-API-key is not Basic": zreq(t, "GET", "/api/v1/users/me", "", "", withKey(key)),
		"empty password":         zreq(t, "GET", "/api/v1/users/me", "", "", "Authorization: Basic YW55b25lQGV4YW1wbGUuY29tOg=="),
	} {
		t.Run(name, func(t *testing.T) {
			m := assertError(t, r, 401, "")
			if r.Header.Get("WWW-Authenticate") != `Basic realm="zulip"` || m["code"] != "UNAUTHORIZED" {
				t.Errorf("not Zulip's 401: %v %s", r.Header, r.Body)
			}
			if strings.Contains(r.Body, "X-API-key header") {
				t.Errorf("the Zulip API points to the bot API's header: %s", r.Body)
			}
		})
	}
	assertError(t, zreq(t, "POST", "/api/v1/messages", admin, "type=stream&to=general&topic=t&content=x"), 403, "admin keys")
	assertNothingReachedZulip(t, mark)
	if r := zreq(t, "GET", "/api/v1/server_settings", "", ""); r.Status != 200 || !strings.Contains(r.Body, "zulip_version") {
		t.Errorf("server_settings without a key: %d %s", r.Status, r.Body)
	}
}

// Every rule of the Zulip-compatible API, attacked: nothing reaches Zulip.
func TestZulipAPIScope(t *testing.T) {
	store := newStore(t)
	// A key for "other" (id 2), so that `to=true` (stream id 1, general)
	// is an attack.
	key, _ := scopedKey(t, store, "other")
	start(t, config{store: store})
	gen, oth := streamID(t, "general"), streamID(t, "other")
	if gen != 1 {
		t.Fatalf("the test needs general to be stream 1, it is %d", gen)
	}
	send := func(to string) string {
		return "type=stream&topic=t&content=x&to=" + url.QueryEscape(to)
	}
	// The proxy asks Zulip once for its own stream's id and its bot's
	// user id, which it needs to compare ids; do that first, so that what
	// follows proves no attack reaches Zulip at all.
	if r := zreq(t, "POST", "/api/v1/messages", key, send("other")); r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	if r := zreq(t, "GET", "/api/v1/messages?num_before=1", key, ""); r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	attacks := []struct {
		name, method, path, body string
		status                   int
	}{
		{"another stream by name", "POST", "/api/v1/messages", send("general"), 403},
		{"another stream by name, other case and spaces", "POST", "/api/v1/messages", send("  GENERAL "), 403},
		{"another stream by id", "POST", "/api/v1/messages", send(fmt.Sprint(gen)), 403},
		{"another stream as a JSON list of an id", "POST", "/api/v1/messages", send(fmt.Sprintf("[%d]", gen)), 403},
		{"another stream as a JSON list of a name", "POST", "/api/v1/messages", send(`["general"]`), 403},
		{"another stream as a JSON string", "POST", "/api/v1/messages", send(`"general"`), 403},
		{"true, which Zulip reads as stream 1", "POST", "/api/v1/messages", send("true"), 403},
		{"two streams", "POST", "/api/v1/messages", send(`["other","general"]`), 400},
		{"private message", "POST", "/api/v1/messages", "type=private&to=%5B1%5D&content=x", 400},
		{"direct message", "POST", "/api/v1/messages", "type=direct&to=%5B1%5D&content=x", 400},
		{"method override in the body", "POST", "/api/v1/messages", send("other") + "&method=GET", 400},
		{"method override in the query", "POST", "/api/v1/messages?method=DELETE", send("other"), 400},
		{"topic twice", "POST", "/api/v1/messages?topic=u", send("other"), 400},
		{"to twice", "POST", "/api/v1/messages?to=other", send("other"), 400},
		{"to twice in the body", "POST", "/api/v1/messages", send("other") + "&to=general", 400},
		{"to as a JSON object", "POST", "/api/v1/messages", send(`{"name":"general"}`), 400},
		{"an unknown parameter", "POST", "/api/v1/messages", send("other") + "&sender=owner", 400},
		{"stream_id in the query of an edit", "PATCH", "/api/v1/messages/1?stream_id=1", "topic=t", 403},
		{"topic with subject", "POST", "/api/v1/messages", send("other") + "&subject=s", 400},
		{"stream_id on send", "POST", "/api/v1/messages", send("other") + "&stream_id=1", 400},
		{"client narrow on another stream", "GET", "/api/v1/messages?narrow=" + url.QueryEscape(`[{"operator":"channel","operand":"general"}]`), "", 403},
		{"client narrow by id", "GET", "/api/v1/messages?narrow=" + url.QueryEscape(fmt.Sprintf(`[{"operator":"stream","operand":%d}]`, gen)), "", 403},
		{"client narrow with 'with'", "GET", "/api/v1/messages?narrow=" + url.QueryEscape(`[{"operator":"with","operand":1}]`), "", 400},
		{"client narrow, legacy pair form", "GET", "/api/v1/messages?narrow=" + url.QueryEscape(`[["stream","general"]]`), "", 403},
		{"client narrow on direct messages", "GET", "/api/v1/messages?narrow=" + url.QueryEscape(`[{"operator":"is","operand":"dm"}]`), "", 400},
		{"client narrow by another sender", "GET", "/api/v1/messages?narrow=" + url.QueryEscape(`[{"operator":"sender","operand":"owner@zulip.example.com"}]`), "", 400},
		{"client narrow, negated stream", "GET", "/api/v1/messages?narrow=" + url.QueryEscape(`[{"operator":"channel","operand":"other","negated":true}]`), "", 403},
		{"client narrow search", "GET", "/api/v1/messages?narrow=" + url.QueryEscape(`[{"operator":"search","operand":"password"}]`), "", 400},
		{"num_before too many", "GET", "/api/v1/messages?num_before=5000", "", 400},
		{"subscribe, which creates streams", "POST", "/api/v1/users/me/subscriptions", "subscriptions=" + url.QueryEscape(`[{"name":"new"}]`), 404},
		{"list subscriptions", "GET", "/api/v1/users/me/subscriptions", "", 404},
		{"list streams", "GET", "/api/v1/streams", "", 404},
		{"list users", "GET", "/api/v1/users", "", 404},
		{"delete a message", "DELETE", "/api/v1/messages/1", "", 405},
		{"move a message to another stream", "PATCH", "/api/v1/messages/1", "stream_id=1&topic=t", 403},
		{"edit with change_all", "PATCH", "/api/v1/messages/1", "topic=t&propagate_mode=change_all", 403},
		{"edit with a disagreeing message_id", "PATCH", "/api/v1/messages/1?message_id=2", "topic=t", 400},
		{"another stream's id", "GET", "/api/v1/get_stream_id?stream=general", "", 403},
		{"another stream's topics", "GET", fmt.Sprintf("/api/v1/users/me/%d/topics", gen), "", 403},
		{"a body Zulip would not read as a form", "POST", "/api/v1/messages", "", 415},
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			mark := zulipMark()
			var hdrs []string
			body := a.body
			if a.status == 415 {
				body = `{"type":"stream","to":"general"}`
				hdrs = append(hdrs, "Content-Type: application/json")
			}
			r := zreq(t, a.method, a.path, key, body, hdrs...)
			assertError(t, r, a.status, "")
			assertNothingReachedZulip(t, mark)
		})
	}

	accepted := []string{"other", " Other ", "OTHER", `"other"`, `["other"]`, fmt.Sprint(oth), fmt.Sprintf("[%d]", oth)}
	for _, to := range accepted {
		t.Run("own stream as "+to, func(t *testing.T) {
			r := zreq(t, "POST", "/api/v1/messages", key, send(to))
			if r.Status != 200 || lastMessage(t).StreamID != oth {
				t.Errorf("%d %s", r.Status, r.Body)
			}
		})
	}
	t.Run("no to: the key's stream", func(t *testing.T) {
		r := zreq(t, "POST", "/api/v1/messages", key, "type=channel&topic=t&content=no+to")
		if m := lastMessage(t); r.Status != 200 || m.StreamID != oth || m.Content != "no to" {
			t.Errorf("%d %s", r.Status, r.Body)
		}
	})
	t.Run("multipart body naming another stream", func(t *testing.T) {
		mark := zulipMark()
		body, ctype := multipartString(t, part{name: "type", data: []byte("stream")}, part{name: "to", data: []byte("general")},
			part{name: "topic", data: []byte("t")}, part{name: "content", data: []byte("x")})
		assertError(t, zreq(t, "POST", "/api/v1/messages", key, body, ctype), 403, "may only use the stream 'other'")
		body, ctype = multipartString(t, part{name: "to", data: []byte("other")}, part{name: "topic", data: []byte("t")},
			part{name: "content", data: []byte("x")}, part{name: "method", data: []byte("DELETE")})
		assertError(t, zreq(t, "POST", "/api/v1/messages", key, body, ctype), 400, "method")
		assertNothingReachedZulip(t, mark)
	})
	t.Run("someone else's message", func(t *testing.T) {
		theirs := sendDirect(t, emulator.DemoOwnerEmail, emulator.DemoOwnerKey, "other", "theirs", "not yours")
		for _, try := range []struct{ method, body string }{{"GET", ""}, {"PATCH", "content=mine+now"}, {"PATCH", "topic=moved"}} {
			mark := zulipMark()
			r := zreq(t, try.method, fmt.Sprintf("/api/v1/messages/%d", theirs), key, try.body)
			assertError(t, r, 403, "not a message this key sent")
			assertNoWriteReachedZulip(t, mark)
		}
		if m, _ := env.emu.Message(theirs); m.Content != "not yours" || m.Topic != "theirs" {
			t.Errorf("changed: %+v", m)
		}
	})
}

// server_settings needs no key; with a scoped key it answers from that
// key's Zulip, so a client of a second bot on another server learns the
// right server.
func TestZulipAPIServerSettingsPerBot(t *testing.T) {
	second := emulator.NewServer(t, emulator.WithRateLimit(0, 0))
	store := newStore(t)
	key, _ := scopedKey(t, store, "general", "--bot", "second")
	start(t, config{store: store, extra: `bot second {
			site ` + second.URL + `
			email ` + emulator.DemoBotEmail + `
			api_key {env.` + botKeyEnv + `}
		}`})
	for _, tc := range []struct {
		name, key string
		second    bool
	}{
		{"no key: the default bot's Zulip", "", false},
		{"a key of the second bot: its Zulip", key, true},
		{"an unknown key is no error here", "zwop_nope", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, mark := len(second.Requests()), zulipMark()
			r := zreq(t, "GET", "/api/v1/server_settings", tc.key, "")
			if r.Status != 200 || !strings.Contains(r.Body, "zulip_version") {
				t.Fatalf("%d %s", r.Status, r.Body)
			}
			toSecond, toFirst := len(second.Requests()) > before, len(zulipRequests(mark)) > 0
			if toSecond != tc.second || toFirst == tc.second {
				t.Errorf("asked the second Zulip %v, the first %v", toSecond, toFirst)
			}
		})
	}
}

// Zulip's read options that change only how an answer is written reach
// Zulip; they were once accepted and dropped (apply_markdown=false gave
// rendered HTML). Any other option is refused, not dropped.
func TestZulipAPIReadOptionsReachZulip(t *testing.T) {
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	start(t, config{store: store})
	r := zreq(t, "POST", "/api/v1/messages", key, "type=stream&to=general&topic=options&content=**bold**")
	if r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	id := int64(r.JSON(t)["id"].(float64))
	path := fmt.Sprintf("/api/v1/messages/%d", id)

	raw := zreq(t, "GET", path+"?apply_markdown=false", key, "")
	if msg, _ := raw.JSON(t)["message"].(map[string]any); raw.Status != 200 || msg["content"] != "**bold**" {
		t.Errorf("apply_markdown=false: %d %s", raw.Status, raw.Body)
	}
	html := zreq(t, "GET", path, key, "")
	if msg, _ := html.JSON(t)["message"].(map[string]any); html.Status != 200 || msg["content"] == "**bold**" {
		t.Errorf("the default, rendered: %d %s", html.Status, html.Body)
	}

	mark := zulipMark()
	opts := "client_gravatar=false&include_anchor=false&use_first_unread_anchor=false&allow_empty_topic_name=true&apply_markdown=false"
	if r := zreq(t, "GET", "/api/v1/messages?anchor=newest&num_before=5&"+opts, key, ""); r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	var got *emulator.Request
	for _, q := range env.emu.RequestsAfter(mark) {
		if q.Path == "/api/v1/messages" {
			got = &q
		}
	}
	if got == nil {
		t.Fatal("GET /messages did not reach Zulip")
	}
	for _, name := range []string{"client_gravatar", "include_anchor", "use_first_unread_anchor", "allow_empty_topic_name", "apply_markdown"} {
		if _, _, ok := got.Param(name); !ok {
			t.Errorf("%s did not reach Zulip: %s", name, got.Query)
		}
	}
	mark = zulipMark()
	assertError(t, zreq(t, "GET", "/api/v1/messages?anchor=newest&include_subscribers=true", key, ""), 400, "include_subscribers")
	assertError(t, zreq(t, "GET", path+"?apply_markdown=maybe", key, ""), 400, "apply_markdown")
	// The anchor and the counts are checked as the bot API checks them.
	assertError(t, zreq(t, "GET", "/api/v1/messages?anchor=drop", key, ""), 400, "'anchor' must be a message id")
	assertError(t, zreq(t, "GET", "/api/v1/messages?num_after=1001", key, ""), 400, "'num_after' must be an integer from 0 to 1000")
	assertError(t, zreq(t, "GET", "/api/v1/messages?num_before=-1", key, ""), 400, "'num_before' must be an integer from 0 to 1000")
	assertNothingReachedZulip(t, mark)
}
