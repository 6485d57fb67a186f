// The datastores page: re-renders what templates/index.html rendered, from GET /api/datastores,
// after each action. Formatting functions match the template's macros of the same name.
"use strict";

(function () {
  const TOKEN_KEY = "pve-datastore-exporter.api-token"; // sessionStorage only: never a cookie or the URL
  const UNITS = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
  const TIMEOUT_MS = 60000;

  let state = null; // the last answer of GET /api/datastores (or the one the page was rendered from)
  let tokenRequired = false;
  let urls = { datastores: "/api/datastores", refresh: "/api/datastores/refresh", default: "/api/datastores/default" };
  let pending = false; // a save or refresh is on its way
  let ageBase = null; // {age: seconds, at: performance.now()} for the ticking "… ago"

  // -- formatting (integer arithmetic: the same text as the template) ----------------------

  function iec(value) {
    if (value === null || value === undefined) return "–";
    const v = BigInt(value);
    let unit = 1n;
    let name = "B";
    for (const candidate of UNITS) {
      if (v >= unit * 1024n) { unit *= 1024n; name = candidate; }
    }
    if (unit === 1n) return `${v} B`;
    const h = (v * 100n + unit / 2n) / unit;
    return `${h / 100n}.${String(h % 100n).padStart(2, "0")} ${name}`;
  }

  function percent(used, size) {
    if (!size || used === null || used === undefined) return "–";
    const s = BigInt(size);
    const t = (BigInt(used) * 1000n + s / 2n) / s;
    return `${t / 10n}.${t % 10n} %`;
  }

  function level(used, size) {
    if (!size || used === null || used === undefined) return "unknown";
    const u = BigInt(used) * 100n;
    const s = BigInt(size);
    if (u >= s * 90n) return "critical";
    if (u >= s * 80n) return "high";
    return "ok";
  }

  function ago(seconds) {
    if (seconds === null || seconds === undefined) return "never";
    const s = Math.floor(seconds);
    if (s < 10) return "just now";
    let n; let unit;
    if (s < 60) { n = s; unit = "second"; }
    else if (s < 3600) { n = Math.floor(s / 60); unit = "minute"; }
    else if (s < 86400) { n = Math.floor(s / 3600); unit = "hour"; }
    else { n = Math.floor(s / 86400); unit = "day"; }
    return `${n} ${unit}${n === 1 ? "" : "s"} ago`;
  }

  function qualifies(d) {
    return d.enabled && d.content.split(",").includes("images");
  }

  // -- DOM helpers -----------------------------------------------------------------------

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function numCell(cls, value) {
    return el("td", { class: `num ${cls}`.trim(), "data-bytes": value === null ? "" : String(value), text: iec(value) });
  }

  function usage(used, size) {
    const lvl = level(used, size);
    const meter = el("meter", { min: "0", max: String(size || 1), value: String(used || 0), "aria-hidden": "true" });
    const hidden = lvl === "high" || lvl === "critical" ? el("span", { class: "visually-hidden", text: ` (${lvl})` }) : null;
    return el("span", { class: `usage usage-${lvl}` }, meter, " ", el("span", { class: "pct", text: percent(used, size) }), hidden);
  }

  // -- rendering -------------------------------------------------------------------------

  function renderTable(answer) {
    const tbody = $("datastores").tBodies[0];
    const open = new Set(Array.from(tbody.querySelectorAll("button.toggle[aria-expanded=true]"),
      (b) => b.closest("tr").dataset.id));
    const rows = [];
    for (const d of answer.datastores) rows.push(...datastoreRows(d, open.has(d.id)));
    if (!rows.length) {
      rows.push(el("tr", { class: "empty" }, el("td", { colspan: "9",
        text: "No datastores known yet: Proxmox has not answered and the database holds none." })));
    }
    tbody.replaceChildren(...rows);
    $("datastore-count").textContent = String(answer.datastores.length);
  }

  function datastoreRows(d, expanded) {
    const toggle = el("button", { type: "button", class: "toggle", "aria-expanded": String(expanded),
      "aria-controls": `nodes-${d.id}`, title: "Per-node figures" },
    el("span", { class: "chevron", "aria-hidden": "true" }), d.id);
    const name = el("th", { scope: "row", class: "name" }, toggle);
    if (!d.active) name.append(" ", el("span", { class: "badge badge-inactive", text: "inactive" }));
    const defaults = el("td", { class: "default" },
      d.is_default_hdd ? el("span", { class: "badge badge-hdd", text: "HDD" }) : null,
      d.is_default_ssd ? el("span", { class: "badge badge-ssd", text: "SSD" }) : null);
    const row = el("tr", { class: "ds", "data-id": d.id }, name,
      el("td", { class: "type", text: d.type }),
      el("td", { class: "shared", text: d.shared ? "yes" : "no" }),
      el("td", { class: "content", text: d.content.split(",").join(", ") }),
      numCell("size", d.size), numCell("used", d.used), numCell("available", d.available),
      el("td", { class: "usage-cell" }, usage(d.used, d.size)), defaults);
    return [row, nodesRow(d, expanded)];
  }

  function nodesRow(d, expanded) {
    const caption = `Per-node figures of ${d.id}` +
      (d.shared ? " (shared: every node sees the same storage, counted once in the totals)" : "");
    const head = el("tr", {}, ...["Node", "Status", "Size", "Used", "Available", "Usage"].map((label, i) =>
      el("th", { scope: "col", class: i >= 2 && i <= 4 ? "num" : null, text: label })));
    const body = d.nodes.map((n) => el("tr", { "data-node": n.node },
      el("th", { scope: "row", text: n.node }), el("td", { text: n.active ? "active" : "inactive" }),
      numCell("", n.size), numCell("", n.used), numCell("", n.available),
      el("td", { class: "usage-cell" }, usage(n.used, n.size))));
    if (!body.length) body.push(el("tr", {}, el("td", { colspan: "6", text: "No node reports this datastore." })));
    const table = el("table", { class: "nodes" }, el("caption", { text: caption }),
      el("thead", {}, head), el("tbody", {}, ...body));
    return el("tr", { class: "nodes-row", id: `nodes-${d.id}`, "data-for": d.id, hidden: !expanded },
      el("td", { colspan: "9" }, table));
  }

  function renderStatus(answer) {
    const source = $("status-source");
    source.dataset.source = answer.source;
    source.textContent = answer.source === "db" ? "database cache" : ".env fallback (the database is unavailable)";
    const refresh = answer.last_refresh || {};
    ageBase = refresh.age_seconds === null || refresh.age_seconds === undefined ? null
      : { age: refresh.age_seconds, at: performance.now() };
    const age = $("status-age");
    age.dataset.age = ageBase ? String(refresh.age_seconds) : "";
    if (refresh.last_success) age.title = refresh.last_success; else age.removeAttribute("title");
    tickAge();
    const error = $("status-error");
    error.hidden = refresh.ok !== false;
    $("status-error-text").textContent = refresh.error || "";
    const warnings = $("warnings");
    warnings.replaceChildren(...(answer.warnings || []).map((w) => el("li", { text: w })));
    warnings.hidden = !(answer.warnings || []).length;
  }

  function tickAge() {
    const text = ago(ageBase ? ageBase.age + (performance.now() - ageBase.at) / 1000 : null);
    $("status-age").textContent = text;
    const cached = document.querySelector("#status-error .muted");
    if (cached) cached.textContent = `The table shows the data of the last successful refresh (${text}).`;
  }

  function renderSelect(select, answer, current) {
    const options = [];
    if (!current) options.push(el("option", { value: "", text: "— none set —" }));
    let found = false;
    for (const d of answer.datastores) {
      if (d.id === current) {
        found = true;
        const note = qualifies(d) ? "" : " (current; no “images” content)";
        options.push(el("option", { value: d.id, text: d.id + note }));
      } else if (qualifies(d)) {
        options.push(el("option", { value: d.id, text: d.id }));
      }
    }
    if (current && !found) {
      options.push(el("option", { value: current, text: `${current} (current; not an enabled datastore)` }));
    }
    select.replaceChildren(...options);
    select.value = current || "";
  }

  function renderDefaults(answer) {
    const form = $("defaults-form");
    form.dataset.hdd = answer.default_hdd || "";
    form.dataset.ssd = answer.default_ssd || "";
    renderSelect($("hdd-select"), answer, answer.default_hdd);
    renderSelect($("ssd-select"), answer, answer.default_ssd);
  }

  function render(answer) {
    state = answer;
    renderTable(answer);
    renderStatus(answer);
    renderDefaults(answer);
  }

  function revertSelects() {
    // The selects show the defaults the server holds, never a choice it refused.
    const form = $("defaults-form");
    $("hdd-select").value = form.dataset.hdd;
    $("ssd-select").value = form.dataset.ssd;
  }

  // -- messages --------------------------------------------------------------------------

  function say(text, kind) {
    const box = $("messages");
    box.className = `messages messages-${kind || "info"}`;
    box.textContent = text;
  }

  // -- the API ---------------------------------------------------------------------------

  function storedToken() {
    try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; }
  }

  async function call(method, path, body) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const token = storedToken();
    if (method !== "GET" && token) headers.Authorization = `Bearer ${token}`;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
    try {
      const response = await fetch(path, { method, headers, cache: "no-store", credentials: "omit",
        body: body === undefined ? undefined : JSON.stringify(body), signal: controller.signal });
      let data = null;
      try { data = await response.json(); } catch (e) { data = null; }
      if (!data || typeof data !== "object") {
        data = { success: false, error: "bad_answer", message: `The exporter answered HTTP ${response.status} without JSON.` };
      }
      return { status: response.status, ok: response.ok && data.success === true, data };
    } catch (e) {
      const why = e.name === "AbortError" ? "no answer within 60 seconds" : e.message;
      return { status: 0, ok: false, data: { success: false, error: "network", message: `Cannot reach the exporter: ${why}.` } };
    } finally {
      clearTimeout(timer);
    }
  }

  async function reload() {
    const answer = await call("GET", urls.datastores);
    if (answer.ok) render(answer.data);
    else revertSelects();
    return answer;
  }

  function failed(result, what) {
    if (result.status === 401 && !tokenRequired) {
      say(`${what} failed: the exporter now requires an API token (${result.data.message.replace(/\.$/, "")}). Reload the page to enter it.`, "error");
    } else if (result.status === 401) {
      forgetToken();
      say(`${what} failed: the API token is wrong (HTTP 401: ${result.data.message.replace(/\.$/, "")}). Enter the correct token and try again.`, "error");
      $("token-input").focus();
    } else {
      const message = result.data.message;
      const said = message.toLowerCase().startsWith(`${what} failed`.toLowerCase());
      say(said ? message : `${what} failed: ${message}`, "error");
    }
  }

  function needToken() {
    if (!tokenRequired || storedToken()) return false;
    say("Enter the API token first: changes need it.", "error");
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
      say("Nothing to save: the selected datastores are already the defaults.", "info");
      return;
    }
    if (pending || needToken()) return;
    await busy(async () => {
      say("Saving the defaults…", "info");
      const result = await call("POST", urls.default, body);
      if (!result.ok) revertSelects();
      await reload();
      if (result.ok) {
        say(`${result.data.message} Default HDD: ${result.data.hdd_datastore || "none"}, default SSD: ${result.data.ssd_datastore || "none"}.`, "success");
      } else {
        failed(result, "Saving the defaults");
      }
    });
  }

  async function refresh() {
    if (pending || needToken()) return;
    await busy(async () => {
      say("Refreshing from Proxmox…", "info");
      const result = await call("POST", urls.refresh);
      const after = await reload();
      if (result.ok) {
        const n = result.data.count;
        say(`Refreshed ${n} ${n === 1 ? "datastore" : "datastores"} from Proxmox.` +
          (after.ok ? "" : ` Reloading the table failed: ${after.data.message}`), after.ok ? "success" : "error");
      } else {
        failed(result, "Refresh");
      }
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
      say("The token is empty.", "error");
      return;
    }
    try {
      sessionStorage.setItem(TOKEN_KEY, value);
    } catch (e) {
      say("This browser does not allow session storage, so the token cannot be kept.", "error");
      return;
    }
    $("token-input").value = "";
    showTokenState();
    say("Token set for this tab. It is checked on the next save or refresh.", "info");
    $("token-forget").focus();
  }

  function changeToken() {
    forgetToken();
    say("Token forgotten. Enter the token to use.", "info");
    $("token-input").focus();
  }

  // -- start -----------------------------------------------------------------------------

  function toggleNodes(event) {
    const button = event.target.closest("button.toggle");
    if (!button) return;
    const open = button.getAttribute("aria-expanded") !== "true";
    button.setAttribute("aria-expanded", String(open));
    $(button.getAttribute("aria-controls")).hidden = !open;
  }

  function start() {
    const data = JSON.parse($("page-data").textContent);
    state = data.answer;
    tokenRequired = data.token_required;
    urls = data.urls || urls;
    const refreshInfo = state.last_refresh || {};
    ageBase = refreshInfo.age_seconds === null || refreshInfo.age_seconds === undefined ? null
      : { age: refreshInfo.age_seconds, at: performance.now() };
    setInterval(tickAge, 5000);
    $("datastores").addEventListener("click", toggleNodes);
    $("defaults-form").addEventListener("submit", saveDefaults);
    $("refresh").addEventListener("click", refresh);
    if (tokenRequired) {
      $("token-form").addEventListener("submit", useToken);
      $("token-forget").addEventListener("click", changeToken);
      showTokenState();
    }
    document.documentElement.classList.add("js");
  }

  // For tests and curious operators: the formatting functions, the state the page shows.
  window.datastorePage = { iec, percent, level, ago, qualifies, state: () => state };
  start();
}());
