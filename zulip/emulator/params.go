package emulator

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"
)

// Param is one request parameter as Zulip received it, in arrival order.
type Param struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	// Source is "body" (a form-encoded or multipart body) or "query".
	Source string `json:"source"`
}

// File is one file part of a multipart body.
type File struct {
	Field       string `json:"field"`
	Filename    string `json:"filename"`
	ContentType string `json:"content_type"`
	Size        int64  `json:"size"`
	data        []byte
}

// params holds a request's parameters and applies Zulip's rules: the
// body is read before the query string, for every method, and a repeated
// name means its last value (Django's QueryDict.__getitem__).
type params struct {
	body  []Param
	query []Param
	files []*File
	used  []string
}

func (p *params) lookup(name string) (string, bool) {
	for i := len(p.body) - 1; i >= 0; i-- {
		if p.body[i].Name == name {
			p.markUsed(name)
			return p.body[i].Value, true
		}
	}
	for i := len(p.query) - 1; i >= 0; i-- {
		if p.query[i].Name == name {
			p.markUsed(name)
			return p.query[i].Value, true
		}
	}
	return "", false
}

func (p *params) inBody(name string) (string, bool) {
	for i := len(p.body) - 1; i >= 0; i-- {
		if p.body[i].Name == name {
			return p.body[i].Value, true
		}
	}
	return "", false
}

func (p *params) markUsed(name string) {
	for _, u := range p.used {
		if u == name {
			return
		}
	}
	p.used = append(p.used, name)
}

// ignored lists names sent but not read by the endpoint, which Zulip
// reports as ignored_parameters_unsupported (feature level 167).
func (p *params) ignored() []string {
	var out []string
	seen := func(n string) bool {
		for _, u := range p.used {
			if u == n {
				return true
			}
		}
		for _, o := range out {
			if o == n {
				return true
			}
		}
		return false
	}
	for _, list := range [][]Param{p.body, p.query} {
		for _, q := range list {
			// method is consumed by the dispatcher, not the view.
			if q.Name != "method" && !seen(q.Name) {
				out = append(out, q.Name)
			}
		}
	}
	return out
}

var errBodyTooLarge = errors.New("request body too large")

// readParams reads the body (up to max bytes, like nginx) and parses the
// query and the body the way Django does for Zulip.
func readParams(r *http.Request, max int64, rec *Request) (*params, error) {
	p := &params{query: parseForm(r.URL.RawQuery, "query")}
	if r.Body == nil || r.Body == http.NoBody {
		return p, nil
	}
	if r.ContentLength > max {
		drain(r.Body)
		return p, errBodyTooLarge
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	if err != nil {
		return p, err
	}
	if int64(len(body)) > max {
		drain(r.Body)
		return p, errBodyTooLarge
	}
	rec.BodySize = int64(len(body))
	mt, mparams, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch mt {
	case "application/x-www-form-urlencoded":
		p.body = parseForm(string(body), "body")
	case "multipart/form-data":
		if err := parseMultipart(body, mparams["boundary"], p); err != nil {
			// Django answers a broken multipart body with a 400 too.
			return p, errBadMultipart
		}
	default:
		// Django leaves request.POST empty for other types (JSON
		// webhook payloads): keep the start of the body for tests.
		rec.Body = string(body[:min(len(body), maxLoggedBody)])
		rec.rawBody = body
	}
	return p, nil
}

const maxLoggedBody = 64 << 10

var errBadMultipart = errors.New("malformed multipart body")

// drain reads what a client still sends after an early refusal, so the
// client sees the answer instead of a reset connection (bounded, so a
// huge upload cannot keep the handler busy forever).
func drain(body io.Reader) {
	_, _ = io.CopyN(io.Discard, body, 64<<20)
}

func parseMultipart(body []byte, boundary string, p *params) error {
	if boundary == "" {
		return errBadMultipart
	}
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		data, err := io.ReadAll(part)
		if err != nil {
			return err
		}
		name := part.FormName()
		if fn := part.FileName(); fn != "" {
			ct := part.Header.Get("Content-Type")
			if ct == "" {
				ct = "application/octet-stream"
			}
			p.files = append(p.files, &File{Field: name, Filename: fn, ContentType: ct, Size: int64(len(data)), data: data})
			continue
		}
		p.body = append(p.body, Param{Name: name, Value: string(data), Source: "body"})
	}
}

// parseForm splits on "&" only and keeps blank values, decoding "+" and
// valid %XX escapes and leaving invalid ones as they are, as Django's
// limited_parse_qsl does.
func parseForm(s, source string) []Param {
	if s == "" {
		return nil
	}
	out := make([]Param, 0, strings.Count(s, "&")+1)
	for s != "" {
		var pair string
		pair, s, _ = strings.Cut(s, "&")
		if pair == "" {
			continue
		}
		name, value, _ := strings.Cut(pair, "=")
		out = append(out, Param{Name: unescape(name), Value: unescape(value), Source: source})
	}
	return out
}

func unescape(s string) string {
	if !strings.ContainsAny(s, "+%") {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '+':
			b = append(b, ' ')
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
		default:
			b = append(b, c)
		}
	}
	return string(b)
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}
