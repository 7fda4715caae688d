package keystore

import "testing"

// A topic is inside a key's prefix when it starts with it as Zulip
// compares topics, and more loosely: case, surrounding space, full
// width and composed or decomposed accents aside. What does not start
// with the prefix is outside, however close it looks.
func TestTopicInScope(t *testing.T) {
	bl3 := Entry{TopicPrefix: "BL3/"}
	cafe := Entry{TopicPrefix: "Caf\u00e9/"}
	cases := []struct {
		e     Entry
		topic string
		in    bool
	}{
		{bl3, "BL3/scan", true},
		{bl3, "bl3/scan", true},
		{bl3, "  BL3/padded ", true},
		{bl3, "\uff22\uff2c\uff13/full width", true},
		{bl3, "BL3/", true},
		{bl3, "BL3", false},
		{bl3, "BL30/x", false},
		{bl3, "BL2/x", false},
		{bl3, "xBL3/", false},
		{bl3, "", false},
		{bl3, "B L3/", false},
		{cafe, "Cafe\u0301/decomposed", true},
		{cafe, "CAF\u00c9/upper", true},
		{cafe, "Cafe/no accent", false},
		{Entry{}, "anything", true},
	}
	for _, c := range cases {
		if got := c.e.TopicInScope(c.topic); got != c.in {
			t.Errorf("prefix %q, topic %q: in scope %v, want %v", c.e.TopicPrefix, c.topic, got, c.in)
		}
	}
}

func TestParseTopicPrefix(t *testing.T) {
	for _, bad := range []string{"", "   ", "a\nb", string(make([]rune, 61))} {
		if _, err := ParseTopicPrefix(bad); err == nil {
			t.Errorf("%q was taken", bad)
		}
	}
	if p, err := ParseTopicPrefix("  BL3/ "); err != nil || p != "BL3/" {
		t.Errorf("%q %v: surrounding space goes, the rest is kept", p, err)
	}
}
