package zulip

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
)

// UploadResult is Zulip's answer to an upload.
type UploadResult struct {
	// URI and URL are the same path (/user_uploads/...). Zulip sends
	// "uri" always and "url" from feature level 272; each is filled from
	// the other when Zulip sent only one.
	URI string
	URL string
	// Filename is the name Zulip stored the file as (feature level 285);
	// empty from older servers.
	Filename string
	Raw      *Response
}

type uploadAnswer struct {
	envelope
	URI      string `json:"uri"`
	URL      string `json:"url"`
	Filename string `json:"filename"`
}

// uploadField is the multipart field name. Zulip takes whichever single
// file is sent; "filename" is the name its API description uses.
const uploadField = "filename"

// UploadFile uploads body as one file. POST /user_uploads.
//
// The multipart body is produced while it is sent, through an io.Pipe,
// so memory does not grow with the file. UploadFile returns only after it
// has stopped reading body, so a caller may hand it a request body that
// becomes invalid once its handler returns. If reading body fails (a
// client that went away, an http.MaxBytesReader limit), the returned
// error wraps that error.
func (c *Client) UploadFile(ctx context.Context, filename, contentType string, body io.Reader) (*UploadResult, error) {
	if body == nil {
		return nil, errors.New("zulip: upload file: nil body")
	}
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	copyErr := make(chan error, 1)
	go func() {
		err := writeUpload(mw, filename, contentType, body)
		pw.CloseWithError(err) // nil closes with io.EOF: the body is complete
		copyErr <- err
	}()

	var a uploadAnswer
	resp, err := c.call(ctx, &request{
		method: "POST", path: "/user_uploads", endpoint: "POST /user_uploads",
		ctype: mw.FormDataContentType(), body: pr, length: -1,
	}, &a)
	// The transport may return before consuming the whole body (an
	// early 413, a dropped connection): closing the reader makes the
	// writer stop at its next write.
	pr.CloseWithError(errUploadAborted)
	werr := <-copyErr
	if werr != nil && !errors.Is(werr, errUploadAborted) && !errors.Is(werr, io.ErrClosedPipe) {
		if err == nil || !isZulipAnswer(err) {
			return nil, fmt.Errorf("zulip: POST /user_uploads: reading upload: %w", werr)
		}
	}
	if err != nil {
		return nil, err
	}
	res := &UploadResult{URI: a.URI, URL: a.URL, Filename: a.Filename, Raw: resp}
	if res.URL == "" {
		res.URL = res.URI
	}
	if res.URI == "" {
		res.URI = res.URL
	}
	if res.URI == "" {
		return nil, &BadResponseError{Endpoint: "POST /user_uploads", Status: resp.Status,
			ContentType: resp.Header.Get("Content-Type"), Reason: `no "uri" or "url" in answer`, Raw: resp}
	}
	return res, nil
}

var errUploadAborted = errors.New("upload request finished")

// isZulipAnswer reports whether err is Zulip (or its nginx) saying
// something, which beats a local read error as the explanation.
func isZulipAnswer(err error) bool {
	var ze *Error
	var be *BadResponseError
	return errors.As(err, &ze) || errors.As(err, &be)
}

func writeUpload(mw *multipart.Writer, filename, contentType string, body io.Reader) error {
	h := make(textproto.MIMEHeader, 2)
	h.Set("Content-Disposition", `form-data; name="`+uploadField+`"; filename="`+quoteFilename(filename)+`"`)
	h.Set("Content-Type", partContentType(contentType))
	part, err := mw.CreatePart(h)
	if err != nil {
		return err
	}
	if _, err := io.Copy(part, body); err != nil {
		return err
	}
	return mw.Close()
}

// quoteFilename makes a client-given name safe inside a quoted header
// parameter: no control characters (a CR/LF would start a new header),
// quotes and backslashes escaped. Zulip sanitizes the name again itself.
func quoteFilename(name string) string {
	name = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, name)
	if name == "" {
		name = "file"
	}
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(name)
}

// partContentType keeps a client's type only when it parses as one.
func partContentType(ct string) string {
	if ct == "" {
		return "application/octet-stream"
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return "application/octet-stream"
	}
	return mime.FormatMediaType(mt, params)
}

type attachmentsAnswer struct {
	envelope
	Attachments []Attachment `json:"attachments"`
}

// Attachment is a file the bot uploaded, as Zulip lists it.
type Attachment struct {
	ID     int64  `json:"id"`
	Name   string `json:"name"`
	PathID string `json:"path_id"`
	Size   int64  `json:"size"`
	// CreateTime is when it was uploaded, in milliseconds since 1970.
	CreateTime int64 `json:"create_time"`
}

// URI is the attachment's address as an upload answered it.
func (a Attachment) URI() string { return "/user_uploads/" + a.PathID }

// Attachments lists the files the bot uploaded. GET /attachments.
func (c *Client) Attachments(ctx context.Context) ([]Attachment, error) {
	var a attachmentsAnswer
	if _, err := c.call(ctx, &request{method: "GET", path: "/attachments", endpoint: "GET /attachments"}, &a); err != nil {
		return nil, err
	}
	return a.Attachments, nil
}

// ErrNoSuchUpload: DeleteUpload found no upload of this bot's at that uri.
var ErrNoSuchUpload = errors.New("zulip: no such upload")

// DeleteUpload removes a file this bot uploaded, named by the uri Zulip
// answered the upload with: GET /attachments finds its attachment id,
// DELETE /attachments/{id} removes it. Zulip lets a user delete only its
// own uploads.
func (c *Client) DeleteUpload(ctx context.Context, uri string) error {
	pathID, ok := strings.CutPrefix(uri, "/user_uploads/")
	if !ok || pathID == "" {
		return fmt.Errorf("zulip: delete upload: %q is not an upload's uri", uri)
	}
	unescaped, err := url.PathUnescape(pathID)
	if err != nil {
		unescaped = pathID
	}
	attachments, err := c.Attachments(ctx)
	if err != nil {
		return err
	}
	for _, at := range attachments {
		if at.PathID != pathID && at.PathID != unescaped {
			continue
		}
		var d anyAnswer
		_, err := c.call(ctx, &request{method: "DELETE", path: "/attachments/" + strconv.FormatInt(at.ID, 10),
			endpoint: "DELETE /attachments/{id}"}, &d)
		return err
	}
	return ErrNoSuchUpload
}
