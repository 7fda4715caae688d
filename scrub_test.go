package zulipproxy

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// The scrubber replaces every occurrence of the key, however the stream
// is cut into reads, and changes nothing else.
func TestKeyScrubber(t *testing.T) {
	const key = "zwop_Abc-def_0123456789abcdefghijklmnopqrstuvwxyz0"
	bodies := []string{
		"",
		key,
		"a" + key + "b" + key + key,
		`{"hook":{"config":{"url":"https://zwop.example.org/api/v1/external/github?api_key=` + key + `&topic=ci"}}}`,
		strings.Repeat("x", 70000) + key + strings.Repeat("y", 5),
		key[:20] + "not the key" + key[20:],
		"zwop_zwop_" + key + "zwop_",
	}
	readers := map[string]func(io.Reader) io.Reader{
		"whole":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"halves":   iotest.HalfReader,
		"data+EOF": iotest.DataErrReader,
	}
	for _, body := range bodies {
		want := strings.ReplaceAll(body, key, keyMarker(key))
		for name, wrap := range readers {
			got, err := io.ReadAll(newKeyScrubber(wrap(strings.NewReader(body)), key))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != want {
				t.Errorf("%s, %d bytes: not scrubbed as expected", name, len(body))
			}
			if bytes.Contains(got, []byte(key)) {
				t.Errorf("%s: the key passed", name)
			}
		}
	}
	if m := keyMarker(key); len(m) != len(key) || strings.Contains(m, key) {
		t.Errorf("marker %q", m)
	}
}

// FuzzKeyScrubber: whatever the stream and however it is read, the key
// never passes, the length holds, and all else is unchanged.
func FuzzKeyScrubber(f *testing.F) {
	f.Add([]byte("a zwop_key zwop_ke"), "zwop_key", uint8(3))
	f.Add([]byte("zwop_kzwop_key"), "zwop_key", uint8(1))
	f.Fuzz(func(t *testing.T, body []byte, key string, chunk uint8) {
		// Keys are 48 bytes (legacy ones a few dozen); a fuzzed key of
		// megabytes read a byte at a time only measures the fuzzer.
		if key == "" || len(key) > 128 || len(body) > 1<<16 || strings.Contains(keyMarker(key), key) {
			return
		}
		r := io.Reader(bytes.NewReader(body))
		if chunk%2 == 1 {
			r = iotest.OneByteReader(r)
		}
		got, err := io.ReadAll(newKeyScrubber(r, key))
		if err != nil {
			t.Fatal(err)
		}
		if want := strings.ReplaceAll(string(body), key, keyMarker(key)); string(got) != want {
			t.Errorf("got %q, want %q", got, want)
		}
	})
}
