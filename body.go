package zulipproxy

import (
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"unicode/utf8"
)

// Zulip silently cuts longer text; the proxy refuses it instead, so a bot
// learns its message was too long rather than finding it truncated.
const (
	maxContentRunes = 10000
	maxTopicRunes   = 60
	// maxFieldBytes bounds a text field read into memory: the most bytes
	// maxContentRunes runes can take, plus one to notice more.
	maxFieldBytes = maxContentRunes*utf8.UTFMax + 1
)

const (
	mtForm      = "application/x-www-form-urlencoded"
	mtMultipart = "multipart/form-data"
)

// mediaType is the request's content type without parameters; "" when
// absent or unparsable.
func mediaType(r *http.Request) string {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return ""
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return "invalid"
	}
	return mt
}

// limitBody refuses bodies over max_upload: at once when the declared
// length says so, otherwise when reading passes the limit.
func (h *Handler) limitBody(w http.ResponseWriter, r *http.Request) *apiError {
	if r.ContentLength > h.MaxUpload {
		return errTooLarge(h.MaxUpload)
	}
	r.Body = http.MaxBytesReader(w, r.Body, h.MaxUpload)
	return nil
}

func errTooLarge(limit int64) *apiError {
	return newError(http.StatusRequestEntityTooLarge, codeTooLarge,
		"request body larger than this server's max_upload of "+formatBytes(limit))
}

// bodyError turns a failure to read the client's body into its answer.
func (h *Handler) bodyError(err error) *apiError {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return errTooLarge(h.MaxUpload)
	}
	return newError(http.StatusBadRequest, codeBadRequest, "could not read the request body")
}

// readForm reads an urlencoded body. Every field must be in allowed and
// appear once.
func (h *Handler) readForm(r *http.Request, allowed ...string) (url.Values, *apiError) {
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, h.bodyError(err)
	}
	form, err := url.ParseQuery(string(raw))
	if err != nil {
		return nil, newError(http.StatusBadRequest, codeBadRequest, "malformed form body")
	}
	if aerr := onlyParams(form, "form field", allowed...); aerr != nil {
		return nil, aerr
	}
	return form, nil
}

// onlyParams refuses parameters outside the allow-list and repeated ones:
// nothing the proxy does not understand is ever passed on.
func onlyParams(vals url.Values, what string, allowed ...string) *apiError {
	for name, vs := range vals {
		ok := false
		for _, a := range allowed {
			if name == a {
				ok = true
				break
			}
		}
		if !ok {
			return errBadParam(name, "unexpected "+what+" '"+name+"'")
		}
		if len(vs) != 1 {
			return errBadParam(name, what+" '"+name+"' given more than once")
		}
	}
	return nil
}

// readTextPart reads a small text field of a multipart body.
func (h *Handler) readTextPart(p *multipart.Part) (string, *apiError) {
	b, err := io.ReadAll(io.LimitReader(p, maxFieldBytes))
	if err != nil {
		return "", h.bodyError(err)
	}
	if len(b) == maxFieldBytes {
		return "", errBadParam(p.FormName(), "field '"+p.FormName()+"' is too long")
	}
	return string(b), nil
}

// checkText enforces Zulip's limits with an error that names the field.
func checkText(name, v string, maxRunes int) *apiError {
	if !utf8.ValidString(v) {
		return errBadParam(name, "'"+name+"' is not valid UTF-8")
	}
	if n := utf8.RuneCountInString(v); n > maxRunes {
		return errBadParam(name, "'"+name+"' is longer than Zulip's limit of "+itoa(maxRunes)+" characters")
	}
	return nil
}

// recordingReader remembers the first error reading the client's body, so
// that when a streamed upload to Zulip fails, the proxy can tell a client
// that sent too much (413) from a Zulip that failed (502).
type recordingReader struct {
	r   io.Reader
	err error
}

func (rr *recordingReader) Read(p []byte) (int, error) {
	n, err := rr.r.Read(p)
	if err != nil && err != io.EOF && rr.err == nil {
		rr.err = err
	}
	return n, err
}
