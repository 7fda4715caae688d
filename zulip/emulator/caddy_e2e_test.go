package emulator_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp"   // the http app
	_ "github.com/caddyserver/caddy/v2/modules/filestorage" // storage in a temp dir

	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

// A real Caddy running a Caddyfile with only zulip_emulator answers like
// Zulip does: the curl of the issue, and Zulip's 401 for a wrong key.
// The drop fault also goes through Caddy's response writer wrappers.
func TestCaddyServesZulipOverHTTP(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	// Storage in a temp dir (Caddy resolves its default one at start-up,
	// before t.Setenv), and loopback only.
	caddyfile := fmt.Sprintf("{\n\tadmin off\n\tpersist_config off\n\tstorage file_system %s\n\tdefault_bind 127.0.0.1\n\tlog {\n\t\toutput discard\n\t}\n}\nhttp://%s {\n\tzulip_emulator caddy-e2e\n}\n",
		t.TempDir(), addr)
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })

	send := func(key string) (int, http.Header, string) {
		req, _ := http.NewRequest("POST", "http://"+addr+"/api/v1/messages", strings.NewReader("type=stream&to=general&topic=t&content=hi"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(emulator.DemoBotEmail, key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, nil, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	if st, _, body := send(emulator.DemoBotKey); st != 200 || !strings.HasPrefix(body, `{"result":"success","msg":"","id":`) {
		t.Errorf("send: %d %s", st, body)
	}
	if st, h, body := send(strings.Repeat("x", 32)); st != 401 || h.Get("WWW-Authenticate") != `Basic realm="zulip"` ||
		body != `{"result":"error","msg":"Invalid API key","code":"UNAUTHORIZED"}` {
		t.Errorf("wrong key: %d %v %s", st, h, body)
	}
	resp, err := http.Post("http://"+addr+"/_emulator/fault", "application/json", strings.NewReader(`{"drop": true, "count": 1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if st, _, body := send(emulator.DemoBotKey); st != 0 {
		t.Errorf("drop through Caddy: got %d %s", st, body)
	}
	if st, _, _ := send(emulator.DemoBotKey); st != 200 {
		t.Errorf("after the drop: %d", st)
	}
}
