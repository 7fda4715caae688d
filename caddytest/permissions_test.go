package caddytest

import (
	"bytes"
	"fmt"
	"mime/multipart"
	"net/url"
	"strings"
	"testing"
	"time"
)

// multipartSend is a send_message with a file, as the bot API takes it.
func multipartSend(t *testing.T, key string) reply {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.WriteField("content", "with a file")
	fw, _ := mw.CreateFormFile("image", "plot.txt")
	fw.Write([]byte("the plot"))
	mw.Close()
	return request(t, "POST", "/send_message?topic=perm", &buf, withKey(key), "Content-Type: "+mw.FormDataContentType())
}

// A key may do only what its permissions allow, on the bot API, Zulip's
// API and webhooks alike: anything else is a 403 naming the permission
// it lacks, and nothing reaches Zulip. A key made without --allow (and
// every key from before permissions) may do everything, as before.
func TestPermissions(t *testing.T) {
	store := newStore(t)
	all, _ := scopedKey(t, store, "general")
	sendOnly, sendOnlyID := scopedKey(t, store, "general", "--allow", "send")
	readOnly, _ := scopedKey(t, store, "general", "--allow", "read,topics")
	admin, _ := adminKey(t, store)
	start(t, config{store: store})
	gen := streamID(t, "general")

	// A message of the bot's to edit and read, and the stream's id looked
	// up, so what follows proves that nothing reaches Zulip.
	r := sendTo(t, all, "perm", "the bot's message")
	if r.Status != 200 {
		t.Fatalf("a key with every permission: %d %s", r.Status, r.Body)
	}
	msgID := fmt.Sprint(r.JSON(t)["id"])
	if r := multipartSend(t, all); r.Status != 200 {
		t.Errorf("a send with a file by a key with every permission: %d %s", r.Status, r.Body)
	}
	if m := request(t, "GET", "/me", nil, withKey(all)).JSON(t); fmt.Sprint(m["permissions"]) != "[send upload edit read topics]" {
		t.Errorf("/me of a key made without --allow: %v", m["permissions"])
	}
	if r := sendTo(t, sendOnly, "perm", "a send-only key sends"); r.Status != 200 {
		t.Fatalf("a send-only key's send: %d %s", r.Status, r.Body)
	}

	form := "Content-Type: application/x-www-form-urlencoded"
	refused := []struct {
		name, key, perm string
		do              func(key string) reply
	}{
		{"send_message with a file", sendOnly, "upload", func(k string) reply { return multipartSend(t, k) }},
		{"upload_file", sendOnly, "upload", func(k string) reply {
			var buf bytes.Buffer
			mw := multipart.NewWriter(&buf)
			fw, _ := mw.CreateFormFile("file", "a.txt")
			fw.Write([]byte("x"))
			mw.Close()
			return request(t, "POST", "/upload_file", &buf, withKey(k), "Content-Type: "+mw.FormDataContentType())
		}},
		{"update_message", sendOnly, "edit", func(k string) reply {
			return request(t, "PATCH", "/update_message?message_id="+msgID, strings.NewReader("content=changed"), withKey(k), form)
		}},
		{"get_messages", sendOnly, "read", func(k string) reply { return request(t, "GET", "/get_messages", nil, withKey(k)) }},
		{"get_stream_topics", sendOnly, "topics", func(k string) reply { return request(t, "GET", "/get_stream_topics", nil, withKey(k)) }},
		{"Zulip API: upload", sendOnly, "upload", func(k string) reply { return zreq(t, "POST", "/api/v1/user_uploads", k, "") }},
		{"Zulip API: edit", sendOnly, "edit", func(k string) reply { return zreq(t, "PATCH", "/api/v1/messages/"+msgID, k, "content=changed") }},
		{"Zulip API: read one", sendOnly, "read", func(k string) reply { return zreq(t, "GET", "/api/v1/messages/"+msgID, k, "") }},
		{"Zulip API: read", sendOnly, "read", func(k string) reply {
			return zreq(t, "GET", "/api/v1/messages?anchor=newest&num_before=5&num_after=0&narrow="+url.QueryEscape(`[{"operator":"channel","operand":"general"}]`), k, "")
		}},
		{"Zulip API: topics", sendOnly, "topics", func(k string) reply { return zreq(t, "GET", fmt.Sprintf("/api/v1/users/me/%d/topics", gen), k, "") }},
		{"send_message", readOnly, "send", func(k string) reply { return sendTo(t, k, "perm", "not allowed") }},
		{"under /api", readOnly, "send", func(k string) reply {
			return request(t, "POST", "/api/send_message?topic=perm", strings.NewReader("content=no"), withKey(k), form)
		}},
		{"Zulip API: send", readOnly, "send", func(k string) reply {
			return zreq(t, "POST", "/api/v1/messages", k, fmt.Sprintf("type=stream&to=%d&topic=perm&content=no", gen))
		}},
		{"webhook", readOnly, "send", func(k string) reply {
			return zreq(t, "POST", "/api/v1/external/github?api_key="+url.QueryEscape(k), "", `{"zen":"x","hook_id":1}`,
				"Content-Type: application/json", "X-GitHub-Event: ping")
		}},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			mark := zulipMark()
			e := assertError(t, c.do(c.key), 403, "lacks the '"+c.perm+"' permission")
			if e["code"] != "FORBIDDEN" {
				t.Errorf("code %v", e["code"])
			}
			assertNothingReachedZulip(t, mark)
		})
	}
	if r := request(t, "GET", "/get_messages", nil, withKey(readOnly)); r.Status != 200 {
		t.Errorf("a read key reads: %d %s", r.Status, r.Body)
	}

	// An admin widens the send-only key: it may edit now.
	body, ct := form2("permissions", "send,edit")
	r = request(t, "PATCH", "/clients/"+sendOnlyID, body, withKey(admin), ct)
	if r.Status != 200 || fmt.Sprint(r.JSON(t)["client"].(map[string]any)["permissions"]) != "[send edit]" {
		t.Fatalf("PATCH permissions: %d %s", r.Status, r.Body)
	}
	eventually(t, 5*time.Second, "the change reaches the running proxy", func() bool {
		return fmt.Sprint(request(t, "GET", "/me", nil, withKey(sendOnly)).JSON(t)["permissions"]) == "[send edit]"
	})
	if r := request(t, "PATCH", "/update_message?message_id="+msgID, strings.NewReader("content=edited by a send,edit key"), withKey(sendOnly), form); r.Status != 200 {
		t.Errorf("an edit once allowed: %d %s", r.Status, r.Body)
	}

	// The admin API says what is wrong with a permission.
	for _, bad := range []string{"send,delete", "", "admin"} {
		body, ct := form2("stream", "general", "permissions", bad)
		assertError(t, request(t, "POST", "/create_client", body, withKey(admin), ct), 400, "permissions")
	}
	r = request(t, "POST", "/create_client", strings.NewReader(`{"stream":"general","permissions":["send","upload"]}`), withKey(admin), "Content-Type: application/json")
	if r.Status != 200 || fmt.Sprint(r.JSON(t)["permissions"]) != "[send upload]" {
		t.Errorf("create_client with a JSON list: %d %s", r.Status, r.Body)
	}
	addSecret(fmt.Sprint(r.JSON(t)["key"]))
}

func form2(pairs ...string) (*strings.Reader, string) {
	v := url.Values{}
	for i := 0; i+1 < len(pairs); i += 2 {
		v.Add(pairs[i], pairs[i+1])
	}
	return strings.NewReader(v.Encode()), "Content-Type: application/x-www-form-urlencoded"
}
