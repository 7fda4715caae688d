package emulator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// largerThanMaxMessageID is what Zulip uses for anchor=newest.
const largerThanMaxMessageID = 10000000000000000

type narrowTerm struct {
	op      string
	operand any // string or int64
	negated bool
}

// parseNarrow reads the narrow parameter: a JSON list of
// {"operator", "operand", "negated"} objects or [operator, operand] pairs.
func parseNarrow(s string) ([]narrowTerm, *apiError) {
	var raw []json.RawMessage
	if err := json.Unmarshal([]byte(s), &raw); err != nil {
		return nil, errInvalidVar("narrow", "narrow is not valid JSON")
	}
	terms := make([]narrowTerm, 0, len(raw))
	for i, r := range raw {
		var t narrowTerm
		var operand json.RawMessage
		r = bytes.TrimSpace(r)
		if len(r) > 0 && r[0] == '[' {
			var pair []json.RawMessage
			if json.Unmarshal(r, &pair) != nil || len(pair) != 2 || json.Unmarshal(pair[0], &t.op) != nil {
				return nil, errInvalidVar("narrow", "narrow[%d] is not a valid narrow term", i)
			}
			operand = pair[1]
		} else {
			var o struct {
				Operator *string         `json:"operator"`
				Operand  json.RawMessage `json:"operand"`
				Negated  bool            `json:"negated"`
			}
			if json.Unmarshal(r, &o) != nil || o.Operator == nil || o.Operand == nil {
				return nil, errInvalidVar("narrow", "narrow[%d] is not a valid narrow term", i)
			}
			t.op, t.negated, operand = *o.Operator, o.Negated, o.Operand
		}
		var v any
		d := json.NewDecoder(bytes.NewReader(operand))
		d.UseNumber()
		if d.Decode(&v) != nil {
			return nil, errInvalidVar("narrow", "narrow[%d] has an invalid operand", i)
		}
		switch o := v.(type) {
		case string:
			t.operand = o
		case json.Number:
			n, err := o.Int64()
			if err != nil {
				return nil, errInvalidVar("narrow", "narrow[%d] has an invalid operand", i)
			}
			t.operand = n
		default:
			return nil, errInvalidVar("narrow", "narrow[%d] has an invalid operand", i)
		}
		t.op = strings.ToLower(t.op)
		terms = append(terms, t)
	}
	return terms, nil
}

func operandInt(v any) (int64, bool) {
	switch o := v.(type) {
	case int64:
		return o, true
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(o), 10, 64)
		return n, err == nil
	}
	return 0, false
}

// applyWithLocked is Zulip's "with" operator: when the message is
// visible, its conversation replaces every channel and topic term. This
// is why a proxy must build its narrow itself: a client's "with" would
// move the search to any stream it can name a message of.
func (e *Emulator) applyWithLocked(u *user, terms []narrowTerm) ([]narrowTerm, *apiError) {
	idx := -1
	for i, t := range terms {
		if t.op == "with" {
			if idx >= 0 {
				return nil, errBadRequest("Duplicate 'with' operators.")
			}
			idx = i
		}
	}
	if idx < 0 {
		return terms, nil
	}
	id, ok := operandInt(terms[idx].operand)
	if !ok {
		return nil, errBadNarrow("Invalid 'with' operator")
	}
	rest := append(append([]narrowTerm{}, terms[:idx]...), terms[idx+1:]...)
	m, found := e.msgByID[id]
	if !found || !e.canAccessLocked(u, m) || m.Type != "stream" {
		return rest, nil
	}
	out := []narrowTerm{{op: "channel", operand: m.StreamID}, {op: "topic", operand: m.Topic}}
	for _, t := range rest {
		switch t.op {
		case "channel", "stream", "topic", "subject", "dm", "pm-with":
			continue
		}
		out = append(out, t)
	}
	return out, nil
}

// matcher is a compiled narrow.
type matcher struct {
	preds []func(*message) bool
	// streamScoped: a non-negated channel term makes the search cover
	// the stream's whole history instead of the user's own messages.
	streamScoped bool
}

func (e *Emulator) compileNarrowLocked(u *user, terms []narrowTerm) (*matcher, *apiError) {
	mt := &matcher{}
	for _, t := range terms {
		var pred func(*message) bool
		switch t.op {
		case "channel", "stream":
			var s *stream
			if id, isInt := t.operand.(int64); isInt {
				s = e.streams[id]
			} else {
				s = e.streamsByKey[strings.ToLower(strings.TrimSpace(t.operand.(string)))]
			}
			if s == nil {
				return nil, errBadNarrow(fmt.Sprintf("unknown channel %v", t.operand))
			}
			sid := s.ID
			pred = func(m *message) bool { return m.Type == "stream" && m.StreamID == sid }
			if !t.negated {
				mt.streamScoped = true
			}
		case "topic", "subject":
			name, ok := t.operand.(string)
			if !ok {
				return nil, errBadNarrow("invalid topic operand")
			}
			pred = func(m *message) bool { return m.Type == "stream" && strings.EqualFold(m.Topic, name) }
		case "sender":
			var su *user
			if id, isInt := t.operand.(int64); isInt {
				su = e.users[id]
			} else {
				su = e.usersByEmail[strings.ToLower(strings.TrimSpace(t.operand.(string)))]
			}
			if su == nil {
				return nil, errBadNarrow(fmt.Sprintf("unknown user %v", t.operand))
			}
			sid := su.ID
			pred = func(m *message) bool { return m.SenderID == sid }
		case "id":
			id, ok := operandInt(t.operand)
			if !ok {
				return nil, errBadNarrow("Invalid message ID")
			}
			pred = func(m *message) bool { return m.ID == id }
		case "is":
			switch t.operand {
			case "dm", "private":
				pred = func(m *message) bool { return m.Type == "private" }
			default:
				return nil, errBadNarrow(fmt.Sprintf("unknown 'is' operand %v", t.operand))
			}
		default:
			return nil, errBadNarrow("unknown operator " + t.op)
		}
		if t.negated {
			p := pred
			pred = func(m *message) bool { return !p(m) }
		}
		mt.preds = append(mt.preds, pred)
	}
	return mt, nil
}

func (mt *matcher) matches(e *Emulator, u *user, m *message) bool {
	if !e.canAccessLocked(u, m) {
		return false
	}
	if !mt.streamScoped && !e.inPersonalHistoryLocked(u, m) {
		return false
	}
	for _, p := range mt.preds {
		if !p(m) {
			return false
		}
	}
	return true
}

// inPersonalHistoryLocked approximates Zulip's UserMessage rows: what a
// user sent, received directly, or got in a stream they are in.
func (e *Emulator) inPersonalHistoryLocked(u *user, m *message) bool {
	if m.SenderID == u.ID {
		return true
	}
	if m.Type == "private" {
		return true // canAccess already checked the recipients
	}
	s := e.streams[m.StreamID]
	return s != nil && s.subs[u.ID]
}

// getMessages is GET /messages.
func getMessages(x *exchange, _ []string) *apiError {
	anchorRaw, hasAnchor := x.p.lookup("anchor")
	includeAnchor, aerr := x.boolParam("include_anchor", true)
	if aerr != nil {
		return aerr
	}
	numBefore, hasBefore, aerr := x.intParam("num_before")
	if aerr != nil {
		return aerr
	}
	numAfter, hasAfter, aerr := x.intParam("num_after")
	if aerr != nil {
		return aerr
	}
	var terms []narrowTerm
	if raw, ok := x.p.lookup("narrow"); ok {
		if terms, aerr = parseNarrow(raw); aerr != nil {
			return aerr
		}
	}
	if _, aerr = x.boolParam("client_gravatar", true); aerr != nil {
		return aerr
	}
	applyMarkdown, aerr := x.boolParam("apply_markdown", true)
	if aerr != nil {
		return aerr
	}
	useFirstUnread, aerr := x.boolParam("use_first_unread_anchor", false)
	if aerr != nil {
		return aerr
	}
	allowEmpty, aerr := x.boolParam("allow_empty_topic_name", false)
	if aerr != nil {
		return aerr
	}
	if _, ok := x.p.lookup("message_ids"); ok {
		return errBadRequest("message_ids is not supported by the emulator")
	}
	if !hasBefore {
		return errMissing("num_before")
	}
	if !hasAfter {
		return errMissing("num_after")
	}
	if numBefore+numAfter > 5000 {
		return errBadRequest("Too many messages requested (maximum 5000).")
	}
	anchor := int64(largerThanMaxMessageID)
	switch {
	case useFirstUnread:
	case !hasAnchor:
		return errMissing("anchor")
	case anchorRaw == "newest", anchorRaw == "first_unread":
		// No unread tracking: everything is read, so first_unread is newest.
	case anchorRaw == "oldest":
		anchor = 0
	default:
		n, err := strconv.ParseInt(strings.TrimSpace(anchorRaw), 10, 64)
		if err != nil {
			return errBadRequest("Invalid anchor")
		}
		anchor = min(max(n, 0), largerThanMaxMessageID)
	}

	x.e.mu.Lock()
	terms, aerr = x.e.applyWithLocked(x.user, terms)
	if aerr != nil {
		x.e.mu.Unlock()
		return aerr
	}
	mt, aerr := x.e.compileNarrowLocked(x.user, terms)
	if aerr != nil {
		x.e.mu.Unlock()
		return aerr
	}
	var before, after []*message
	var anchorMsg *message
	for _, m := range x.e.msgs {
		if !mt.matches(x.e, x.user, m) {
			continue
		}
		switch {
		case m.ID < anchor:
			before = append(before, m)
		case m.ID == anchor:
			anchorMsg = m
		default:
			after = append(after, m)
		}
	}
	foundOldest := int64(len(before)) <= int64(numBefore)
	foundNewest := int64(len(after)) <= int64(numAfter)
	if !foundOldest {
		before = before[int64(len(before))-numBefore:]
	}
	if !foundNewest {
		after = after[:numAfter]
	}
	list := make([]obj, 0, len(before)+len(after)+1)
	for _, m := range before {
		list = append(list, x.e.messageJSONLocked(m, x.user, applyMarkdown, allowEmpty))
	}
	foundAnchor := anchorMsg != nil && includeAnchor
	if foundAnchor {
		list = append(list, x.e.messageJSONLocked(anchorMsg, x.user, applyMarkdown, allowEmpty))
	}
	for _, m := range after {
		list = append(list, x.e.messageJSONLocked(m, x.user, applyMarkdown, allowEmpty))
	}
	x.e.mu.Unlock()
	x.success(obj{
		{"messages", list},
		{"found_anchor", foundAnchor},
		{"found_oldest", foundOldest},
		{"found_newest", foundNewest},
		{"history_limited", false},
		{"anchor", anchor},
	})
	return nil
}
