package caddytest

import (
	"bytes"
	"mime/multipart"
	"strings"
	"testing"
)

// botPaths sends, uploads, edits, lists topics and posts a webhook
// through the proxy, each expected to succeed.
func botPaths(t *testing.T, key string) {
	t.Helper()
	body, ct := form("content", "over the wire")
	r := request(t, "POST", "/send_message?topic=transport", body, withKey(key), ct)
	if r.Status != 200 {
		t.Fatalf("send: %d %s", r.Status, r.Body)
	}
	id := int64(r.JSON(t)["id"].(float64))

	var mp bytes.Buffer
	mw := multipart.NewWriter(&mp)
	fw, _ := mw.CreateFormFile("file", "notes.txt")
	_, _ = fw.Write([]byte("some notes"))
	_ = mw.Close()
	if r := request(t, "POST", "/upload_file", &mp, withKey(key), "Content-Type: "+mw.FormDataContentType()); r.Status != 200 {
		t.Errorf("upload: %d %s", r.Status, r.Body)
	}
	if r := request(t, "PATCH", "/update_message?message_id="+itoa(int(id)), strings.NewReader("edited"), withKey(key),
		"Content-Type: text/plain"); r.Status != 200 {
		t.Errorf("edit: %d %s", r.Status, r.Body)
	}
	if r := request(t, "GET", "/get_stream_topics", nil, withKey(key)); r.Status != 200 || !strings.Contains(r.Body, "transport") {
		t.Errorf("topics: %d %s", r.Status, r.Body)
	}
	if r := request(t, "POST", "/api/v1/external/github?api_key="+key+"&topic=builds", strings.NewReader(`{"zen":"hi","hook_id":1}`),
		"Content-Type: application/json", "X-GitHub-Event: ping"); r.Status != 200 {
		t.Errorf("webhook: %d %s", r.Status, r.Body)
	}
}

// The suite reaches Zulip over https, as production does: every request
// the bot paths make arrives over TLS, checked against the run's own CA.
func TestZulipReachedOverTLS(t *testing.T) {
	if !strings.HasPrefix(env.emu.URL, "https://") {
		t.Fatalf("the emulated Zulip is at %s, not https", env.emu.URL)
	}
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	start(t, config{store: store})
	mark, before := zulipMark(), env.overTLS.Load()
	botPaths(t, key)
	seen := len(env.emu.RequestsAfter(mark))
	if got := int(env.overTLS.Load() - before); seen == 0 || got != seen {
		t.Errorf("%d of %d requests to Zulip came over TLS", got, seen)
	}
}

// The same paths work with a Zulip on plain http (the same host, a
// private network).
func TestZulipOverPlainHTTP(t *testing.T) {
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	start(t, config{store: store, site: env.plainURL})
	mark, before := zulipMark(), env.overTLS.Load()
	botPaths(t, key)
	if len(env.emu.RequestsAfter(mark)) == 0 || env.overTLS.Load() != before {
		t.Errorf("the plain-http run did not reach Zulip over plain http")
	}
}

// A Zulip whose certificate no trusted CA signed is refused, not
// trusted: without cert_bundle the call fails as Zulip unreachable.
func TestZulipCertificateChecked(t *testing.T) {
	store := newStore(t)
	key, _ := scopedKey(t, store, "general")
	start(t, config{store: store, site: env.emu.URL, extra: "timeout 13s"})
	mark := zulipMark()
	body, ct := form("content", "untrusted")
	r := request(t, "POST", "/send_message?topic=tls", body, withKey(key), ct)
	assertError(t, r, 502, "unreachable")
	assertNothingReachedZulip(t, mark)
}
