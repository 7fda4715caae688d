package zulip_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/zwop/caddy-zulip-proxy/zulip"
	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

func TestSendMessage(t *testing.T) {
	srv := emulator.NewServer(t)
	c, _ := client(t, srv)
	general := streamID(t, srv, emulator.DemoStream)

	res, err := c.SendMessage(context.Background(), zulip.SendMessage{StreamID: general, Topic: "beamline 7", Content: "scan done & <ok>"})
	if err != nil {
		t.Fatal(err)
	}
	m, ok := srv.Message(res.ID)
	if !ok {
		t.Fatalf("message %d not stored", res.ID)
	}
	if m.StreamID != general || m.Topic != "beamline 7" || m.Content != "scan done & <ok>" || m.SenderEmail != emulator.DemoBotEmail {
		t.Errorf("stored %+v", m)
	}
	if m.Client != "caddy-zulip-proxy" {
		t.Errorf("Zulip would record client %q; want the product name from the User-Agent", m.Client)
	}
	var body map[string]any
	if err := json.Unmarshal(res.Raw.Body, &body); err != nil || body["result"] != "success" {
		t.Errorf("raw answer %s", res.Raw.Body)
	}
	if res.Raw.Header.Get("X-RateLimit-Limit") == "" {
		t.Error("rate limit headers were not kept for passing on")
	}
}

// The request Zulip receives is exactly the allow-listed parameters,
// once each, in the body: nothing a caller could smuggle in.
func TestSendMessageRequestIsBuiltFromScratch(t *testing.T) {
	srv := emulator.NewServer(t)
	c, _ := client(t, srv)
	general := streamID(t, srv, emulator.DemoStream)
	// Content that looks like form syntax must stay content.
	content := "a=1&method=DELETE&to=99&type=direct"
	if _, err := c.SendMessage(context.Background(), zulip.SendMessage{StreamID: general, Topic: "t&subject=x", Content: content}); err != nil {
		t.Fatal(err)
	}
	reqs := srv.Requests()
	if len(reqs) != 1 {
		t.Fatalf("Zulip received %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	var got []string
	for _, p := range r.Params {
		got = append(got, p.Source+":"+p.Name+"="+p.Value)
	}
	want := []string{"body:type=stream", "body:to=" + strconv.FormatInt(general, 10), "body:topic=t&subject=x", "body:content=" + content}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("params:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if r.Query != "" || r.EffectiveMethod != "POST" {
		t.Errorf("query %q, effective method %q", r.Query, r.EffectiveMethod)
	}
	if ua := r.Header.Get("User-Agent"); ua != zulip.DefaultUserAgent {
		t.Errorf("User-Agent %q", ua)
	}
	if r.User != emulator.DemoBotEmail {
		t.Errorf("authenticated as %q", r.User)
	}
}

func TestGetStreamIDAndTopics(t *testing.T) {
	srv := emulator.NewServer(t)
	c, _ := client(t, srv)
	ctx := context.Background()
	id, _, err := c.GetStreamID(ctx, "GENERAL") // Zulip matches case-insensitively
	if err != nil {
		t.Fatal(err)
	}
	if want := streamID(t, srv, emulator.DemoStream); id != want {
		t.Fatalf("id %d, want %d", id, want)
	}
	for _, topic := range []string{"older", "newer"} {
		send(t, c, zulip.SendMessage{StreamID: id, Topic: topic, Content: "x"})
	}
	resp, err := c.StreamTopicsWith(ctx, id, zulip.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Topics []struct {
			Name  string `json:"name"`
			MaxID int64  `json:"max_id"`
		} `json:"topics"`
	}
	if err := json.Unmarshal(resp.Body, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Topics) != 2 || got.Topics[0].Name != "newer" || got.Topics[1].Name != "older" {
		t.Errorf("topics %+v, want newest first", got.Topics)
	}

	_, _, err = c.GetStreamID(ctx, "no such stream")
	var zerr *zulip.Error
	if !errors.As(err, &zerr) || zerr.Status != 400 || zerr.Code != "BAD_REQUEST" || !strings.Contains(zerr.Msg, "no such stream") {
		t.Errorf("unknown stream: %v", err)
	}
}

func TestGetMessageAndUpdate(t *testing.T) {
	srv := emulator.NewServer(t)
	c, _ := client(t, srv)
	ctx := context.Background()
	general := streamID(t, srv, emulator.DemoStream)
	sent := send(t, c, zulip.SendMessage{StreamID: general, Topic: "t1", Content: "first"})

	m, raw, err := c.GetMessage(ctx, sent.ID)
	if err != nil {
		t.Fatal(err)
	}
	bot, _ := srv.UserByEmail(emulator.DemoBotEmail)
	if m.ID != sent.ID || m.SenderID != bot.ID || m.StreamID != general || m.Topic != "t1" || m.Type != "stream" || m.SenderEmail != emulator.DemoBotEmail {
		t.Errorf("message %+v", m)
	}
	if !bytes.Contains(raw.Body, []byte(`"raw_content":"first"`)) {
		t.Errorf("raw answer lacks raw_content: %s", raw.Body)
	}

	if _, err := c.UpdateMessage(ctx, sent.ID, zulip.UpdateMessage{Topic: ptr("t2"), Content: ptr("second")}); err != nil {
		t.Fatal(err)
	}
	got, _ := srv.Message(sent.ID)
	if got.Topic != "t2" || got.Content != "second" {
		t.Errorf("after edit: topic %q content %q", got.Topic, got.Content)
	}
	last := srv.Requests()[len(srv.Requests())-1]
	for _, p := range last.Params {
		if p.Name == "stream_id" {
			t.Error("the client sent stream_id")
		}
	}

	_, _, err = c.GetMessage(ctx, 999999)
	var zerr *zulip.Error
	if !errors.As(err, &zerr) || zerr.Msg != "Invalid message(s)" {
		t.Errorf("missing message: %v", err)
	}
	if _, err := c.UpdateMessage(ctx, sent.ID, zulip.UpdateMessage{Topic: ptr("x"), PropagateMode: "change_everything"}); err == nil {
		t.Error("an invalid propagate_mode was sent")
	}
}

func TestGetMessagesWithNarrow(t *testing.T) {
	srv := emulator.NewServer(t)
	c, _ := client(t, srv)
	ctx := context.Background()
	general, other := streamID(t, srv, emulator.DemoStream), streamID(t, srv, emulator.DemoOtherStream)
	owner, _ := srv.UserByEmail(emulator.DemoOwnerEmail)
	ownerClient, _ := clientAs(t, srv, emulator.DemoOwnerEmail, emulator.DemoOwnerKey)
	bot, _ := srv.UserByEmail(emulator.DemoBotEmail)

	mine := send(t, c, zulip.SendMessage{StreamID: general, Topic: "t", Content: "bot in general"})
	send(t, c, zulip.SendMessage{StreamID: other, Topic: "t", Content: "bot in other"})
	send(t, ownerClient, zulip.SendMessage{StreamID: general, Topic: "t", Content: "owner in general"})
	_ = owner

	resp, err := c.GetMessages(ctx, zulip.GetMessages{
		NumBefore: 100,
		Narrow: []zulip.NarrowTerm{
			{Operator: "channel", Operand: general},
			{Operator: "sender", Operand: bot.ID},
		},
		ReadOptions: zulip.ReadOptions{ApplyMarkdown: ptr(false)},
	})
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Messages []struct {
			ID      int64  `json:"id"`
			Content string `json:"content"`
		} `json:"messages"`
		FoundOldest bool `json:"found_oldest"`
	}
	if err := json.Unmarshal(resp.Body, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Messages) != 1 || got.Messages[0].ID != mine.ID || got.Messages[0].Content != "bot in general" || !got.FoundOldest {
		t.Errorf("narrowed messages %+v", got)
	}
	if _, err := c.GetMessages(ctx, zulip.GetMessages{Narrow: []zulip.NarrowTerm{{Operator: "channel", Operand: 1.5}}}); err == nil {
		t.Error("a float operand was sent")
	}
	if _, err := c.GetMessages(ctx, zulip.GetMessages{NumBefore: -1}); err == nil {
		t.Error("a negative num_before was sent")
	}
}

func TestMeAndServerSettings(t *testing.T) {
	srv := emulator.NewServer(t)
	c, _ := client(t, srv)
	ctx := context.Background()
	me, _, err := c.Me(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bot, _ := srv.UserByEmail(emulator.DemoBotEmail)
	if me.UserID != bot.ID || me.Email != bot.Email || me.FullName != bot.FullName || !me.IsBot {
		t.Errorf("me %+v, want %+v", me, bot)
	}
	resp, err := c.ServerSettings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(resp.Body, []byte(`"zulip_feature_level":`)) {
		t.Errorf("server settings %s", resp.Body)
	}
	last := srv.Requests()[len(srv.Requests())-1]
	if last.Header.Get("Authorization") != "" {
		t.Error("credentials were sent to server_settings, which needs none")
	}
}

func TestUploadFile(t *testing.T) {
	srv := emulator.NewServer(t)
	c, _ := client(t, srv)
	data := []byte("spectrum,1,2,3\n")
	res, err := c.UploadFile(context.Background(), `scan "7".csv`, "text/csv", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(res.URI, "/user_uploads/") || res.URL != res.URI || res.Filename != "scan-7.csv" {
		t.Errorf("result %+v", res)
	}
	up, ok := srv.Upload(res.URI)
	if !ok || !bytes.Equal(up.Data, data) || up.ContentType != "text/csv" {
		t.Errorf("stored %+v (found %v)", up, ok)
	}
}

// A filename with a line break must not add a header to the part.
func TestUploadFileNameCannotInjectHeaders(t *testing.T) {
	srv := emulator.NewServer(t)
	c, _ := client(t, srv)
	res, err := c.UploadFile(context.Background(), "a.txt\r\nContent-Type: text/html", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	up, _ := srv.Upload(res.URI)
	if up.ContentType != "text/plain" {
		t.Errorf("content type %q: the filename injected a header", up.ContentType)
	}
}

func TestWebhook(t *testing.T) {
	tests := []struct {
		name        string
		integration string
		basic       bool
		query       url.Values
		wantStream  bool
	}{
		{"api_key in query", "github", false, url.Values{"stream": {emulator.DemoStream}, "topic": {"ci"}}, true},
		{"HTTP Basic integration", "zendesk", true, url.Values{"stream": {emulator.DemoStream}}, true},
		{"no stream goes to the owner", "github", false, url.Values{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := emulator.NewServer(t)
			c, _ := client(t, srv)
			body := `{"action": "completed"}`
			_, err := c.Webhook(context.Background(), zulip.WebhookCall{
				Integration: tt.integration, Query: tt.query, BasicAuth: tt.basic,
				ContentType: "application/json", Body: strings.NewReader(body), ContentLength: int64(len(body)),
			})
			if err != nil {
				t.Fatal(err)
			}
			msgs := srv.Messages()
			if len(msgs) != 1 {
				t.Fatalf("%d messages", len(msgs))
			}
			if got := msgs[0].Type == "stream"; got != tt.wantStream {
				t.Errorf("stream message %v, want %v", got, tt.wantStream)
			}
			if !strings.Contains(msgs[0].Content, `"action":"completed"`) {
				t.Errorf("content %q lacks the payload", msgs[0].Content)
			}
			r := srv.Requests()[0]
			if r.Body != body {
				t.Errorf("body %q was not sent unchanged", r.Body)
			}
			if _, _, hasKey := r.Param("api_key"); hasKey == tt.basic {
				t.Errorf("api_key present %v with BasicAuth %v", hasKey, tt.basic)
			}
		})
	}
}

func TestWebhookRejectsBadInput(t *testing.T) {
	srv := emulator.NewServer(t)
	c, _ := client(t, srv)
	ctx := context.Background()
	for _, w := range []zulip.WebhookCall{
		{Integration: "../messages"},
		{Integration: "GitHub"},
		{Integration: "github", Query: url.Values{"stream": {"a", "b"}}},
		{Integration: "github", Method: "CONNECT"},
	} {
		if _, err := c.Webhook(ctx, w); err == nil {
			t.Errorf("%+v was sent", w)
		}
	}
	// method and a caller's api_key are dropped, not forwarded.
	_, err := c.Webhook(ctx, zulip.WebhookCall{Integration: "github", Query: url.Values{
		"method": {"DELETE"}, "api_key": {"0123456789abcdef0123456789abcdef"}, "stream": {emulator.DemoStream}}})
	if err != nil {
		t.Fatal(err)
	}
	r := srv.Requests()[len(srv.Requests())-1]
	if v, _, _ := r.Param("api_key"); v != emulator.DemoBotKey {
		t.Error("the caller's api_key reached Zulip")
	}
	if _, _, ok := r.Param("method"); ok {
		t.Error("method reached Zulip")
	}
	if len(r.Params) != 2 {
		t.Errorf("params %+v", r.Params)
	}
}

// A sender's event headers reach the integration; the headers the
// client owns (credentials, framing, content type) cannot be set by them.
func TestWebhookHeaders(t *testing.T) {
	srv := emulator.NewServer(t)
	c, _ := client(t, srv)
	body := `{"zen": "ok"}`
	_, err := c.Webhook(context.Background(), zulip.WebhookCall{
		Integration: "github", Query: url.Values{"stream": {emulator.DemoStream}},
		ContentType: "application/json", Body: strings.NewReader(body), ContentLength: int64(len(body)),
		Header: http.Header{
			"X-Github-Event":    {"ping"},
			"x-event-key":       {"repo:push"},
			"Authorization":     {"Basic b3duZXJAZXhhbXBsZS5jb206a2V5"},
			"Cookie":            {"sessionid=stolen"},
			"Content-Type":      {"application/x-www-form-urlencoded"},
			"Content-Length":    {"1"},
			"Transfer-Encoding": {"chunked"},
			"User-Agent":        {"spoofed"},
			"Host":              {"elsewhere.example"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := srv.Requests()[0]
	for name, want := range map[string]string{
		"X-Github-Event": "ping",
		"X-Event-Key":    "repo:push",
		"Content-Type":   "application/json",
		"Cookie":         "",
		"Authorization":  "",
	} {
		if got := r.Header.Get(name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	if ua := r.Header.Get("User-Agent"); ua == "spoofed" {
		t.Error("the sender's User-Agent replaced the client's")
	}
	if v, _, _ := r.Param("api_key"); v != emulator.DemoBotKey || r.User != emulator.DemoBotEmail {
		t.Errorf("not authenticated as the bot: %q", r.User)
	}
	if r.Body != body {
		t.Errorf("body %q", r.Body)
	}
}

func TestResponseKeepsOnlyUsefulHeaders(t *testing.T) {
	srv := emulator.NewServer(t)
	c, _ := client(t, srv)
	resp, err := c.StreamTopicsWith(context.Background(), streamID(t, srv, emulator.DemoStream), zulip.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k := range resp.Header {
		switch k {
		case "Content-Type", "X-Ratelimit-Limit", "X-Ratelimit-Remaining", "X-Ratelimit-Reset", "Retry-After":
		default:
			t.Errorf("kept header %s", k)
		}
	}
	_, _ = io.Discard.Write(resp.Body)
}
