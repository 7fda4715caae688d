package keystore

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestStoreHelperProcess is run as a separate OS process by
// TestStoreTwoProcesses; it adds keys and prints them.
func TestStoreHelperProcess(t *testing.T) {
	path := os.Getenv("ZWOP_STORE_HELPER")
	if path == "" {
		t.Skip("run by TestStoreTwoProcesses")
	}
	s, err := OpenFile(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := WithActor(context.Background(), Actor{By: fmt.Sprint("cli:p", os.Getpid())})
	for i := range 100 {
		k, _, err := s.Add(ctx, NewEntry{Stream: fmt.Sprint("p", os.Getpid(), "-", i)})
		if err != nil {
			t.Fatal(err)
		}
		fmt.Println("KEY", k)
	}
}

func TestStoreTwoProcesses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	var wg sync.WaitGroup
	outs := make([][]byte, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(os.Args[0], "-test.run=^TestStoreHelperProcess$", "-test.v")
			cmd.Env = append(os.Environ(), "ZWOP_STORE_HELPER="+path)
			outs[i], errs[i] = cmd.CombinedOutput()
		}()
	}
	wg.Wait()
	var is issued
	for i := range 2 {
		if errs[i] != nil {
			t.Fatalf("helper process %d: %v\n%s", i, errs[i], outs[i])
		}
		for _, line := range strings.Split(string(outs[i]), "\n") {
			if k, ok := strings.CutPrefix(line, "KEY "); ok {
				is.add(k)
			}
		}
	}
	if len(is.keys) != 200 {
		t.Fatalf("processes reported %d keys, want 200", len(is.keys))
	}
	s := mustOpen(t, path, Options{})
	is.assertServes(t, s)
	is.assertNoKeyIn(t, path)
	// Both processes' records are in the trail, each once, numbered
	// without a gap.
	recs, _ := s.Audit(AuditQuery{Limit: 1000})
	by := map[string]int{}
	keys := map[string]bool{}
	for i, r := range recs {
		if r.Seq != int64(200-i) || r.Action != ActionCreate {
			t.Fatalf("record %d: seq %d %s", i, r.Seq, r.Action)
		}
		by[r.By]++
		keys[r.KeyID] = true
	}
	if len(recs) != 200 || len(keys) != 200 || len(by) != 2 {
		t.Fatalf("%d records of %d keys by %v, want 200 by two processes", len(recs), len(keys), by)
	}
}
