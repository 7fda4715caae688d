package emulator

import (
	"encoding/json"
	"html"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Typed parameter readers, with the checks and messages of Zulip's
// typed_endpoint.

func (x *exchange) boolParam(name string, def bool) (bool, *apiError) {
	v, ok := x.p.lookup(name)
	if !ok {
		return def, nil
	}
	var b any
	if err := json.Unmarshal([]byte(v), &b); err != nil {
		return false, errInvalidVar(name, "%s is not valid JSON", name)
	}
	bv, isBool := b.(bool)
	if !isBool {
		return false, errInvalidVar(name, "%s is not a boolean", name)
	}
	return bv, nil
}

// intParam reads a non-negative JSON integer.
func (x *exchange) intParam(name string) (int64, bool, *apiError) {
	v, ok := x.p.lookup(name)
	if !ok {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil {
		return 0, true, errInvalidVar(name, "%s is not an integer", name)
	}
	if n < 0 {
		return 0, true, errInvalidVar(name, "%s is too small", name)
	}
	return n, true, nil
}

// topicParam reads "topic" or its legacy alias "subject"; both at once
// (from body or query, in any combination) is an error, as in Zulip.
func (x *exchange) topicParam() (string, bool, *apiError) {
	t, hasTopic := x.p.lookup("topic")
	s, hasSubject := x.p.lookup("subject")
	switch {
	case hasTopic && hasSubject:
		return "", false, errConfusing("topic", "subject")
	case hasSubject:
		return s, true, nil
	}
	return t, hasTopic, nil
}

// normalizeTopic strips and truncates like Zulip 10, where "(no topic)"
// means the empty topic.
func normalizeTopic(t string) (string, *apiError) {
	t = strings.TrimSpace(t)
	if i := strings.IndexByte(t, 0); i >= 0 {
		return "", errBadRequest("Invalid character in topic, at position %d!", utf8.RuneCountInString(t[:i])+1)
	}
	if t == "(no topic)" {
		t = ""
	}
	return truncate(t, maxTopicLength, "..."), nil
}

// normalizeContent is Zulip's normalize_body.
func normalizeContent(c string) (string, *apiError) {
	c = strings.TrimLeft(strings.TrimRight(c, " \t\n\r\v\f"), "\n")
	if c == "" {
		return "", errBadRequest("Message must not be empty")
	}
	if strings.IndexByte(c, 0) >= 0 {
		return "", errBadRequest("Message must not contain null bytes")
	}
	return truncate(c, maxContentLength, "\n[message truncated]"), nil
}

// truncate cuts s to max code points, ending in suffix, as Zulip's
// truncate_content does (silently: the sender is not told).
func truncate(s string, max int, suffix string) string {
	if utf8.RuneCountInString(s) <= max {
		return s
	}
	keep := max - utf8.RuneCountInString(suffix)
	i := 0
	for n := 0; n < keep; n++ {
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
	return s[:i] + suffix
}

// streamIndicator is Zulip's extract_stream_indicator: JSON first (so
// 42 is an id, ["x"] and [42] are unwrapped, and true is id 1, since a
// Python bool is an int), else the raw string is a name.
func streamIndicator(to string) (name string, id int64, isID bool, aerr *apiError) {
	var v any
	d := json.NewDecoder(strings.NewReader(to))
	d.UseNumber()
	if err := d.Decode(&v); err != nil || d.More() {
		return to, 0, false, nil
	}
	if list, ok := v.([]any); ok {
		if len(list) != 1 {
			return "", 0, false, errBadRequest("Expected exactly one channel")
		}
		v = list[0]
	}
	switch t := v.(type) {
	case string:
		return t, 0, false, nil
	case bool:
		if t {
			return "", 1, true, nil
		}
		return "", 0, true, nil
	case json.Number:
		if n, err := t.Int64(); err == nil {
			return "", n, true, nil
		}
	}
	return "", 0, false, errBadRequest("Invalid data type for channel")
}

// render stands in for Zulip's Markdown: escaped text in paragraphs.
// Enough for clients that expect HTML; not Markdown.
func render(content string) string {
	var b strings.Builder
	for i, para := range strings.Split(content, "\n\n") {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString("<p>")
		b.WriteString(strings.ReplaceAll(html.EscapeString(para), "\n", "<br>\n"))
		b.WriteString("</p>")
	}
	return b.String()
}

// clientName is what Zulip records as a message's client: the
// User-Agent's product name.
func clientName(ua string) string {
	name, _, _ := strings.Cut(ua, "/")
	name = strings.TrimSpace(name)
	if name == "" {
		return "API"
	}
	if len(name) > 30 {
		name = name[:30]
	}
	return name
}
