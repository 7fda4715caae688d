package zulip

import (
	"net/url"
	"strings"
)

// form builds an application/x-www-form-urlencoded string (or a query)
// from scratch. Each method adds a fixed, allow-listed name once, so
// nothing a caller passes can add a second value, a "method" override or
// an unexpected parameter.
type form struct{ b strings.Builder }

func (f *form) add(name, value string) {
	if f.b.Len() > 0 {
		f.b.WriteByte('&')
	}
	f.b.WriteString(name)
	f.b.WriteByte('=')
	f.b.WriteString(url.QueryEscape(value))
}

func (f *form) String() string { return f.b.String() }
