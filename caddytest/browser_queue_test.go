package caddytest

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Staff make a key with queued delivery in the page, see its sends wait
// in the queue while Zulip is down, and cancel one.
func TestAdminPageQueueInBrowser(t *testing.T) {
	b := newBrowser(t)
	store := newStore(t)
	admin, _ := adminKey(t, store)
	start(t, config{store: store})

	b.signIn(t, admin)
	b.run(t, "the key list", waitText(`#keys caption`, "of 1 keys"))
	key, id := createInPage(t, b, "create a key with queued delivery",
		chromedp.SendKeys(byLabel("Stream"), "general"),
		chromedp.SetValue(byLabel("Delivery"), "queued"))
	if e := keyEntry(t, admin, id); e["delivery"] != "queued" {
		t.Fatalf("the key made in the page: %v", e)
	}
	b.run(t, "the list says so", waitText(rowOf(id), "queued delivery"))

	zulipDown(t)
	first := assertQueued(t, sendTo(t, key, "page", "waits one"), "", false)
	second := assertQueued(t, sendTo(t, key, "page", "waits two"), "", false)
	b.run(t, "the key's queue",
		chromedp.Click(rowOf(id)+buttonNamed("Queue")),
		waitText(`#queue-summary`, "2 sends waiting, 0 failed"),
		waitText(`#queue`, first),
		waitText(`#queue`, second))
	b.run(t, "cancel the second",
		chromedp.Click(`//li[@data-id="`+second+`"]`+buttonNamed("Cancel")),
		chromedp.WaitVisible(buttonNamed("Confirm")),
		chromedp.Click(buttonNamed("Confirm")),
		waitText(`#status`, "Cancelled send "+second),
		waitText(`#queue-summary`, "1 send waiting"))
	if st, _ := queuedSend(t, key, second); st != 404 {
		t.Errorf("the cancelled send: %d", st)
	}
	if text := get(t, b, "the queue", chromedp.Text(chromedp.CSS(`#queue`))); strings.Contains(text, second) {
		t.Errorf("the cancelled send is still listed: %s", text)
	}
	zulipUp()
	eventually(t, time.Minute, "delivery", func() bool { _, s := queuedSend(t, key, first); return s["state"] == "delivered" })
	if len(messagesWith("waits two")) != 0 {
		t.Error("the cancelled send reached Zulip")
	}
}
