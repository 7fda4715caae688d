package emulator_test

import (
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

func TestNarrows(t *testing.T) {
	e := newEnv(t)
	bot, own := e.user(emulator.DemoBotEmail), e.user(emulator.DemoOwnerEmail)
	m1 := e.send("", "general", "alpha", "1")
	m2 := e.send(owner(), "general", "alpha", "2")
	m3 := e.send("", "general", "Beta", "3")
	m4 := e.send(owner(), "other", "gamma", "4")
	m5 := e.send("", "other", "gamma", "5")
	general, other := e.stream("general"), e.stream("other")

	tests := []struct {
		name   string
		narrow string
		want   []int64
		err    string // code
	}{
		{"channel by name", `[{"operator":"channel","operand":"general"}]`, []int64{m1, m2, m3}, ""},
		{"stream is channel's old name", `[{"operator":"stream","operand":"OTHER"}]`, []int64{m4, m5}, ""},
		{"channel by id", fmt.Sprintf(`[{"operator":"channel","operand":%d}]`, other), []int64{m4, m5}, ""},
		{"sender by id", fmt.Sprintf(`[{"operator":"channel","operand":%d},{"operator":"sender","operand":%d}]`, general, bot.ID), []int64{m1, m3}, ""},
		{"sender by email", `[{"operator":"channel","operand":"general"},{"operator":"sender","operand":"` + emulator.DemoOwnerEmail + `"}]`, []int64{m2}, ""},
		{"topic, any case", `[{"operator":"channel","operand":"general"},{"operator":"topic","operand":"beta"}]`, []int64{m3}, ""},
		{"pair form", `[["channel","general"],["topic","alpha"]]`, []int64{m1, m2}, ""},
		{"negated", `[{"operator":"channel","operand":"general"},{"operator":"sender","operand":"` + emulator.DemoBotEmail + `","negated":true}]`, []int64{m2}, ""},
		// "with" replaces channel and topic terms by the message's own
		// conversation: narrowed to general, it reads "other".
		{"with replaces the channel", fmt.Sprintf(`[{"operator":"channel","operand":%d},{"operator":"sender","operand":%d},{"operator":"with","operand":%d}]`, general, bot.ID, m4), []int64{m5}, ""},
		{"with an unknown message is dropped", fmt.Sprintf(`[{"operator":"channel","operand":%d},{"operator":"with","operand":999}]`, general), []int64{m1, m2, m3}, ""},
		{"two withs", `[{"operator":"with","operand":1},{"operator":"with","operand":2}]`, nil, "BAD_REQUEST"},
		// The bot is subscribed to general, not to other.
		{"no channel: personal history only", "[]", []int64{m1, m2, m3, m5}, ""},
		{"unknown operator", `[{"operator":"search","operand":"x"}]`, nil, "BAD_NARROW"},
		{"unknown channel", `[{"operator":"channel","operand":"nope"}]`, nil, "BAD_NARROW"},
		{"unknown sender", `[{"operator":"sender","operand":"x@y"}]`, nil, "BAD_NARROW"},
		{"not JSON", `[{`, nil, "BAD_REQUEST"},
	}
	_ = own
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := url.Values{"anchor": {"newest"}, "num_before": {"100"}, "num_after": {"0"}, "narrow": {tt.narrow}, "apply_markdown": {"false"}}
			a := e.do(call{path: "/api/v1/messages", query: q.Encode()})
			if tt.err != "" {
				wantError(t, a, 400, tt.err, "")
				return
			}
			if a.status != 200 {
				t.Fatalf("%d %s", a.status, a.raw)
			}
			var got []int64
			for _, m := range a.json["messages"].([]any) {
				got = append(got, int64(m.(map[string]any)["id"].(float64)))
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("ids %v, want %v", got, tt.want)
			}
		})
	}
}

func TestAnchors(t *testing.T) {
	e := newEnv(t)
	var ids []int64
	for i := 0; i < 5; i++ {
		ids = append(ids, e.send("", "general", "t", fmt.Sprint(i)))
	}
	tests := []struct {
		anchor              string
		before, after       int
		want                []int64
		oldest, newest, anc bool
	}{
		{"newest", 2, 0, ids[3:], false, true, false},
		{"oldest", 0, 2, ids[:2], true, false, false},
		{fmt.Sprint(ids[2]), 1, 1, ids[1:4], false, false, true},
		{fmt.Sprint(ids[2]), 10, 10, ids, true, true, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s-%d-%d", tt.anchor, tt.before, tt.after), func(t *testing.T) {
			q := url.Values{"anchor": {tt.anchor}, "num_before": {fmt.Sprint(tt.before)}, "num_after": {fmt.Sprint(tt.after)},
				"narrow": {`[{"operator":"channel","operand":"general"}]`}}
			a := e.do(call{path: "/api/v1/messages", query: q.Encode()})
			var got []int64
			for _, m := range a.json["messages"].([]any) {
				got = append(got, int64(m.(map[string]any)["id"].(float64)))
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) || a.json["found_oldest"] != tt.oldest || a.json["found_newest"] != tt.newest || a.json["found_anchor"] != tt.anc {
				t.Errorf("got %v %s", got, a.raw)
			}
		})
	}
	for _, bad := range []string{"num_before=1&num_after=0", "anchor=newest&num_after=0", "anchor=x&num_before=1&num_after=0", "anchor=newest&num_before=3000&num_after=3000", "anchor=newest&num_before=-1&num_after=0", "anchor=newest&num_before=1&num_after=0&apply_markdown=yes"} {
		if a := e.do(call{path: "/api/v1/messages", query: bad}); a.status != 400 {
			t.Errorf("%s: %d %s", bad, a.status, a.raw)
		}
	}
}

func TestStreamLookups(t *testing.T) {
	e := newEnv(t)
	secret, err := e.srv.AddPrivateStream("secret")
	if err != nil {
		t.Fatal(err)
	}
	e.send("", "general", "", "empty topic")
	tests := []struct {
		name   string
		c      call
		status int
		want   string
	}{
		{"id by name, any case", call{path: "/api/v1/get_stream_id", query: "stream=General"}, 200, `"stream_id":1`},
		{"unknown name", call{path: "/api/v1/get_stream_id", query: "stream=nope"}, 400, "Invalid channel name 'nope'"},
		{"private, not subscribed", call{path: "/api/v1/get_stream_id", query: "stream=secret"}, 400, "Invalid channel name 'secret'"},
		{"missing name", call{path: "/api/v1/get_stream_id"}, 400, "Missing 'stream' argument"},
		{"topics", call{path: "/api/v1/users/me/1/topics"}, 200, `"name":"general chat"`},
		{"topics, empty name allowed", call{path: "/api/v1/users/me/1/topics", query: "allow_empty_topic_name=true"}, 200, `"name":""`},
		{"topics of a private stream", call{path: fmt.Sprintf("/api/v1/users/me/%d/topics", secret)}, 400, "Invalid channel ID"},
		{"topics of a missing stream", call{path: "/api/v1/users/me/99/topics"}, 400, "Invalid channel ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := e.do(tt.c)
			if a.status != tt.status || !contains(a.raw, tt.want) {
				t.Errorf("%d %s, want %d containing %s", a.status, a.raw, tt.status, tt.want)
			}
		})
	}
}

// Subscribing creates streams that do not exist: the reason the proxy
// never forwards it.
func TestSubscribeCreatesStreams(t *testing.T) {
	e := newEnv(t)
	a := e.do(call{method: "POST", path: "/api/v1/users/me/subscriptions", body: form("subscriptions", `[{"name":"brand new"},{"name":"general"}]`)})
	if a.status != 200 {
		t.Fatalf("%d %s", a.status, a.raw)
	}
	s, ok := e.srv.StreamByName("brand new")
	bot := e.user(emulator.DemoBotEmail)
	if !ok || len(s.Subscribers) != 1 || s.Subscribers[0] != bot.ID {
		t.Errorf("stream %+v (created %v)", s, ok)
	}
	if fmt.Sprint(a.json["already_subscribed"]) != fmt.Sprintf("map[%d:[general]]", bot.ID) {
		t.Errorf("%s", a.raw)
	}
}

// Where the realm lets nobody create channels, subscribing to a missing
// one fails whole, as Zulip's prechecks do: the existing one in the same
// call is not joined either.
func TestSubscribeWithoutStreamCreation(t *testing.T) {
	e := newEnv(t)
	e.srv.SetStreamCreation(false)
	if _, err := e.srv.AddStream("quiet"); err != nil {
		t.Fatal(err)
	}
	a := e.do(call{method: "POST", path: "/api/v1/users/me/subscriptions", body: form("subscriptions", `[{"name":"quiet"},{"name":"not allowed"}]`)})
	if a.status != 400 || a.json["msg"] != "Insufficient permission" {
		t.Fatalf("%d %s", a.status, a.raw)
	}
	if _, ok := e.srv.StreamByName("not allowed"); ok {
		t.Error("the stream was created")
	}
	if s, _ := e.srv.StreamByName("quiet"); len(s.Subscribers) != 0 {
		t.Errorf("a failed call subscribed to %+v", s)
	}
}

func contains(b []byte, s string) bool { return strings.Contains(string(b), s) }
