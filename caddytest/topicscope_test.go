package caddytest

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"
)

// A key held to the topics that start with "BL3/" writes, edits and
// reads there only, on the bot API, Zulip's API and webhooks; topics are
// compared as Zulip compares them, and more loosely (case, full width,
// composed or decomposed accents aside), so none that Zulip holds to be
// one topic falls on both sides. Every escape is refused before anything
// reaches Zulip.
func TestTopicScope(t *testing.T) {
	store := newStore(t)
	free, _ := scopedKey(t, store, "general")
	scoped, scopedID := scopedKey(t, store, "general", "--topic-prefix", "BL3/")
	cafe, _ := scopedKey(t, store, "general", "--topic-prefix", "Caf\u00e9/")
	admin, _ := adminKey(t, store)
	start(t, config{store: store})
	gen := streamID(t, "general")
	form := "Content-Type: application/x-www-form-urlencoded"

	// The bot's message outside the scope, by a key without one.
	r := sendTo(t, free, "BL2/other", "outside the scope")
	if r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	outside := fmt.Sprint(r.JSON(t)["id"])
	if m := request(t, "GET", "/me", nil, withKey(scoped)).JSON(t); m["topic_prefix"] != "BL3/" {
		t.Errorf("/me: %v", m["topic_prefix"])
	}

	inside := ""
	for _, topic := range []string{"BL3/scan", "bl3/scan 2", "\uff22\uff2c\uff13/full width", "  BL3/padded"} {
		r := sendTo(t, scoped, url.QueryEscape(topic), "inside: "+topic)
		if r.Status != 200 {
			t.Errorf("topic %q, inside the scope: %d %s", topic, r.Status, r.Body)
			continue
		}
		if inside == "" {
			inside = fmt.Sprint(r.JSON(t)["id"])
		}
	}
	if r := sendTo(t, cafe, url.QueryEscape("Cafe\u0301/decomposed"), "decomposed accent"); r.Status != 200 {
		t.Errorf("a decomposed accent inside a composed prefix: %d %s", r.Status, r.Body)
	}

	// An edit or read by id reads the message first, to know its topic:
	// that read reaches Zulip, nothing else.
	escapes := []struct {
		name string
		do   func() reply
	}{
		{"send to another topic", func() reply { return sendTo(t, scoped, "BL2%2Fx", "no") }},
		{"send to a topic that only contains the prefix", func() reply { return sendTo(t, scoped, "xBL3%2F", "no") }},
		{"send to the prefix without its slash", func() reply { return sendTo(t, scoped, "BL3", "no") }},
		{"Zulip API send", func() reply {
			return zreq(t, "POST", "/api/v1/messages", scoped, fmt.Sprintf("type=stream&to=%d&topic=BL2%%2Fx&content=no", gen))
		}},
		{"Zulip API send, old name subject", func() reply {
			return zreq(t, "POST", "/api/v1/messages", scoped, fmt.Sprintf("type=stream&to=%d&subject=BL2%%2Fx&content=no", gen))
		}},
		{"edit a message in another topic", func() reply {
			return request(t, "PATCH", "/update_message?message_id="+outside, strings.NewReader("content=mine+now"), withKey(scoped), form)
		}},
		{"move a message out", func() reply {
			return request(t, "PATCH", "/update_message?message_id="+inside+"&topic=BL2%2Fmoved", nil, withKey(scoped))
		}},
		{"Zulip API edit of another topic's message", func() reply {
			return zreq(t, "PATCH", "/api/v1/messages/"+outside, scoped, "content=mine+now")
		}},
		{"Zulip API move out", func() reply { return zreq(t, "PATCH", "/api/v1/messages/"+inside, scoped, "topic=BL2%2Fmoved") }},
		{"Zulip API read of another topic's message", func() reply { return zreq(t, "GET", "/api/v1/messages/"+outside, scoped, "") }},
		{"webhook to another topic", func() reply {
			return zreq(t, "POST", "/api/v1/external/github?api_key="+url.QueryEscape(scoped)+"&topic=BL2%2Fci", "", `{"zen":"x","hook_id":1}`,
				"Content-Type: application/json", "X-GitHub-Event: ping")
		}},
		{"webhook naming no topic", func() reply {
			return zreq(t, "POST", "/api/v1/external/github?api_key="+url.QueryEscape(scoped), "", `{"zen":"x","hook_id":1}`,
				"Content-Type: application/json", "X-GitHub-Event: ping")
		}},
		{"webhook with the topic in a form body", func() reply {
			return zreq(t, "POST", "/api/v1/external/slack_incoming?api_key="+url.QueryEscape(scoped)+"&topic=BL3%2Fci", "",
				"payload=%7B%22text%22%3A%22x%22%7D&topic=BL2%2Fci", form)
		}},
	}
	for _, c := range escapes {
		t.Run(c.name, func(t *testing.T) {
			mark := zulipMark()
			r := c.do()
			if r.Status != 403 && r.Status != 400 {
				t.Errorf("%d %s, want a refusal", r.Status, r.Body)
			}
			if strings.Contains(r.Body, "outside the scope") {
				t.Errorf("the refusal shows the message: %s", r.Body)
			}
			if strings.Contains(c.name, "another topic's message") || c.name == "edit a message in another topic" {
				assertNoWriteReachedZulip(t, mark)
			} else {
				assertNothingReachedZulip(t, mark)
			}
		})
	}

	// Reads and topic lists are cut down to the scope.
	var got struct {
		Messages []struct {
			Subject string `json:"subject"`
		} `json:"messages"`
	}
	r = request(t, "GET", "/get_messages", nil, withKey(scoped))
	if err := json.Unmarshal([]byte(r.Body), &got); r.Status != 200 || err != nil || len(got.Messages) == 0 {
		t.Fatalf("get_messages: %d %s", r.Status, r.Body)
	}
	for _, m := range got.Messages {
		if !strings.HasPrefix(strings.ToLower(strings.TrimSpace(m.Subject)), "bl3/") && !strings.HasPrefix(m.Subject, "\uff22") {
			t.Errorf("a read shows topic %q", m.Subject)
		}
	}
	var topics struct {
		Topics []struct {
			Name string `json:"name"`
		} `json:"topics"`
	}
	r = request(t, "GET", "/get_stream_topics", nil, withKey(scoped))
	if err := json.Unmarshal([]byte(r.Body), &topics); r.Status != 200 || err != nil || len(topics.Topics) == 0 {
		t.Fatalf("get_stream_topics: %d %s", r.Status, r.Body)
	}
	for _, tp := range topics.Topics {
		if strings.Contains(tp.Name, "BL2") || strings.Contains(tp.Name, "Caf") {
			t.Errorf("the topic list shows %q", tp.Name)
		}
	}
	if r := zreq(t, "GET", fmt.Sprintf("/api/v1/users/me/%d/topics", gen), scoped, ""); r.Status != 200 || strings.Contains(r.Body, "BL2") {
		t.Errorf("Zulip API topics: %d %s", r.Status, r.Body)
	}

	// Inside the scope, edits and webhooks work.
	if r := request(t, "PATCH", "/update_message?message_id="+inside+"&topic=BL3%2Frenamed", nil, withKey(scoped)); r.Status != 200 {
		t.Errorf("a move inside the scope: %d %s", r.Status, r.Body)
	}
	r = zreq(t, "POST", "/api/v1/external/github?api_key="+url.QueryEscape(scoped)+"&topic=BL3%2Fci", "", `{"zen":"x","hook_id":1}`,
		"Content-Type: application/json", "X-GitHub-Event: ping")
	if r.Status != 200 || lastMessage(t).Topic != "BL3/ci" {
		t.Errorf("a webhook inside the scope: %d %s, landed in %q", r.Status, r.Body, lastMessage(t).Topic)
	}

	// An admin lifts the scope (JSON null), and the key may use any topic.
	r = request(t, "PATCH", "/clients/"+scopedID, strings.NewReader(`{"topic_prefix": null}`), withKey(admin), "Content-Type: application/json")
	if r.Status != 200 || r.JSON(t)["client"].(map[string]any)["topic_prefix"] != nil {
		t.Fatalf("lifting the scope: %d %s", r.Status, r.Body)
	}
	eventually(t, 5*time.Second, "the running proxy sees it", func() bool { return sendTo(t, scoped, "BL2%2Fnow", "free").Status == 200 })
	body, ct := form2("stream", "general", "topic_prefix", "   ")
	assertError(t, request(t, "POST", "/create_client", body, withKey(admin), ct), 400, "topic_prefix")
}
