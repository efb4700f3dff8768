/**
 * The dashboard's browser script, served as /dashboard/assets/app.js. It is a string here
 * (plain ES2020, no build step) so that `tsc` carries it into dist/ with the rest of the
 * server; tsc copies no other files. No backticks or dollar-brace in it, so the
 * String.raw below stays a plain string.
 *
 * Formatting and the charts are view.ts's (served first, as view.js).
 *
 * What it does: polls GET /backends and GET /metrics every 2 s (rates are derived from the
 * metrics counters), seeds the charts with the server's ring of samples from
 * /dashboard/history.json, and drives the add / weight / remove forms. With a token set,
 * a 401 shows the token prompt; the token lives in sessionStorage (this tab only).
 */
export const CLIENT_JS = String.raw`
(function () {
  "use strict";
  var TOKEN_KEY = "gobalancer.api-token";
  var POLL_MS = 2000;

  var token = sessionStorage.getItem(TOKEN_KEY) || "";
  var rows = new Map();    // address -> row
  var lastOk = 0;

  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // ---- formatting and charts: view.ts ---------------------------------------------------
  var view = window.GoBalancerView;
  var count = view.count, rate = view.rate, bytes = view.bytes, ago = view.ago;

  // ---- API calls and the token prompt ----------------------------------------------
  var authWait = null;
  var authDone = null;

  /** Shows the token prompt; resolves once a token is entered. */
  function askToken(message) {
    var msg = $("auth-error");
    msg.textContent = message || "";
    msg.hidden = !message;
    if (!authWait) {
      authWait = new Promise(function (resolve) { authDone = resolve; });
      $("auth").hidden = false;
      var input = $("auth-token");
      input.value = "";
      input.focus();
    }
    return authWait;
  }

  $("auth-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var value = $("auth-token").value.trim();
    if (!value) return;
    token = value;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("auth").hidden = true;
    var done = authDone;
    authWait = null;
    authDone = null;
    done();
  });

  /** One API call; returns parsed JSON (or text), throws Error(api's "error" message). */
  async function api(method, path, body) {
    for (;;) {
      var sent = token;
      var headers = {};
      if (sent) headers.authorization = "Bearer " + sent;
      var init = { method: method, headers: headers, cache: "no-store" };
      if (body !== undefined) {
        headers["content-type"] = "application/json";
        init.body = JSON.stringify(body);
      }
      var res = await fetch(path, init);
      if (res.status === 401) {
        if (token !== sent) continue; // a new token came in while this call was out
        if (sent) sessionStorage.removeItem(TOKEN_KEY);
        await askToken(sent ? "That token was refused. Try again." : "");
        continue;
      }
      if (res.status === 204) return null;
      var text = await res.text();
      var data = text;
      if ((res.headers.get("content-type") || "").indexOf("json") !== -1 && text) {
        try { data = JSON.parse(text); } catch (e) { /* keep the text */ }
      }
      if (!res.ok) {
        var why = data && typeof data === "object" && data.error ? data.error : res.status + " " + res.statusText;
        throw new Error(why);
      }
      return data;
    }
  }

  // ---- messages ---------------------------------------------------------------------
  var noticeTimer = 0;
  function notice(kind, text) {
    var box = $("notice");
    box.className = "notice " + kind;
    $("notice-text").textContent = text;
    box.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(function () { box.hidden = true; }, kind === "error" ? 12000 : 4000);
  }
  $("notice-close").addEventListener("click", function () { $("notice").hidden = true; });

  function setLive(ok, why) {
    var live = $("live");
    live.classList.toggle("down", !ok);
    if (ok) {
      lastOk = Date.now();
      $("live-text").textContent = "live · " + new Date(lastOk).toLocaleTimeString();
    } else {
      $("live-text").textContent = "API unreachable: " + why;
    }
  }

  // ---- backends table -----------------------------------------------------------------
  function cell(tr, label, cls) {
    var td = el("td", cls);
    td.setAttribute("data-label", label);
    tr.appendChild(td);
    return td;
  }

  /** What sets a backend apart: backup, its own limit, PROXY protocol, a slow-start ramp. */
  function traits(b) {
    var t = [];
    if (b.backup) t.push("backup");
    if (b.max_connections > 0) t.push("max " + count(b.max_connections));
    if (b.proxy_protocol && b.proxy_protocol !== "off") t.push("PROXY " + b.proxy_protocol);
    if (b.slow_start_share < 1) t.push("ramping " + Math.round(b.slow_start_share * 100) + "%");
    return t.join(" · ");
  }

  function makeRow(b) {
    var tr = el("tr");
    tr.setAttribute("data-address", b.address);
    var r = { tr: tr, weight: b.weight };

    var name = cell(tr, "Backend", "backend");
    name.appendChild(el("span", "addr", b.address));
    r.source = el("span", "badge", b.source);
    name.appendChild(r.source);
    r.traits = el("span", "traits");
    name.appendChild(r.traits);

    r.status = el("span", "pill");
    cell(tr, "Status").appendChild(r.status);

    var form = el("form", "weight");
    r.weightInput = el("input");
    r.weightInput.type = "number";
    r.weightInput.min = "1";
    r.weightInput.step = "1";
    r.weightInput.required = true;
    r.weightInput.setAttribute("aria-label", "Weight of " + b.address);
    r.weightInput.value = String(b.weight);
    var setBtn = el("button", "small", "Set");
    setBtn.type = "submit";
    form.appendChild(r.weightInput);
    form.appendChild(setBtn);
    r.weightInput.addEventListener("input", function () {
      form.classList.toggle("dirty", r.weightInput.value !== String(r.weight));
    });
    form.addEventListener("submit", async function (ev) {
      ev.preventDefault();
      var w = Number(r.weightInput.value);
      setBtn.disabled = true;
      try {
        var updated = await api("PUT", "/backends/" + encodeURIComponent(b.address), { weight: w });
        r.weight = updated.weight;
        form.classList.remove("dirty");
        notice("ok", "Weight of " + b.address + " is now " + updated.weight + ".");
        refreshBackends();
      } catch (e) {
        notice("error", "Could not change the weight of " + b.address + ": " + e.message);
      } finally {
        setBtn.disabled = false;
      }
    });
    cell(tr, "Weight").appendChild(form);

    r.active = cell(tr, "Active", "num");
    r.total = cell(tr, "Total", "num");
    r.failed = cell(tr, "Failed", "num");
    r.bin = cell(tr, "Bytes in", "num");
    r.bout = cell(tr, "Bytes out", "num");
    r.checked = cell(tr, "Last check", "when");
    r.error = cell(tr, "Last error", "lasterr");

    var actions = cell(tr, "Admin state", "actions");
    // The admin state: ready / drain / maint (PUT /backends/{address} {"state": ...}).
    var adminSlot = el("span", "admin-state-slot");
    adminSlot.setAttribute("role", "group");
    adminSlot.setAttribute("aria-label", "Admin state of " + b.address);
    r.stateButtons = {};
    ["ready", "drain", "maint"].forEach(function (state) {
      var btn = el("button", "small seg", state);
      btn.type = "button";
      btn.setAttribute("data-state", state);
      btn.title = state === "ready" ? "Takes new connections" : state === "drain" ? "No new connections; open ones carry on" : "As drain, with health checks paused";
      btn.addEventListener("click", async function () {
        if (r.state === state) return;
        btn.disabled = true;
        try {
          var updated = await api("PUT", "/backends/" + encodeURIComponent(b.address), { state: state });
          notice("ok", b.address + " is now " + updated.state + ".");
          refreshBackends();
        } catch (e) {
          notice("error", "Could not set " + b.address + " to " + state + ": " + e.message);
        } finally {
          btn.disabled = false;
        }
      });
      r.stateButtons[state] = btn;
      adminSlot.appendChild(btn);
    });
    actions.appendChild(adminSlot);
    if (b.source === "api") {
      var rm = el("button", "small danger", "Remove");
      rm.type = "button";
      rm.setAttribute("aria-label", "Remove " + b.address);
      var armed = 0;
      rm.addEventListener("click", async function () {
        if (!armed) {
          rm.textContent = "Confirm remove";
          rm.classList.add("armed");
          armed = setTimeout(function () { armed = 0; rm.textContent = "Remove"; rm.classList.remove("armed"); }, 4000);
          return;
        }
        clearTimeout(armed);
        armed = 0;
        rm.disabled = true;
        try {
          await api("DELETE", "/backends/" + encodeURIComponent(b.address));
          notice("ok", "Removed " + b.address + ".");
          refreshBackends();
        } catch (e) {
          notice("error", "Could not remove " + b.address + ": " + e.message);
          rm.disabled = false;
          rm.textContent = "Remove";
          rm.classList.remove("armed");
        }
      });
      actions.appendChild(rm);
    }
    // Other backends cannot be removed here (their source badge says who owns them).
    return r;
  }

  function updateRow(r, b) {
    r.state = b.state;
    Object.keys(r.stateButtons).forEach(function (state) {
      var on = state === b.state;
      r.stateButtons[state].classList.toggle("on", on);
      r.stateButtons[state].setAttribute("aria-pressed", on ? "true" : "false");
    });
    r.status.textContent = b.status;
    r.status.className = "pill " + b.status;
    r.tr.className = "st-" + b.status;
    r.source.className = "badge src-" + b.source;
    r.traits.textContent = traits(b);
    r.weight = b.weight;
    var input = r.weightInput;
    if (document.activeElement !== input && !input.form.classList.contains("dirty")) input.value = String(b.weight);
    r.active.textContent = count(b.active_connections);
    r.total.textContent = count(b.total_connections);
    r.failed.textContent = count(b.failed_connections);
    r.failed.classList.toggle("bad", b.failed_connections > 0);
    r.bin.textContent = bytes(b.bytes_in);
    r.bout.textContent = bytes(b.bytes_out);
    r.checked.textContent = ago(b.last_checked_at);
    r.checked.title = b.last_checked_at || "";
    r.error.textContent = b.last_error || "";
    r.error.title = b.last_error || "";
  }

  function renderBackends(list) {
    list.sort(function (a, b) { return a.address < b.address ? -1 : a.address > b.address ? 1 : 0; });
    var tbody = $("rows");
    var seen = new Set();
    var up = 0, active = 0;
    list.forEach(function (b, i) {
      seen.add(b.address);
      var r = rows.get(b.address);
      if (!r) { r = makeRow(b); rows.set(b.address, r); }
      updateRow(r, b);
      // Moving a node blurs it: only move rows that are out of place.
      if (tbody.children[i] !== r.tr) tbody.insertBefore(r.tr, tbody.children[i] || null);
      if (b.status === "up") up++;
      active += b.active_connections;
    });
    rows.forEach(function (r, address) {
      if (!seen.has(address)) { r.tr.remove(); rows.delete(address); }
    });
    $("empty").hidden = list.length !== 0;
    $("tile-up").textContent = up + " / " + list.length;
    $("tile-up-sub").textContent = list.length - up === 0 ? "all up" : (list.length - up) + " not up";
    $("tile-up-card").classList.toggle("warn", list.length > 0 && up < list.length);
    $("tile-up-card").classList.toggle("bad", list.length > 0 && up === 0);
    $("tile-active").textContent = count(active);
  }

  async function refreshBackends() {
    try {
      renderBackends(await api("GET", "/backends"));
      setLive(true);
    } catch (e) {
      setLive(false, e.message);
    }
  }

  // ---- add form ---------------------------------------------------------------------
  $("add-form").addEventListener("submit", async function (ev) {
    ev.preventDefault();
    var address = $("add-address").value.trim();
    var weight = Number($("add-weight").value || "1");
    var btn = $("add-button");
    btn.disabled = true;
    try {
      var added = await api("POST", "/backends", { address: address, weight: weight });
      $("add-address").value = "";
      $("add-weight").value = "1";
      notice("ok", "Added " + added.address + " with weight " + added.weight + ".");
      await refreshBackends();
    } catch (e) {
      notice("error", "Could not add " + (address || "a backend") + ": " + e.message);
    } finally {
      btn.disabled = false;
    }
  });

  // ---- rates -------------------------------------------------------------------------
  /** The server's clock minus this browser's, from the history (0 until it is read). */
  var serverClockOffset = 0;

  async function refreshRates() {
    try {
      var text = await api("GET", "/metrics");
      view.addSample(Object.assign({ t: Date.now() + serverClockOffset }, view.parseTotals(text)));
      view.drawCharts();
    } catch (e) {
      setLive(false, e.message);
    }
  }

  async function loadHistory() {
    try {
      var h = await api("GET", "/dashboard/history.json");
      // History is stamped by the server's clock: live samples follow it, or a browser
      // clock behind the server's would make them look older and be dropped.
      serverClockOffset = h.now - Date.now();
      h.samples.forEach(function (s) { view.addSample({ t: s.t, c: s.connections, bi: s.bytes_in, bo: s.bytes_out }); });
    } catch (e) {
      notice("error", "Could not load the last 15 minutes: " + e.message);
    }
  }

  // ---- main loop ----------------------------------------------------------------------
  // Updates start every POLL_MS, however long the last one took (at once if longer).
  async function tick() {
    var started = Date.now();
    await Promise.all([refreshBackends(), refreshRates()]);
    setTimeout(tick, Math.max(0, POLL_MS - (Date.now() - started)));
  }

  (async function main() {
    await refreshBackends();
    await loadHistory();
    view.drawCharts();
    tick();
  })();
})();
`;
