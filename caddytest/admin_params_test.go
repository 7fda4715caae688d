package caddytest

import (
	"io"
	"strings"
	"testing"
)

// Every admin endpoint refuses a parameter it does not take, in the
// query, a form or a JSON body, with 400 naming it, before it does
// anything: DELETE /clients/ID?dry_run=true must not revoke.
func TestAdminCallsRefuseUnknownParameters(t *testing.T) {
	store := newStore(t)
	admin, _ := adminKey(t, store)
	key, id := scopedKey(t, store, "general")
	start(t, config{store: store})
	calls := []struct{ method, path string }{
		{"POST", "/create_client?stream=general"},
		{"GET", "/clients"},
		{"DELETE", "/clients/" + id},
		{"PATCH", "/clients/" + id + "?expires_in=1h"},
		{"POST", "/clients/" + id + "/rotate"},
		{"GET", "/clients/" + id + "/messages"},
		{"GET", "/bots"},
	}
	before := len(clientIDs(t, admin))
	for _, c := range calls {
		for _, prefix := range []string{"", "/api"} {
			sep := "?"
			if strings.Contains(c.path, "?") {
				sep = "&"
			}
			bodies := []struct {
				name, query, body, ctype string
			}{
				{"query", sep + "dry_run=true", "", ""},
				{"form", "", "dry_run=true", "application/x-www-form-urlencoded"},
				{"JSON", "", `{"dry_run": true}`, "application/json"},
			}
			for _, b := range bodies {
				t.Run(c.method+" "+prefix+c.path+" "+b.name, func(t *testing.T) {
					var body io.Reader
					hdrs := []string{withKey(admin)}
					if b.body != "" {
						body = strings.NewReader(b.body)
						hdrs = append(hdrs, "Content-Type: "+b.ctype)
					}
					m := assertError(t, request(t, c.method, prefix+c.path+b.query, body, hdrs...), 400, "dry_run")
					if m["var_name"] != "dry_run" {
						t.Errorf("var_name %v", m["var_name"])
					}
				})
			}
		}
	}
	// Nothing was done: the key works, as it was, and none was added.
	bodyR, ct := form("content", "still here")
	if r := request(t, "POST", "/send_message?topic=params", bodyR, withKey(key), ct); r.Status != 200 {
		t.Errorf("the key after refused calls: %d %s", r.Status, r.Body)
	}
	if exp := clientField(t, admin, id, "expires_at"); exp != nil {
		t.Errorf("a refused PATCH set an expiry: %v", exp)
	}
	if after := len(clientIDs(t, admin)); after != before {
		t.Errorf("%d keys before, %d after refused calls", before, after)
	}
}

// A JSON member given twice is refused as a repeated query parameter is,
// not resolved to the last: {"stream":"A","stream":"B"} made a key for B.
func TestAdminJSONRepeatedMember(t *testing.T) {
	store := newStore(t)
	admin, _ := adminKey(t, store)
	key, id := scopedKey(t, store, "general")
	start(t, config{store: store})
	before := len(clientIDs(t, admin))
	js := "Content-Type: application/json"
	m := assertError(t, request(t, "POST", "/create_client", strings.NewReader(`{"stream":"general","stream":"other"}`), withKey(admin), js), 400, "more than once")
	if m["var_name"] != "stream" {
		t.Errorf("var_name %v", m["var_name"])
	}
	assertError(t, request(t, "POST", "/clients/"+id+"/rotate", strings.NewReader(`{"grace":"0","grace":"24h"}`), withKey(admin), js), 400, "grace")
	assertError(t, request(t, "PATCH", "/clients/"+id, strings.NewReader(`{"expires_in":"1h","expires_in":"2h"}`), withKey(admin), js), 400, "expires_in")
	// Malformed bodies, trailing data included, are refused whole.
	for _, b := range []string{`{"stream":"general"} {"stream":"other"}`, `{"stream":"general"`, `["stream"]`, `{"stream":{"a":1}}`} {
		if r := request(t, "POST", "/create_client", strings.NewReader(b), withKey(admin), js); r.Status != 400 {
			t.Errorf("%s: %d %s", b, r.Status, r.Body)
		}
	}
	if after := len(clientIDs(t, admin)); after != before {
		t.Errorf("%d keys before, %d after refused calls", before, after)
	}
	bodyR, ct := form("content", "not rotated")
	if r := request(t, "POST", "/send_message?topic=params", bodyR, withKey(key), ct); r.Status != 200 {
		t.Errorf("the key after a refused rotation: %d %s", r.Status, r.Body)
	}
}

// clientIDs lists the ids GET /clients shows.
func clientIDs(t *testing.T, admin string) []string {
	t.Helper()
	r := request(t, "GET", "/clients", nil, withKey(admin))
	clients, _ := r.JSON(t)["clients"].([]any)
	var ids []string
	for _, c := range clients {
		ids = append(ids, c.(map[string]any)["id"].(string))
	}
	return ids
}
