package zulipproxy

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zwop/caddy-zulip-proxy/internal/clitest"
	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
)

func openForTest(t *testing.T, path string) *keystore.Store {
	t.Helper()
	s, err := keystore.OpenFile(path, keystore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestCLIRotate(t *testing.T) {
	store := filepath.Join(t.TempDir(), "clients.json")
	old, id := cliAdd(t, "add-client", "--store", store, "--stream", "general", "--name", "ci")
	key, id2 := cliAdd(t, "rotate", id, "--store", store, "--grace", "2h")
	if id2 != id || key == old {
		t.Fatalf("rotate printed id %s (want %s), same key: %v", id2, id, key == old)
	}
	s := openForTest(t, store)
	now := time.Now()
	if e, ok := s.Lookup(key); !ok || e.Usable(now) != nil {
		t.Error("the new key does not work")
	}
	if e, ok := s.Lookup(old); !ok || e.Usable(now) != nil || e.Usable(now.Add(2*time.Hour+time.Second)) == nil {
		t.Error("the old key does not work for exactly the grace period")
	}
	out, _, err := clitest.Run("list", "--store", store)
	if err != nil || !strings.Contains(out, "ROTATED") || !strings.Contains(out, "(old key until ") {
		t.Errorf("list does not show the rotation (%v):\n%s", err, out)
	}
	out, _, _ = clitest.Run("list", "--json", "--store", store)
	var rows []map[string]any
	if err := json.Unmarshal([]byte(out), &rows); err != nil || rows[0]["rotated_at"] == nil || rows[0]["previous_key_valid_until"] == nil {
		t.Errorf("list --json lacks rotated_at and previous_key_valid_until: %v %s", err, out)
	}

	// Twice in the grace: both old secrets are listed, until when each.
	key2b, _ := cliAdd(t, "rotate", id, "--store", store, "--grace", "1h")
	if out, _, _ := clitest.Run("list", "--store", store); !strings.Contains(out, "(2 old keys, until ") {
		t.Errorf("list after two rotations:\n%s", out)
	}

	// --grace 0: every old secret stops at once.
	key3, _ := cliAdd(t, "rotate", id, "--store", store, "--grace", "0")
	s2 := openForTest(t, store)
	for _, k := range []string{old, key, key2b} {
		if e, ok := s2.Lookup(k); !ok || e.Usable(time.Now()) == nil {
			t.Error("after --grace 0 a replaced key still works")
		}
	}
	if out, _, _ := clitest.Run("list", "--store", store); strings.Contains(out, "old key") {
		t.Errorf("list after --grace 0 shows an old key:\n%s", out)
	}
	if e, ok := s2.Lookup(key3); !ok || e.Usable(time.Now()) != nil {
		t.Error("the newest key does not work")
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"rotate", "nope"}, "no key with id"},
		{[]string{"rotate", id, "--grace", "-1h"}, "--grace must be"},
		{[]string{"rotate", id, "--grace", "soon"}, "--grace must be"},
		{[]string{"expire", id}, "give one of --in"},
		{[]string{"expire", id, "--in", "30d", "--never"}, "give one of --in"},
		{[]string{"expire", id, "--in", "-5m"}, "--in must be"},
		{[]string{"expire", "nope", "--never"}, "no key with id"},
	} {
		_, _, err := clitest.Run(append(tc.args, "--store", store)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error with %q", tc.args, err, tc.want)
		}
	}
}

func TestCLIExpire(t *testing.T) {
	store := filepath.Join(t.TempDir(), "clients.json")
	key, id := cliAdd(t, "add-client", "--store", store, "--stream", "general")
	out, _, err := clitest.Run("expire", id, "--in", "30d", "--store", store)
	if err != nil || !strings.Contains(out, "expires: 20") {
		t.Fatalf("expire --in: %v\n%s", err, out)
	}
	s := openForTest(t, store)
	e, _ := s.Lookup(key)
	if e.ExpiresAt == nil || e.ExpiresAt.Sub(time.Now()) < 29*24*time.Hour {
		t.Fatalf("expires_at %v, want 30 days ahead", e.ExpiresAt)
	}
	out, _, err = clitest.Run("expire", id, "--never", "--store", store)
	if err != nil || !strings.Contains(out, "expires: never") {
		t.Fatalf("expire --never: %v\n%s", err, out)
	}
	if e, _ := openForTest(t, store).Lookup(key); e.ExpiresAt != nil {
		t.Errorf("after --never, expires_at %v", e.ExpiresAt)
	}
	if _, _, err := clitest.Run("revoke", id, "--store", store); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"expire", id, "--never"}, {"rotate", id}} {
		if _, _, err := clitest.Run(append(args, "--store", store)...); err == nil || !strings.Contains(err.Error(), "revoked") {
			t.Errorf("%v on a revoked key: %v", args, err)
		}
	}
}

// --allow narrows what a new key may do, `allow` changes it later ("all"
// widens it back); the list says so; bad words and admin keys are refused
// in words.
func TestCLIPermissions(t *testing.T) {
	store := filepath.Join(t.TempDir(), "clients.json")
	key, id := cliAdd(t, "add-client", "--store", store, "--stream", "general", "--name", "ci", "--allow", "send")
	_, adminID := cliAdd(t, "add-admin", "--store", store)
	s := openForTest(t, store)
	if e, _ := s.Lookup(key); !e.Allows(keystore.PermSend) || e.Allows(keystore.PermRead) {
		t.Fatalf("a send-only key: %v", e.Permissions)
	}
	out, _, err := clitest.Run("list", "--store", store)
	if err != nil || !strings.Contains(out, "PERMISSIONS") || !strings.Contains(out, " send ") {
		t.Errorf("list: %v\n%s", err, out)
	}
	for _, c := range []struct{ arg, want string }{{"edit,send", "may: send, edit"}, {"all", "may: send, upload, edit, read, topics"}} {
		out, _, err := clitest.Run("allow", id, c.arg, "--store", store)
		if err != nil || !strings.Contains(out, c.want) {
			t.Errorf("allow %s: %v %s", c.arg, err, out)
		}
	}
	out, _, _ = clitest.Run("list", "--json", "--store", store)
	var rows []map[string]any
	if err := json.Unmarshal([]byte(out), &rows); err != nil || len(rows) != 2 || len(rows[0]["permissions"].([]any)) != 5 {
		t.Errorf("list --json: %v %s", err, out)
	}
	for _, args := range [][]string{
		{"allow", id, "send,delete"},
		{"allow", adminID, "send"},
		{"add-client", "--stream", "general", "--allow", "everything"},
	} {
		if _, _, err := clitest.Run(append(args, "--store", store)...); err == nil {
			t.Errorf("%v was taken", args)
		}
	}
}

// --topic-prefix holds a new key to its topics; `topics` changes them
// (--any lifts the scope); the list shows them.
func TestCLITopics(t *testing.T) {
	store := filepath.Join(t.TempDir(), "clients.json")
	key, id := cliAdd(t, "add-client", "--store", store, "--stream", "general", "--topic-prefix", " BL3/ ")
	if e, _ := openForTest(t, store).Lookup(key); e.TopicPrefix != "BL3/" || e.TopicInScope("BL2/x") {
		t.Fatalf("a key for BL3/: %q", e.TopicPrefix)
	}
	out, _, err := clitest.Run("list", "--store", store)
	if err != nil || !strings.Contains(out, "TOPICS") || !strings.Contains(out, "BL3/*") {
		t.Errorf("list: %v\n%s", err, out)
	}
	for _, c := range []struct {
		args []string
		want string
	}{{[]string{"topics", id, "BL4/"}, `topics starting with "BL4/"`}, {[]string{"topics", id, "--any"}, "may use: any topic"}} {
		out, _, err := clitest.Run(append(c.args, "--store", store)...)
		if err != nil || !strings.Contains(out, c.want) {
			t.Errorf("%v: %v %s", c.args, err, out)
		}
	}
	for _, args := range [][]string{{"topics", id}, {"topics", id, "BL3/", "--any"}, {"topics", id, "   "}, {"add-client", "--stream", "s", "--topic-prefix", ""}} {
		if _, _, err := clitest.Run(append(args, "--store", store)...); err == nil {
			t.Errorf("%v was taken", args)
		}
	}
}
