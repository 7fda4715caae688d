// The admin page: talks only to the module's JSON admin API, with the admin
// key the person typed, kept in this tab's sessionStorage. Everything shown
// is set as text, never as HTML.
"use strict";

(function () {
  const storageKey = "zwop-admin-key";
  const base = new URL(document.querySelector('meta[name="api-base"]').content, location.href);
  const $ = (id) => document.getElementById(id);
  let clients = [];

  // --- talking to the API -------------------------------------------------

  class APIError extends Error {
    constructor(status, msg) { super(msg); this.status = status; }
  }

  async function api(method, path, params) {
    const key = sessionStorage.getItem(storageKey) || "";
    const init = { method, headers: { "X-API-key": key }, cache: "no-store", credentials: "omit", redirect: "error" };
    if (params) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(params);
    }
    let resp;
    try {
      resp = await fetch(new URL(path, base), init);
    } catch (e) {
      throw new APIError(0, "Cannot reach the proxy (network down, or the server stopped): " + e.message);
    }
    let body = null;
    try {
      body = await resp.json();
    } catch (e) {
      throw new APIError(resp.status, "The proxy answered " + resp.status + " with something that is not JSON.");
    }
    if (!resp.ok || body.result === "error") {
      throw new APIError(resp.status, body.msg || body.detail || ("error " + resp.status));
    }
    return body;
  }

  // --- status line ---------------------------------------------------------

  function say(text, ok) {
    const s = $("status");
    s.textContent = text;
    s.className = ok ? "ok" : "";
    s.hidden = false;
  }
  function clearStatus() { $("status").hidden = true; $("status").textContent = ""; }
  function failed(what, e) {
    if (e.status === 401) {
      say(what + ": the admin key was not accepted (" + e.message + "). Sign in again.");
      signOut(false);
      return;
    }
    say(what + ": " + e.message);
  }

  // --- signing in ----------------------------------------------------------

  async function signIn(key) {
    sessionStorage.setItem(storageKey, key);
    let me;
    try {
      me = await api("GET", "me");
    } catch (e) {
      sessionStorage.removeItem(storageKey);
      if (e.status === 401) {
        say("Sign-in failed: that admin key was not accepted (" + e.message + ").");
      } else {
        say("Sign-in failed: " + e.message);
      }
      return;
    }
    if (!me.admin) {
      sessionStorage.removeItem(storageKey);
      say("Sign-in failed: that is a scoped key, which posts to one stream; sign in with an admin key.");
      return;
    }
    clearStatus();
    $("signin-section").hidden = true;
    $("app").hidden = false;
    $("sign-out").hidden = false;
    $("admin-key").value = "";
    await Promise.all([loadBots(), loadClients()]);
  }

  function signOut(clear) {
    sessionStorage.removeItem(storageKey);
    $("app").hidden = true;
    $("sign-out").hidden = true;
    $("signin-section").hidden = false;
    hideNewKey();
    if (clear) clearStatus();
    $("admin-key").focus();
  }

  // --- keys ----------------------------------------------------------------

  async function loadBots() {
    let body;
    try {
      body = await api("GET", "bots");
    } catch (e) {
      failed("Listing bots", e);
      return;
    }
    const sel = $("create-bot");
    sel.replaceChildren();
    for (const b of body.bots) {
      const o = document.createElement("option");
      o.value = b.default ? "" : b.name;
      o.textContent = b.name + (b.default ? " (default)" : "") + " · " + b.site;
      sel.append(o);
    }
  }

  async function loadClients() {
    try {
      clients = (await api("GET", "clients")).clients;
    } catch (e) {
      failed("Listing keys", e);
      return;
    }
    render();
  }

  // A time in the browser's zone, saying which: "2026-12-05 10:20 UTC+01:00".
  function when(t) {
    if (!t) return "";
    const d = new Date(t);
    const p = (n) => String(n).padStart(2, "0");
    const off = -d.getTimezoneOffset();
    const zone = off === 0 ? "UTC" : "UTC" + (off > 0 ? "+" : "-") + p(Math.floor(Math.abs(off) / 60)) + ":" + p(Math.abs(off) % 60);
    return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + " " + p(d.getHours()) + ":" + p(d.getMinutes()) + " " + zone;
  }

  function stateOf(c) {
    if (c.revoked_at) return "revoked";
    if (c.expires_at && new Date(c.expires_at) <= new Date()) return "expired";
    return c.admin ? "admin" : "active";
  }

  // The column names, for narrow screens, where each row is a card and
  // each cell says which column it is.
  const columns = Array.from(document.querySelectorAll("#keys thead th"), (th) => th.textContent);

  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.setAttribute("role", "cell");
    td.dataset.label = columns[tr.children.length] || "";
    td.textContent = text == null ? "" : String(text);
    if (cls) td.className = cls;
    tr.append(td);
    return td;
  }

  function button(label, what, onClick) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.setAttribute("aria-label", label + " " + what);
    b.addEventListener("click", onClick);
    return b;
  }

  function render() {
    const filter = $("filter").value.trim().toLowerCase();
    const tbody = document.querySelector("#keys tbody");
    tbody.replaceChildren();
    let shown = 0;
    for (const c of clients) {
      const hay = [c.id, c.name, c.stream, c.topic_prefix, c.bot, c.proposal_no, c.created_by, stateOf(c)].join(" ").toLowerCase();
      if (filter && !hay.includes(filter)) continue;
      shown++;
      const state = stateOf(c);
      const tr = document.createElement("tr");
      tr.setAttribute("role", "row");
      tr.className = state;
      tr.dataset.id = c.id;
      cell(tr, c.id, "id");
      cell(tr, c.name);
      cell(tr, c.admin ? "(admin key)" : c.stream + (c.topic_prefix ? " \u203a topics " + c.topic_prefix + "\u2026" : ""));
      cell(tr, c.bot);
      cell(tr, c.proposal_no || "");
      cell(tr, when(c.created_at));
      cell(tr, c.expires_at ? when(c.expires_at) : "never");
      cell(tr, c.last_used_at ? when(c.last_used_at) : "never");
      const perms = c.permissions || [];
      cell(tr, c.admin ? "" : (perms.length === 5 ? "everything" : perms.join(", ")), "perms");
      let st = state;
      if (c.revoked_at) st += " " + when(c.revoked_at);
      if (c.delivery === "queued") st += " · queued delivery";
      const old = c.old_keys_valid_until || [];
      if (old.length === 1) st += " · old key until " + when(old[0]);
      else if (old.length > 1) st += " · " + old.length + " old keys, until " + old.map(when).join(", ");
      cell(tr, st, "state");
      const act = cell(tr, "", "actions");
      const what = "key " + c.id;
      if (state !== "revoked") {
        act.append(button("Rotate", what, () => rotate(c)), button("Expiry", what, () => changeExpiry(c)));
        if (!c.admin) act.append(button("Permissions", what, () => changePermissions(c)));
        act.append(button("Revoke", what, () => revoke(c)));
      }
      if (!c.admin) act.append(button("Messages", what, () => showMessages(c)), button("Queue", what, () => showQueue(c)));
      act.append(button("History", what, () => showAudit(c, false)));
      tbody.append(tr);
    }
    $("keys-caption").textContent = shown + " of " + clients.length + " keys" + (filter ? " matching \u201c" + filter + "\u201d" : "") + "; revoked and expired ones marked";
  }

  // --- the new key, shown once -------------------------------------------

  function showNewKey(body, what) {
    $("newkey-section").hidden = false;
    $("newkey-what").textContent = what;
    const k = $("new-key");
    k.value = body.key;
    const site = base.href.replace(/\/$/, "");
    const rc = "[api]\nemail=" + (body.id || "key") + "@zulip-proxy.invalid\nkey=" + body.key + "\nsite=" + site + "\n";
    const a = $("zuliprc");
    if (a.dataset.url) URL.revokeObjectURL(a.dataset.url);
    a.dataset.url = URL.createObjectURL(new Blob([rc], { type: "text/plain" }));
    a.href = a.dataset.url;
    k.focus();
    k.select();
  }

  function hideNewKey() {
    $("newkey-section").hidden = true;
    $("new-key").value = "";
    const a = $("zuliprc");
    if (a.dataset.url) URL.revokeObjectURL(a.dataset.url);
    delete a.dataset.url;
    a.href = "#";
  }

  // --- confirmations -------------------------------------------------------

  function confirmDialog(title, text, extra) {
    const d = $("confirm");
    $("confirm-title").textContent = title;
    $("confirm-text").textContent = text;
    $("confirm-grace").hidden = extra !== "grace";
    $("confirm-expiry").hidden = extra !== "expiry";
    $("confirm-perms").hidden = extra !== "perms";
    return new Promise((resolve) => {
      const done = (ok) => {
        $("confirm-form").onsubmit = null;
        $("confirm-cancel").onclick = null;
        d.onclose = null;
        if (d.open) d.close();
        resolve(ok);
      };
      $("confirm-form").onsubmit = (e) => { e.preventDefault(); done(true); };
      $("confirm-cancel").onclick = () => done(false);
      d.onclose = () => done(false);
      d.showModal();
      (extra === "grace" ? $("grace") : extra === "expiry" ? $("new-expiry") : extra === "perms" ? document.querySelector("#confirm-perms input") : $("confirm-ok")).focus();
    });
  }

  async function revoke(c) {
    if (!await confirmDialog("Revoke key " + c.id + "?", "Whatever uses it (" + (c.name || c.stream || "this key") + ") stops working at once. This cannot be undone.")) return;
    try {
      await api("DELETE", "clients/" + encodeURIComponent(c.id));
    } catch (e) {
      failed("Revoking " + c.id, e);
      await loadClients();
      return;
    }
    // The list first, then the words: whoever reads them sees the new list.
    await loadClients();
    say("Revoked key " + c.id + ".", true);
  }

  async function rotate(c) {
    if (!await confirmDialog("Rotate key " + c.id + "?", "It gets a new secret; the old one keeps working for the time below (0: not at all), then stops.", "grace")) return;
    let body;
    try {
      body = await api("POST", "clients/" + encodeURIComponent(c.id) + "/rotate", { grace: $("grace").value.trim() || "24h" });
    } catch (e) {
      failed("Rotating " + c.id, e);
      await loadClients();
      return;
    }
    showNewKey(body, "The new secret of key " + c.id + (c.name ? " (" + c.name + ")" : "") + ".");
    await loadClients();
    say("Rotated key " + c.id + ".", true);
  }

  async function changePermissions(c) {
    const boxes = document.querySelectorAll('#confirm-perms input[name="set-perm"]');
    for (const b of boxes) b.checked = (c.permissions || []).includes(b.value);
    if (!await confirmDialog("What key " + c.id + " may do", "A script needs only what it does: a CI job that posts results, send.", "perms")) return;
    const perms = Array.from(boxes).filter((b) => b.checked).map((b) => b.value);
    let body;
    try {
      body = await api("PATCH", "clients/" + encodeURIComponent(c.id), { permissions: perms.join(",") });
    } catch (e) {
      failed("Changing the permissions of " + c.id, e);
      await loadClients();
      return;
    }
    await loadClients();
    say("Key " + c.id + " may now: " + body.client.permissions.join(", ") + ".", true);
  }

  async function changeExpiry(c) {
    $("new-expiry").value = "";
    if (!await confirmDialog("Change when key " + c.id + " expires", "A duration from now (30d, 12h), or never.", "expiry")) return;
    const v = $("new-expiry").value.trim();
    const params = (v === "" || v.toLowerCase() === "never") ? { expires_at: null } : { expires_in: v };
    let body;
    try {
      body = await api("PATCH", "clients/" + encodeURIComponent(c.id), params);
    } catch (e) {
      failed("Changing the expiry of " + c.id, e);
      await loadClients();
      return;
    }
    await loadClients();
    say("Key " + c.id + " now expires: " + (body.client.expires_at ? when(body.client.expires_at) : "never") + ".", true);
  }

  // A key's sends waiting in the proxy's queue, and those that failed.
  async function showQueue(c) {
    const list = $("queue");
    list.replaceChildren();
    $("queue-title").textContent = "Queue of key " + c.id;
    $("queue-summary").textContent = "";
    $("queue-section").hidden = false;
    let body;
    try {
      body = await api("GET", "clients/" + encodeURIComponent(c.id) + "/queue");
    } catch (e) {
      failed("Reading the queue of " + c.id, e);
      return;
    }
    const queued = body.sends.filter((s) => s.state === "queued").length;
    const failedN = body.sends.length - queued;
    $("queue-summary").textContent = queued + " send" + (queued === 1 ? "" : "s") + " waiting, " + failedN + " failed" +
      (c.delivery === "queued" ? "." : ". This key's sends are queued only when they ask (Prefer: respond-async).");
    for (const s of body.sends) {
      const li = document.createElement("li");
      li.dataset.id = s.queue_id;
      const meta = document.createElement("div");
      meta.className = "meta";
      let text = s.state + " · queued " + when(s.queued_at) + " · " + s.attempts + " attempt" + (s.attempts === 1 ? "" : "s");
      if (s.state === "queued" && s.next_attempt_at) text += " · next " + when(s.next_attempt_at);
      if (s.error) text += " · " + s.error.code + ": " + s.error.msg;
      meta.textContent = text;
      const id = document.createElement("div");
      id.className = "content";
      id.textContent = s.queue_id;
      li.append(meta, id, button(s.state === "queued" ? "Cancel" : "Forget", "send " + s.queue_id, () => cancelSend(c, s)));
      list.append(li);
    }
    $("queue-section").scrollIntoView();
  }

  async function cancelSend(c, s) {
    const verb = s.state === "queued" ? "Cancel" : "Forget";
    if (!await confirmDialog(verb + " send " + s.queue_id + "?", s.state === "queued" ? "It is dropped and never reaches Zulip." : "The failed send leaves the key's list.")) return;
    try {
      await api("DELETE", "queue/" + encodeURIComponent(s.queue_id));
    } catch (e) {
      failed((s.state === "queued" ? "Cancelling " : "Forgetting ") + s.queue_id, e);
      await showQueue(c);
      return;
    }
    await showQueue(c);
    say((s.state === "queued" ? "Cancelled" : "Forgot") + " send " + s.queue_id + ".", true);
  }

  // --- the audit trail -----------------------------------------------------

  // The trail shown: of one key (auditOf) or of all (null), and the
  // record before which the next page starts.
  let auditOf = null;
  let auditBefore = 0;

  const actions = {
    create: "created", import: "imported from the legacy file", rotate: "rotated", revoke: "revoked",
    expiry: "expiry changed", permissions: "permissions changed", topic_scope: "topics changed", update: "changed",
  };

  function auditValue(field, v) {
    if (v === null || v === undefined) return "none";
    if (Array.isArray(v)) return v.length ? v.join(", ") : "nothing";
    if (typeof v === "string" && (field.endsWith("_at") || field.endsWith("_until"))) return when(v);
    return String(v);
  }

  function whoOf(r) {
    if (r.by.startsWith("cli:")) return "command line, user " + r.by.slice(4);
    return "admin key " + r.by + (r.by_name ? " (" + r.by_name + ")" : "");
  }

  async function showAudit(c, more) {
    const list = $("audit");
    if (!more) {
      auditOf = c;
      auditBefore = 0;
      list.replaceChildren();
      $("audit-title").textContent = c ? "History of key " + c.id + (c.name ? " (" + c.name + ")" : "") : "Audit trail";
      $("audit-summary").textContent = "";
    }
    $("audit-section").hidden = false;
    const q = new URLSearchParams();
    if (auditOf) q.set("key_id", auditOf.id);
    const since = $("audit-since").value.trim();
    if (since) q.set("since", since);
    if (auditBefore) q.set("before", String(auditBefore));
    let body;
    try {
      body = await api("GET", "audit?" + q.toString());
    } catch (e) {
      failed("Reading the audit trail", e);
      return;
    }
    for (const r of body.records) {
      const li = document.createElement("li");
      li.dataset.seq = r.seq;
      const what = document.createElement("div");
      what.className = "what";
      what.textContent = "Key " + r.key_id + (r.key_name ? " (" + r.key_name + ")" : "") + " " + (actions[r.action] || r.action);
      const meta = document.createElement("div");
      meta.className = "meta";
      meta.textContent = when(r.at) + " · by " + whoOf(r) + (r.from ? " · from " + r.from : "");
      const changes = document.createElement("div");
      changes.className = "content";
      changes.textContent = r.changes.map((ch) => r.action === "create" || r.action === "import"
        ? ch.field + ": " + auditValue(ch.field, ch.after)
        : ch.field + ": " + auditValue(ch.field, ch.before) + " \u2192 " + auditValue(ch.field, ch.after)).join("\n");
      li.append(what, meta, changes);
      list.append(li);
    }
    auditBefore = body.next_before || 0;
    $("audit-more").hidden = !body.next_before;
    const n = list.children.length;
    $("audit-summary").textContent = n === 0 ? "No changes" + (since ? " since " + since : "") + "."
      : n + " change" + (n === 1 ? "" : "s") + (body.next_before ? " shown; older ones follow with \u201cOlder\u201d." : ".");
    if (!more) $("audit-section").scrollIntoView();
  }

  async function showMessages(c) {
    const list = $("messages");
    list.replaceChildren();
    // Zulip knows the bot, not the key: every key of this bot and stream
    // shares these messages.
    $("messages-title").textContent = "Last messages of bot " + c.bot + " in " + c.stream;
    $("messages-note").textContent = "What bot " + c.bot + " posted in " + c.stream + ", through any of its keys for that stream (key " + c.id + " among them).";
    $("messages-section").hidden = false;
    let body;
    try {
      body = await api("GET", "clients/" + encodeURIComponent(c.id) + "/messages");
    } catch (e) {
      failed("Reading the messages of " + c.id, e);
      return;
    }
    const msgs = body.messages.slice().reverse();
    if (msgs.length === 0) {
      const li = document.createElement("li");
      li.textContent = "Bot " + c.bot + " has posted nothing in " + c.stream + ".";
      list.append(li);
    }
    for (const m of msgs) {
      const li = document.createElement("li");
      const meta = document.createElement("div");
      meta.className = "meta";
      meta.textContent = when(m.timestamp * 1000) + " · " + m.subject;
      const text = document.createElement("div");
      text.className = "content";
      text.textContent = m.content;
      li.append(meta, text);
      list.append(li);
    }
    $("messages-section").scrollIntoView();
  }

  // --- wiring --------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("signin-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const k = $("admin-key").value.trim();
      if (k) signIn(k);
    });
    $("sign-out").addEventListener("click", () => signOut(true));
    $("refresh").addEventListener("click", loadClients);
    $("filter").addEventListener("input", render);
    $("newkey-done").addEventListener("click", () => { hideNewKey(); clearStatus(); });
    $("messages-close").addEventListener("click", () => { $("messages-section").hidden = true; });
    $("queue-close").addEventListener("click", () => { $("queue-section").hidden = true; });
    $("show-audit").addEventListener("click", () => showAudit(null, false));
    $("audit-form").addEventListener("submit", (e) => { e.preventDefault(); showAudit(auditOf, false); });
    $("audit-more").addEventListener("click", () => showAudit(auditOf, true));
    $("audit-close").addEventListener("click", () => { $("audit-section").hidden = true; });
    $("copy-key").addEventListener("click", async () => {
      const k = $("new-key");
      try {
        await navigator.clipboard.writeText(k.value);
        say("Key copied.", true);
      } catch (e) {
        k.select();
        say("Copying was refused by the browser: the key is selected, press Ctrl+C.");
      }
    });
    $("create-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const params = {};
      for (const el of e.target.elements) {
        if (el.name && el.name !== "perm" && el.value.trim() !== "") params[el.name] = el.value.trim();
      }
      const boxes = Array.from(e.target.querySelectorAll('input[name="perm"]'));
      const perms = boxes.filter((b) => b.checked).map((b) => b.value);
      if (perms.length !== boxes.length) params.permissions = perms.join(",");
      let body;
      try {
        body = await api("POST", "create_client", params);
      } catch (err) {
        failed("Creating the key", err);
        return;
      }
      showNewKey(body, "Key " + body.id + " for stream " + body.stream + (body.name ? " (" + body.name + ")" : "") + ".");
      e.target.reset();
      await loadClients();
      say("Created key " + body.id + ".", true);
    });
    const saved = sessionStorage.getItem(storageKey);
    if (saved) signIn(saved); else $("admin-key").focus();
  });
})();
