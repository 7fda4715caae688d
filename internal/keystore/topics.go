package keystore

import (
	"context"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// A scoped key may be held to the topics that start with its
// TopicPrefix ("BL3/"). Topics are compared as Zulip compares them, and
// more loosely: trimmed, Unicode-normalized (NFKC: composed and
// decomposed, full-width and ASCII forms are one) and case-folded. Zulip
// tells topics apart by case-insensitive equality only, so no two topics
// Zulip holds to be one can fall on either side of a prefix here.

// maxTopicPrefixRunes is Zulip's topic length.
const maxTopicPrefixRunes = 60

// TopicKey is a topic as prefixes are compared.
func TopicKey(topic string) string {
	s := norm.NFKC.String(strings.TrimSpace(topic))
	return norm.NFKC.String(cases.Fold().String(s))
}

// TopicInScope says whether the key may use topic: any, without a
// prefix; else one that starts with the prefix.
func (e *Entry) TopicInScope(topic string) bool {
	return e.TopicPrefix == "" || strings.HasPrefix(TopicKey(topic), TopicKey(e.TopicPrefix))
}

// ParseTopicPrefix checks a topic prefix: not blank, at most as long as
// a topic. It is kept as given, less surrounding space (topics are
// compared trimmed).
func ParseTopicPrefix(p string) (string, error) {
	p = strings.TrimSpace(p)
	if p == "" {
		return "", fmt.Errorf("a topic prefix must not be empty")
	}
	if n := utf8.RuneCountInString(p); n > maxTopicPrefixRunes {
		return "", fmt.Errorf("a topic prefix is at most %d characters, as a topic is; got %d", maxTopicPrefixRunes, n)
	}
	if strings.ContainsFunc(p, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return "", fmt.Errorf("a topic prefix must not hold control characters")
	}
	return p, nil
}

// SetTopicPrefix changes the topics a scoped key may use; "" lifts the
// scope.
func (s *Store) SetTopicPrefix(ctx context.Context, id, prefix string) (Entry, error) {
	return s.changeScoped(ctx, id, func(c *Entry) { c.TopicPrefix = prefix })
}
