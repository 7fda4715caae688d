package emulator

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"time"
)

// controlPrefix is where the emulator's own controls live, a path real
// Zulip never serves, so end-to-end tests (and curl users of the demo)
// can read what "Zulip" received and switch faults on:
//
//	GET    /_emulator/requests[?after=SEQ]  the request log, oldest first
//	DELETE /_emulator/requests              empty it
//	GET    /_emulator/messages              stored messages, oldest first
//	DELETE /_emulator/messages              forget them
//	GET    /_emulator/fault                 the active fault (404 if none)
//	POST   /_emulator/fault                 set one: a JSON Fault
//	DELETE /_emulator/fault                 clear it
//	POST   /_emulator/down                  Zulip is down: its nginx answers
//	                                        502 to every API call until up
//	POST   /_emulator/up                    Zulip is up again (clears any fault)
//	GET    /_emulator/state                 users (without keys) and streams
//
// They need no credentials: never expose an emulator to a network.
const controlPrefix = "/_emulator/"

func (e *Emulator) serveControl(w http.ResponseWriter, r *http.Request) {
	reply := func(status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(v)
	}
	fail := func(status int, msg string) {
		reply(status, map[string]string{"result": "error", "msg": msg})
	}
	ok := map[string]string{"result": "success", "msg": ""}
	methods := func(allowed string) {
		w.Header().Set("Allow", allowed)
		fail(http.StatusMethodNotAllowed, "method not allowed; use "+allowed)
	}
	switch r.URL.Path[len(controlPrefix):] {
	case "requests":
		switch r.Method {
		case http.MethodGet:
			var after uint64
			if s := r.URL.Query().Get("after"); s != "" {
				n, err := strconv.ParseUint(s, 10, 64)
				if err != nil {
					fail(http.StatusBadRequest, "after must be a sequence number")
					return
				}
				after = n
			}
			reqs := e.RequestsAfter(after)
			reply(http.StatusOK, map[string]any{"requests": reqs, "last_seq": e.LastSeq()})
		case http.MethodDelete:
			e.ResetRequests()
			reply(http.StatusOK, ok)
		default:
			methods("GET, DELETE")
		}
	case "messages":
		switch r.Method {
		case http.MethodGet:
			reply(http.StatusOK, map[string]any{"messages": e.Messages()})
		case http.MethodDelete:
			e.ResetMessages()
			reply(http.StatusOK, ok)
		default:
			methods("GET, DELETE")
		}
	case "fault":
		switch r.Method {
		case http.MethodGet:
			f, active := e.CurrentFault()
			if !active {
				fail(http.StatusNotFound, "no fault is active")
				return
			}
			reply(http.StatusOK, f)
		case http.MethodPost, http.MethodPut:
			var f Fault
			dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
			if err := dec.Decode(&f); err != nil {
				fail(http.StatusBadRequest, "body must be a JSON fault: "+err.Error())
				return
			}
			if err := e.SetFault(f); err != nil {
				fail(http.StatusBadRequest, err.Error())
				return
			}
			reply(http.StatusOK, ok)
		case http.MethodDelete:
			e.ClearFault()
			reply(http.StatusOK, ok)
		default:
			methods("GET, POST, DELETE")
		}
	case "down", "up":
		if r.Method != http.MethodPost {
			methods("POST")
			return
		}
		if r.URL.Path[len(controlPrefix):] == "up" {
			e.ClearFault()
		} else if err := e.SetFault(Fault{Status: http.StatusBadGateway}); err != nil {
			fail(http.StatusInternalServerError, err.Error())
			return
		}
		reply(http.StatusOK, ok)
	case "state":
		if r.Method != http.MethodGet {
			methods("GET")
			return
		}
		type publicUser struct {
			ID       int64  `json:"id"`
			Email    string `json:"email"`
			FullName string `json:"full_name"`
			IsBot    bool   `json:"is_bot"`
			IsAdmin  bool   `json:"is_admin"`
			OwnerID  int64  `json:"owner_id,omitempty"`
			Active   bool   `json:"active"`
		}
		var users []publicUser
		for _, u := range e.Users() {
			users = append(users, publicUser{u.ID, u.Email, u.FullName, u.IsBot, u.IsAdmin, u.OwnerID, u.Active})
		}
		limit, window := e.rateLimit()
		reply(http.StatusOK, map[string]any{
			"users":      users,
			"streams":    e.Streams(),
			"rate_limit": map[string]any{"requests": limit, "window": window.String()},
			"time":       e.cfg.now().UTC().Format(time.RFC3339),
		})
	default:
		fail(http.StatusNotFound, "unknown emulator control; see /_emulator/requests, /_emulator/messages, /_emulator/fault, /_emulator/down, /_emulator/up, /_emulator/state")
	}
}
