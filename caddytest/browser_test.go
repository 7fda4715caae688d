package caddytest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// A real browser: Chromium, driven over its DevTools protocol. CI installs
// Debian's chromium and sets ZWOP_REQUIRE_BROWSER=1, so there these tests
// never skip.
type browserSession struct {
	ctx  context.Context
	mu   sync.Mutex
	urls []string // every URL the page asked for
}

func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{os.Getenv("ZWOP_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("ZWOP_REQUIRE_BROWSER") == "1" {
		t.Fatal("no Chromium found (apt-get install chromium), and ZWOP_REQUIRE_BROWSER=1")
	}
	t.Skip("no Chromium found: apt-get install chromium to run the browser tests")
	return ""
}

func newBrowser(t *testing.T) *browserSession {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(findChromium(t)),
		chromedp.NoSandbox, // root in CI containers
		chromedp.WindowSize(1440, 1000),
		chromedp.Flag("disable-dev-shm-usage", true),
	)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelB(); cancelA() })
	b := &browserSession{ctx: ctx}
	// The first call starts the browser and must have no deadline.
	if err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok {
			b.mu.Lock()
			b.urls = append(b.urls, e.Request.URL)
			b.mu.Unlock()
		}
	}); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	return b
}

// run runs steps, each test step bounded so a page that never shows what
// is awaited fails the test instead of hanging it.
func (b *browserSession) run(t *testing.T, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// get runs one action for its value.
func get[T any](t *testing.T, b *browserSession, what string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// otherOrigins lists what the page asked for anywhere but the proxy.
func (b *browserSession) otherOrigins() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, u := range b.urls {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme+"://"+p.Host != base && p.Scheme != "blob" && p.Scheme != "data") {
			out = append(out, u)
		}
	}
	return out
}

// signIn opens the admin page and signs in with admin, as staff do.
func (b *browserSession) signIn(t *testing.T, admin string) {
	t.Helper()
	b.run(t, "sign in", chromedp.Navigate(base+"/admin/"), chromedp.WaitVisible(byLabel("Admin key")),
		chromedp.SetValue(byLabel("Admin key"), admin), chromedp.Click(buttonNamed("Sign in")),
		chromedp.WaitVisible(chromedp.CSS(`#keys`)))
}

// The page's controls, found as a person finds them: by their labels and
// the words on buttons.
func byLabel(label string) string {
	return fmt.Sprintf(`//*[@id=//label[normalize-space(.)=%q]/@for]`, label)
}
func buttonNamed(name string) string { return fmt.Sprintf(`//button[normalize-space(.)=%q]`, name) }
func rowOf(id string) string {
	return fmt.Sprintf(`//table//tbody/tr[td[normalize-space(.)=%q]]`, id)
}

// waitText waits until the element's text holds want.
func waitText(sel, want string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		var text string
		for {
			var err error
			if text, err = chromedp.Text(sel)(ctx, tg); err != nil {
				return err
			}
			if strings.Contains(text, want) {
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s never said %q; last %q", sel, want, text)
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
}

// waitValueChange waits until a field's value is set and differs from old.
func waitValueChange(sel, old string, v *string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		for {
			var err error
			if *v, err = chromedp.Value(sel)(ctx, tg); err != nil {
				return err
			}
			if *v != "" && *v != old {
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s kept %q", sel, *v)
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
}

func screenshotDir(t *testing.T) string {
	dir := os.Getenv("ZWOP_SCREENSHOTS")
	if dir == "" {
		dir = "screenshots"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// keyEntry is the key's entry as the admin API lists it.
func keyEntry(t *testing.T, admin, id string) map[string]any {
	t.Helper()
	for _, c := range request(t, "GET", "/clients", nil, withKey(admin)).JSON(t)["clients"].([]any) {
		if e := c.(map[string]any); e["id"] == id {
			return e
		}
	}
	t.Fatalf("key %s not listed", id)
	return nil
}

var createdID = regexp.MustCompile(`Created key ([0-9a-f]{12})`)

// createInPage fills the create form with steps, creates the key and
// returns it (a secret from here on) and its id, as the page shows them.
func createInPage(t *testing.T, b *browserSession, what string, steps ...chromedp.Action[chromedp.Void]) (key, id string) {
	t.Helper()
	b.run(t, what, append(steps,
		chromedp.Click(buttonNamed("Create key")),
		waitValueChange(byLabel("New key"), "", &key),
		waitText(`#status`, "Created key"))...)
	addSecret(key)
	m := createdID.FindStringSubmatch(get(t, b, "the status", chromedp.Text(chromedp.CSS(`#status`))))
	if m == nil {
		t.Fatal("no key id in the status")
	}
	return key, m[1]
}

func TestAdminPageInBrowser(t *testing.T) {
	b := newBrowser(t)
	store := newStore(t)
	admin, _ := adminKey(t, store)
	scopedKey(t, store, "other") // a second row, for the filter
	start(t, config{store: store})
	send := func(key, text string) reply {
		body, ct := form("content", text)
		return request(t, "POST", "/send_message?topic=browser", body, withKey(key), ct)
	}

	b.run(t, "open the page", chromedp.Navigate(base+"/admin/"), chromedp.WaitVisible(byLabel("Admin key")))

	// Every field has a label and every button words: the names people
	// and screen readers go by.
	unnamed := get(t, b, "unlabelled controls", chromedp.Evaluate[[]string](`[
		...Array.from(document.querySelectorAll("input, select"), e => e.labels.length ? "" : "field #" + e.id),
		...Array.from(document.querySelectorAll("button"), e => e.textContent.trim() ? "" : "button #" + e.id),
	].filter(Boolean)`))
	if len(unnamed) > 0 {
		t.Errorf("controls without a name: %v", unnamed)
	}

	b.run(t, "the sign-in card says how to get an admin key", waitText(`#signin-section`, "caddy zulip-proxy add-admin"))

	b.run(t, "sign in with a wrong key",
		chromedp.SendKeys(byLabel("Admin key"), "zwop_wrong-key-0000000000000000000000000000000000"),
		chromedp.Click(buttonNamed("Sign in")),
		waitText(`#status`, "not accepted"))

	b.run(t, "sign in",
		chromedp.SetValue(byLabel("Admin key"), admin),
		chromedp.Click(buttonNamed("Sign in")),
		chromedp.WaitVisible(chromedp.CSS(`#keys`)),
		waitText(`#keys caption`, "of 2 keys"))

	b.run(t, "an unknown stream is refused in words",
		chromedp.SendKeys(byLabel("Stream"), "nowhere"),
		chromedp.Click(buttonNamed("Create key")),
		waitText(`#status`, "no such stream 'nowhere'"),
		waitText(`#status`, "create_streams"))

	// At 1440 px no field's words are cut off: the bot choice (its name
	// and site), the delivery choice, the placeholders.
	cut := get(t, b, "fields whose words do not fit", chromedp.Evaluate[[]string](`(() => {
		const ctx = document.createElement("canvas").getContext("2d");
		const cut = [];
		for (const id of ["create-bot", "create-delivery", "create-rate", "create-expires", "create-name"]) {
			const el = document.getElementById(id), cs = getComputedStyle(el);
			const text = el.tagName === "SELECT" ? (el.options[el.selectedIndex] || {text: ""}).text : el.placeholder;
			ctx.font = cs.font;
			const room = el.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight) - (el.tagName === "SELECT" ? 24 : 0);
			if (ctx.measureText(text).width > room) cut.push(id + ": " + text);
		}
		return cut;
	})()`))
	if len(cut) > 0 {
		t.Errorf("at 1440 px these are cut off: %v", cut)
	}

	var key, status string
	b.run(t, "create a key",
		chromedp.SetValue(byLabel("Stream"), "general"),
		chromedp.SendKeys(byLabel("Name"), "browser key"),
		chromedp.SendKeys(byLabel("Expires in"), "30d"),
		chromedp.SendKeys(byLabel("Rate limit"), "10/1m"),
		chromedp.Click(buttonNamed("Create key")),
		waitValueChange(byLabel("New key"), "", &key),
		waitText(`#status`, "Created key"))
	status = get(t, b, "the status", chromedp.Text(chromedp.CSS(`#status`)))
	addSecret(key)
	m := createdID.FindStringSubmatch(status)
	if !strings.HasPrefix(key, "zwop_") || m == nil {
		t.Fatalf("new key %q, status %q", key, status)
	}
	id := m[1]
	if !get(t, b, "the new key is read-only", chromedp.JavascriptAttribute[bool](byLabel("New key"), "readOnly")) {
		t.Error("the New key field can be edited")
	}
	rc := get(t, b, "a zuliprc to download", chromedp.AttributeValue(chromedp.CSS(`#zuliprc`), "href")).Value
	if !strings.HasPrefix(rc, "blob:") {
		t.Errorf("zuliprc link %q", rc)
	}
	if r := send(key, "sent with a key made in the page"); r.Status != 200 || r.Header.Get("X-RateLimit-Limit") != "10" {
		t.Fatalf("the page's key cannot send, or not with its 10/1m limit: %d %q %s", r.Status, r.Header.Get("X-RateLimit-Limit"), r.Body)
	}
	if e := keyEntry(t, admin, id); e["name"] != "browser key" || e["stream"] != "general" || e["rate_limit"] != "10/1m" || e["expires_at"] == nil {
		t.Errorf("the key made in the page: %v", e)
	}

	b.run(t, "Done puts the new key and its banner away",
		chromedp.Click(buttonNamed("Done")),
		chromedp.WaitNotVisible(chromedp.CSS(`#newkey-section`)),
		chromedp.WaitNotVisible(chromedp.CSS(`#status`)))

	b.run(t, "the key is listed", waitText(rowOf(id), "browser key"), waitText(rowOf(id), "general"))
	if created := get(t, b, "its creation time", chromedp.Text(rowOf(id)+`/td[6]`)); !regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d UTC([+-]\d\d:\d\d)?$`).MatchString(created) {
		t.Errorf("a time without its zone: %q", created)
	}
	b.run(t, "the filter",
		chromedp.SendKeys(byLabel("Filter"), "browser"),
		waitText(`#keys caption`, "1 of 3 keys"),
		chromedp.Evaluate[chromedp.Void](`(f => { f.value = ""; f.dispatchEvent(new Event("input")); })(document.getElementById("filter"))`),
		waitText(`#keys caption`, "3 of 3 keys"))

	dir := screenshotDir(t)
	for _, w := range []int64{1440, 390, 360} {
		b.run(t, fmt.Sprintf("a %d px window", w), chromedp.EmulateViewport(w, 900))
		// Neither the page nor the key list needs scrolling sideways: on a
		// narrow screen each key is a card.
		overflow := get(t, b, "the page's width", chromedp.Evaluate[bool](
			`document.documentElement.scrollWidth > window.innerWidth || (w => w.scrollWidth > w.clientWidth)(document.querySelector(".table-wrap"))`))
		png := get(t, b, "a screenshot", chromedp.FullScreenshot(100))
		name := filepath.Join(dir, fmt.Sprintf("admin-list-%dpx.png", w))
		if err := os.WriteFile(name, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", name)
		if overflow {
			t.Errorf("at %d px the page or the key list is wider than the window", w)
		}
	}
	b.run(t, "back to wide", chromedp.EmulateViewport(1440, 1000))

	b.run(t, "the key's messages, which are its bot's in its stream",
		chromedp.Click(rowOf(id)+buttonNamed("Messages")),
		waitText(`#messages`, "sent with a key made in the page"),
		waitText(`#messages-title`, "Last messages of bot default in general"),
		waitText(`#messages .meta`, "UTC"))

	var rotated string
	b.run(t, "rotate it",
		chromedp.Click(rowOf(id)+buttonNamed("Rotate")),
		chromedp.WaitVisible(buttonNamed("Confirm")),
		chromedp.Click(buttonNamed("Confirm")),
		waitValueChange(byLabel("New key"), key, &rotated),
		waitText(`#status`, "Rotated key "+id))
	addSecret(rotated)
	if r := send(rotated, "new secret"); r.Status != 200 {
		t.Errorf("rotated key: %d %s", r.Status, r.Body)
	}
	if r := send(key, "old secret in its grace"); r.Status != 200 {
		t.Errorf("old key within the grace period: %d %s", r.Status, r.Body)
	}
	b.run(t, "the list says so", waitText(rowOf(id), "old key until"))

	redate := func(value, said string) {
		t.Helper()
		b.run(t, "re-date it: "+value,
			chromedp.Click(rowOf(id)+buttonNamed("Expiry")),
			chromedp.WaitVisible(byLabel("New expiry")),
			chromedp.SendKeys(byLabel("New expiry"), value),
			chromedp.Click(buttonNamed("Confirm")),
			waitText(`#status`, "now expires: "+said))
	}
	redate("never", "never")
	if e := keyEntry(t, admin, id); e["expires_at"] != nil {
		t.Errorf("after 'never' the key expires %v", e["expires_at"])
	}
	redate("2d", "20")
	if e := keyEntry(t, admin, id); e["expires_at"] == nil {
		t.Error("after '2d' the key never expires")
	} else if at, _ := time.Parse(time.RFC3339, e["expires_at"].(string)); time.Until(at) < 47*time.Hour || time.Until(at) > 49*time.Hour {
		t.Errorf("after '2d' the key expires %v", at)
	}

	b.run(t, "revoke it",
		chromedp.Click(rowOf(id)+buttonNamed("Revoke")),
		chromedp.WaitVisible(buttonNamed("Confirm")),
		chromedp.Click(buttonNamed("Confirm")),
		waitText(`#status`, "Revoked key "+id),
		waitText(rowOf(id), "revoked"))
	mark := zulipMark()
	for _, k := range []string{rotated, key} {
		assertError(t, send(k, "after revoking"), 401, "revoked")
	}
	assertNothingReachedZulip(t, mark)

	if other := b.otherOrigins(); len(other) > 0 {
		t.Errorf("the page asked other origins: %v", other)
	}
	b.mu.Lock()
	n := len(b.urls)
	b.mu.Unlock()
	if n < 5 { // the page, its two files and its calls at least
		t.Errorf("only %d requests seen: the listener is not working", n)
	}
}

// The key is kept for the tab only, and a revoked admin key, or the proxy
// going away, is said in words.
func TestAdminPageErrorsInBrowser(t *testing.T) {
	b := newBrowser(t)
	store := newStore(t)
	admin, adminID := adminKey(t, store)
	scoped, _ := scopedKey(t, store, "general")
	start(t, config{store: store})

	b.run(t, "a scoped key is no admin key",
		chromedp.Navigate(base+"/admin/"),
		chromedp.SendKeys(byLabel("Admin key"), scoped),
		chromedp.Click(buttonNamed("Sign in")),
		waitText(`#status`, "scoped key"))

	b.run(t, "sign in",
		chromedp.SetValue(byLabel("Admin key"), admin),
		chromedp.Click(buttonNamed("Sign in")),
		chromedp.WaitVisible(chromedp.CSS(`#keys`)))
	cookies := get(t, b, "cookies", chromedp.Evaluate[string](`document.cookie`))
	stored := get(t, b, "session storage", chromedp.Evaluate[string](`sessionStorage.getItem("zwop-admin-key")`))
	if cookies != "" || stored != admin {
		t.Errorf("cookies %q; sessionStorage holds the key: %v", cookies, stored == admin)
	}
	if loc := get(t, b, "the URL", chromedp.Location()); strings.Contains(loc, admin) {
		t.Error("the key is in the URL")
	}

	request(t, "DELETE", "/clients/"+adminID, nil, withKey(admin))
	b.run(t, "a revoked admin key",
		chromedp.Click(buttonNamed("Refresh")),
		waitText(`#status`, "not accepted"),
		chromedp.WaitVisible(byLabel("Admin key")))

	admin2, _ := adminKey(t, store)
	eventually(t, 10*time.Second, "new admin key picked up", func() bool {
		return request(t, "GET", "/me", nil, withKey(admin2)).Status == 200
	})
	b.run(t, "sign in again",
		chromedp.SetValue(byLabel("Admin key"), admin2),
		chromedp.Click(buttonNamed("Sign in")),
		chromedp.WaitVisible(chromedp.CSS(`#keys`)))
	// The network goes down, as the browser sees it.
	b.run(t, "go offline", chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.Call(ctx, network.EmulateNetworkConditionsByRule, network.EmulateNetworkConditionsByRuleParams{
			MatchedNetworkConditions: []*network.Conditions{{Offline: true, DownloadThroughput: -1, UploadThroughput: -1}},
		})
		if err != nil {
			// A Chromium before the rule-based command (Debian's 148)
			// knows only the one it replaced.
			_, err = chromedp.Call(ctx, emulateNetworkConditions, offlineConditions{Offline: true, DownloadThroughput: -1, UploadThroughput: -1})
		}
		return err
	}))
	b.run(t, "the proxy is gone",
		chromedp.Click(buttonNamed("Refresh")),
		waitText(`#status`, "Cannot reach the proxy"))
}

// /docs renders the description in the browser from embedded files only.
func TestAPIDocsInBrowser(t *testing.T) {
	b := newBrowser(t)
	start(t, config{store: newStore(t)})
	b.run(t, "open /docs",
		chromedp.Navigate(base+"/docs"),
		chromedp.WaitVisible(`//*[contains(normalize-space(.), "Send a message to the key's stream")]`),
		chromedp.WaitVisible(`//*[normalize-space(.)="/clients/{id}/rotate"]`),
		waitText(`//*[@id="ui"]`, "also answers under /api"),
		waitText(`//*[@id="ui"]`, "POST /api/v1/external/{integration}"),
		waitText(`//*[@id="ui"]`, "Apache-2.0"))
	if other := b.otherOrigins(); len(other) > 0 {
		t.Errorf("/docs asked other origins: %v", other)
	}
	if n := get(t, b, "the endpoints listed", chromedp.Evaluate[int](`document.querySelectorAll(".opblock").length`)); n == 0 || n > 30 {
		t.Errorf("%d operations listed: each once, none under /api", n)
	}
	if twice := get(t, b, "operations under /api", chromedp.Evaluate[int](
		`Array.from(document.querySelectorAll(".opblock-summary-path")).filter(e => e.textContent.trim().startsWith("/api/")).length`)); twice != 0 {
		t.Errorf("%d operations listed again under /api", twice)
	}
	png := get(t, b, "a screenshot", chromedp.FullScreenshot(100))
	name := filepath.Join(screenshotDir(t), "docs-1440px.png")
	if err := os.WriteFile(name, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", name)
	b.run(t, "back to the admin page",
		chromedp.Click(`//a[contains(., "the admin page")]`),
		chromedp.WaitVisible(byLabel("Admin key")))
}

// emulateNetworkConditions is CDP's Network.emulateNetworkConditions,
// which cdproto no longer generates since newer Chromium deprecated it.
var emulateNetworkConditions = cdp.Command[offlineConditions, cdp.Empty]{Method: "Network.emulateNetworkConditions"}

type offlineConditions struct {
	Offline            bool    `json:"offline"`
	Latency            float64 `json:"latency"`
	DownloadThroughput float64 `json:"downloadThroughput"`
	UploadThroughput   float64 `json:"uploadThroughput"`
}

// Least privilege on the page: a send-only key made with the checkboxes,
// shown as such in the list, widened with the Permissions dialog.
func TestAdminPagePermissions(t *testing.T) {
	b := newBrowser(t)
	store := newStore(t)
	admin, _ := adminKey(t, store)
	start(t, config{store: store})
	b.signIn(t, admin)

	key, id := createInPage(t, b, "create a send-only key for the topics of beamline 3",
		chromedp.SendKeys(byLabel("Stream"), "general"),
		chromedp.SendKeys(byLabel("Name"), "ci job"),
		chromedp.SendKeys(byLabel("Topics starting with"), "BL3/"),
		chromedp.Click(`//fieldset[@id="create-perms"]//label[normalize-space(.)="upload"]/input`),
		chromedp.Click(`//fieldset[@id="create-perms"]//label[normalize-space(.)="edit"]/input`),
		chromedp.Click(`//fieldset[@id="create-perms"]//label[normalize-space(.)="read"]/input`),
		chromedp.Click(`//fieldset[@id="create-perms"]//label[normalize-space(.)="topics"]/input`))
	if e := keyEntry(t, admin, id); fmt.Sprint(e["permissions"]) != "[send]" || e["topic_prefix"] != "BL3/" {
		t.Fatalf("the page's send-only key: %v %v", e["permissions"], e["topic_prefix"])
	}
	b.run(t, "the list says what it may do, and where", waitText(rowOf(id), "send"), waitText(rowOf(id), "topics BL3/"))
	if got := get(t, b, "its May cell", chromedp.Text(rowOf(id)+`/td[contains(@class,"perms")]`)); got != "send" {
		t.Errorf("May cell %q", got)
	}
	body, ct := form("content", "CI passed")
	if r := request(t, "POST", "/send_message?topic=BL3%2Fci", body, withKey(key), ct); r.Status != 200 {
		t.Errorf("the send-only key sends: %d %s", r.Status, r.Body)
	}
	if r := request(t, "GET", "/get_messages", nil, withKey(key)); r.Status != 403 {
		t.Errorf("the send-only key reads: %d", r.Status)
	}

	b.run(t, "let it edit too",
		chromedp.Click(rowOf(id)+buttonNamed("Permissions")),
		chromedp.WaitVisible(chromedp.CSS(`#confirm-perms`)),
		chromedp.Click(`//fieldset[@id="confirm-perms"]//label[normalize-space(.)="edit"]/input`),
		chromedp.Click(buttonNamed("Confirm")),
		waitText(`#status`, "may now: send, edit"),
		waitText(rowOf(id), "send, edit"))
	if e := keyEntry(t, admin, id); fmt.Sprint(e["permissions"]) != "[send edit]" {
		t.Errorf("after the dialog: %v", e["permissions"])
	}
}

// "Who revoked key X, when, from where" takes one click on X's row;
// the page's own changes, and the command line's, are in the whole
// trail, a page at a time.
func TestAdminPageAudit(t *testing.T) {
	b := newBrowser(t)
	store := newStore(t)
	admin, _ := adminKey(t, store)
	other, otherID := mustKey(t, "add-admin", "--store", store, "--name", "night shift")
	_, victim := scopedKey(t, store, "general", "--name", "beamline 3 monitor")
	// Enough changes for a second page of the whole trail.
	for i := range 100 {
		scopedKey(t, store, "general", "--name", fmt.Sprint("filler ", i))
	}
	start(t, config{store: store})
	if r := request(t, "DELETE", "/clients/"+victim, nil, withKey(other)); r.Status != 200 {
		t.Fatalf("revoke: %d %s", r.Status, r.Body)
	}
	b.signIn(t, admin)

	// One click: the revoked key's history says who, when, from where.
	b.run(t, "the revoked key's history",
		chromedp.Click(rowOf(victim)+buttonNamed("History")),
		waitText(`#audit-title`, "History of key "+victim+" (beamline 3 monitor)"),
		waitText(`#audit li:first-child`, "revoked"),
		waitText(`#audit li:first-child`, "by admin key "+otherID+" (night shift)"),
		waitText(`#audit li:first-child`, "from 127.0.0.1"),
		waitText(`#audit li:last-child`, "created"),
		waitText(`#audit li:last-child`, "by command line, user "+osUser(t)))
	revoked := get(t, b, "the record", chromedp.Text(`#audit li:first-child`))
	if n := get(t, b, "the records", chromedp.Evaluate[int](`document.querySelectorAll("#audit li").length`)); n != 2 {
		t.Errorf("%d records in the key's history, want 2:\n%s", n, revoked)
	}
	if !strings.Contains(revoked, time.Now().Format("2006-01-02")) || !strings.Contains(revoked, "revoked_at: none \u2192") {
		t.Errorf("the revocation's record says: %q", revoked)
	}
	b.run(t, "a phone's window", chromedp.EmulateViewport(390, 900),
		chromedp.Evaluate[chromedp.Void](`document.getElementById("audit-section").scrollIntoView()`))
	if get(t, b, "the page's width", chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth`)) {
		t.Error("at 390 px the key's history is wider than the window")
	}
	png := get(t, b, "a screenshot", chromedp.CaptureScreenshot())
	name := filepath.Join(screenshotDir(t), "admin-history-390px.png")
	if err := os.WriteFile(name, png, 0o644); err != nil {
		t.Fatal(err)
	}
	b.run(t, "a wide window again", chromedp.EmulateViewport(1440, 900))

	// A send-only key made in the page, then allowed to edit: its history
	// says so, as this admin's doing.
	_, id := createInPage(t, b, "create a send-only key",
		chromedp.SendKeys(byLabel("Stream"), "general"),
		chromedp.Click(`//fieldset[@id="create-perms"]//label[normalize-space(.)="upload"]/input`),
		chromedp.Click(`//fieldset[@id="create-perms"]//label[normalize-space(.)="edit"]/input`),
		chromedp.Click(`//fieldset[@id="create-perms"]//label[normalize-space(.)="read"]/input`),
		chromedp.Click(`//fieldset[@id="create-perms"]//label[normalize-space(.)="topics"]/input`))
	b.run(t, "allow it to edit, and read its history",
		chromedp.Click(rowOf(id)+buttonNamed("Permissions")),
		chromedp.WaitVisible(chromedp.CSS(`#confirm-perms`)),
		chromedp.Click(`//fieldset[@id="confirm-perms"]//label[normalize-space(.)="edit"]/input`),
		chromedp.Click(buttonNamed("Confirm")),
		waitText(`#status`, "may now: send, edit"),
		chromedp.Click(rowOf(id)+buttonNamed("History")),
		waitText(`#audit-title`, "History of key "+id),
		waitText(`#audit li:first-child`, "permissions changed"),
		waitText(`#audit li:first-child`, "permissions: send \u2192 send, edit"),
		waitText(`#audit li:last-child`, "permissions: send"))

	// The whole trail: 104 changes before the page's two, a page of 100
	// and then the rest.
	b.run(t, "the whole trail, and its older page",
		chromedp.Click(buttonNamed("Audit trail")),
		waitText(`#audit-title`, "Audit trail"),
		waitText(`#audit-summary`, "100 changes shown"),
		chromedp.Click(buttonNamed("Older")),
		waitText(`#audit-summary`, "106 changes."))
	if n := get(t, b, "the records", chromedp.Evaluate[int](`document.querySelectorAll("#audit li").length`)); n != 106 {
		t.Errorf("%d records in the whole trail, want 106", n)
	}
	if hidden := get(t, b, "the Older button", chromedp.Evaluate[bool](`document.getElementById("audit-more").hidden`)); !hidden {
		t.Error("Older still offered at the end of the trail")
	}
	b.run(t, "since a day: the same", chromedp.SetValue(byLabel("Since"), "1d"), chromedp.Click(buttonNamed("Show")),
		waitText(`#audit-summary`, "100 changes shown"))
	b.run(t, "since tomorrow: none", chromedp.SetValue(byLabel("Since"), time.Now().Add(48*time.Hour).Format("2006-01-02")), chromedp.Click(buttonNamed("Show")),
		waitText(`#audit-summary`, "No changes since"))
	b.run(t, "a bad bound is said so", chromedp.SetValue(byLabel("Since"), "last week"), chromedp.Click(buttonNamed("Show")),
		waitText(`#status`, "since"))
}
