package zulipproxy

import (
	"bytes"
	"io"
	"strings"
)

// The caller's own key never reaches Zulip: a webhook payload can quote
// the URL it was sent to (GitHub's ping carries hook.config.url, with
// ?api_key=<scoped key>), and a sender can copy it into a header. Every
// occurrence is replaced by a marker of the same length, so a body's
// declared length still holds. A key is `zwop_` and base64url, which URL
// encoding and JSON leave as they are, so one pattern finds it in a raw,
// an URL-encoded or a JSON body alike.

// keyMarker stands in for the caller's key in what is forwarded.
func keyMarker(key string) string {
	const mark = "zwop_REDACTED"
	if len(key) <= len(mark) {
		return strings.Repeat("*", len(key))
	}
	return mark + strings.Repeat("_", len(key)-len(mark))
}

// scrubString replaces the key in s.
func scrubString(s, key string) string {
	if key == "" || !strings.Contains(s, key) {
		return s
	}
	return strings.ReplaceAll(s, key, keyMarker(key))
}

// keyScrubber replaces the key in a stream as it passes, holding back at
// most the key's length less one byte, so a key split across two reads is
// still found; memory does not grow with the stream.
type keyScrubber struct {
	r         io.Reader
	key, mark []byte
	buf       []byte // read, scrubbed, not yet returned
	tail      int    // bytes at the end of buf that may begin a key
	err       error
}

func newKeyScrubber(r io.Reader, key string) *keyScrubber {
	return &keyScrubber{r: r, key: []byte(key), mark: []byte(keyMarker(key)), buf: make([]byte, 0, 32<<10)}
}

func (s *keyScrubber) Read(p []byte) (int, error) {
	for {
		if ready := len(s.buf) - s.tail; ready > 0 {
			n := copy(p, s.buf[:ready])
			s.buf = append(s.buf[:0], s.buf[n:]...)
			return n, nil
		}
		if s.err != nil {
			if len(s.buf) > 0 {
				n := copy(p, s.buf)
				s.buf = append(s.buf[:0], s.buf[n:]...)
				return n, nil
			}
			return 0, s.err
		}
		start := len(s.buf)
		if cap(s.buf)-start < 4<<10 {
			s.buf = append(s.buf, make([]byte, 16<<10)...)[:start]
		}
		n, err := s.r.Read(s.buf[start:cap(s.buf)])
		s.buf = s.buf[:start+n]
		s.err = err
		// A key can only begin where none was found before: from the
		// held-back tail on.
		from := max(start-s.tail, 0)
		for {
			i := bytes.Index(s.buf[from:], s.key)
			if i < 0 {
				break
			}
			copy(s.buf[from+i:], s.mark)
			from += i + len(s.key)
		}
		s.tail = 0
		if s.err == nil {
			s.tail = min(len(s.key)-1, len(s.buf)-from)
		}
	}
}
