package caddytest

import (
	"bytes"
	"context"
	"io"
	"mime/multipart"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/zwop/caddy-zulip-proxy/zulip"
	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

// zulipAs is a Zulip client speaking to the emulator directly, for
// setting up what a test needs (messages by other people, say).
func zulipAs(t *testing.T, email, key string) *zulip.Client {
	t.Helper()
	c, err := zulip.NewClient(zulip.Config{Site: env.emu.URL, Email: email, APIKey: key, CertBundle: env.caFile})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// sendDirect posts to Zulip without the proxy and returns the message id.
func sendDirect(t *testing.T, email, key, stream, topic, content string) int64 {
	t.Helper()
	s, ok := env.emu.StreamByName(stream)
	if !ok {
		t.Fatalf("no stream %q in the emulator", stream)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := zulipAs(t, email, key).SendMessage(ctx, zulip.SendMessage{StreamID: s.ID, Topic: topic, Content: content})
	if err != nil {
		t.Fatalf("sending directly: %v", err)
	}
	return res.ID
}

func botUserID(t *testing.T) int64 {
	t.Helper()
	u, ok := env.emu.UserByEmail(emulator.DemoBotEmail)
	if !ok {
		t.Fatal("no demo bot")
	}
	return u.ID
}

func streamID(t *testing.T, name string) int64 {
	t.Helper()
	s, ok := env.emu.StreamByName(name)
	if !ok {
		t.Fatalf("no stream %q", name)
	}
	return s.ID
}

// part is one multipart field; a file when filename is set.
type part struct {
	name, filename, contentType string
	data                        []byte
}

func multipartBody(t *testing.T, parts ...part) (io.Reader, string) {
	t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	for _, p := range parts {
		h := textproto.MIMEHeader{}
		disp := `form-data; name="` + p.name + `"`
		if p.filename != "" {
			disp += `; filename="` + p.filename + `"`
		}
		h.Set("Content-Disposition", disp)
		if p.contentType != "" {
			h.Set("Content-Type", p.contentType)
		}
		w, err := mw.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(p.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return &b, "Content-Type: " + mw.FormDataContentType()
}

// sendPath is where a send reaches Zulip: a fault meant for a send names
// it, so that the proxy's own check of its bot (GET /users/me), which a
// failed call may prompt, does not take the fault instead.
const sendPath = "/api/v1/messages"

// zulipRequests returns what reached Zulip since mark, but the proxy's
// own checks of its bot.
func zulipRequests(mark uint64) []emulator.Request {
	var out []emulator.Request
	for _, r := range env.emu.RequestsAfter(mark) {
		if !isBotCheck(r) {
			out = append(out, r)
		}
	}
	return out
}

// isBotCheck says whether a request is the proxy's check of its bot
// (GET /users/me), which a config makes when it starts and after a call
// that got no answer: not a caller's request.
func isBotCheck(r emulator.Request) bool {
	return r.Method == "GET" && r.Path == "/api/v1/users/me" && r.Query == ""
}

// assertNoWriteReachedZulip allows the proxy's own checks (reads) but no
// request that changes anything.
func assertNoWriteReachedZulip(t *testing.T, mark uint64) {
	t.Helper()
	for _, r := range zulipRequests(mark) {
		if r.EffectiveMethod != "GET" || r.Method != "GET" {
			t.Errorf("Zulip received a write: %s %s?%s", r.Method, r.Path, r.Query)
		}
	}
}

func lastMessage(t *testing.T) emulator.Message {
	t.Helper()
	msgs := env.emu.Messages()
	if len(msgs) == 0 {
		t.Fatal("no message in Zulip")
	}
	return msgs[len(msgs)-1]
}

func hasParam(r emulator.Request, name string) bool {
	for _, p := range r.Params {
		if strings.EqualFold(p.Name, name) {
			return true
		}
	}
	return false
}
