package keystore

import (
	"strings"
	"testing"
)

// FuzzParseDocument: a store document is read strictly or refused; what
// is read writes back to the same entries; an error never quotes a field
// name that could be a key someone pasted in.
func FuzzParseDocument(f *testing.F) {
	f.Add([]byte(`{"version":1,"clients":[{"id":"a1","key_hash":"` + strings.Repeat("ab", 32) + `","stream":"s","created_at":"2026-01-01T00:00:00Z"}]}`))
	f.Add([]byte(`{"version":1,"clients":[]}`))
	f.Add([]byte(`{"zwop_pastedkey": {"stream": "s"}}`))
	f.Add([]byte(``))
	f.Add([]byte(`{"version":2}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		doc, err := parseDocument(raw)
		if err != nil {
			if strings.Contains(err.Error(), "zwop_") {
				t.Errorf("the error quotes what may be a key: %v", err)
			}
			return
		}
		out, err := doc.marshal()
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		again, err := parseDocument(out)
		if err != nil || len(again.Clients) != len(doc.Clients) {
			t.Fatalf("written back, it reads as %d entries (%v), not %d", len(again.Clients), err, len(doc.Clients))
		}
		for i := range doc.Clients {
			if again.Clients[i].ID != doc.Clients[i].ID || again.Clients[i].KeyHash != doc.Clients[i].KeyHash {
				t.Errorf("entry %d changed on the way back", i)
			}
		}
	})
}
