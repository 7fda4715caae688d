package caddytest

import (
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zwop/caddy-zulip-proxy/zulip/emulator"
)

// botSubscribed says whether the proxy's bot is subscribed to stream.
func botSubscribed(t *testing.T, stream string) bool {
	t.Helper()
	bot, ok := env.emu.UserByEmail(emulator.DemoBotEmail)
	if !ok {
		t.Fatal("no demo bot")
	}
	s, ok := env.emu.StreamByName(stream)
	return ok && slices.Contains(s.Subscribers, bot.ID)
}

func TestRotateOverHTTP(t *testing.T) {
	store := newStore(t)
	admin, _ := adminKey(t, store)
	old, id := scopedKey(t, store, "general")
	start(t, config{store: store})
	send := func(key string) reply {
		body, ct := form("content", "rotation")
		return request(t, "POST", "/send_message?topic=rotate", body, withKey(key), ct)
	}

	r := request(t, "POST", "/clients/"+id+"/rotate?grace=1h", nil, withKey(admin))
	m := r.JSON(t)
	key, _ := m["key"].(string)
	addSecret(key)
	if r.Status != 200 || !strings.HasPrefix(key, "zwop_") || m["id"] != id || m["stream"] != "general" || m["rotated_at"] == nil || m["previous_key_valid_until"] == nil {
		t.Fatalf("rotate: %d %s", r.Status, r.Body)
	}
	for name, k := range map[string]string{"new": key, "old, in its grace": old} {
		if r := send(k); r.Status != 200 {
			t.Errorf("%s key: %d %s", name, r.Status, r.Body)
		}
	}
	// In its grace the old secret is the same key: its one stream, its
	// own messages, no admin call.
	mark := zulipMark()
	body, ct := form("content", "elsewhere", "to", "other")
	assertError(t, request(t, "POST", "/send_message?topic=rotate", body, withKey(old), ct), 400, "'to'")
	assertError(t, request(t, "GET", "/clients", nil, withKey(old)), 403, "admin key")
	assertError(t, request(t, "POST", "/clients/"+id+"/rotate", nil, withKey(old)), 403, "admin key")
	assertNothingReachedZulip(t, mark)
	me := request(t, "GET", "/me", nil, withKey(old)).JSON(t)
	if me["key_valid_until"] == nil || !strings.Contains(me["msg"].(string), "rotated") {
		t.Errorf("/me with the old key does not say it was rotated: %v", me)
	}
	if me := request(t, "GET", "/me", nil, withKey(key)).JSON(t); me["key_valid_until"] != nil || me["previous_key_valid_until"] == nil {
		t.Errorf("/me with the new key: %v", me)
	}

	// A rotation with a shorter grace ends every older secret by then
	// too, and the listing shows each secret still working.
	r = request(t, "POST", "/clients/"+id+"/rotate?grace=10m", nil, withKey(admin))
	third, _ := r.JSON(t)["key"].(string)
	addSecret(third)
	if r.Status != 200 {
		t.Fatalf("rotate grace 10m: %d %s", r.Status, r.Body)
	}
	oldUntil := listedOldKeys(t, admin, id)
	if len(oldUntil) != 2 || time.Until(oldUntil[0]) > 10*time.Minute || time.Until(oldUntil[1]) > 10*time.Minute {
		t.Errorf("after rotating with 1h, then 10m: old secrets valid until %v, want two, both within 10 minutes", oldUntil)
	}

	// Grace 0, the emergency (an old secret leaked): every replaced
	// secret stops at once, with words that say why, and none is listed.
	r = request(t, "POST", "/clients/"+id+"/rotate", strings.NewReader(`{"grace":"0"}`), withKey(admin), "Content-Type: application/json")
	newest, _ := r.JSON(t)["key"].(string)
	addSecret(newest)
	if r.Status != 200 {
		t.Fatalf("rotate grace 0: %d %s", r.Status, r.Body)
	}
	mark = zulipMark()
	for name, k := range map[string]string{"first": old, "second": key, "third": third} {
		if r := send(k); r.Status != 401 || !strings.Contains(r.Body, "rotated") {
			t.Errorf("the %s secret after a rotation with grace 0: %d %s", name, r.Status, r.Body)
		}
	}
	assertNothingReachedZulip(t, mark)
	if r := send(newest); r.Status != 200 {
		t.Errorf("newest key: %d %s", r.Status, r.Body)
	}
	if oldUntil := listedOldKeys(t, admin, id); len(oldUntil) != 0 {
		t.Errorf("after grace 0, /clients lists old secrets valid until %v", oldUntil)
	}

	t.Run("errors", func(t *testing.T) {
		assertError(t, request(t, "POST", "/clients/nope/rotate", nil, withKey(admin)), 404, "no client")
		assertError(t, request(t, "POST", "/clients/"+id+"/rotate?grace=-1h", nil, withKey(admin)), 400, "grace")
		assertError(t, request(t, "POST", "/clients/"+id+"/rotate?grce=1h", nil, withKey(admin)), 400, "unknown parameter")
		mark := zulipMark()
		assertError(t, request(t, "POST", "/clients/"+id+"/rotate", nil, withKey(newest)), 403, "admin key")
		assertNothingReachedZulip(t, mark)
		if r := send(newest); r.Status != 200 {
			t.Errorf("a scoped key's refused rotation changed it: %d %s", r.Status, r.Body)
		}
		request(t, "DELETE", "/clients/"+id, nil, withKey(admin))
		assertError(t, request(t, "POST", "/clients/"+id+"/rotate", nil, withKey(admin)), 409, "revoked")
	})
}

// listedOldKeys is what GET /clients says of key id's replaced secrets
// that still work: until when each does.
func listedOldKeys(t *testing.T, admin, id string) []time.Time {
	t.Helper()
	r := request(t, "GET", "/clients", nil, withKey(admin))
	clients, _ := r.JSON(t)["clients"].([]any)
	for _, c := range clients {
		m := c.(map[string]any)
		if m["id"] != id {
			continue
		}
		var out []time.Time
		list, _ := m["old_keys_valid_until"].([]any)
		for _, v := range list {
			tm, err := time.Parse(time.RFC3339, v.(string))
			if err != nil {
				t.Fatalf("old_keys_valid_until: %v", err)
			}
			out = append(out, tm)
		}
		if prev, _ := m["previous_key_valid_until"].(string); (prev != "") != (len(out) > 0) {
			t.Errorf("previous_key_valid_until %q beside old_keys_valid_until %v", prev, out)
		}
		return out
	}
	t.Fatalf("no client %s in /clients", id)
	return nil
}

func TestExpiryOverHTTP(t *testing.T) {
	store := newStore(t)
	admin, _ := adminKey(t, store)
	key, id := scopedKey(t, store, "general", "--expires", "1h")
	start(t, config{store: store})

	r := request(t, "PATCH", "/clients/"+id+"?expires_in=30d", nil, withKey(admin))
	c, _ := r.JSON(t)["client"].(map[string]any)
	exp, _ := time.Parse(time.RFC3339, c["expires_at"].(string))
	if r.Status != 200 || time.Until(exp) < 29*24*time.Hour {
		t.Fatalf("expires_in=30d: %d %s", r.Status, r.Body)
	}
	r = request(t, "PATCH", "/clients/"+id, strings.NewReader(`{"expires_at":null}`), withKey(admin), "Content-Type: application/json")
	if c, _ := r.JSON(t)["client"].(map[string]any); r.Status != 200 || c["expires_at"] != nil {
		t.Fatalf("expires_at null: %d %s", r.Status, r.Body)
	}
	// An empty expiry is a mistake (a script's date variable came out
	// empty), never "never": only JSON null removes an expiry.
	if r := request(t, "PATCH", "/clients/"+id+"?expires_in=1h", nil, withKey(admin)); r.Status != 200 {
		t.Fatalf("expires_in=1h: %d %s", r.Status, r.Body)
	}
	for name, req := range map[string][3]string{
		"empty query":      {"?expires_at=", "", ""},
		"blank query":      {"?expires_at=%20%20", "", ""},
		"the word null":    {"?expires_at=null", "", ""},
		"empty form":       {"", "expires_at=", "application/x-www-form-urlencoded"},
		"empty JSON":       {"", `{"expires_at":""}`, "application/json"},
		"blank JSON":       {"", `{"expires_at":"  "}`, "application/json"},
		"empty expires_in": {"?expires_in=", "", ""},
	} {
		t.Run(name, func(t *testing.T) {
			var body io.Reader
			hdrs := []string{withKey(admin)}
			if req[1] != "" {
				body = strings.NewReader(req[1])
				hdrs = append(hdrs, "Content-Type: "+req[2])
			}
			assertError(t, request(t, "PATCH", "/clients/"+id+req[0], body, hdrs...), 400, "expires_")
		})
	}
	if exp := clientField(t, admin, id, "expires_at"); exp == nil {
		t.Error("a refused empty expiry removed the key's expiry")
	}

	past := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	if r := request(t, "PATCH", "/clients/"+id+"?expires_at="+past, nil, withKey(admin)); r.Status != 200 {
		t.Fatalf("expires_at in the past: %d %s", r.Status, r.Body)
	}
	mark := zulipMark()
	body, ct := form("content", "expired")
	assertError(t, request(t, "POST", "/send_message?topic=x", body, withKey(key), ct), 401, "expired")
	assertNothingReachedZulip(t, mark)

	assertError(t, request(t, "PATCH", "/clients/"+id, nil, withKey(admin)), 400, "expires_in")
	assertError(t, request(t, "PATCH", "/clients/"+id+"?expires_in=1h&expires_at=2030-01-01T00:00:00Z", nil, withKey(admin)), 400, "not both")
	assertError(t, request(t, "PATCH", "/clients/"+id+"?expires_at=tomorrow", nil, withKey(admin)), 400, "expires_at")
	assertError(t, request(t, "PATCH", "/clients/nope?expires_in=1h", nil, withKey(admin)), 404, "no client")
	assertError(t, request(t, "PATCH", "/clients/"+id+"?expires_in=1h", nil, withKey(key)), 401, "expired")
}

// clientField is one field of key id's entry as GET /clients lists it.
func clientField(t *testing.T, admin, id, field string) any {
	t.Helper()
	clients, _ := request(t, "GET", "/clients", nil, withKey(admin)).JSON(t)["clients"].([]any)
	for _, c := range clients {
		if m := c.(map[string]any); m["id"] == id {
			return m[field]
		}
	}
	t.Fatalf("no client %s in /clients", id)
	return nil
}

func TestClientMessagesOverHTTP(t *testing.T) {
	store := newStore(t)
	admin, adminID := adminKey(t, store)
	key, id := scopedKey(t, store, "general")
	start(t, config{store: store})
	body, ct := form("content", "what the admin sees **raw**")
	if r := request(t, "POST", "/send_message?topic=admin+view", body, withKey(key), ct); r.Status != 200 {
		t.Fatal(r.Body)
	}
	r := request(t, "GET", "/clients/"+id+"/messages?num_before=5", nil, withKey(admin))
	if r.Status != 200 || !strings.Contains(r.Body, "what the admin sees **raw**") {
		t.Fatalf("messages: %d %s", r.Status, r.Body)
	}
	msgs, _ := r.JSON(t)["messages"].([]any)
	if len(msgs) == 0 || len(msgs) > 5 {
		t.Errorf("%d messages for num_before=5", len(msgs))
	}
	assertError(t, request(t, "GET", "/clients/"+id+"/messages?num_before=500", nil, withKey(admin)), 400, "num_before")
	assertError(t, request(t, "GET", "/clients/"+adminID+"/messages", nil, withKey(admin)), 400, "admin key")
	assertError(t, request(t, "GET", "/clients/nope/messages", nil, withKey(admin)), 404, "no client")
	assertError(t, request(t, "GET", "/clients/"+id+"/messages", nil, withKey(key)), 403, "admin key")
}

func TestCreateClientSubscribesBot(t *testing.T) {
	store := newStore(t)
	admin, _ := adminKey(t, store)
	stream := "joined-at-creation"
	if _, err := env.emu.AddStream(stream); err != nil {
		t.Fatal(err)
	}
	start(t, config{store: store})
	if botSubscribed(t, stream) {
		t.Fatal("bot subscribed before any key")
	}
	r := request(t, "POST", "/create_client?stream="+stream, nil, withKey(admin))
	if r.Status != 200 {
		t.Fatalf("create_client: %d %s", r.Status, r.Body)
	}
	addSecret(r.JSON(t)["key"].(string))
	if !botSubscribed(t, stream) {
		t.Error("creating a key did not subscribe its bot to the stream")
	}
	// Again: already subscribed is fine.
	if r := request(t, "POST", "/create_client?stream="+stream, nil, withKey(admin)); r.Status != 200 {
		t.Errorf("second key: %d %s", r.Status, r.Body)
	} else {
		addSecret(r.JSON(t)["key"].(string))
	}

	// Without create_streams an unknown stream is refused, and made by
	// nobody.
	r = request(t, "POST", "/create_client?stream=made-by-a-typo", nil, withKey(admin))
	if r.Status != 400 || !strings.Contains(r.Body, "made-by-a-typo") {
		t.Errorf("unknown stream: %d %s", r.Status, r.Body)
	}
	if _, ok := env.emu.StreamByName("made-by-a-typo"); ok {
		t.Error("an unknown stream was created without create_streams")
	}
	// A private stream the bot cannot see is refused too.
	if _, err := env.emu.AddPrivateStream("staff-only"); err != nil {
		t.Fatal(err)
	}
	if r := request(t, "POST", "/create_client?stream=staff-only", nil, withKey(admin)); r.Status != 400 {
		t.Errorf("invisible private stream: %d %s", r.Status, r.Body)
	}

	start(t, config{store: store, extra: "create_streams"})
	r = request(t, "POST", "/create_client?stream=made-on-purpose", nil, withKey(admin))
	if r.Status != 200 {
		t.Fatalf("create_streams: %d %s", r.Status, r.Body)
	}
	newKey := r.JSON(t)["key"].(string)
	addSecret(newKey)
	if !botSubscribed(t, "made-on-purpose") {
		t.Error("create_streams: the stream was not made with the bot in it")
	}
	body, ct := form("content", "first message in a new stream")
	if r := request(t, "POST", "/send_message?topic=new", body, withKey(newKey), ct); r.Status != 200 {
		t.Errorf("send to the new stream: %d %s", r.Status, r.Body)
	}

	// A Zulip whose realm lets the bot create no stream says so, and no
	// key is made.
	env.emu.SetStreamCreation(false)
	t.Cleanup(func() { env.emu.SetStreamCreation(true) })
	before := len(request(t, "GET", "/clients", nil, withKey(admin)).JSON(t)["clients"].([]any))
	r = request(t, "POST", "/create_client?stream=not-allowed-here", nil, withKey(admin))
	if r.Status != 400 || !strings.Contains(r.Body, "Insufficient permission") {
		t.Errorf("stream creation refused by Zulip: %d %s", r.Status, r.Body)
	}
	if after := len(request(t, "GET", "/clients", nil, withKey(admin)).JSON(t)["clients"].([]any)); after != before {
		t.Errorf("a key was made although its stream could not be: %d keys, then %d", before, after)
	}
}
