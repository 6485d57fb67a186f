// The datastores page's behaviour. The server renders every figure and sentence (templates/, with
// formatting.py); this script sends the actions, then fetches the page again and swaps in the
// parts that changed, by id. It formats nothing: a second renderer would drift from the first.
"use strict";

(function () {
  const TOKEN_KEY = "pve-datastore-exporter.api-token"; // sessionStorage only: never a cookie or the URL
  const TIMEOUT_MS = 60000;
  const UPDATE_MS = 15000; // polls the status section: the age stays current, a change brings the page
  const PARTS = ["status", "datastore-count", "datastore-rows", "defaults-form", "hdd-select", "ssd-select"];

  let tokenRequired = false;
  let urls = { page: location.pathname, status: `${location.pathname}?part=status`, refresh: "/api/datastores/refresh",
    default: "/api/datastores/default" };
  let texts = {}; // the page's sentences, from templates/_page_data.html
  let pending = false; // a save or refresh is on its way
  let generation = 0; // the latest page fetch: an older one answering late is dropped
  let polling = false; // a periodic fetch is on its way
  let stale = null; // the message shown while polls fail, taken away once one succeeds
  let selectsBehind = false; // the selects were left alone while the user was in them: fetch again
  const shown = {}; // each part's HTML as the server last sent it: an unchanged part is left alone
  const tags = {}; // each URL's ETag as last fetched: the server answers 304 (no body) while it holds
  let lastDefaults = null; // the defaults form of the last page fetched, for a 304 that finds the selects behind

  function $(id) { return document.getElementById(id); }

  function text(key, values) {
    const template = Object.prototype.hasOwnProperty.call(texts, key) ? texts[key] : key;
    return template.replace(/\{(\w+)\}/g, (whole, name) =>
      (values && Object.prototype.hasOwnProperty.call(values, name) ? String(values[name]) : whole));
  }

  function say(message, kind) {
    const box = $("messages");
    box.className = `messages messages-${kind || "info"}`;
    box.textContent = message;
  }

  async function fetchWithin(path, options) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
    // In the page's language, which the switch may have made other than the browser's: the parts
    // fetched again and the API's messages come back in it. Same-origin credentials: with basic auth
    // (the web config) the browser's login must travel with every poll and action.
    const headers = { ...options.headers, "Accept-Language": document.documentElement.lang };
    try {
      return await fetch(path, { ...options, headers, cache: "no-store", credentials: "same-origin", signal: controller.signal });
    } finally {
      clearTimeout(timer);
    }
  }

  function why(error) {
    return error.name === "AbortError" ? text("timeout", { seconds: TIMEOUT_MS / 1000 }) : error.message;
  }

  // -- the server's rendering, swapped in -----------------------------------------------

  async function fetchParts(url, parts) {
    try {
      const headers = { Accept: "text/html", ...(tags[url] ? { "If-None-Match": tags[url] } : {}) };
      const response = await fetchWithin(url, { headers });
      if (response.status === 304 && tags[url]) return { ok: true, unchanged: true };
      if (!response.ok) return { ok: false, reason: text("page_failed", { status: response.status }) };
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      // A proxy's login or error page, say: nothing of it is swapped in.
      if (!parts.every((id) => fresh.getElementById(id))) return { ok: false, reason: text("page_unknown") };
      tags[url] = response.headers.get("ETag"); // kept only with parts to show for it
      return { ok: true, fresh };
    } catch (e) {
      return { ok: false, reason: why(e) };
    }
  }

  function setOpen(toggle, open, doc) {
    toggle.setAttribute("aria-expanded", String(open));
    doc.getElementById(toggle.getAttribute("aria-controls")).hidden = !open;
  }

  function toggleFor(rows, controls) {
    return Array.from(rows.querySelectorAll("button.toggle")).find((b) => b.getAttribute("aria-controls") === controls);
  }

  function swapRows(fresh) {
    const rows = $("datastore-rows");
    const next = fresh.getElementById("datastore-rows");
    const open = Array.from(rows.querySelectorAll("button.toggle[aria-expanded=true]"), (b) => b.getAttribute("aria-controls"));
    const focused = rows.contains(document.activeElement) && document.activeElement.getAttribute("aria-controls");
    for (const controls of open) {
      const toggle = toggleFor(next, controls);
      if (toggle) setOpen(toggle, true, fresh);
    }
    rows.replaceWith(next);
    const again = focused && toggleFor(next, focused);
    if (again) again.focus(); // a keyboard user keeps their place in the table
  }

  function revertSelects() {
    // The selects show the defaults the server holds, never a choice it refused.
    const form = $("defaults-form");
    $("hdd-select").value = form.dataset.hdd;
    $("ssd-select").value = form.dataset.ssd;
  }

  function editing() {
    // A select the user is in, or has changed without saving, is theirs until they save.
    const form = $("defaults-form");
    return (document.activeElement instanceof HTMLSelectElement && form.contains(document.activeElement)) ||
      $("hdd-select").value !== form.dataset.hdd || $("ssd-select").value !== form.dataset.ssd;
  }

  function swapDefaults(fresh) {
    const form = $("defaults-form");
    const next = fresh.getElementById("defaults-form");
    form.dataset.hdd = next.dataset.hdd;
    form.dataset.ssd = next.dataset.ssd;
    for (const id of ["hdd-select", "ssd-select"]) $(id).replaceChildren(...fresh.getElementById(id).children);
  }

  function changed(fresh, id) {
    const html = fresh.getElementById(id).outerHTML;
    if (shown[id] === html) return false;
    shown[id] = html;
    return true;
  }

  async function update(afterAction) {
    const mine = ++generation;
    const got = await fetchParts(urls.page, PARTS);
    // A newer fetch, or an action started meanwhile, brings a newer page: this one is stale.
    if (!got.ok || mine !== generation || (!afterAction && pending)) return got;
    // 304: the page is the one last fetched, whose parts are in place but perhaps its defaults.
    const fresh = got.unchanged ? lastDefaults : got.fresh;
    if (!got.unchanged) {
      if (changed(fresh, "status")) $("status").replaceWith(fresh.getElementById("status"));
      $("datastore-count").textContent = fresh.getElementById("datastore-count").textContent;
      if (changed(fresh, "datastore-rows")) swapRows(fresh);
      lastDefaults = defaultsOf(fresh);
    }
    selectsBehind = !afterAction && editing();
    if (!selectsBehind) catchUpDefaults(fresh);
    return got;
  }

  function catchUpDefaults(fresh) {
    if (changed(fresh, "defaults-form")) swapDefaults(fresh);
    revertSelects();
  }

  function defaultsOf(fresh) {
    // The defaults form alone, in a document of its own: what swapDefaults reads, without the 10,000 rows.
    const doc = document.implementation.createHTMLDocument("");
    doc.body.append(doc.importNode(fresh.getElementById("defaults-form"), true));
    return doc;
  }

  function reachable(got) {
    // A failed poll says so, so that an old age or old figures are never taken for current ones.
    if (!got.ok && !stale) {
      stale = text("stale", { reason: got.reason });
      say(stale, "error");
    } else if (got.ok && stale) {
      if ($("messages").textContent === stale) say("", "info");
      stale = null;
    }
  }

  async function poll() {
    // The status alone; the whole page only when its version says the data changed.
    const got = await fetchParts(urls.status, ["status"]);
    if (!got.ok || pending) return got;
    if (!got.unchanged) { // a 304: the same version, the same age
      const next = got.fresh.getElementById("status");
      if (next.dataset.version !== $("status").dataset.version) return update(false);
      if (changed(got.fresh, "status")) $("status").replaceWith(next);
    }
    // Selects left behind while the user was in them take the last page's defaults once left: the
    // data has not moved since (the version says so), so that page is current and is not fetched again.
    if (selectsBehind && !editing()) {
      selectsBehind = false;
      catchUpDefaults(lastDefaults);
    }
    return got;
  }

  async function updateNow() {
    if (pending || polling || document.hidden) return;
    polling = true;
    // The status section is busy while a poll for it is out (a tick of the timer meanwhile is skipped;
    // the tests wait on it too). Its answer is put in place in one step, a new section if it changed.
    $("status").setAttribute("aria-busy", "true");
    try { reachable(await poll()); } finally { polling = false; $("status").removeAttribute("aria-busy"); }
  }

  // -- the API ---------------------------------------------------------------------------

  function storedToken() {
    try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; }
  }

  async function call(path, body) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const token = storedToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    try {
      const response = await fetchWithin(path, { method: "POST", headers,
        body: body === undefined ? undefined : JSON.stringify(body) });
      let data = null;
      try { data = await response.json(); } catch (e) { data = null; }
      if (!data || typeof data !== "object") {
        data = { success: false, error: "bad_answer", message: text("not_json", { status: response.status }) };
      }
      return { status: response.status, ok: response.ok && data.success === true, data };
    } catch (e) {
      return { status: 0, ok: false, data: { success: false, error: "network", message: text("unreachable", { reason: why(e) }) } };
    }
  }

  function failed(result, action) {
    const message = result.data.message;
    const values = { action: text(action), message: message.replace(/\.$/, "") };
    if (result.status === 401 && !tokenRequired) {
      say(text("token_now_required", values), "error");
    } else if (result.status === 401) {
      forgetToken();
      say(text("token_wrong", values), "error");
      $("token-input").focus();
    } else {
      // The API's refresh errors already begin "Refresh failed": said once, not twice.
      const said = message.toLowerCase().startsWith(text("failed_prefix", values).toLowerCase());
      say(said ? message : text("failed", { ...values, message }), "error");
    }
  }

  function needToken() {
    if (!tokenRequired || storedToken()) return false;
    say(text("token_first"), "error");
    $("token-input").focus();
    return true;
  }

  async function busy(work) {
    // aria-disabled, not disabled: a disabled button would drop the keyboard user's focus.
    if (pending) return;
    pending = true;
    const buttons = document.querySelectorAll("#save-defaults, #refresh");
    buttons.forEach((b) => b.setAttribute("aria-disabled", "true"));
    $("table-wrap").setAttribute("aria-busy", "true");
    try {
      await work();
    } finally {
      pending = false;
      buttons.forEach((b) => b.removeAttribute("aria-disabled"));
      $("table-wrap").removeAttribute("aria-busy");
    }
  }

  async function saveDefaults(event) {
    event.preventDefault();
    const form = $("defaults-form");
    const body = {};
    const hdd = $("hdd-select").value;
    const ssd = $("ssd-select").value;
    // Only what changed: an unchanged default that no longer exists would be refused.
    if (hdd && hdd !== form.dataset.hdd) body.hdd_datastore_id = hdd;
    if (ssd && ssd !== form.dataset.ssd) body.ssd_datastore_id = ssd;
    if (!Object.keys(body).length) {
      say(text("nothing_to_save"), "info");
      return;
    }
    if (pending || needToken()) return;
    await busy(async () => {
      say(text("saving"), "info");
      const result = await call(urls.default, body);
      if (!result.ok) revertSelects();
      await update(true);
      if (!result.ok) {
        failed(result, "save");
        return;
      }
      const none = text("none");
      say(text("saved", { message: result.data.message, hdd: result.data.hdd_datastore || none,
        ssd: result.data.ssd_datastore || none }), "success");
    });
  }

  async function refresh() {
    if (pending || needToken()) return;
    await busy(async () => {
      say(text("refreshing"), "info");
      const result = await call(urls.refresh);
      const after = await update(true);
      if (!result.ok) failed(result, "refresh");
      else if (after.ok) say(result.data.message, "success");
      else say(text("reload_failed", { message: result.data.message, reason: after.reason }), "error");
    });
  }

  // -- the token -------------------------------------------------------------------------

  function showTokenState() {
    if (!tokenRequired) return;
    const has = Boolean(storedToken());
    $("token-form").hidden = has;
    $("token-set").hidden = !has;
  }

  function forgetToken() {
    try { sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* storage disabled */ }
    $("token-input").value = "";
    showTokenState();
  }

  function useToken(event) {
    event.preventDefault();
    const value = $("token-input").value.trim();
    if (!value) {
      say(text("token_empty"), "error");
      return;
    }
    try {
      sessionStorage.setItem(TOKEN_KEY, value);
    } catch (e) {
      say(text("token_unstorable"), "error");
      return;
    }
    $("token-input").value = "";
    showTokenState();
    say(text("token_set"), "info");
    $("token-forget").focus();
  }

  function changeToken() {
    forgetToken();
    say(text("token_forgotten"), "info");
    $("token-input").focus();
  }

  // -- start -----------------------------------------------------------------------------

  function toggleNodes(event) {
    const button = event.target.closest("button.toggle");
    if (button) setOpen(button, button.getAttribute("aria-expanded") !== "true", document);
  }

  function start() {
    const data = JSON.parse($("page-data").textContent);
    tokenRequired = data.token_required;
    texts = data.texts || texts;
    urls = data.urls || urls;
    for (const id of ["status", "datastore-rows", "defaults-form"]) shown[id] = $(id).outerHTML;
    $("datastores").addEventListener("click", toggleNodes);
    $("defaults-form").addEventListener("submit", saveDefaults);
    $("refresh").addEventListener("click", refresh);
    if (tokenRequired) {
      $("token-form").addEventListener("submit", useToken);
      $("token-forget").addEventListener("click", changeToken);
      showTokenState();
    }
    setInterval(updateNow, UPDATE_MS);
    document.addEventListener("visibilitychange", updateNow);
  }

  start();
}());
