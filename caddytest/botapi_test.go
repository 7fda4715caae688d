package caddytest

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

func TestSendMessage(t *testing.T) {
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	start(t, config{store: store})
	gen := streamID(t, "general")

	t.Run("urlencoded", func(t *testing.T) {
		mark := zulipMark()
		body, ct := form("content", "hello from a beamline")
		r := request(t, "POST", "/send_message?topic=run+42", body, withKey(key), ct)
		if r.Status != 200 {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
		m := r.JSON(t)
		if m["result"] != "success" || m["id"] == nil {
			t.Fatalf("answer: %s", r.Body)
		}
		msg := lastMessage(t)
		if int64(m["id"].(float64)) != msg.ID || msg.StreamID != gen || msg.Topic != "run 42" ||
			msg.Content != "hello from a beamline" || msg.SenderEmail != emulator.DemoBotEmail {
			t.Errorf("stored: %+v", msg)
		}
		reqs := zulipRequests(mark)
		sends := 0
		for _, q := range reqs {
			if q.Method == "POST" && q.Path == "/api/v1/messages" {
				sends++
				to, _, _ := q.Param("to")
				typ, _, _ := q.Param("type")
				if to != fmt.Sprint(gen) || typ != "stream" || q.Query != "" || len(q.Params) != 4 {
					t.Errorf("request to Zulip: to=%q type=%q query=%q params=%v", to, typ, q.Query, q.Params)
				}
			}
		}
		if sends != 1 {
			t.Errorf("%d sends reached Zulip, want 1", sends)
		}
	})
	t.Run("multipart under /api", func(t *testing.T) {
		body, ct := multipartBody(t, part{name: "content", data: []byte("multipart hello")})
		r := request(t, "POST", "/api/send_message?topic=mp", body, withKey(key), ct)
		if r.Status != 200 || lastMessage(t).Content != "multipart hello" {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
	})
	t.Run("with an image", func(t *testing.T) {
		img := bytes.Repeat([]byte{0x89, 'P', 'N', 'G'}, 5000)
		body, ct := multipartBody(t,
			part{name: "content", data: []byte("Interesting plot!")},
			part{name: "image", filename: "plot.png", contentType: "image/png", data: img})
		r := request(t, "POST", "/send_message?topic=plots", body, withKey(key), ct)
		if r.Status != 200 {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
		msg := lastMessage(t)
		prefix := "Interesting plot!\n\n[plot.png](/user_uploads/"
		if !strings.HasPrefix(msg.Content, prefix) || !strings.HasSuffix(msg.Content, ")") {
			t.Fatalf("content %q", msg.Content)
		}
		uri := strings.TrimSuffix(strings.TrimPrefix(msg.Content, "Interesting plot!\n\n[plot.png]("), ")")
		up, ok := env.emu.Upload(uri)
		if !ok || !bytes.Equal(up.Data, img) {
			t.Errorf("upload %s: found %v, %d bytes", uri, ok, len(up.Data))
		}
	})
	t.Run("image before content", func(t *testing.T) {
		body, ct := multipartBody(t,
			part{name: "image", filename: "log.txt", data: []byte("log line")},
			part{name: "content", data: []byte("see log")})
		r := request(t, "POST", "/send_message?topic=plots", body, withKey(key), ct)
		if r.Status != 200 || !strings.HasPrefix(lastMessage(t).Content, "see log\n\n[log.txt](") {
			t.Fatalf("%d %s / %q", r.Status, r.Body, lastMessage(t).Content)
		}
	})
}

func TestUploadFile(t *testing.T) {
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	start(t, config{store: store})
	data := []byte("a,b,c\n1,2,3\n")
	body, ct := multipartBody(t, part{name: "file", filename: "data.csv", contentType: "text/csv", data: data})
	r := request(t, "POST", "/upload_file", body, withKey(key), ct)
	if r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	m := r.JSON(t)
	uri, _ := m["uri"].(string)
	if !strings.HasPrefix(uri, "/user_uploads/") || m["url"] != uri {
		t.Fatalf("answer: %s", r.Body)
	}
	if up, ok := env.emu.Upload(uri); !ok || !bytes.Equal(up.Data, data) {
		t.Errorf("upload not stored as sent")
	}
	mark := zulipMark()
	body, ct = multipartBody(t, part{name: "content", data: []byte("no file")})
	assertError(t, request(t, "POST", "/upload_file", body, withKey(key), ct), 400, "'content'")
	assertError(t, request(t, "POST", "/upload_file", strings.NewReader("x"), withKey(key), "Content-Type: text/plain"), 415, "multipart")
	body, ct = multipartBody(t)
	assertError(t, request(t, "POST", "/upload_file", body, withKey(key), ct), 400, "file")
	assertNothingReachedZulip(t, mark)
}

func TestStreamTopics(t *testing.T) {
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	gone, _ := scopedKey(t, store, "no such stream")
	start(t, config{store: store})
	body, ct := form("content", "x")
	request(t, "POST", "/send_message?topic=topic-listing", body, withKey(key), ct)
	r := request(t, "GET", "/get_stream_topics", nil, withKey(key))
	if r.Status != 200 || !strings.Contains(r.Body, `"name":"topic-listing"`) {
		t.Fatalf("%d %s", r.Status, r.Body)
	}

	t.Run("stream gone", func(t *testing.T) {
		r := request(t, "GET", "/get_stream_topics", nil, withKey(gone))
		if r.Status != 400 {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
		if m := r.JSON(t); m["result"] != "error" || !strings.Contains(m["msg"].(string), "no such stream") {
			t.Errorf("not Zulip's error: %s", r.Body)
		}
	})
}

// A stream deleted and made again has a new id; the proxy's cached id
// must follow.
func TestStreamMadeAgain(t *testing.T) {
	store := newStore(t)
	id1, err := env.emu.AddStream("ephemeral")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := scopedKey(t, store, "ephemeral")
	start(t, config{store: store})
	body, ct := form("content", "first")
	if r := request(t, "POST", "/send_message?topic=t", body, withKey(key), ct); r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	if err := env.emu.DeleteStream(id1); err != nil {
		t.Fatal(err)
	}
	id2, err := env.emu.AddStream("ephemeral")
	if err != nil {
		t.Fatal(err)
	}
	body, ct = form("content", "second")
	if r := request(t, "POST", "/send_message?topic=t", body, withKey(key), ct); r.Status != 200 {
		t.Fatalf("after the stream was made again: %d %s", r.Status, r.Body)
	}
	if m := lastMessage(t); m.StreamID != id2 || m.Content != "second" {
		t.Errorf("sent to stream %d, want the new %d", m.StreamID, id2)
	}
	r := request(t, "GET", "/get_stream_topics", nil, withKey(key))
	if r.Status != 200 || !strings.Contains(r.Body, `"name":"t"`) {
		t.Errorf("topics: %d %s", r.Status, r.Body)
	}
}

func TestUpdateMessage(t *testing.T) {
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	start(t, config{store: store})
	body, ct := form("content", "original text")
	r := request(t, "POST", "/send_message?topic=before", body, withKey(key), ct)
	id := int64(r.JSON(t)["id"].(float64))

	t.Run("rename topic", func(t *testing.T) {
		r := request(t, "PATCH", fmt.Sprintf("/update_message?message_id=%d&topic=after&propagate_mode=change_one", id), nil, withKey(key))
		if r.Status != 200 {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
		if m, _ := env.emu.Message(id); m.Topic != "after" || m.Content != "original text" {
			t.Errorf("message: %+v", m)
		}
	})
	t.Run("change content", func(t *testing.T) {
		r := request(t, "PATCH", fmt.Sprintf("/api/update_message?message_id=%d", id), strings.NewReader("corrected text"),
			withKey(key), "Content-Type: text/plain")
		if r.Status != 200 {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
		if m, _ := env.emu.Message(id); m.Content != "corrected text" || m.Topic != "after" {
			t.Errorf("message: %+v", m)
		}
	})
	t.Run("content as a form field", func(t *testing.T) {
		body, ct := form("content", "form text")
		r := request(t, "PATCH", fmt.Sprintf("/update_message?message_id=%d", id), body, withKey(key), ct)
		if m, _ := env.emu.Message(id); r.Status != 200 || m.Content != "form text" {
			t.Errorf("%d %s / %+v", r.Status, r.Body, m)
		}
	})
	t.Run("neither", func(t *testing.T) {
		mark := zulipMark()
		assertError(t, request(t, "PATCH", fmt.Sprintf("/update_message?message_id=%d", id), nil, withKey(key)), 400, "either content")
		assertError(t, request(t, "PATCH", "/update_message?topic=x", nil, withKey(key)), 400, "message_id")
		assertError(t, request(t, "PATCH", "/update_message?message_id=abc&topic=x", nil, withKey(key)), 400, "message_id")
		assertNothingReachedZulip(t, mark)
	})
}

func TestGetMessages(t *testing.T) {
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	start(t, config{store: store})
	sendDirect(t, emulator.DemoOwnerEmail, emulator.DemoOwnerKey, "general", "mixed", "from a human")
	sendDirect(t, emulator.DemoBotEmail, emulator.DemoBotKey, "other", "mixed", "bot elsewhere")
	body, ct := form("content", "from the key")
	request(t, "POST", "/send_message?topic=mixed", body, withKey(key), ct)

	mark := zulipMark()
	r := request(t, "GET", "/get_messages?num_before=1000&anchor=newest", nil, withKey(key))
	if r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	msgs, _ := r.JSON(t)["messages"].([]any)
	if len(msgs) == 0 {
		t.Fatalf("no messages: %s", r.Body)
	}
	gen, bot := float64(streamID(t, "general")), float64(botUserID(t))
	for _, m := range msgs {
		mm := m.(map[string]any)
		if mm["stream_id"] != gen || mm["sender_id"] != bot {
			t.Errorf("a message that is not the bot's own in its stream: %v", mm)
		}
	}
	for _, q := range zulipRequests(mark) {
		if q.Path == "/api/v1/messages" {
			narrow, _, _ := q.Param("narrow")
			want := fmt.Sprintf(`[{"operator":"channel","operand":%d},{"operator":"sender","operand":%d}]`, int64(gen), int64(bot))
			if narrow != want {
				t.Errorf("narrow sent to Zulip %s, want %s", narrow, want)
			}
		}
	}
	assertError(t, request(t, "GET", "/get_messages?num_before=5000", nil, withKey(key)), 400, "num_before")
	assertError(t, request(t, "GET", "/get_messages?anchor=drop", nil, withKey(key)), 400, "anchor")
}

func TestAdminEndpoints(t *testing.T) {
	store := newStore(t)
	if _, err := env.emu.AddStream("proposal 1234"); err != nil && !strings.Contains(err.Error(), "exists") {
		t.Fatal(err)
	}
	admin, _ := adminKey(t, store)
	scoped, _ := scopedKey(t, store, "general")
	start(t, config{store: store, extra: `stream_template "proposal {proposal_no}"`})

	r := request(t, "POST", "/create_client?stream=general&name=ci-job", nil, withKey(admin))
	if r.Status != 200 {
		t.Fatalf("create_client: %d %s", r.Status, r.Body)
	}
	m := r.JSON(t)
	newKey, _ := m["key"].(string)
	newID, _ := m["id"].(string)
	addSecret(newKey)
	if !strings.HasPrefix(newKey, "zwop_") || m["stream"] != "general" || m["name"] != "ci-job" {
		t.Fatalf("created: %s", r.Body)
	}
	body, ct := form("content", "from a key made over HTTP")
	if r := request(t, "POST", "/send_message?topic=t", body, withKey(newKey), ct); r.Status != 200 {
		t.Errorf("new key cannot send: %d %s", r.Status, r.Body)
	}

	r = request(t, "POST", "/api/create_client?proposal_no=1234", nil, withKey(admin))
	if m := r.JSON(t); r.Status != 200 || m["stream"] != "proposal 1234" || m["proposal_no"] != float64(1234) {
		t.Errorf("template: %d %s", r.Status, r.Body)
	} else {
		addSecret(m["key"].(string))
	}

	t.Run("errors", func(t *testing.T) {
		assertError(t, request(t, "POST", "/create_client", nil, withKey(admin)), 400, "stream")
		assertError(t, request(t, "POST", "/create_client?stream=general&bot=nobody", nil, withKey(admin)), 400, "unknown bot")
		assertError(t, request(t, "POST", "/create_client?stream=general&expires_in=soon", nil, withKey(admin)), 400, "expires_in")
		assertError(t, request(t, "POST", "/create_client?stream=general&stream=other", nil, withKey(admin)), 400, "more than once")
		r := request(t, "POST", "/create_client?stream=does+not+exist", nil, withKey(admin))
		if r.Status != 400 || !strings.Contains(r.Body, "does not exist") {
			t.Errorf("unknown stream: %d %s", r.Status, r.Body)
		}
		assertError(t, request(t, "POST", "/create_client?stream=general", nil, withKey(scoped)), 403, "admin key")
		assertError(t, request(t, "GET", "/clients", nil, withKey(scoped)), 403, "admin key")
	})

	r = request(t, "GET", "/clients", nil, withKey(admin))
	if r.Status != 200 || !strings.Contains(r.Body, newID) || strings.Contains(r.Body, newKey) || strings.Contains(r.Body, "key_hash") {
		t.Errorf("list: %d %s", r.Status, r.Body)
	}
	r = request(t, "DELETE", "/clients/"+newID, nil, withKey(admin))
	if r.Status != 200 || r.JSON(t)["client"].(map[string]any)["revoked_at"] == nil {
		t.Fatalf("revoke: %d %s", r.Status, r.Body)
	}
	// At once on this instance: no wait for the watcher.
	assertError(t, request(t, "POST", "/send_message?topic=t", strings.NewReader("content=x"), withKey(newKey),
		"Content-Type: application/x-www-form-urlencoded"), 401, "revoked")
	assertError(t, request(t, "DELETE", "/clients/nope", nil, withKey(admin)), 404, "nope")
	assertError(t, request(t, "DELETE", "/clients/"+newID, nil, withKey(scoped)), 403, "admin key")
}
