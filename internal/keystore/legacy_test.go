package keystore

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLegacyProposal(t *testing.T) {
	good := map[string]int64{
		`1234`: 1234, `"77"`: 77, `" 77 "`: 77, `0`: 0, `null`: 0, `""`: 0, ``: 0,
	}
	for in, want := range good {
		if got, err := legacyProposal(json.RawMessage(in)); err != nil || got != want {
			t.Errorf("%s: %d %v, want %d", in, got, err, want)
		}
	}
	for _, in := range []string{`-1`, `"-1"`, `1.5`, `1e3`, `"five"`, `true`, `[1]`, `{"n":1}`, `99999999999999999999`} {
		if got, err := legacyProposal(json.RawMessage(in)); err == nil {
			t.Errorf("%s: accepted as %d", in, got)
		}
	}
}

// The upstream service's exact file shape, imported into a store that
// already has keys of ours: old keys work with their scope, and nothing
// of the old file but the hashes reaches the store.
func TestLegacyImportUpstreamFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	var is issued
	s := mustOpen(t, path, Options{})
	ours, _ := mustAdd(t, s, NewEntry{Stream: "ours"}, &is)
	plain := []string{"Kq3-upstream-key-one", "Kq3-upstream-admin-key", "Kq3-upstream-key-three"}
	for _, k := range plain {
		is.add(k)
	}
	legacy := `{"` + plain[0] + `": {"proposal_no": 1234, "stream": "S"}, "` + plain[1] + `": {"admin": true}, "` + plain[2] + `": {"proposal_no": "77", "stream": "T", "comment": "unknown fields are ignored"}}`
	n, skipped, err := s.ImportLegacy(ctxT(t), strings.NewReader(legacy), "import-test")
	if err != nil || n != 3 || skipped != 0 {
		t.Fatalf("import: %d imported, %d skipped, %v", n, skipped, err)
	}

	r := mustOpen(t, path, Options{})
	if r.Len() != 4 {
		t.Fatalf("%d entries, want 4", r.Len())
	}
	if _, ok := r.Lookup(ours); !ok {
		t.Error("the import lost a key that was there")
	}
	want := []struct {
		stream   string
		proposal int64
		admin    bool
		name     string
	}{{"S", 1234, false, "proposal 1234"}, {"", 0, true, "legacy admin"}, {"T", 77, false, "proposal 77"}}
	ids := map[string]bool{}
	for i, k := range plain {
		e, ok := r.Lookup(k)
		if !ok {
			t.Fatalf("old key %d does not work", i)
		}
		w := want[i]
		if e.Stream != w.stream || e.ProposalNo != w.proposal || e.Admin != w.admin || e.Name != w.name ||
			!e.Legacy || e.CreatedBy != "import-test" || e.Usable(time.Now()) != nil {
			t.Errorf("old key %d: %+v", i, e)
		}
		if ids[e.ID] || len(e.ID) != 12 {
			t.Errorf("id %q repeated or malformed", e.ID)
		}
		ids[e.ID] = true
	}
	if e, _ := r.Lookup(ours); e.Legacy {
		t.Error("a key of ours marked legacy")
	}

	// Importing again, or a file with some keys already in, adds only the
	// new ones.
	before, _ := os.ReadFile(path)
	if n, skipped, err := r.ImportLegacy(ctxT(t), strings.NewReader(legacy), "again"); err != nil || n != 0 || skipped != 3 {
		t.Errorf("second import: %d imported, %d skipped, %v", n, skipped, err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("an import that added nothing wrote the store")
	}
	is.add("Kq3-upstream-key-four")
	more := `{"` + plain[0] + `": {"proposal_no": 1234, "stream": "S"}, "Kq3-upstream-key-four": {"stream": "U"}}`
	if n, skipped, err := r.ImportLegacy(ctxT(t), strings.NewReader(more), "again"); err != nil || n != 1 || skipped != 1 {
		t.Errorf("partial import: %d imported, %d skipped, %v", n, skipped, err)
	}
	if e, ok := r.Lookup("Kq3-upstream-key-four"); !ok || e.Name != "legacy key for U" || e.ProposalNo != 0 {
		t.Errorf("key without proposal: %+v", e)
	}
	is.assertNoKeyIn(t, path)
}

// A file that is not entirely understood imports nothing, so a half
// import never has to be untangled.
func TestLegacyImportRejectsBadShapes(t *testing.T) {
	// The keys are secrets: no message may quote them.
	const good, other = "Kq3-good-legacy-key", "Kq3-other-legacy-key"
	ok := `"` + good + `": {"proposal_no": 1, "stream": "S"}`
	bad := map[string]string{
		"array":                 `["` + good + `"]`,
		"not json":              good + `: S`,
		"entry a string":        `{` + ok + `, "` + other + `": "S"}`,
		"stream missing":        `{` + ok + `, "` + other + `": {"proposal_no": 5}}`,
		"proposal a word":       `{` + ok + `, "` + other + `": {"stream": "S", "proposal_no": "five"}}`,
		"null":                  `null`,
		"string":                `"key"`,
		"number":                `12`,
		"empty":                 ``,
		"truncated":             `{` + ok + `, "` + other + `": {"stream": `,
		"data after the object": `{` + ok + `} {"more": {"admin": true}}`,
		"stray brace":           `{` + ok + `}}`,
		"stream empty":          `{` + ok + `, "` + other + `": {"stream": "  "}}`,
		"stream not a string":   `{` + ok + `, "` + other + `": {"stream": 5}}`,
		"stream null":           `{` + ok + `, "` + other + `": {"stream": null, "proposal_no": 2}}`,
		"proposal negative":     `{` + ok + `, "` + other + `": {"stream": "S", "proposal_no": -4}}`,
		"proposal a float":      `{` + ok + `, "` + other + `": {"stream": "S", "proposal_no": 4.5}}`,
		"admin not a bool":      `{` + ok + `, "` + other + `": {"admin": "yes"}}`,
		"entry an array":        `{` + ok + `, "` + other + `": ["S", 1]}`,
		"entry null":            `{` + ok + `, "` + other + `": null}`,
		"blank key":             `{` + ok + `, " ": {"admin": true}}`,
	}
	for name, doc := range bad {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "clients.json")
			s := mustOpen(t, path, Options{})
			mustAdd(t, s, NewEntry{Stream: "x"}, nil)
			before, _ := os.ReadFile(path)
			_, _, err := s.ImportLegacy(ctxT(t), strings.NewReader(doc), "test")
			if err == nil {
				t.Fatal("accepted")
			}
			if strings.Contains(err.Error(), good) || strings.Contains(err.Error(), other) {
				t.Errorf("the error quotes a key: %v", err)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
				t.Error("a rejected import wrote the store")
			}
			if _, found := s.Lookup(good); found {
				t.Error("a rejected import's good entry is served")
			}
		})
	}
}

// A store file given by mistake to the import is refused, not read as
// keys named "version" and "clients".
func TestLegacyImportRefusesOurStore(t *testing.T) {
	dir := t.TempDir()
	src := mustOpen(t, filepath.Join(dir, "src.json"), Options{})
	mustAdd(t, src, NewEntry{Stream: "x"}, nil)
	raw, _ := os.ReadFile(filepath.Join(dir, "src.json"))
	dst := mustOpen(t, filepath.Join(dir, "dst.json"), Options{})
	_, _, err := dst.ImportLegacy(ctxT(t), bytes.NewReader(raw), "test")
	if err == nil || errors.Is(err, ErrCorruptStore) {
		t.Fatalf("import of a store file: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "dst.json")); !errors.Is(err, os.ErrNotExist) {
		t.Error("a refused import created the store")
	}
}
