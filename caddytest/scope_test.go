package caddytest

import (
	"fmt"
	"strings"
	"testing"

	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

// Every scope rule of the bot API, attacked. Each attack must fail with a
// clear error, and Zulip must not receive the request.
func TestScopeRulesOfTheBotAPI(t *testing.T) {
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	admin, _ := adminKey(t, store)
	start(t, config{store: store})

	urlenc := "Content-Type: application/x-www-form-urlencoded"
	attacks := []struct {
		name, method, path, body, ctype, key string
		status                               int
		msg                                  string
	}{
		{"admin key posts", "POST", "/send_message?topic=t", "content=x", urlenc, admin, 403, "admin keys cannot"},
		{"admin key uploads", "POST", "/upload_file", "", "", admin, 403, "admin keys cannot"},
		{"admin key reads own messages", "GET", "/get_messages", "", "", admin, 403, "admin keys cannot"},
		{"another stream in the body", "POST", "/send_message?topic=t", "content=x&to=other", urlenc, key, 400, "'to'"},
		{"stream field in the body", "POST", "/send_message?topic=t", "content=x&stream=other", urlenc, key, 400, "'stream'"},
		{"another stream in the query", "POST", "/send_message?topic=t&to=other", "content=x", urlenc, key, 400, "'to'"},
		{"stream_id in the query", "POST", "/send_message?topic=t&stream_id=2", "content=x", urlenc, key, 400, "'stream_id'"},
		{"private message type", "POST", "/send_message?topic=t", "content=x&type=private&to=1", urlenc, key, 400, "unexpected"},
		{"method override in the body", "POST", "/send_message?topic=t", "content=x&method=DELETE", urlenc, key, 400, "'method'"},
		{"method override in the query", "POST", "/send_message?topic=t&method=GET", "content=x", urlenc, key, 400, "'method'"},
		{"topic twice", "POST", "/send_message?topic=a&topic=b", "content=x", urlenc, key, 400, "more than once"},
		{"topic in query and body", "POST", "/send_message?topic=a", "content=x&topic=b", urlenc, key, 400, "'topic'"},
		{"subject with topic", "POST", "/send_message?topic=a&subject=b", "content=x", urlenc, key, 400, "'subject'"},
		{"content twice", "POST", "/send_message?topic=a", "content=x&content=y", urlenc, key, 400, "more than once"},
		{"no topic", "POST", "/send_message", "content=x", urlenc, key, 400, "topic"},
		{"empty topic", "POST", "/send_message?topic=+", "content=x", urlenc, key, 400, "topic"},
		{"topic over 60 characters", "POST", "/send_message?topic=" + strings.Repeat("é", 61), "content=x", urlenc, key, 400, "60"},
		{"content over 10000 characters", "POST", "/send_message?topic=t", "content=" + strings.Repeat("a", 10001), urlenc, key, 400, "10000"},
		{"no content", "POST", "/send_message?topic=t", "", urlenc, key, 400, "content"},
		{"JSON body", "POST", "/send_message?topic=t", `{"content":"x"}`, "Content-Type: application/json", key, 415, "form"},
		{"client narrow", "GET", "/get_messages?narrow=%5B%5D", "", "", key, 400, "'narrow'"},
		{"num_after", "GET", "/get_messages?num_after=5", "", "", key, 400, "'num_after'"},
		{"topics with a stream id", "GET", "/get_stream_topics?stream_id=2", "", "", key, 400, "'stream_id'"},
		{"edit moving to another stream", "PATCH", "/update_message?message_id=1&topic=t&stream_id=2", "", "", key, 400, "'stream_id'"},
		{"edit with change_all", "PATCH", "/update_message?message_id=1&topic=t&propagate_mode=change_all", "", "", key, 403, "change_all"},
		{"edit with change_later", "PATCH", "/update_message?message_id=1&topic=t&propagate_mode=change_later", "", "", key, 403, "change_later"},
		{"edit with a bogus mode", "PATCH", "/update_message?message_id=1&topic=t&propagate_mode=all", "", "", key, 400, "propagate_mode"},
		{"edit with method override", "PATCH", "/update_message?message_id=1&topic=t&method=DELETE", "", "", key, 400, "'method'"},
		{"scoped key creates keys", "POST", "/create_client?stream=other", "", "", key, 403, "admin key"},
		{"scoped key lists keys", "GET", "/clients", "", "", key, 403, "admin key"},
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			mark := zulipMark()
			hdrs := []string{withKey(a.key)}
			if a.ctype != "" {
				hdrs = append(hdrs, a.ctype)
			}
			var body = strings.NewReader(a.body)
			assertError(t, request(t, a.method, a.path, body, hdrs...), a.status, a.msg)
			assertNothingReachedZulip(t, mark)
		})
	}

	t.Run("multipart with a method field", func(t *testing.T) {
		mark := zulipMark()
		body, ct := multipartBody(t, part{name: "content", data: []byte("x")}, part{name: "method", data: []byte("DELETE")})
		assertError(t, request(t, "POST", "/send_message?topic=t", body, withKey(key), ct), 400, "'method'")
		assertNothingReachedZulip(t, mark)
	})
	t.Run("multipart with two images", func(t *testing.T) {
		body, ct := multipartBody(t, part{name: "content", data: []byte("x")},
			part{name: "image", filename: "a.txt", data: []byte("a")}, part{name: "image", filename: "b.txt", data: []byte("b")})
		assertError(t, request(t, "POST", "/send_message?topic=t", body, withKey(key), ct), 400, "more than once")
	})
	t.Run("image that is not a file", func(t *testing.T) {
		mark := zulipMark()
		body, ct := multipartBody(t, part{name: "content", data: []byte("x")}, part{name: "image", data: []byte("not a file")})
		assertError(t, request(t, "POST", "/send_message?topic=t", body, withKey(key), ct), 400, "must be a file")
		assertNothingReachedZulip(t, mark)
	})
}

// Edits: only messages the key's bot sent in the key's stream. The proxy
// may ask Zulip about the message, but nothing is changed.
func TestEditScope(t *testing.T) {
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	otherKey, _ := scopedKey(t, store, "other")
	start(t, config{store: store})

	humans := sendDirect(t, emulator.DemoOwnerEmail, emulator.DemoOwnerKey, "general", "shared", "a human's message")
	botElsewhere := sendDirect(t, emulator.DemoBotEmail, emulator.DemoBotKey, "other", "elsewhere", "the bot, in another stream")
	body, ct := form("content", "mine")
	own := int64(request(t, "POST", "/send_message?topic=mine", body, withKey(key), ct).JSON(t)["id"].(float64))

	cases := []struct {
		name string
		key  string
		id   int64
	}{
		{"someone else's message in the key's stream", key, humans},
		{"the bot's message in another stream", key, botElsewhere},
		{"the key's own message, from a key of another stream", otherKey, own},
		{"a message that does not exist", key, 99999999},
	}
	for _, c := range cases {
		for _, edit := range []string{"topic=moved", "topic=moved&propagate_mode=change_one"} {
			t.Run(c.name+" "+edit, func(t *testing.T) {
				mark := zulipMark()
				r := request(t, "PATCH", fmt.Sprintf("/update_message?message_id=%d&%s", c.id, edit), nil, withKey(c.key))
				if r.Status != 403 && r.Status != 400 {
					t.Fatalf("%d %s", r.Status, r.Body)
				}
				if r.JSON(t)["result"] != "error" {
					t.Errorf("not an error: %s", r.Body)
				}
				assertNoWriteReachedZulip(t, mark)
			})
		}
		t.Run(c.name+" content", func(t *testing.T) {
			mark := zulipMark()
			r := request(t, "PATCH", fmt.Sprintf("/update_message?message_id=%d", c.id), strings.NewReader("replaced"), withKey(c.key), "Content-Type: text/plain")
			if r.Status != 403 && r.Status != 400 {
				t.Fatalf("%d %s", r.Status, r.Body)
			}
			assertNoWriteReachedZulip(t, mark)
		})
	}
	if m, _ := env.emu.Message(humans); m.Topic != "shared" || m.Content != "a human's message" {
		t.Errorf("someone else's message changed: %+v", m)
	}
	if m, _ := env.emu.Message(botElsewhere); m.Topic != "elsewhere" {
		t.Errorf("message in another stream changed: %+v", m)
	}
}

// change_later and change_all move other people's messages too: only when
// the operator allows it.
func TestPropagateModeWhenAllowed(t *testing.T) {
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	start(t, config{store: store, extra: "allow_propagate"})
	body, ct := form("content", "first")
	id := int64(request(t, "POST", "/send_message?topic=prop-before", body, withKey(key), ct).JSON(t)["id"].(float64))
	mark := zulipMark()
	r := request(t, "PATCH", fmt.Sprintf("/update_message?message_id=%d&topic=prop-after&propagate_mode=change_all", id), nil, withKey(key))
	if r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	var sawPatch bool
	for _, q := range zulipRequests(mark) {
		if q.Method == "PATCH" {
			sawPatch = true
			if v, _, _ := q.Param("propagate_mode"); v != "change_all" || hasParam(q, "stream_id") {
				t.Errorf("PATCH sent %v", q.Params)
			}
		}
	}
	if !sawPatch {
		t.Error("no edit reached Zulip")
	}
}
