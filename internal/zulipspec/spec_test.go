package zulipspec

import (
	"net/http"
	"strings"
	"testing"
)

// The validator must reject what Zulip's description rejects, or every
// test that relies on it proves nothing.
func TestValidatorRejectsMismatches(t *testing.T) {
	s := Load(t)
	send := func(body string, auth bool) (*Exchange, error) {
		req, _ := http.NewRequest("POST", "http://127.0.0.1:1/api/v1/messages", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if auth {
			req.SetBasicAuth("bot@example.com", "0123456789abcdef0123456789abcdef")
		}
		return s.ValidateRequest(req)
	}
	x, err := send("type=stream&to=3&topic=t&content=hi", true)
	if err != nil {
		t.Fatalf("valid send rejected: %v", err)
	}
	json := http.Header{"Content-Type": {"application/json"}}
	tests := []struct {
		name   string
		status int
		body   string
		ok     bool
	}{
		{"success", 200, `{"result":"success","msg":"","id":3}`, true},
		{"unknown success field", 200, `{"result":"success","msg":"","idx":3}`, false},
		{"success without id", 200, `{"result":"success","msg":""}`, false},
		{"unknown stream name", 400, `{"result":"error","msg":"Channel 'x' does not exist","code":"STREAM_DOES_NOT_EXIST","stream":"x"}`, true},
		{"unknown stream id (exception)", 400, `{"result":"error","msg":"Channel with ID '9' does not exist","code":"STREAM_DOES_NOT_EXIST","stream_id":9}`, true},
		{"stream id of the wrong type", 400, `{"result":"error","msg":"x","code":"STREAM_DOES_NOT_EXIST","stream_id":"9"}`, false},
		{"error without code", 400, `{"result":"error","msg":"x"}`, false},
		{"401", 401, `{"result":"error","msg":"Invalid API key","code":"UNAUTHORIZED"}`, true},
		{"429 with float retry-after (exception)", 429, `{"result":"error","msg":"API usage exceeded rate limit","code":"RATE_LIMIT_HIT","retry-after":1.5}`, true},
		{"429 without retry-after", 429, `{"result":"error","msg":"x","code":"RATE_LIMIT_HIT"}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.ValidateResponse(x, tt.status, json, []byte(tt.body))
			if (err == nil) != tt.ok {
				t.Errorf("ValidateResponse = %v, want ok=%v", err, tt.ok)
			}
		})
	}
	if _, err := send("type=stream&to=3&topic=t&content=hi", false); err == nil {
		t.Error("a send without credentials passed the security check")
	}
	if _, err := send("type=stream&to=3&topic=t", true); err == nil {
		t.Error("a send without content passed")
	}
	if _, err := send("type=letter&to=3&topic=t&content=x", true); err == nil {
		t.Error("a send with an unknown type passed")
	}
}
