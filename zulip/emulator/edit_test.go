package emulator_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

// Zulip's edit rules: content only by the sender (within the edit
// limit); topic and stream moves by anyone, taking other people's
// messages along with change_later and change_all.
func TestEditRules(t *testing.T) {
	type seeded struct {
		env                        *env
		bot1, owner2, bot3, other4 int64 // messages: in general/"t" except other4 (topic "t" in other)
	}
	seed := func(t *testing.T, opts ...emulator.Option) seeded {
		e := newEnv(t, opts...)
		return seeded{
			env:    e,
			bot1:   e.send("", "general", "t", "bot 1"),
			owner2: e.send(owner(), "general", "T", "owner 2"),
			bot3:   e.send("", "general", "t", "bot 3"),
			other4: e.send(owner(), "other", "t", "owner 4"),
		}
	}
	tests := []struct {
		name string
		as   string
		msg  func(s seeded) int64
		body func(s seeded) string
		// want maps message -> "stream|topic|content" after the edit, or
		// is nil with wantErr set.
		want    func(s seeded) map[int64]string
		wantErr string
	}{
		{"sender edits content", "", func(s seeded) int64 { return s.bot1 }, func(seeded) string { return form("content", "new") },
			func(s seeded) map[int64]string {
				return map[int64]string{s.bot1: "general|t|new", s.owner2: "general|T|owner 2"}
			}, ""},
		{"others cannot edit content", "", func(s seeded) int64 { return s.owner2 }, func(seeded) string { return form("content", "hijack") },
			nil, "You don't have permission to edit this message"},
		{"emptied content becomes (deleted)", "", func(s seeded) int64 { return s.bot1 }, func(seeded) string { return form("content", "  ") },
			func(s seeded) map[int64]string { return map[int64]string{s.bot1: "general|t|(deleted)"} }, ""},
		{"anyone moves one message's topic", "", func(s seeded) int64 { return s.owner2 }, func(seeded) string { return form("topic", "moved") },
			func(s seeded) map[int64]string {
				return map[int64]string{s.bot1: "general|t|bot 1", s.owner2: "general|moved|owner 2", s.bot3: "general|t|bot 3"}
			}, ""},
		{"change_later moves later messages of others", "", func(s seeded) int64 { return s.owner2 }, func(seeded) string { return form("topic", "moved", "propagate_mode", "change_later") },
			func(s seeded) map[int64]string {
				return map[int64]string{s.bot1: "general|t|bot 1", s.owner2: "general|moved|owner 2", s.bot3: "general|moved|bot 3", s.other4: "other|t|owner 4"}
			}, ""},
		{"change_all moves the whole topic, any case", "", func(s seeded) int64 { return s.bot3 }, func(seeded) string { return form("topic", "moved", "propagate_mode", "change_all") },
			func(s seeded) map[int64]string {
				return map[int64]string{s.bot1: "general|moved|bot 1", s.owner2: "general|moved|owner 2", s.bot3: "general|moved|bot 3", s.other4: "other|t|owner 4"}
			}, ""},
		{"stream move", "", func(s seeded) int64 { return s.bot1 }, func(s seeded) string { return form("stream_id", fmt.Sprint(s.env.stream("other"))) },
			func(s seeded) map[int64]string {
				return map[int64]string{s.bot1: "other|t|bot 1", s.bot3: "general|t|bot 3"}
			}, ""},
		{"stream move with change_all", "", func(s seeded) int64 { return s.bot1 }, func(s seeded) string {
			return form("stream_id", fmt.Sprint(s.env.stream("other")), "propagate_mode", "change_all")
		}, func(s seeded) map[int64]string {
			return map[int64]string{s.bot1: "other|t|bot 1", s.owner2: "other|T|owner 2", s.bot3: "other|t|bot 3"}
		}, ""},
		{"unknown target stream", "", func(s seeded) int64 { return s.bot1 }, func(seeded) string { return form("stream_id", "99") }, nil, "Invalid channel ID"},
		{"content and stream together", "", func(s seeded) int64 { return s.bot1 }, func(seeded) string { return form("content", "x", "stream_id", "2") },
			nil, "Cannot change message content while changing channel"},
		{"propagate_mode without a move", "", func(s seeded) int64 { return s.bot1 }, func(seeded) string { return form("content", "x", "propagate_mode", "change_all") },
			nil, "Invalid propagate_mode without topic edit"},
		{"nothing to change", "", func(s seeded) int64 { return s.bot1 }, func(seeded) string { return "" }, nil, "Nothing to change"},
		{"invalid propagate_mode", "", func(s seeded) int64 { return s.bot1 }, func(seeded) string { return form("topic", "x", "propagate_mode", "change_some") },
			nil, "Invalid propagate_mode"},
		{"missing message", "", func(seeded) int64 { return 999 }, func(seeded) string { return form("topic", "x") }, nil, "Invalid message(s)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := seed(t)
			a := s.env.do(call{method: "PATCH", path: fmt.Sprintf("/api/v1/messages/%d", tt.msg(s)), as: tt.as, body: tt.body(s)})
			if tt.wantErr != "" {
				wantError(t, a, 400, "BAD_REQUEST", tt.wantErr)
				return
			}
			if a.status != 200 {
				t.Fatalf("%d %s", a.status, a.raw)
			}
			names := map[int64]string{}
			for _, st := range s.env.srv.Streams() {
				names[st.ID] = st.Name
			}
			for id, want := range tt.want(s) {
				m, _ := s.env.srv.Message(id)
				if got := names[m.StreamID] + "|" + m.Topic + "|" + m.Content; got != want {
					t.Errorf("message %d: %q, want %q", id, got, want)
				}
			}
		})
	}
}

func TestEditHistoryAndTopics(t *testing.T) {
	e := newEnv(t)
	id := e.send("", "general", "old", "text")
	a := e.do(call{method: "PATCH", path: fmt.Sprintf("/api/v1/messages/%d", id), body: form("topic", "new", "content", "text 2")})
	if a.status != 200 {
		t.Fatalf("%d %s", a.status, a.raw)
	}
	a = e.do(call{path: fmt.Sprintf("/api/v1/messages/%d", id)})
	msg, _ := a.json["message"].(map[string]any)
	hist, _ := msg["edit_history"].([]any)
	if len(hist) != 1 || msg["last_edit_timestamp"] == nil || msg["last_moved_timestamp"] == nil {
		t.Fatalf("%s", a.raw)
	}
	h := hist[0].(map[string]any)
	if h["prev_topic"] != "old" || h["topic"] != "new" || h["prev_content"] != "text" {
		t.Errorf("history %v", h)
	}
	a = e.do(call{path: fmt.Sprintf("/api/v1/users/me/%d/topics", e.stream("general"))})
	if !strings.Contains(string(a.raw), `"name":"new"`) || strings.Contains(string(a.raw), `"old"`) {
		t.Errorf("topics after the move: %s", a.raw)
	}
}

func TestEditLimit(t *testing.T) {
	clk := newClock()
	e := newEnv(t, emulator.WithClock(clk.Now))
	id := e.send("", "general", "t", "text")
	clk.Advance(emulator.DefaultEditLimit + time.Second)
	a := e.do(call{method: "PATCH", path: fmt.Sprintf("/api/v1/messages/%d", id), body: form("content", "late")})
	wantError(t, a, 400, "BAD_REQUEST", "The time limit for editing this message has passed")
	// Moving is still allowed (a week, for non-admins).
	a = e.do(call{method: "PATCH", path: fmt.Sprintf("/api/v1/messages/%d", id), body: form("topic", "late move")})
	if a.status != 200 {
		t.Errorf("%d %s", a.status, a.raw)
	}
}

func TestDeleteRules(t *testing.T) {
	e := newEnv(t)
	mine := e.send("", "general", "t", "x")
	theirs := e.send(owner(), "general", "t", "y")
	a := e.do(call{method: "DELETE", path: fmt.Sprintf("/api/v1/messages/%d", theirs)})
	wantError(t, a, 400, "BAD_REQUEST", "You don't have permission to delete this message")
	if a := e.do(call{method: "DELETE", path: fmt.Sprintf("/api/v1/messages/%d", mine)}); a.status != 200 {
		t.Errorf("%d %s", a.status, a.raw)
	}
	if _, ok := e.srv.Message(mine); ok {
		t.Error("not deleted")
	}
}
