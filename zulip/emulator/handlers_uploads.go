package emulator

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

type upload struct {
	id          int64 // the attachment id
	pathID      string
	ownerID     int64
	name        string
	contentType string
	data        []byte
	created     time.Time
}

// Upload is a stored file as tests see it.
type Upload struct {
	// URL is the path Zulip answered, "/user_uploads/<path id>".
	URL         string
	OwnerID     int64
	Filename    string
	ContentType string
	Data        []byte
}

// UploadCount is how many files are stored.
func (e *Emulator) UploadCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.uploads)
}

// Upload returns a stored file by its URL path (/user_uploads/...).
func (e *Emulator) Upload(url string) (Upload, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	up, ok := e.uploads[strings.TrimPrefix(url, "/user_uploads/")]
	if !ok {
		return Upload{}, false
	}
	return Upload{URL: "/user_uploads/" + up.pathID, OwnerID: up.ownerID, Filename: up.name,
		ContentType: up.contentType, Data: append([]byte(nil), up.data...)}, true
}

// uploadFile is POST /user_uploads: exactly one file, any field name.
// Bodies over the upload cap never get here: nginx answers 413 first.
func uploadFile(x *exchange, _ []string) *apiError {
	switch len(x.p.files) {
	case 0:
		return errBadRequest("You must specify a file to upload")
	case 1:
	default:
		return errBadRequest("You may only upload one file at a time")
	}
	f := x.p.files[0]
	name := sanitizeName(f.Filename)
	pathID := strconv.Itoa(realmID) + "/" + randomHex(1) + "/" + randomString(24) + "/" + name
	x.e.storeUpload(&upload{pathID: pathID, ownerID: x.user.ID, name: name,
		contentType: f.ContentType, data: f.data, created: x.now})
	url := "/user_uploads/" + pathID
	x.success(obj{{"uri", url}, {"url", url}, {"filename", name}})
	return nil
}

func (e *Emulator) storeUpload(up *upload) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.lastUploadID++
	up.id = e.lastUploadID
	e.uploads[up.pathID] = up
	e.uploadOrder = append(e.uploadOrder, up.pathID)
	e.uploadBytes += int64(len(up.data))
	for e.uploadBytes > e.cfg.maxUploadBytes && len(e.uploadOrder) > 1 {
		old := e.uploadOrder[0]
		e.uploadOrder = e.uploadOrder[1:]
		if o, ok := e.uploads[old]; ok {
			e.uploadBytes -= int64(len(o.data))
			delete(e.uploads, old)
		}
	}
}

// getAttachments is GET /attachments: the caller's own uploads, as
// Zulip's Attachment objects (the emulator links no messages to them).
func getAttachments(x *exchange, _ []string) *apiError {
	x.e.mu.Lock()
	var list []obj
	var used int64
	for _, pathID := range x.e.uploadOrder {
		up, ok := x.e.uploads[pathID]
		if !ok {
			continue
		}
		used += int64(len(up.data))
		if up.ownerID != x.user.ID {
			continue
		}
		list = append(list, obj{{"id", up.id}, {"name", up.name}, {"path_id", up.pathID},
			{"size", len(up.data)}, {"create_time", up.created.UnixMilli()}, {"messages", []obj{}}})
	}
	x.e.mu.Unlock()
	if list == nil {
		list = []obj{}
	}
	x.success(obj{{"attachments", list}, {"upload_space_used", used}})
	return nil
}

// deleteAttachment is DELETE /attachments/{id}, for the caller's own.
func deleteAttachment(x *exchange, vars []string) *apiError {
	id, _ := strconv.ParseInt(vars[0], 10, 64)
	x.e.mu.Lock()
	defer x.e.mu.Unlock()
	for pathID, up := range x.e.uploads {
		if up.id == id && up.ownerID == x.user.ID {
			x.e.uploadBytes -= int64(len(up.data))
			delete(x.e.uploads, pathID)
			x.success(nil)
			return nil
		}
	}
	return errBadRequest("Invalid attachment")
}

var (
	unsafeNameChars = regexp.MustCompile(`[^\p{L}\p{N}_\s.-]`)
	nameSeparators  = regexp.MustCompile(`[-\s]+`)
)

// sanitizeName is Zulip's sanitize_name (without its NFKC step).
func sanitizeName(name string) string {
	name = unsafeNameChars.ReplaceAllString(name, "")
	name = strings.TrimSpace(name)
	name = nameSeparators.ReplaceAllString(name, "-")
	if name == "" || name == "." || name == ".." {
		return "uploaded-file"
	}
	return name
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// serveUpload is GET /user_uploads/{path id}, for any authenticated
// user of the organization (Zulip checks more; tests need the bytes).
func (x *exchange) serveUpload() {
	if x.method != http.MethodGet && x.method != http.MethodHead {
		x.w.Header().Set("Allow", "GET, HEAD")
		x.writeJSON(http.StatusMethodNotAllowed, obj{{"result", "error"}, {"msg", "Method Not Allowed"}, {"allowed_methods", []string{"GET", "HEAD"}}})
		return
	}
	if aerr := x.authBasic(); aerr != nil {
		x.writeError(aerr)
		return
	}
	x.e.mu.Lock()
	up, ok := x.e.uploads[strings.TrimPrefix(x.r.URL.Path, "/user_uploads/")]
	x.e.mu.Unlock()
	if !ok {
		x.writeError(&apiError{status: 404, code: "BAD_REQUEST", msg: "File not found"})
		return
	}
	h := x.w.Header()
	h.Set("Content-Type", up.contentType)
	h.Set("Content-Disposition", `inline; filename="`+up.name+`"`)
	h.Set("Content-Length", strconv.Itoa(len(up.data)))
	x.w.WriteHeader(http.StatusOK)
	if x.method == http.MethodGet {
		_, _ = x.w.Write(up.data)
	}
}
