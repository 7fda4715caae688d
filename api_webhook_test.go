package zulipproxy

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
)

func TestTeamcityPersonal(t *testing.T) {
	cases := []struct {
		name           string
		body           string
		personal, read bool
	}{
		{"ordinary build", `{"build":{"buildFullName":"x","teamcityProperties":[{"name":"env.BUILD_IS_PERSONAL","value":"false"}]}}`, false, true},
		{"no properties", `{"build":{"buildFullName":"x"}}`, false, true},
		{"no build: Zulip only tells the owner", `{"text":"slack format"}`, false, true},
		{"personal build", `{"build":{"teamcityProperties":[{"name":"x","value":"y"},{"name":"env.BUILD_IS_PERSONAL","value":"true"}]}}`, true, true},
		{"escaped name", `{"build":{"teamcityProperties":[{"name":"env.BUILD_IS_\u0050ERSONAL","value":"true"}]}}`, true, true},
		{"repeated key, the last counts as in Zulip", `{"build":{"teamcityProperties":[]},"build":{"teamcityProperties":[{"name":"env.BUILD_IS_PERSONAL","value":"true"}]}}`, true, true},
		{"other case is not Zulip's key", `{"Build":{"teamcityProperties":[{"name":"env.BUILD_IS_PERSONAL","value":"true"}]}}`, false, true},
		{"any value but false counts", `{"build":{"teamcityProperties":[{"name":"env.BUILD_IS_PERSONAL","value":"True"}]}}`, true, true},
		{"a null value counts", `{"build":{"teamcityProperties":[{"name":"env.BUILD_IS_PERSONAL","value":null}]}}`, true, true},
		{"unreadable name", `{"build":{"teamcityProperties":[{"name":1,"value":"true"}]}}`, false, false},
		{"properties not a list", `{"build":{"teamcityProperties":{"name":"env.BUILD_IS_PERSONAL"}}}`, false, false},
		{"build not an object", `{"build":"x"}`, false, false},
		{"not JSON", `build=x`, false, false},
		{"empty", ``, false, false},
	}
	for _, c := range cases {
		personal, read := teamcityPersonal([]byte(c.body))
		if personal != c.personal || read != c.read {
			t.Errorf("%s: personal %v read %v, want %v %v", c.name, personal, read, c.personal, c.read)
		}
	}
}

func TestWebhookStreamIs(t *testing.T) {
	const name, id = "Beamline 3", int64(42)
	cases := []struct {
		v    string
		want bool
	}{
		{"42", true},
		{"Beamline 3", true},
		{" beamline 3 ", true},
		{"BEAMLINE 3", true},
		{"4", false},
		{"042", true}, // Python's int("042") is 42
		{"other", false},
		{"true", false},
		{"[42]", false},
		{"", false},
		{"99999999999999999999", false},
	}
	for _, c := range cases {
		if got := webhookStreamIs(c.v, name, id); got != c.want {
			t.Errorf("%q: %v, want %v", c.v, got, c.want)
		}
	}
}

func TestParseFormOrdered(t *testing.T) {
	got, err := parseFormOrdered("b=2&a=1&&c&d=x+y%21&b=3")
	if err != nil {
		t.Fatal(err)
	}
	want := []field{{"b", "2"}, {"a", "1"}, {"c", ""}, {"d", "x y!"}, {"b", "3"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%v, want %v", got, want)
	}
	if enc := encodeForm(want); enc != "b=2&a=1&c=&d=x+y%21&b=3" {
		t.Errorf("encoded %q", enc)
	}
	for _, bad := range []string{"a=1;b=2", "a=%zz", "%zz=1"} {
		if _, err := parseFormOrdered(bad); err == nil {
			t.Errorf("%q was read", bad)
		}
	}
}

func TestWebhookParams(t *testing.T) {
	cases := []struct {
		name        string
		integration string
		in          []field
		out         []field
		streams     []string
		status      int
	}{
		{"options pass, key and stream do not", "github",
			[]field{{"topic", "ci"}, {"api_key", "k"}, {"stream", "general"}, {"branches", "main"}},
			[]field{{"topic", "ci"}, {"branches", "main"}}, []string{"general"}, 0},
		{"method", "github", []field{{"method", "GET"}}, nil, nil, 400},
		{"repeated", "github", []field{{"topic", "a"}, {"topic", "b"}}, nil, nil, 400},
		{"repeated stream", "github", []field{{"stream", "a"}, {"stream", "a"}}, nil, nil, 400},
		{"slack channels to streams", "slack", []field{{"channels_map_to_topics", "0"}}, nil, nil, 403},
		{"slack, unknown mapping", "slack", []field{{"channels_map_to_topics", "2"}}, nil, nil, 403},
		{"slack channels to topics", "slack", []field{{"channels_map_to_topics", "1"}},
			[]field{{"channels_map_to_topics", "1"}}, nil, 0},
		{"a routing option is refused for any integration", "github", []field{{"channels_map_to_topics", "0"}}, nil, nil, 400},
		// Zulip's Slack integration reads mapping=channels to post to the
		// stream a Slack channel names.
		{"slack's newer mapping option", "slack", []field{{"mapping", "channels"}}, nil, nil, 400},
		{"an option Zulip may add one day", "github", []field{{"route_to", "elsewhere"}}, nil, nil, 400},
		{"unquote_url_parameters changes how the stream is read", "jira", []field{{"unquote_url_parameters", "true"}}, nil, nil, 400},
		{"every option Zulip's integrations read that routes nowhere", "github",
			[]field{{"only_events", `["push"]`}, {"exclude_events", `["ping"]`}, {"ignore_private_repositories", "true"}, {"no_previews", "true"}},
			[]field{{"only_events", `["push"]`}, {"exclude_events", `["ping"]`}, {"ignore_private_repositories", "true"}, {"no_previews", "true"}}, nil, 0},
	}
	for _, c := range cases {
		out, streams, aerr := webhookParams(c.integration, c.in, true)
		if c.status != 0 {
			if aerr == nil || aerr.Status != c.status {
				t.Errorf("%s: %v, want status %d", c.name, aerr, c.status)
			}
			continue
		}
		if aerr != nil || !reflect.DeepEqual(out, c.out) || !reflect.DeepEqual(streams, c.streams) {
			t.Errorf("%s: %v %v %v", c.name, out, streams, aerr)
		}
	}
}

// A form body is the sender's payload: its fields pass, but for the few
// names Zulip would read as options that choose where messages go.
func TestWebhookBodyFields(t *testing.T) {
	payload := []field{{"channel_name", "other"}, {"user_name", "u"}, {"text", "hi"}, {"token", "t"}}
	out, _, aerr := webhookParams("slack", payload, false)
	if aerr != nil || !reflect.DeepEqual(out, payload) {
		t.Errorf("a Slack payload: %v %v", out, aerr)
	}
	for _, name := range []string{"mapping", "channels_map_to_topics", "unquote_url_parameters", "method"} {
		if _, _, aerr := webhookParams("slack", []field{{name, "x"}}, false); aerr == nil || !strings.Contains(aerr.Msg, name) {
			t.Errorf("%s in a body: %v", name, aerr)
		}
	}
}

func TestWebhookHeader(t *testing.T) {
	in := http.Header{
		"X-Github-Event":         {"push"},
		"X-Event-Key":            {"repo:push"},
		"Sentry-Hook-Resource":   {"issue"},
		"X-Api-Key":              {"zwop_secret"},
		"X-Forwarded-For":        {"10.0.0.1"},
		"X-Forwarded-Proto":      {"https"},
		"Forwarded":              {"for=10.0.0.1"},
		"X-Real-Ip":              {"10.0.0.1"},
		"X-Http-Method-Override": {"DELETE"},
		"X-Hook-Note":            {"sent with zwop_secret"},
	}
	got := webhookHeader(in, "zwop_secret")
	want := http.Header{"X-Github-Event": {"push"}, "X-Event-Key": {"repo:push"}, "Sentry-Hook-Resource": {"issue"},
		"X-Hook-Note": {"sent with " + keyMarker("zwop_secret")}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%v, want %v", got, want)
	}
}
