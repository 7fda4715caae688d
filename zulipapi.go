package zulipproxy

import "net/http"

// serveZulipAPI answers the Zulip-compatible API under /api/v1/.
func (h *Handler) serveZulipAPI(w http.ResponseWriter, r *http.Request) error {
	writeError(w, newError(http.StatusNotFound, codeNotFound, "endpoint not available through this proxy: "+r.Method+" "+r.URL.Path))
	return nil
}
