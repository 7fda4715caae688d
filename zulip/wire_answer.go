package zulip

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
)

// readWireResponse reads one answer: status line, the headers Response
// keeps (and those that frame the body), and the body. keep says whether
// the connection can carry another request.
func readWireResponse(br *bufio.Reader) (*Response, bool, error) {
	var (
		status  int
		hdr     http.Header
		length  int64 = -1
		chunked bool
		closing bool
		total   int
	)
	for {
		line, err := readWireLine(br, &total)
		if err != nil {
			if total == 0 {
				// Nothing at all came back: for a pooled connection,
				// the server had most likely closed it.
				return nil, false, &staleConnError{err: err}
			}
			return nil, false, err
		}
		st, minor, ok := parseStatusLine(line)
		if !ok {
			return nil, false, &BadResponseError{Reason: "not an HTTP/1.x answer"}
		}
		status = st
		closing = minor == 0 // HTTP/1.0: no keep-alive asked for, none assumed
		hdr, length, chunked, closing, err = readWireHeaders(br, &total, closing, status)
		if err != nil {
			return nil, false, err
		}
		if status >= 200 || status == http.StatusSwitchingProtocols {
			break
		}
		// An interim answer (100 Continue, 103 Early Hints): the real
		// one follows.
	}
	if status == http.StatusSwitchingProtocols {
		return nil, false, &BadResponseError{Status: status, Reason: "switched protocols"}
	}
	if hdr == nil {
		hdr = http.Header{}
	}
	resp := &Response{Status: status, Header: hdr}
	if status == http.StatusNoContent || status == http.StatusNotModified {
		return resp, !closing, nil
	}
	switch {
	case chunked:
		body, err := readLimited(httputil.NewChunkedReader(br))
		if err != nil {
			return nil, false, err
		}
		// A chunked body ends with optional trailers and a blank line.
		for {
			line, err := readWireLine(br, &total)
			if err != nil {
				return nil, false, err
			}
			if len(line) == 0 {
				break
			}
		}
		resp.Body = body
	case length >= 0:
		if length > MaxResponseBytes {
			return nil, false, &BadResponseError{Status: status, ContentType: hdr.Get("Content-Type"),
				Reason: fmt.Sprintf("answer larger than %d bytes", MaxResponseBytes)}
		}
		resp.Body = make([]byte, length)
		if _, err := io.ReadFull(br, resp.Body); err != nil {
			return nil, false, err
		}
	default:
		// No framing: the body runs to the end of the connection.
		body, err := readLimited(br)
		if err != nil {
			return nil, false, err
		}
		resp.Body = body
		closing = true
	}
	return resp, !closing, nil
}

func readLimited(r io.Reader) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r, MaxResponseBytes+1))
	if err != nil {
		return nil, err
	}
	if len(body) > MaxResponseBytes {
		return nil, &BadResponseError{Reason: fmt.Sprintf("answer larger than %d bytes", MaxResponseBytes)}
	}
	return body, nil
}

// readWireLine reads one CRLF- (or LF-) terminated line without its end,
// counting bytes against the header limit. The slice is valid until the
// next read.
func readWireLine(br *bufio.Reader, total *int) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	*total += len(line)
	if err == bufio.ErrBufferFull || *total > wireMaxHeaderBytes {
		return nil, &BadResponseError{Reason: "answer headers too large"}
	}
	if err != nil {
		if err == io.EOF && *total > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// parseStatusLine reads "HTTP/1.x NNN reason".
func parseStatusLine(line []byte) (status, minor int, ok bool) {
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return 0, 0, false
	}
	if line[7] < '0' || line[7] > '9' {
		return 0, 0, false
	}
	minor = int(line[7] - '0')
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return 0, 0, false
		}
		status = status*10 + int(c-'0')
	}
	if status < 100 || (len(line) > 12 && line[12] != ' ') {
		return 0, 0, false
	}
	return status, minor, true
}

const jsonType = "application/json"

// wireKept maps the lower-case names of the headers Response keeps
// (keptHeaders, and Location on a redirect) to their canonical names.
var wireKept = func() map[string]string {
	m := map[string]string{"location": "Location"}
	for k := range keptHeaders {
		m[strings.ToLower(k)] = k
	}
	return m
}()

// readWireHeaders reads header lines up to the blank line. Only the
// headers that frame the body or that Response keeps are looked at;
// Location is dropped again unless the status is a redirect.
func readWireHeaders(br *bufio.Reader, total *int, closing bool, status int) (http.Header, int64, bool, bool, error) {
	var (
		hdr     http.Header
		length  int64 = -1
		chunked bool
		lower   [32]byte
		// Connection: close always ends the connection; keep-alive
		// only matters to an HTTP/1.0 answer.
		sawClose, sawKeepAlive bool
	)
	for {
		line, err := readWireLine(br, total)
		if err != nil {
			return nil, 0, false, false, err
		}
		if len(line) == 0 {
			if sawClose {
				closing = true
			} else if sawKeepAlive {
				closing = false
			}
			if chunked && length >= 0 {
				// Both framings: chunked wins (RFC 9112), and the
				// connection cannot be trusted for another request.
				length, closing = -1, true
			}
			return hdr, length, chunked, closing, nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			return nil, 0, false, false, &BadResponseError{Status: status, Reason: "folded header line"}
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || colon > len(lower) {
			if colon <= 0 {
				return nil, 0, false, false, &BadResponseError{Status: status, Reason: "malformed header line"}
			}
			continue // a long name is none of the ones read here
		}
		name := lower[:colon]
		for i, c := range line[:colon] {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			name[i] = c
		}
		value := bytes.TrimSpace(line[colon+1:])
		switch string(name) {
		case "content-length":
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || n < 0 || (length >= 0 && n != length) {
				return nil, 0, false, false, &BadResponseError{Status: status, Reason: "bad Content-Length"}
			}
			length = n
		case "transfer-encoding":
			if !bytes.EqualFold(value, []byte("chunked")) {
				return nil, 0, false, false, &BadResponseError{Status: status, Reason: "unsupported Transfer-Encoding"}
			}
			chunked = true
		case "connection":
			for _, tok := range bytes.Split(value, []byte(",")) {
				tok = bytes.TrimSpace(tok)
				if bytes.EqualFold(tok, []byte("close")) {
					sawClose = true
				} else if bytes.EqualFold(tok, []byte("keep-alive")) {
					sawKeepAlive = true
				}
			}
		default:
			canon, ok := wireKept[string(name)]
			if !ok || (canon == "Location" && (status < 300 || status >= 400)) {
				continue
			}
			if hdr == nil {
				hdr = make(http.Header, 2)
			}
			v := jsonType // Zulip's usual Content-Type, without a copy
			if canon != "Content-Type" || string(value) != jsonType {
				v = string(value)
			}
			hdr[canon] = append(hdr[canon], v)
		}
	}
}
