package emulator_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

// Zulip's parameter rules, the reason the proxy builds every request
// from scratch: body before query, last value wins, topic/subject
// conflict, and the method override.
func TestParameterRules(t *testing.T) {
	tests := []struct {
		name  string
		query string
		body  string
		// want is the stored message's topic|content, or the error code.
		want string
	}{
		{"body beats query", "topic=from-query&content=q", form("type", "stream", "to", "general", "topic", "from-body", "content", "b"), "from-body|b"},
		{"query fills what the body lacks", "topic=from-query", form("type", "stream", "to", "general", "content", "b"), "from-query|b"},
		{"last body value wins", "", "type=stream&to=general&topic=t&content=first&content=last", "t|last"},
		{"last query value wins", "content=first&content=last", form("type", "stream", "to", "general", "topic", "t"), "t|last"},
		{"subject is topic's alias", "", form("type", "stream", "to", "general", "subject", "old-name", "content", "c"), "old-name|c"},
		{"topic and subject conflict", "", form("type", "stream", "to", "general", "topic", "a", "subject", "b", "content", "c"), "REQUEST_CONFUSING_VAR"},
		{"conflict across body and query", "subject=b", form("type", "stream", "to", "general", "topic", "a", "content", "c"), "REQUEST_CONFUSING_VAR"},
		{"+ and %20 are spaces, bad escapes kept", "", "type=stream&to=general&topic=a+b%20c&content=100%zz", "a b c|100%zz"},
		{"semicolons do not separate", "", "type=stream&to=general&topic=a;content=x&content=c", "a;content=x|c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			a := e.do(call{method: "POST", path: "/api/v1/messages", query: tt.query, body: tt.body})
			if !strings.Contains(tt.want, "|") {
				wantError(t, a, 400, tt.want, "")
				if len(e.srv.Messages()) != 0 {
					t.Error("a message was stored")
				}
				return
			}
			if a.status != 200 {
				t.Fatalf("%d %s", a.status, a.raw)
			}
			m := e.srv.Messages()[0]
			if got := m.Topic + "|" + m.Content; got != tt.want {
				t.Errorf("stored %q, want %q", got, tt.want)
			}
		})
	}
}

func TestConfusingParamsNamesBoth(t *testing.T) {
	e := newEnv(t)
	a := e.do(call{method: "POST", path: "/api/v1/messages", body: form("type", "stream", "to", "general", "topic", "a", "subject", "b", "content", "c")})
	wantError(t, a, 400, "REQUEST_CONFUSING_VAR", "Can't decide between 'topic' and 'subject' arguments")
	if a.str("var_name1") != "topic" || a.str("var_name2") != "subject" {
		t.Errorf("%s", a.raw)
	}
}

// A POST whose body says method=X runs X's handler: a "send" can read
// or delete. Only the body of a POST counts.
func TestMethodOverride(t *testing.T) {
	e := newEnv(t)
	// Not validated: the description routes by the HTTP method, and the
	// answer here is another operation's (which is the point).
	e.hc = &http.Client{}
	id := e.send("", "general", "t", "keep me?")

	a := e.do(call{method: "POST", path: "/api/v1/messages", body: form("method", "GET", "anchor", "newest", "num_before", "5", "num_after", "0")})
	msgs, _ := a.json["messages"].([]any)
	if a.status != 200 || len(msgs) != 1 {
		t.Errorf("POST method=GET did not read: %d %s", a.status, a.raw)
	}
	if n := len(e.srv.Messages()); n != 1 {
		t.Errorf("%d messages: POST method=GET sent one", n)
	}
	last := e.srv.Requests()[len(e.srv.Requests())-1]
	if last.Method != "POST" || last.EffectiveMethod != "GET" {
		t.Errorf("log: method %s effective %s", last.Method, last.EffectiveMethod)
	}

	a = e.do(call{method: "POST", path: fmt.Sprintf("/api/v1/messages/%d", id), body: form("method", "DELETE")})
	if a.status != 200 {
		t.Fatalf("POST method=DELETE: %d %s", a.status, a.raw)
	}
	if _, ok := e.srv.Message(id); ok {
		t.Error("POST method=DELETE did not delete")
	}

	a = e.do(call{method: "POST", path: "/api/v1/messages", query: "method=GET", body: form("type", "stream", "to", "general", "topic", "t", "content", "sent")})
	if a.status != 200 || len(e.srv.Messages()) != 1 {
		t.Errorf("method in the query overrode: %d %s", a.status, a.raw)
	}
	a = e.do(call{method: "POST", path: "/api/v1/messages", body: form("method", "get")})
	if a.status != 405 {
		t.Errorf("an unknown override method: %d", a.status)
	}
}

func TestIgnoredParametersAreReported(t *testing.T) {
	e := newEnv(t)
	a := e.do(call{method: "POST", path: "/api/v1/messages", query: "colour=red",
		body: form("type", "stream", "to", "general", "topic", "t", "content", "c", "queue_id", "q", "shape", "round")})
	ig, _ := a.json["ignored_parameters_unsupported"].([]any)
	if a.status != 200 || fmt.Sprint(ig) != "[shape colour]" {
		t.Errorf("%d %s", a.status, a.raw)
	}
}

func TestSendRules(t *testing.T) {
	long := strings.Repeat("é", 70)
	tests := []struct {
		name string
		as   string
		body string
		// want is "stream-name|topic|content" of the stored message, or
		// "CODE: msg" of the error.
		want string
	}{
		{"name", "", form("type", "stream", "to", "general", "topic", "t", "content", "c"), "general|t|c"},
		{"name trimmed, any case", "", form("type", "stream", "to", " GENERAL ", "topic", "t", "content", "c"), "general|t|c"},
		{"channel type", "", form("type", "channel", "to", "other", "topic", "t", "content", "c"), "other|t|c"},
		{"id", "", form("type", "stream", "to", "2", "topic", "t", "content", "c"), "other|t|c"},
		{"JSON list of a name", "", form("type", "stream", "to", `["other"]`, "topic", "t", "content", "c"), "other|t|c"},
		{"JSON list of an id", "", form("type", "stream", "to", "[2]", "topic", "t", "content", "c"), "other|t|c"},
		{"true is stream 1", "", form("type", "stream", "to", "true", "topic", "t", "content", "c"), "general|t|c"},
		{"JSON string", "", form("type", "stream", "to", `"general"`, "topic", "t", "content", "c"), "general|t|c"},
		{"float", "", form("type", "stream", "to", "1.5", "topic", "t", "content", "c"), "BAD_REQUEST: Invalid data type for channel"},
		{"two streams", "", form("type", "stream", "to", `["general","other"]`, "topic", "t", "content", "c"), "BAD_REQUEST: Expected exactly one channel"},
		{"unknown name", "", form("type", "stream", "to", "<nope>", "topic", "t", "content", "c"), "STREAM_DOES_NOT_EXIST: Channel '&lt;nope&gt;' does not exist"},
		{"unknown id", "", form("type", "stream", "to", "77", "topic", "t", "content", "c"), "STREAM_DOES_NOT_EXIST: Channel with ID '77' does not exist"},
		{"no type", "", form("to", "general", "topic", "t", "content", "c"), "REQUEST_VARIABLE_MISSING: Missing 'type' argument"},
		{"bad type", "", form("type", "email", "to", "general", "topic", "t", "content", "c"), "BAD_REQUEST: Invalid message type"},
		{"no content", "", form("type", "stream", "to", "general", "topic", "t"), "REQUEST_VARIABLE_MISSING: Missing 'content' argument"},
		{"blank content", "", form("type", "stream", "to", "general", "topic", "t", "content", " \n "), "BAD_REQUEST: Message must not be empty"},
		{"null byte", "", form("type", "stream", "to", "general", "topic", "t", "content", "a\x00b"), "BAD_REQUEST: Message must not contain null bytes"},
		{"no topic", "", form("type", "stream", "to", "general", "content", "c"), "BAD_REQUEST: Missing topic"},
		{"no to", "", form("type", "stream", "topic", "t", "content", "c"), "BAD_REQUEST: Missing channel"},
		{"(no topic) is the empty topic", "", form("type", "stream", "to", "general", "topic", "(no topic)", "content", "c"), "general||c"},
		{"content trimmed like Zulip", "", form("type", "stream", "to", "general", "topic", " t ", "content", "\n\n  c  \n"), "general|t|  c"},
		{"long topic truncated", "", form("type", "stream", "to", "general", "topic", long, "content", "c"), "general|" + strings.Repeat("é", 57) + "...|c"},
		{"private stream, not subscribed", "", form("type", "stream", "to", "secret", "topic", "t", "content", "c"), "BAD_REQUEST: Not authorized to send to channel 'secret'"},
		{"private stream, admin", owner(), form("type", "stream", "to", "secret", "topic", "t", "content", "c"), "secret|t|c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			if _, err := e.srv.AddPrivateStream("secret"); err != nil {
				t.Fatal(err)
			}
			a := e.do(call{method: "POST", path: "/api/v1/messages", as: tt.as, body: tt.body})
			if a.status != 200 {
				if got := a.str("code") + ": " + a.str("msg"); got != tt.want {
					t.Errorf("got %s, want %s", got, tt.want)
				}
				return
			}
			m, ok := e.srv.Message(int64(a.num("id")))
			if !ok {
				t.Fatal("not stored")
			}
			var name string
			for _, s := range e.srv.Streams() {
				if s.ID == m.StreamID {
					name = s.Name
				}
			}
			if got := name + "|" + m.Topic + "|" + m.Content; got != tt.want {
				t.Errorf("stored %q, want %q", got, tt.want)
			}
		})
	}
}

func TestLongContentIsTruncated(t *testing.T) {
	e := newEnv(t)
	id := e.send("", "general", "t", strings.Repeat("x", 10001))
	m, _ := e.srv.Message(id)
	if n := len([]rune(m.Content)); n != 10000 || !strings.HasSuffix(m.Content, "\n[message truncated]") {
		t.Errorf("%d code points, ends %q", n, m.Content[len(m.Content)-25:])
	}
}

func TestDirectMessage(t *testing.T) {
	e := newEnv(t)
	a := e.do(call{method: "POST", path: "/api/v1/messages", body: form("type", "direct", "to", `["`+emulator.DemoOwnerEmail+`"]`, "content", "psst")})
	if a.status != 200 {
		t.Fatalf("%d %s", a.status, a.raw)
	}
	m, _ := e.srv.Message(int64(a.num("id")))
	if m.Type != "private" || len(m.Recipients) != 2 || m.StreamID != 0 {
		t.Errorf("%+v", m)
	}
	a = e.do(call{method: "POST", path: "/api/v1/messages", body: form("type", "private", "to", "nobody@example.com", "content", "x")})
	wantError(t, a, 400, "BAD_REQUEST", "Invalid email 'nobody@example.com'")
}
