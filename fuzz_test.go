package zulipproxy

import (
	"bytes"
	"errors"
	"mime/multipart"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// Fuzz targets for every parser that sees a client's input (and the
// Caddyfile block an operator writes). .ci/run runs each for a while; a
// crasher it finds is kept under testdata/fuzz/ and runs in every go
// test from then on. Their seeds run in every go test too.

// FuzzParseStreamRef: a `to` is read as Zulip reads it, and an id read
// from it is the one Zulip would use.
func FuzzParseStreamRef(f *testing.F) {
	for _, s := range []string{"general", `"general"`, `["general"]`, "42", "[42]", "true", "false", "42.0", "null", `{"id":1}`, "[1,2]", " 7 "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		ref, err := parseStreamRef(raw)
		if err != nil {
			return
		}
		if ref.byID && ref.is("x", ref.id+1) {
			t.Errorf("%q: id %d matches another id", raw, ref.id)
		}
		if !ref.byID && ref.is("", 0) != sameStreamName(ref.name, "") {
			t.Errorf("%q: a name compared as an id", raw)
		}
	})
}

// FuzzParseFormOrdered reads what url.ParseQuery reads, in order.
func FuzzParseFormOrdered(f *testing.F) {
	for _, s := range []string{"a=1&b=2", "a=1&a=2", "=x", "a", "%zz", "a=1;b=2", "content=hello+world%21", "&&", "stream=other&payload=x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fields, err := parseFormOrdered(s)
		want, werr := url.ParseQuery(s)
		if (err == nil) != (werr == nil) {
			t.Fatalf("%q: ours %v, url.ParseQuery %v", s, err, werr)
		}
		if err != nil {
			return
		}
		got := url.Values{}
		for _, fl := range fields {
			got[fl.name] = append(got[fl.name], fl.value)
		}
		if got.Encode() != want.Encode() {
			t.Errorf("%q: %v, url.ParseQuery %v", s, got, want)
		}
	})
}

// FuzzWebhookParams: whatever a webhook's query or body holds, no stream
// but through the returned list, no method, no api_key, no unknown query
// option passes.
func FuzzWebhookParams(f *testing.F) {
	f.Add("github", "topic=ci&branches=main&stream=general", true)
	f.Add("slack", "channels_map_to_topics=1&mapping=channels", false)
	f.Add("jira", "api_key=x&method=GET&unquote_url_parameters=1", true)
	f.Fuzz(func(t *testing.T, integration, raw string, query bool) {
		in, err := parseFormOrdered(raw)
		if err != nil {
			return
		}
		out, _, aerr := webhookParams(integration, in, query)
		if aerr != nil {
			if aerr.Status < 400 || aerr.Status > 499 {
				t.Errorf("status %d", aerr.Status)
			}
			return
		}
		for _, fl := range out {
			switch {
			case fl.name == "stream", fl.name == "method", fl.name == "api_key", fl.name == "mapping":
				t.Errorf("%q passed", fl.name)
			case query && fl.name != "channels_map_to_topics" && !slices.Contains(webhookOptions, fl.name):
				t.Errorf("query option %q passed", fl.name)
			}
		}
	})
}

// FuzzTeamcityPersonal never panics, and errs towards personal.
func FuzzTeamcityPersonal(f *testing.F) {
	f.Add([]byte(`{"build":{"teamcityProperties":[{"name":"env.BUILD_IS_PERSONAL","value":"true"}]}}`))
	f.Add([]byte(`{"build":{}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		personal, ok := teamcityPersonal(body)
		if !ok && personal {
			t.Error("unreadable, yet personal")
		}
	})
}

// FuzzReadParts: the one multipart loop, on any body and boundary, ends
// in a 4xx error or in fields no larger than their bound; never a panic
// or a 5xx.
func FuzzReadParts(f *testing.F) {
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	_ = mw.WriteField("content", "hello")
	fw, _ := mw.CreateFormFile("image", "a.png")
	_, _ = fw.Write([]byte("PNG"))
	_ = mw.Close()
	f.Add(b.Bytes(), mw.Boundary())
	f.Add([]byte("--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--x--\r\n"), "x")
	h := &Handler{body: bodyReader{maxUpload: 1 << 20}}
	f.Fuzz(func(t *testing.T, body []byte, boundary string) {
		r := httptest.NewRequest("POST", "/x", bytes.NewReader(body))
		r.Header.Set("Content-Type", "multipart/form-data; boundary=\""+strings.ReplaceAll(boundary, `"`, "")+"\"")
		w := httptest.NewRecorder()
		if aerr := h.body.limitBody(w, r); aerr != nil {
			return
		}
		err := h.body.readParts(r, partReader{
			fieldBytes: 64,
			text: func(name, value string) error {
				if len(value) >= 64 {
					t.Errorf("field %q of %d bytes passed a 64-byte bound", name, len(value))
				}
				return nil
			},
			file: func(p *multipart.Part) error {
				_, err := bytes.NewBuffer(nil).ReadFrom(p)
				return err
			},
		})
		var aerr *apiError
		if err != nil && errors.As(err, &aerr) && (aerr.Status < 400 || aerr.Status > 499) {
			t.Errorf("status %d", aerr.Status)
		}
	})
}

// FuzzZulipParams: the Zulip API's parameter reading, on any query and
// form body, refuses rather than guesses: no `method`, no name twice.
func FuzzZulipParams(f *testing.F) {
	f.Add("topic=a", "content=b&type=stream")
	f.Add("to=1", "to=2")
	f.Add("", "method=GET")
	h := &Handler{body: bodyReader{maxUpload: 1 << 20}}
	f.Fuzz(func(t *testing.T, query, body string) {
		r := httptest.NewRequest("POST", "/api/v1/messages", strings.NewReader(body))
		r.URL.RawQuery = query
		r.Header.Set("Content-Type", mtForm)
		p, err := h.body.zulipParams(httptest.NewRecorder(), r, "type", "to", "topic", "content")
		if err != nil {
			return
		}
		for name, vs := range p {
			if name == "method" || len(vs) != 1 {
				t.Errorf("%q with %d values passed", name, len(vs))
			}
		}
	})
}

// FuzzCaddyfile: the zulip_proxy block, whatever an operator writes,
// parses or fails with an error; never a panic.
func FuzzCaddyfile(f *testing.F) {
	f.Add("zulip_proxy {\n bot default {\n site https://chat.example.org\n email b@x\n api_key k\n }\n store /tmp/s.json\n max_upload 5MB\n timeout 30s\n}")
	f.Add("zulip_proxy {\n bot {\n }\n}")
	f.Add("zulip_proxy {\n max_upload lots\n allow_propagate x\n}")
	f.Fuzz(func(t *testing.T, input string) {
		// Not NewTestDispenser: it exits the process on input the lexer
		// refuses (an unterminated heredoc), which caddy adapt reports as
		// an error before any directive sees it.
		tokens, err := caddyfile.Tokenize([]byte(input), "Caddyfile")
		if err != nil {
			return
		}
		var h Handler
		_ = h.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens))
	})
}
