package zulipproxy

import (
	"encoding/json"
	"errors"
	"strings"
)

// streamRef is a stream as a client names it: by id or by name.
type streamRef struct {
	id   int64
	name string
	byID bool
}

// parseStreamRef reads a `to` (or narrow operand) the way Zulip 10 does:
// JSON first, so `42` is stream id 42, `["x"]` and `[42]` are unwrapped,
// and `true` is stream id 1 (a Python bool is an int); anything that is
// not JSON is a name. Checking a client's `to` any other way would let
// `to=[2]` or `to=true` through a name comparison.
func parseStreamRef(raw string) (streamRef, error) {
	var v any
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil || dec.More() {
		return streamRef{name: raw}, nil
	}
	if list, ok := v.([]any); ok {
		if len(list) != 1 {
			return streamRef{}, errors.New("expected exactly one channel")
		}
		v = list[0]
	}
	switch t := v.(type) {
	case string:
		return streamRef{name: t}, nil
	case bool:
		if t {
			return streamRef{id: 1, byID: true}, nil
		}
		return streamRef{id: 0, byID: true}, nil
	case json.Number:
		id, err := t.Int64()
		if err != nil {
			return streamRef{}, errors.New("invalid data type for channel")
		}
		return streamRef{id: id, byID: true}, nil
	}
	return streamRef{}, errors.New("invalid data type for channel")
}

// is says whether the reference names the stream with this name and id.
// Zulip matches names trimmed and case-insensitively.
func (s streamRef) is(name string, id int64) bool {
	if s.byID {
		return s.id == id
	}
	return sameStreamName(s.name, name)
}

func sameStreamName(a, b string) bool {
	return strings.EqualFold(strings.TrimSpace(a), strings.TrimSpace(b))
}
