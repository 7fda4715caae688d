package zulipproxy

import (
	"context"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
	"github.com/zwop/caddy-zulip-proxy/zulip"
	"go.uber.org/zap"
)

// serveSendMessage sends to the key's stream, with an optional file that
// is streamed to Zulip while it is read and linked at the end of content.
func (h *Handler) serveSendMessage(w http.ResponseWriter, r *http.Request, c *call) (err error) {
	q, aerr := queryValues(r)
	if aerr != nil {
		return aerr
	}
	if aerr := onlyParams(q, "query parameter", "topic"); aerr != nil {
		return aerr
	}
	topic, aerr := topicParam(q.Get("topic"), q.Has("topic"), true)
	if aerr != nil {
		return aerr
	}
	if aerr := c.topicInScope(topic); aerr != nil {
		return aerr
	}
	if aerr := h.body.limitBody(w, r); aerr != nil {
		return aerr
	}
	var content string
	var haveContent bool
	var spooled *spooledFile
	defer func() { spooled.remove() }()
	switch mediaType(r) {
	case mtMultipart:
		// A file already stored for a request answered with an error is
		// removed again: an error leaves nothing in Zulip. Not when the
		// message went to Zulip and no answer came: it may post the
		// message yet, which links the file.
		var up *zulip.UploadResult
		defer func() {
			if err != nil && up != nil && !c.uncertainWrite(err) {
				c.removeUpload(r, up.URI)
			}
		}()
		var link string
		content, haveContent, link, up, spooled, err = c.readMessageParts(r)
		if err != nil {
			return err
		}
		if link != "" {
			content += "\n\n" + link
		}
	case mtForm, "":
		form, aerr := h.body.readForm(r, "content")
		if aerr != nil {
			return aerr
		}
		content, haveContent = form.Get("content"), form.Has("content")
	default:
		return errUnsupportedBody("content must be sent as a form (application/x-www-form-urlencoded or multipart/form-data)")
	}
	if !haveContent {
		return errMissingParam("content")
	}
	if strings.TrimSpace(content) == "" {
		return errBadParam("content", "'content' must not be empty")
	}
	if aerr := checkText("content", content, maxContentRunes); aerr != nil {
		return aerr
	}
	if c.queueing {
		return c.sendOrQueue(w, r, topic, content, nil, spooled)
	}
	return c.send(w, r, topic, content, nil)
}

// send posts to the key's stream, by its id. to, when given, is what the
// client named as the destination; it must be the key's stream.
func (c *call) send(w http.ResponseWriter, r *http.Request, topic, content string, to *streamRef) error {
	// A script that prints its environment into a message must not post
	// its own key for the whole stream to read.
	topic, content = scrubString(topic, c.key), scrubString(content, c.key)
	var res *zulip.SendResult
	err := c.bot.withStream(r.Context(), c.entry.Stream, func(id int64) error {
		if to != nil && !to.is(c.entry.Stream, id) {
			return errNotYourStream(c.entry.Stream)
		}
		if c.idem != nil && c.idem.resolving {
			found, err := c.bot.findSent(r.Context(), id, topic, content, c.idem.since, 0)
			if found != nil {
				c.idem.found()
			}
			if err != nil || found != nil {
				res = found
				return err
			}
		}
		var err error
		res, err = c.bot.client.SendMessage(r.Context(), zulip.SendMessage{StreamID: id, Topic: topic, Content: content})
		return err
	})
	if err != nil {
		return err
	}
	if c.idem != nil && c.idem.foundWrite {
		w.Header().Set(replayedHeader, "true")
	}
	writeZulipAnswer(w, res.Raw)
	return nil
}

// readMessageParts reads send_message's multipart body in order: a file
// goes to Zulip as it arrives, so memory does not depend on its size; a
// queueable send's file goes to the queue's spool instead, to be sent or
// queued with the message.
func (c *call) readMessageParts(r *http.Request) (content string, haveContent bool, link string, up *zulip.UploadResult, spooled *spooledFile, err error) {
	h := c.h
	haveImage := false
	err = h.body.readParts(r, partReader{
		fieldBytes: maxFieldBytes,
		text: func(name, value string) error {
			switch name {
			case "content":
				if haveContent {
					return errBadParam(name, "form field 'content' given more than once")
				}
				content, haveContent = value, true
				return nil
			case "image":
				return errBadParam(name, "form field 'image' must be a file (with a filename)")
			}
			return errBadParam(name, "unexpected form field '"+name+"'")
		},
		file: func(p *multipart.Part) error {
			switch name := p.FormName(); name {
			case "content":
				// curl -F content=@notes.txt: the text comes as a file.
				if haveContent {
					return errBadParam(name, "form field 'content' given more than once")
				}
				var err error
				content, err = h.body.readField(p, name, maxFieldBytes)
				haveContent = err == nil
				return err
			case "image":
			default:
				return errBadParam(name, "unexpected form field '"+name+"'")
			}
			if haveImage {
				return errBadParam("image", "form field 'image' given more than once")
			}
			haveImage = true
			if !c.entry.Allows(keystore.PermUpload) {
				// Before anything of the file is read or sent.
				return errLacksPermission(c.entry, keystore.PermUpload, "send a file with a message")
			}
			if c.queueing {
				if p.FileName() == "" {
					return errBadParam("image", "form field 'image' must be a file (with a filename)")
				}
				ctype := p.Header.Get("Content-Type")
				if ctype == "" {
					ctype = "application/octet-stream"
				}
				var err error
				spooled, err = c.spoolFile(p, p.FileName(), ctype)
				return err
			}
			// The upload is a call to Zulip beyond the send.
			if aerr := c.spendMore(1); aerr != nil {
				return aerr
			}
			var err error
			if up, err = c.uploadPart(r.Context(), p); err != nil {
				return err
			}
			link = markdownLink(p.FileName(), up.URI)
			return nil
		},
	})
	return content, haveContent, link, up, spooled, err
}

// removeUpload deletes a file this request stored in Zulip, when the
// request is answered with an error after all. It is the proxy's own
// call, bounded by timeout and not by the client, who may have gone.
func (c *call) removeUpload(r *http.Request, uri string) {
	h := c.h
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), time.Duration(h.Timeout))
	defer cancel()
	if err := c.bot.client.DeleteUpload(ctx, uri); err != nil {
		h.logger.Warn("an upload of a failed request could not be removed from Zulip",
			append([]zap.Field{zap.String("key_id", c.entry.ID)}, errorFields(err)...)...)
	}
}

// serveUploadFile uploads one file and answers Zulip's JSON (uri, url).
func (h *Handler) serveUploadFile(w http.ResponseWriter, r *http.Request, c *call) error {
	return c.uploadOne(w, r, "file")
}

// uploadOne streams the one file of a multipart body to Zulip and answers
// Zulip's JSON. field names the file's form field; "" takes any name, as
// Zulip's own user_uploads does.
func (c *call) uploadOne(w http.ResponseWriter, r *http.Request, field string) error {
	h := c.h
	q, aerr := queryValues(r)
	if aerr != nil {
		return aerr
	}
	if aerr := onlyParams(q, "query parameter"); aerr != nil {
		return aerr
	}
	if aerr := h.body.limitBody(w, r); aerr != nil {
		return aerr
	}
	if mediaType(r) != mtMultipart {
		return errUnsupportedBody("the upload must be a multipart/form-data body with one file")
	}
	var up *zulip.UploadResult
	unexpected := func(name string) error {
		return errBadParam(name, "unexpected form field '"+name+"': the body holds one file")
	}
	err := h.body.readParts(r, partReader{
		fieldBytes: maxFieldBytes,
		text:       func(name, _ string) error { return unexpected(name) },
		file: func(p *multipart.Part) error {
			if name := p.FormName(); field != "" && name != field {
				return unexpected(name)
			}
			if up != nil {
				return errBadParam(p.FormName(), "only one file may be uploaded at a time")
			}
			var err error
			up, err = c.uploadPart(r.Context(), p)
			return err
		},
	})
	if err != nil {
		if up != nil {
			// The first file is in Zulip already; the answer is an error.
			c.removeUpload(r, up.URI)
		}
		return err
	}
	if up == nil {
		if field == "" {
			return newError(http.StatusBadRequest, codeBadRequest, "You must specify a file to upload")
		}
		return errMissingParam(field)
	}
	if c.idem != nil && c.idem.foundUpload == up {
		c.idem.found()
		w.Header().Set(replayedHeader, "true")
	}
	writeZulipAnswer(w, up.Raw)
	return nil
}

// takeUploadSlot counts an upload against its key's max_uploads_per_key;
// release gives the slot back.
func (c *call) takeUploadSlot() (release func(), aerr *apiError) {
	h := c.h
	v, ok := h.uploads.Load(c.entry.ID)
	if !ok {
		v, _ = h.uploads.LoadOrStore(c.entry.ID, new(atomic.Int32))
	}
	n := v.(*atomic.Int32)
	if n.Add(1) > int32(h.MaxUploadsPerKey) {
		n.Add(-1)
		metrics.limited.WithLabelValues("uploads").Inc()
		return nil, newError(http.StatusTooManyRequests, codeRateLimited,
			"this key has "+strconv.Itoa(h.MaxUploadsPerKey)+" uploads in flight already (max_uploads_per_key); send the next when one is done").setHeader("Retry-After", "1")
	}
	return func() { n.Add(-1) }, nil
}

// uploadPart streams one file part to Zulip.
func (c *call) uploadPart(ctx context.Context, p *multipart.Part) (*zulip.UploadResult, error) {
	h := c.h
	name := p.FileName()
	if name == "" {
		return nil, errBadParam(p.FormName(), "form field '"+p.FormName()+"' must be a file (with a filename)")
	}
	ctype := p.Header.Get("Content-Type")
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	// No deadline of its own: the client's pace is bounded by
	// client_idle_timeout, Zulip's answer by timeout once all is sent.
	release, aerr := c.takeUploadSlot()
	if aerr != nil {
		return nil, aerr
	}
	defer release()
	var file io.Reader = p
	if c.idem != nil && c.idem.resolving {
		// The first attempt's upload may be in Zulip: the file's size,
		// then a look, before it is sent again.
		spool, size, err := spoolPart(p)
		if err != nil {
			return nil, h.body.bodyError(err)
		}
		defer func() { spool.Close(); os.Remove(spool.Name()) }()
		found, err := c.bot.findUpload(ctx, name, size, c.idem.since)
		if found != nil {
			c.idem.foundUpload = found
		}
		if err != nil || found != nil {
			return found, err
		}
		file = spool
	}
	body := &recordingReader{r: file}
	up, err := c.bot.client.UploadFile(ctx, name, ctype, body)
	metrics.uploadBytes.Add(float64(body.n))
	if body.err != nil {
		return nil, h.body.bodyError(body.err)
	}
	if err != nil {
		return nil, err
	}
	return up, nil
}

// markdownLink links an uploaded file the way the upstream service did,
// keeping the file name from breaking the Markdown.
func markdownLink(filename, uri string) string {
	return "[" + linkEscaper.Replace(filename) + "](" + uri + ")"
}

// linkEscaper keeps a file name from breaking the Markdown link a message
// with an attachment ends in.
var linkEscaper = strings.NewReplacer("\r", " ", "\n", " ", "[", "\\[", "]", "\\]")

// serveStreamTopics lists the topics of the key's stream.
func (h *Handler) serveStreamTopics(w http.ResponseWriter, r *http.Request, c *call) error {
	q, aerr := queryValues(r)
	if aerr != nil {
		return aerr
	}
	if aerr := onlyParams(q, "query parameter"); aerr != nil {
		return aerr
	}
	return c.topics(w, r, 0, zulip.ReadOptions{})
}

// topics answers Zulip's topic list of the key's stream. want, when not
// zero, is the stream id the client asked for; it must be the key's.
func (c *call) topics(w http.ResponseWriter, r *http.Request, want int64, opts zulip.ReadOptions) error {
	var resp *zulip.Response
	err := c.bot.withStream(r.Context(), c.entry.Stream, func(id int64) error {
		if want != 0 && id != want {
			return errNotYourStream(c.entry.Stream)
		}
		var err error
		resp, err = c.bot.client.StreamTopicsWith(r.Context(), id, opts)
		return err
	})
	if err != nil {
		return err
	}
	if resp, err = c.inScopeAnswer(resp, "topics", "name"); err != nil {
		return err
	}
	writeZulipAnswer(w, resp)
	return nil
}

var propagateModes = map[string]bool{"change_one": true, "change_later": true, "change_all": true}

// checkPropagate allows change_later and change_all only when configured:
// they also move other people's messages in the topic.
func checkPropagate(mode string, allowed bool) *apiError {
	if !propagateModes[mode] {
		return errBadParam("propagate_mode", "'propagate_mode' must be change_one, change_later or change_all")
	}
	if mode != "change_one" && !allowed {
		return newError(http.StatusForbidden, codeForbidden,
			"propagate_mode '"+mode+"' is disabled on this server: it would also move messages other people sent to the topic")
	}
	return nil
}

// serveUpdateMessage edits a message this key's bot sent in this key's
// stream. Zulip would let the bot move anyone's message, so ownership is
// checked here, with Zulip, before anything is changed.
func (h *Handler) serveUpdateMessage(w http.ResponseWriter, r *http.Request, c *call) error {
	q, aerr := queryValues(r)
	if aerr != nil {
		return aerr
	}
	if aerr := onlyParams(q, "query parameter", "message_id", "topic", "propagate_mode"); aerr != nil {
		return aerr
	}
	if !q.Has("message_id") {
		return errMissingParam("message_id")
	}
	msgID, aerr := parseInt64Param("message_id", q.Get("message_id"))
	if aerr != nil {
		return aerr
	}
	if msgID <= 0 {
		return errBadParam("message_id", "parameter 'message_id' must be a positive integer")
	}
	var u zulip.UpdateMessage
	if q.Has("topic") {
		topic, aerr := topicParam(q.Get("topic"), true, true)
		if aerr != nil {
			return aerr
		}
		if aerr := c.topicInScope(topic); aerr != nil {
			return aerr
		}
		u.Topic = &topic
	}
	if mode := q.Get("propagate_mode"); q.Has("propagate_mode") {
		if aerr := checkPropagate(mode, h.AllowPropagate); aerr != nil {
			return aerr
		}
		u.PropagateMode = mode
	}
	if aerr := h.body.limitBody(w, r); aerr != nil {
		return aerr
	}
	content, err := h.body.readEditContent(r)
	if err != nil {
		return err
	}
	if content != "" {
		if aerr := checkText("content", content, maxContentRunes); aerr != nil {
			return aerr
		}
		u.Content = &content
	}
	if u.Content == nil && u.Topic == nil {
		return newError(http.StatusBadRequest, codeBadRequest,
			"either content (new message text, in the body) or topic (rename the message's topic) must be given")
	}
	return c.updateOwnMessage(w, r, msgID, u)
}

// updateOwnMessage checks that the message is the key's own, then edits
// it, answering Zulip's reply.
func (c *call) updateOwnMessage(w http.ResponseWriter, r *http.Request, msgID int64, u zulip.UpdateMessage) error {
	if u.Topic != nil && u.PropagateMode == "" {
		u.PropagateMode = "change_one"
	}
	for _, p := range []*string{u.Topic, u.Content} {
		if p != nil {
			*p = scrubString(*p, c.key)
		}
	}
	if c.idem != nil && c.idem.resolving {
		// The first attempt's edit may have been made: the message as
		// it is now, in Markdown.
		raw := false
		msg, _, err := c.checkOwnMessage(r.Context(), msgID, zulip.ReadOptions{ApplyMarkdown: &raw})
		if err != nil {
			return err
		}
		if editMade(msg, u) {
			c.idem.found()
			writeFound(w, []byte(`{"result":"success","msg":""}`))
			return nil
		}
	} else if _, _, err := c.checkOwnMessage(r.Context(), msgID, zulip.ReadOptions{}); err != nil {
		return err
	}
	resp, err := c.bot.client.UpdateMessage(r.Context(), msgID, u)
	if err != nil {
		return err
	}
	writeZulipAnswer(w, resp)
	return nil
}

// readEditContent reads update_message's new content: the raw body as the
// upstream service took it (text/plain), or a form field `content`.
func (br bodyReader) readEditContent(r *http.Request) (string, error) {
	switch mt := mediaType(r); {
	case mt == mtForm:
		form, aerr := br.readForm(r, "content")
		if aerr != nil {
			return "", aerr
		}
		return form.Get("content"), nil
	case mt == mtMultipart:
		content, seen := "", false
		err := br.readParts(r, partReader{
			fieldBytes: maxFieldBytes,
			text: func(name, value string) error {
				if name != "content" {
					return errBadParam(name, "unexpected form field '"+name+"'")
				}
				if seen {
					return errBadParam("content", "form field 'content' given more than once")
				}
				content, seen = value, true
				return nil
			},
			noFiles: "unexpected file: the new content is a text field 'content'",
		})
		if err != nil {
			return "", err
		}
		return content, nil
	case mt == "" || strings.HasPrefix(mt, "text/"):
		b, err := io.ReadAll(io.LimitReader(r.Body, maxFieldBytes))
		if err != nil {
			return "", br.bodyError(err)
		}
		if len(b) == maxFieldBytes {
			return "", errBadParam("content", "'content' is longer than Zulip's limit of "+strconv.Itoa(maxContentRunes)+" characters")
		}
		return string(b), nil
	default:
		return "", errUnsupportedBody("the new content must be text/plain, or a form field 'content'")
	}
}

// checkOwnMessage lets a message through only if it is a stream message
// that the key's bot sent in the key's stream. It answers Zulip's reply
// to fetching the message.
func (c *call) checkOwnMessage(ctx context.Context, msgID int64, opts zulip.ReadOptions) (*zulip.Message, *zulip.Response, error) {
	uid, err := c.bot.userID(ctx)
	if err != nil {
		return nil, nil, err
	}
	msg, resp, err := c.bot.client.GetMessageWith(ctx, msgID, opts)
	if err != nil {
		return nil, nil, err
	}
	sid, err := c.bot.streamID(ctx, c.entry.Stream)
	if err != nil {
		return nil, nil, err
	}
	if msg.StreamID != sid && msg.Type == "stream" {
		// The stream may have been made again under the same name.
		c.bot.streamIDs.CompareAndDelete(c.entry.Stream, sid)
		if sid, err = c.bot.streamID(ctx, c.entry.Stream); err != nil {
			return nil, nil, err
		}
	}
	if msg.Type != "stream" || msg.StreamID != sid || msg.SenderID != uid {
		return nil, nil, newError(http.StatusForbidden, codeForbidden,
			"message "+strconv.FormatInt(msgID, 10)+" is not a message this key sent in its stream")
	}
	if aerr := c.messageInScope(msg); aerr != nil {
		return nil, nil, aerr
	}
	return msg, resp, nil
}

// serveGetMessages returns the bot's own messages in the key's stream. The
// narrow is built here; a client's narrow is never passed on.
func (h *Handler) serveGetMessages(w http.ResponseWriter, r *http.Request, c *call) error {
	q, aerr := queryValues(r)
	if aerr != nil {
		return aerr
	}
	if aerr := onlyParams(q, "query parameter", "num_before", "anchor"); aerr != nil {
		return aerr
	}
	numBefore, aerr := intParam(q, "num_before", 100, 0, 1000)
	if aerr != nil {
		return aerr
	}
	anchor, aerr := anchorParam(q)
	if aerr != nil {
		return aerr
	}
	return c.writeBotMessages(w, r, c.entry.Stream, zulip.GetMessages{Anchor: anchor, NumBefore: numBefore}, nil)
}

// anchorParam is get_messages' anchor, Zulip's default when not given.
func anchorParam(q url.Values) (string, *apiError) {
	if !q.Has("anchor") {
		return "newest", nil
	}
	anchor := q.Get("anchor")
	if _, err := strconv.ParseUint(anchor, 10, 63); err != nil && anchor != "newest" && anchor != "oldest" && anchor != "first_unread" {
		return "", errBadParam("anchor", "'anchor' must be a message id, newest, oldest or first_unread")
	}
	return anchor, nil
}

// writeBotMessages answers with the messages c's bot sent to stream.
// q's narrow is set here: the stream and the bot as sender, then what
// more returns for them (nil: nothing more). Every read of messages goes
// through here, so none can leave the stream or the bot's own messages.
func (c *call) writeBotMessages(w http.ResponseWriter, r *http.Request, stream string, q zulip.GetMessages,
	more func(streamID, botID int64) ([]zulip.NarrowTerm, *apiError)) error {
	uid, err := c.bot.userID(r.Context())
	if err != nil {
		return err
	}
	var resp *zulip.Response
	err = c.bot.withStream(r.Context(), stream, func(id int64) error {
		q.Narrow = []zulip.NarrowTerm{
			{Operator: "channel", Operand: id},
			{Operator: "sender", Operand: uid},
		}
		if more != nil {
			extra, aerr := more(id, uid)
			if aerr != nil {
				return aerr
			}
			q.Narrow = append(q.Narrow, extra...)
		}
		var err error
		resp, err = c.bot.client.GetMessages(r.Context(), q)
		return err
	})
	if err != nil {
		return err
	}
	if resp, err = c.inScopeAnswer(resp, "messages", "subject"); err != nil {
		return err
	}
	writeZulipAnswer(w, resp)
	return nil
}

// topicParam checks a topic as Zulip will see it.
func topicParam(topic string, present, required bool) (string, *apiError) {
	if !present {
		if required {
			return "", errMissingParam("topic")
		}
		return "", nil
	}
	if strings.TrimSpace(topic) == "" {
		return "", errBadParam("topic", "'topic' must not be empty")
	}
	if aerr := checkText("topic", topic, maxTopicRunes); aerr != nil {
		return "", aerr
	}
	return topic, nil
}

// spoolPart copies a file part to a temporary file, to learn its size;
// the file is read from the start.
func spoolPart(p io.Reader) (*os.File, int64, error) {
	f, err := os.CreateTemp("", "zwop-part-*")
	if err != nil {
		return nil, 0, err
	}
	n, err := io.Copy(f, p)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, 0, err
	}
	return f, n, nil
}
