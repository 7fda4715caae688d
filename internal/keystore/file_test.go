package keystore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Every document the store does not entirely understand is refused, not
// guessed at: a guess written back could lose what the document held.
func TestStoreRefusesCorruptFiles(t *testing.T) {
	hash := HashKey("k")
	entry := `{"id":"aaaaaaaaaaaa","key_hash":"` + hash + `","created_at":"2026-01-01T00:00:00Z"}`
	twin := strings.Replace(strings.Replace(entry, hash, strings.ToUpper(hash), 1), "aaaaaaaaaaaa", "bbbbbbbbbbbb", 1)
	cases := map[string]string{
		"garbage":                 "not json at all",
		"truncated":               `{"version":1,"clients":[` + entry,
		"unknown version":         `{"version":3,"clients":[]}`,
		"no version":              `{"clients":[]}`,
		"legacy format":           `{"somekey":{"stream":"s","proposal_no":1}}`,
		"duplicate id":            `{"version":1,"clients":[` + entry + `,` + strings.Replace(entry, hash, HashKey("j"), 1) + `]}`,
		"duplicate hash":          `{"version":1,"clients":[` + entry + `,` + strings.Replace(entry, "aaaaaaaaaaaa", "bbbbbbbbbbbb", 1) + `]}`,
		"bad hash":                `{"version":1,"clients":[{"id":"a","key_hash":"xyz"}]}`,
		"unknown field":           `{"version":1,"clients":[],"extra":true}`,
		"clients not array":       `{"version":1,"clients":{}}`,
		"unknown entry field":     `{"version":1,"clients":[` + strings.Replace(entry, `"id"`, `"secret":"x","id"`, 1) + `]}`,
		"uppercase hash twin":     `{"version":1,"clients":[` + entry + `,` + twin + `]}`,
		"short hash":              `{"version":1,"clients":[` + strings.Replace(entry, hash, hash[:62], 1) + `]}`,
		"empty id":                `{"version":1,"clients":[` + strings.Replace(entry, "aaaaaaaaaaaa", "", 1) + `]}`,
		"stray closing brace":     `{"version":1,"clients":[` + entry + `]}}`,
		"second document":         `{"version":1,"clients":[]} {"version":1,"clients":[]}`,
		"version as string":       `{"version":"1","clients":[]}`,
		"null":                    `null`,
		"empty object":            `{}`,
		"array":                   `[]`,
		"bad created_at":          `{"version":1,"clients":[` + strings.Replace(entry, "2026-01-01T00:00:00Z", "yesterday", 1) + `]}`,
		"legacy file, admin only": `{"zwop_plainadmin":{"admin":true}}`,
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "clients.json")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := OpenFile(path, Options{})
			if !errors.Is(err, ErrCorruptStore) {
				t.Fatalf("open: %v, want ErrCorruptStore", err)
			}
			if name == "legacy format" && !strings.Contains(err.Error(), "import-legacy") {
				t.Errorf("no hint at import-legacy: %v", err)
			}
			if after, _ := os.ReadFile(path); string(after) != content {
				t.Error("a corrupt store was changed")
			}
		})
	}
}

// Error messages reach logs and /health, so the name of an unknown field,
// which may be a plain key pasted in from the legacy file, is not quoted
// unless it looks like a field name of ours.
func TestStoreCorruptErrorNamesNoKey(t *testing.T) {
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, doc, want string }{
		{"key as a field", `{"version":1,"clients":[],"` + key + `":{"admin":true}}`, "name not shown"},
		{"key as an entry field", `{"version":1,"clients":[{"id":"a","` + key + `":{}}]}`, "name not shown"},
		{"upstream key as a field", `{"version":1,"clients":[],"abcdefghijklmnopqrstuvwxyzabcdefgh":{}}`, "name not shown"},
		{"legacy file", `{"` + key + `":{"stream":"s","proposal_no":1}}`, "import-legacy"},
		{"plain field", `{"version":1,"clients":[],"created":true}`, `"created"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "clients.json")
			if err := os.WriteFile(path, []byte(c.doc), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := OpenFile(path, Options{})
			if !errors.Is(err, ErrCorruptStore) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("open: %v, want ErrCorruptStore saying %s", err, c.want)
			}
			if strings.Contains(err.Error(), key) || strings.Contains(err.Error(), "abcdefghijklmnopqrstuvwxyzabcdefgh") {
				t.Errorf("the error quotes a key: %v", err)
			}
		})
	}
}

// A store never makes its folder: a missing one is a wrong path or a
// volume not mounted, and a write says so, naming it, and makes nothing.
// Once the folder is there, the document and its lock file are private.
func TestStoreFileModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "var", "zwop")
	path := filepath.Join(dir, "clients.json")
	s := mustOpen(t, path, Options{})
	_, _, err := s.Add(ctxT(t), NewEntry{Stream: "a"})
	if !errors.Is(err, ErrNotWritable) || !strings.Contains(err.Error(), "folder "+dir+" does not exist") {
		t.Errorf("a write into a missing folder: %v", err)
	}
	if err := CheckWritable(path); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("CheckWritable of a missing folder: %v", err)
	}
	if _, err := os.Stat(filepath.Dir(dir)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the store made a folder: %v", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := CheckWritable(path); err != nil {
		t.Errorf("CheckWritable of a writable folder: %v", err)
	}
	mustAdd(t, s, NewEntry{Stream: "a"}, nil)
	for p, want := range map[string]fs.FileMode{
		path:           0o600,
		path + ".lock": 0o600,
	} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		// The umask may take bits away, never add them.
		if fi.Mode()&^want != 0 || fi.Mode().Type() != want.Type() {
			t.Errorf("%s: mode %v, want at most %v", p, fi.Mode(), want)
		}
	}
	if err := CheckWritable(path); err != nil {
		t.Errorf("CheckWritable of a written store: %v", err)
	}
}

// A store whose config says it is read-only (keys managed elsewhere)
// refuses every change with ErrReadOnly and writes nothing, last-used
// times included.
func TestStoreReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	w := mustOpen(t, path, Options{})
	key, e := mustAdd(t, w, NewEntry{Stream: "a"}, nil)
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ro := mustOpen(t, path, Options{ReadOnly: true})
	if got, ok := ro.Lookup(key); !ok || got.ID != e.ID {
		t.Fatal("a read-only store does not serve its keys")
	}
	ro.Touch(&e)
	if err := ro.flushUsage(ctxT(t)); err != nil {
		t.Errorf("flushing last-used times: %v", err)
	}
	if _, _, err := ro.Add(ctxT(t), NewEntry{Stream: "b"}); !errors.Is(err, ErrReadOnly) {
		t.Errorf("Add: %v, want ErrReadOnly", err)
	}
	if _, err := ro.Revoke(ctxT(t), e.ID); !errors.Is(err, ErrReadOnly) {
		t.Errorf("Revoke: %v, want ErrReadOnly", err)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Error("a read-only store wrote its document")
	}
}

// An empty file holds no keys, so it is read as an empty store; but no
// store this proxy wrote is ever empty, so an empty file is most likely
// one truncated (': > clients.json', a backup restored with cp), and no
// write starts a new document over it unless told to (--new-store).
func TestStoreEmptyFileIsEmptyStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	if err := os.WriteFile(path, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := mustOpen(t, path, Options{})
	if s.Len() != 0 || s.Healthy() != nil {
		t.Fatalf("an empty file: %d entries, %v", s.Len(), s.Healthy())
	}
	if _, _, err := s.Add(ctxT(t), NewEntry{Stream: "a"}); !errors.Is(err, ErrStoreLost) || !strings.Contains(err.Error(), "--new-store") {
		t.Fatalf("a write over an empty file: %v, want ErrStoreLost saying --new-store", err)
	}
	if raw, _ := os.ReadFile(path); string(raw) != " \n" {
		t.Fatalf("the refused write changed the file: %q", raw)
	}
	var is issued
	s = mustOpen(t, path, Options{NewStore: true})
	k, _ := mustAdd(t, s, NewEntry{Stream: "a"}, &is)
	if !s.Created() {
		t.Error("a store begun over an empty file does not say it was created")
	}
	raw, _ := os.ReadFile(path)
	if doc, err := parseDocument(raw); err != nil || len(doc.Clients) != 1 {
		t.Fatalf("written document: %v %+v", err, doc)
	}
	if _, ok := mustOpen(t, path, Options{}).Lookup(k); !ok {
		t.Error("key missing after reopening")
	}
	is.assertNoKeyIn(t, path)
}

// A store emptied while it holds keys (': > clients.json', or cp of a
// backup, which truncates first) is damaged, not empty: the last good keys
// keep serving, Healthy says why, nothing is written over it, and the
// store recovers by itself once a good document is back.
func TestStoreEmptiedWhileHolding(t *testing.T) {
	for _, empty := range []string{"", " \n\t"} {
		path := filepath.Join(t.TempDir(), "clients.json")
		var is issued
		s := mustOpen(t, path, Options{PollInterval: 10 * time.Millisecond})
		k, _ := mustAdd(t, s, NewEntry{Stream: "a"}, &is)
		admin, _ := mustAdd(t, s, NewEntry{Admin: true}, &is)
		good, _ := os.ReadFile(path)
		s.Start()
		if err := os.WriteFile(path, []byte(empty), 0o600); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "unhealthy", func() bool { return s.Healthy() != nil })
		if err := s.Healthy(); !errors.Is(err, ErrStoreLost) || !strings.Contains(err.Error(), "is empty") {
			t.Errorf("Healthy: %v", err)
		}
		for _, key := range []string{k, admin} {
			if _, ok := s.Lookup(key); !ok {
				t.Error("the last good keys are no longer served")
			}
		}
		if _, _, err := s.Add(ctxT(t), NewEntry{Stream: "b"}); !errors.Is(err, ErrStoreLost) {
			t.Errorf("a key was added to an emptied store: %v", err)
		}
		if raw, _ := os.ReadFile(path); string(raw) != empty {
			t.Errorf("a new document was begun over the emptied one: %q", raw)
		}
		if err := os.WriteFile(path, good, 0o600); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "healthy again", func() bool { return s.Healthy() == nil })
		mustAdd(t, s, NewEntry{Stream: "c"}, &is)
		if r := mustOpen(t, path, Options{}); r.Len() != 3 {
			t.Errorf("%d entries once restored, want 3", r.Len())
		}
	}
}

// A document that lacks entries the store holds is never adopted, however
// it came (a CLI that began a new store where the file had vanished, a
// stale backup): entries are revoked, never deleted.
func TestStoreNeverAdoptsAShrunkDocument(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	var is issued
	s := mustOpen(t, path, Options{PollInterval: 10 * time.Millisecond})
	k1, _ := mustAdd(t, s, NewEntry{Stream: "a"}, &is)
	k2, _ := mustAdd(t, s, NewEntry{Stream: "b"}, &is)
	s.Start()
	// What a CLI does where the file vanished, forced.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	cli := mustOpen(t, path, Options{NewStore: true})
	k3, _ := mustAdd(t, cli, NewEntry{Stream: "c"}, &is)
	waitFor(t, 5*time.Second, "unhealthy", func() bool {
		err := s.Healthy()
		return err != nil && strings.Contains(err.Error(), "lacks 2 of the 2 entries")
	})
	for _, k := range []string{k1, k2} {
		if _, ok := s.Lookup(k); !ok {
			t.Error("a key the store held is no longer served")
		}
	}
	if _, ok := s.Lookup(k3); ok {
		t.Error("the store adopted a document that lacks its entries")
	}
	if _, err := s.Revoke(ctxT(t), "nope"); !errors.Is(err, ErrStoreLost) {
		t.Errorf("a write over the shrunk document: %v, want ErrStoreLost", err)
	}
}

// A missing store where one was written before (its lock file is there)
// is a lost store: a fresh writer refuses to begin a new one unless told
// to, and one where none has been says it created it.
func TestStoreLostFileRefusesNewDocument(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	s := mustOpen(t, path, Options{})
	mustAdd(t, s, NewEntry{Stream: "a"}, nil)
	if !s.Created() {
		t.Error("the first write of a new store does not say it was created")
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	fresh := mustOpen(t, path, Options{})
	_, _, err := fresh.Add(ctxT(t), NewEntry{Stream: "b"})
	if !errors.Is(err, ErrStoreLost) || !strings.Contains(err.Error(), "mounted") || !strings.Contains(err.Error(), "--new-store") {
		t.Fatalf("a write where a store vanished: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a document was begun: %v", err)
	}
	forced := mustOpen(t, path, Options{NewStore: true})
	mustAdd(t, forced, NewEntry{Stream: "b"}, nil)
	if !forced.Created() || forced.Len() != 1 {
		t.Errorf("forced: created %v, %d entries", forced.Created(), forced.Len())
	}
}

// A crash after the temporary file is written but before the rename
// leaves the old document in place.
func TestStoreCrashBeforeRename(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	s := mustOpen(t, path, Options{})
	k1, _ := mustAdd(t, s, NewEntry{Stream: "a"}, nil)
	before, _ := os.ReadFile(path)

	fb := s.b.(*fileBackend)
	var tmpName string
	fb.afterTempWrite = func(tmp string) error {
		tmpName = tmp
		return errors.New("simulated crash")
	}
	if _, _, err := s.Add(ctxT(t), NewEntry{Stream: "b"}); err == nil {
		t.Fatal("the interrupted write reported success")
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Fatal("the store changed although the write never finished")
	}
	if _, err := os.Stat(tmpName); err != nil {
		t.Fatalf("the simulated crash should leave its temp file: %v", err)
	}
	// A new process reads the old document, stale temp file or not, and
	// writes on.
	fb.afterTempWrite = nil
	s2 := mustOpen(t, path, Options{})
	if _, ok := s2.Lookup(k1); !ok || s2.Len() != 1 {
		t.Fatalf("after the crash: %d entries", s2.Len())
	}
	mustAdd(t, s2, NewEntry{Stream: "c"}, nil)
	if s3 := mustOpen(t, path, Options{}); s3.Len() != 2 {
		t.Errorf("%d entries, want 2", s3.Len())
	}
}

// Temp files that a crash left behind, whatever they hold, are neither
// read nor in the way of the next write, which clears them away; files
// that only look alike are left alone.
func TestStoreIgnoresStaleTempFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "clients.json")
	var is issued
	s := mustOpen(t, path, Options{})
	k1, _ := mustAdd(t, s, NewEntry{Stream: "a"}, &is)
	for _, junk := range []string{"garbage", `{"version":1,"clients":[]}`, ""} {
		f, err := os.CreateTemp(dir, ".clients.json.tmp-*")
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(junk)
		f.Close()
	}
	keep := []string{".clients.json.tmp-notdigits", ".clients.json.tmp-", ".other.json.tmp-123", "clients.json.tmp-123"}
	for _, name := range keep {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s2 := mustOpen(t, path, Options{})
	if _, ok := s2.Lookup(k1); !ok || s2.Len() != 1 {
		t.Fatalf("read with stale temp files around: %d entries", s2.Len())
	}
	k2, _ := mustAdd(t, s2, NewEntry{Stream: "b"}, &is)
	stale, _ := filepath.Glob(filepath.Join(dir, ".clients.json.tmp-[0-9]*"))
	if len(stale) != 0 {
		t.Errorf("stale temp files left after a write: %v", stale)
	}
	for _, name := range keep {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("a file that is not a temp file of the store was touched: %v", err)
		}
	}
	s3 := mustOpen(t, path, Options{})
	for _, k := range []string{k1, k2} {
		if _, ok := s3.Lookup(k); !ok {
			t.Error("a key is missing")
		}
	}
	is.assertNoKeyIn(t, path)
}

// After a failed write the in-memory index must still be the document on
// disk, and the next write must start from it, not from the failed one.
func TestStoreFailedWriteChangesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	var is issued
	s := mustOpen(t, path, Options{})
	k1, _ := mustAdd(t, s, NewEntry{Stream: "a"}, &is)
	fb := s.b.(*fileBackend)
	fb.afterTempWrite = func(string) error { return errors.New("simulated crash") }
	k, _, err := s.Add(ctxT(t), NewEntry{Stream: "lost"})
	if err == nil {
		t.Fatal("the interrupted write reported success")
	}
	if _, ok := s.Lookup(k); ok || s.Len() != 1 {
		t.Errorf("an unwritten key is served: %d entries", s.Len())
	}
	before, _ := os.ReadFile(path)
	fb.afterTempWrite = nil
	k2, _ := mustAdd(t, s, NewEntry{Stream: "b"}, &is)
	after, _ := os.ReadFile(path)
	if bytes.Contains(after, []byte(HashKey(k))) || bytes.Equal(before, after) {
		t.Error("the next write did not start from the document on disk")
	}
	s2 := mustOpen(t, path, Options{})
	if s2.Len() != 2 {
		t.Errorf("%d entries, want 2", s2.Len())
	}
	for _, k := range []string{k1, k2} {
		if _, ok := s2.Lookup(k); !ok {
			t.Error("a key is missing")
		}
	}
	is.assertNoKeyIn(t, path)
}

// The document is written one entry a line, so that grep and diff work
// on it, and reads back as it was, empty or not.
func TestStoreDocumentFormat(t *testing.T) {
	exp := time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC)
	full := generated(3)
	full[1].ExpiresAt, full[1].Name, full[1].Admin, full[1].Stream = &exp, "ops <&> team", true, ""
	for _, entries := range [][]Entry{nil, full} {
		doc := document{Version: storeVersion, Clients: entries}
		raw, err := doc.marshal()
		if err != nil {
			t.Fatal(err)
		}
		back, err := parseDocument(raw)
		if err != nil {
			t.Fatalf("%v\n%s", err, raw)
		}
		if len(back.Clients) != len(entries) {
			t.Fatalf("%d entries read back, want %d", len(back.Clients), len(entries))
		}
		for i := range entries {
			a, b := entries[i], back.Clients[i]
			if a.ID != b.ID || a.Name != b.Name || a.Admin != b.Admin || !a.CreatedAt.Equal(b.CreatedAt) || (a.ExpiresAt == nil) != (b.ExpiresAt == nil) {
				t.Errorf("entry %d: %+v, want %+v", i, b, a)
			}
		}
		if lines := strings.Count(string(raw), "\n"); lines != 4+len(entries)+min(len(entries), 1) {
			t.Errorf("%d lines for %d entries:\n%s", lines, len(entries), raw)
		}
	}
}

// A write keeps the store file's owner, group and mode: run as root, a CLI
// must not replace a store the Caddy service user owns with a root:root
// 0600 file that user can no longer read.
func TestStoreWriteKeepsOwnerAndMode(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("changing a file's owner needs root")
	}
	path := filepath.Join(t.TempDir(), "clients.json")
	mustAdd(t, mustOpen(t, path, Options{}), NewEntry{Stream: "a"}, nil)
	const uid, gid = 65534, 65534 // nobody, nogroup
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	mustAdd(t, mustOpen(t, path, Options{}), NewEntry{Stream: "b"}, nil)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if u, g, _ := ownerOf(fi); u != uid || g != gid || fi.Mode().Perm() != 0o640 {
		t.Errorf("after a write as root: owner %d:%d mode %o, want %d:%d 640", u, g, fi.Mode().Perm(), uid, gid)
	}
}

// A writer that cannot keep the owner refuses before writing, naming the
// owner: here the test binary run as nobody against a store root owns.
func TestStoreWriteRefusesToChangeOwner(t *testing.T) {
	if os.Getenv("ZWOP_OWNER_HELPER") != "" {
		s, err := OpenFile(os.Getenv("ZWOP_OWNER_HELPER"), Options{})
		if err != nil {
			fmt.Println("OPEN", err)
			return
		}
		_, _, err = s.Add(context.Background(), NewEntry{Stream: "b"})
		fmt.Println("ADD", err)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("running a helper as another user needs root")
	}
	dir := t.TempDir()
	// nobody must reach the folder (the test's own is 0700) and write in it.
	if err := os.Chmod(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "clients.json")
	mustAdd(t, mustOpen(t, path, Options{}), NewEntry{Stream: "a"}, nil)
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path+".lock", 0o666); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	// The test binary, where nobody may run it.
	bin := filepath.Join(dir, "keystore.test")
	raw, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, raw, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestStoreWriteRefusesToChangeOwner$")
	cmd.Env = append(os.Environ(), "ZWOP_OWNER_HELPER="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "ADD "+ErrNotWritable.Error()) || !strings.Contains(string(out), "belongs to root") {
		t.Errorf("the helper's write as nobody: %s", out)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Error("the refused write changed the store")
	}
	fi, _ := os.Stat(path)
	if u, _, _ := ownerOf(fi); u != 0 {
		t.Errorf("the store now belongs to %d", u)
	}
}

// A store that cannot be written says so (Writable), keeps serving its
// keys, and clears once a write goes through again.
func TestStoreWriteFailureIsVisible(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	s := mustOpen(t, path, Options{})
	k, _ := mustAdd(t, s, NewEntry{Stream: "a"}, nil)
	// A folder where the lock file belongs fails every write, even as root.
	if err := os.Remove(path + ".lock"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path+".lock", 0o700); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Add(ctxT(t), NewEntry{Stream: "b"}); !errors.Is(err, ErrNotWritable) {
		t.Fatalf("a write that cannot lock: %v, want ErrNotWritable", err)
	}
	if !errors.Is(s.Writable(), ErrNotWritable) {
		t.Errorf("Writable: %v", s.Writable())
	}
	if _, ok := s.Lookup(k); !ok || s.Healthy() != nil {
		t.Errorf("lookups stopped (%v) or Healthy failed: %v", ok, s.Healthy())
	}
	if err := os.Remove(path + ".lock"); err != nil {
		t.Fatal(err)
	}
	mustAdd(t, s, NewEntry{Stream: "c"}, nil)
	if s.Writable() != nil {
		t.Errorf("Writable after a good write: %v", s.Writable())
	}
}
