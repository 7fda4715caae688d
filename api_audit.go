package zulipproxy

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/zwop/caddy-zulip-proxy/internal/keystore"
)

type auditBody struct {
	Result  string                 `json:"result"`
	Msg     string                 `json:"msg"`
	Records []keystore.AuditRecord `json:"records"`
	// NextBefore, when there are older records, is the before that pages
	// on to them.
	NextBefore int64 `json:"next_before,omitempty"`
}

// maxAuditPage bounds one page of the trail.
const maxAuditPage = 1000

// serveAudit shows an admin the audit trail: who changed which key,
// when, from where, and what changed; newest first, a page at a time.
func (h *Handler) serveAudit(w http.ResponseWriter, r *http.Request, c *call) error {
	q, err := h.body.adminParams(w, r, c, "key_id", "since", "until", "before", "limit")
	if err != nil {
		return err
	}
	var aq keystore.AuditQuery
	if id := strings.TrimSpace(q.Get("key_id")); id != "" {
		if _, ok := h.store.Get(id); !ok {
			return errNoClient(id)
		}
		aq.KeyID = id
	}
	now := time.Now()
	for _, p := range []struct {
		name string
		to   *time.Time
	}{{"since", &aq.Since}, {"until", &aq.Until}} {
		if v := strings.TrimSpace(q.Get(p.name)); v != "" {
			if *p.to, err = auditTime(v, now, p.name == "until"); err != nil {
				return errBadParam(p.name, "parameter '"+p.name+"': "+err.Error())
			}
		}
	}
	if v := q.Get("before"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return errBadParam("before", "parameter 'before' must be a record's seq (a positive integer), as next_before gives it")
		}
		aq.Before = n
	}
	limit, aerr := intParam(q.Values, "limit", 100, 1, maxAuditPage)
	if aerr != nil {
		return aerr
	}
	aq.Limit = limit
	recs, more := h.store.Audit(aq)
	body := auditBody{Result: "success", Records: recs}
	if recs == nil {
		body.Records = []keystore.AuditRecord{}
	}
	if more {
		body.NextBefore = recs[len(recs)-1].Seq
	}
	writeJSON(w, http.StatusOK, body)
	return nil
}

// auditTime reads a bound of the trail as the API and the CLI take it: a
// duration back from now (7d, 12h), a date (2026-12-01, UTC) or a time
// (2026-12-01T08:00:00Z). A date as the end of a range means through
// that day, as a person means "until the 1st".
func auditTime(v string, now time.Time, end bool) (time.Time, error) {
	if d, err := caddy.ParseDuration(v); err == nil {
		if d < 0 {
			return time.Time{}, errors.New("a duration back from now must not be negative")
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		if end {
			return t.AddDate(0, 0, 1).Add(-time.Nanosecond), nil
		}
		return t, nil
	}
	return time.Time{}, errors.New("give a duration back from now (7d, 12h), a date (2026-12-01) or a time (2026-12-01T08:00:00Z)")
}
