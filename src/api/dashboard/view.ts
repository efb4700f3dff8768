/**
 * The dashboard's number formatting and charts, served as /dashboard/assets/view.js
 * before app.js (client.ts), which reads them from window.GoBalancerView. A string for the
 * same reason as client.ts; no backticks or dollar-brace in it.
 *
 * Samples are counter totals (connections accepted, bytes each way) at a time; the
 * charts show the rates between consecutive samples over the last 15 minutes (uPlot).
 */
export const VIEW_JS = String.raw`
(function () {
  "use strict";
  var WINDOW_MS = 15 * 60 * 1000;
  var METRICS = {
    gobalancer_connections_accepted_total: "c",
    gobalancer_backend_bytes_in_total: "bi",
    gobalancer_backend_bytes_out_total: "bo"
  };
  var samples = [];        // {t, c, bi, bo}: counter totals, oldest first
  var charts = null;

  function $(id) { return document.getElementById(id); }

  // ---- formatting ------------------------------------------------------------------
  var intFmt = new Intl.NumberFormat("en-US");
  function count(n) { return intFmt.format(Math.round(n)); }
  function rate(n) {
    if (n === null || n === undefined || !isFinite(n)) return "–";
    if (n >= 100) return intFmt.format(Math.round(n));
    return n.toFixed(n >= 10 ? 1 : 2).replace(/\.?0+$/, "") || "0";
  }
  var UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  function bytes(n) {
    if (n === null || n === undefined || !isFinite(n)) return "–";
    var i = 0;
    while (n >= 1024 && i < UNITS.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(Math.round(n)) : n.toFixed(n >= 100 ? 0 : 1)) + " " + UNITS[i];
  }
  function ago(iso) {
    if (!iso) return "never";
    var s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    return Math.floor(s / 3600) + " h ago";
  }

  // ---- rates and charts ---------------------------------------------------------------
  function parseTotals(text) {
    var totals = { c: 0, bi: 0, bo: 0 };
    var lines = text.split("\n");
    for (var i = 0; i < lines.length; i++) {
      var line = lines[i];
      if (line.charAt(0) === "#" || line === "") continue;
      var end = line.search(/[{ ]/);
      var key = METRICS[line.slice(0, end)];
      if (!key) continue;
      var value = parseFloat(line.slice(line.lastIndexOf(" ") + 1));
      if (isFinite(value)) totals[key] += value;
    }
    return totals;
  }

  function addSample(s) {
    if (samples.length && s.t <= samples[samples.length - 1].t) return;
    samples.push(s);
    var cutoff = s.t - WINDOW_MS;
    // Keep one sample older than the window: the first rate inside it needs it.
    while (samples.length > 2 && samples[1].t < cutoff) samples.shift();
  }

  /** Rates between consecutive samples; a counter that went down (restart, removal) counts 0. */
  function series() {
    var x = [], c = [], bi = [], bo = [];
    for (var i = 1; i < samples.length; i++) {
      var a = samples[i - 1], b = samples[i];
      var dt = (b.t - a.t) / 1000;
      if (dt <= 0) continue;
      x.push(b.t / 1000);
      c.push(Math.max(0, b.c - a.c) / dt);
      bi.push(Math.max(0, b.bi - a.bi) / dt);
      bo.push(Math.max(0, b.bo - a.bo) / dt);
    }
    return { x: x, c: c, bi: bi, bo: bo };
  }

  function css(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

  function chartOpts(el, seriesDefs, fmt) {
    var axis = { stroke: css("--muted"), grid: { stroke: css("--grid"), width: 1 }, ticks: { stroke: css("--grid"), width: 1 }, font: "11px " + css("--font") };
    return {
      width: Math.max(200, el.clientWidth),
      height: 190,
      padding: [8, 8, 0, 0],
      cursor: { drag: { x: false, y: false } },
      legend: { live: true },
      scales: { x: { time: true }, y: { range: function (u, min, max) { return [0, max > 0 ? max * 1.15 : 1]; } } },
      axes: [
        Object.assign({}, axis),
        Object.assign({}, axis, { size: 78, values: function (u, vals) { return vals.map(fmt); } })
      ],
      series: [{}].concat(seriesDefs.map(function (d) {
        return { label: d.label, stroke: d.color, width: 2, dash: d.dash, fill: d.fill, points: { show: false }, value: function (u, v) { return v === null || v === undefined ? "–" : fmt(v); } };
      }))
    };
  }

  function makeCharts() {
    var connEl = $("chart-conn"), bytesEl = $("chart-bytes");
    var conn = new uPlot(chartOpts(connEl, [{ label: "connections/s", color: css("--accent"), fill: css("--accent-fill") }], rate), [[], []], connEl);
    var bps = function (v) { return bytes(v) + "/s"; };
    var bytesChart = new uPlot(chartOpts(bytesEl, [
      // "in" is drawn last and dashed: with echo-like traffic the two lines coincide.
      { label: "out (backend → client)", color: css("--out"), fill: css("--out-fill") },
      { label: "in (client → backend)", color: css("--in"), fill: css("--in-fill"), dash: [6, 4] }
    ], bps), [[], [], []], bytesEl);
    var ro = new ResizeObserver(function () {
      conn.setSize({ width: Math.max(200, connEl.clientWidth), height: 190 });
      bytesChart.setSize({ width: Math.max(200, bytesEl.clientWidth), height: 190 });
    });
    ro.observe(connEl);
    ro.observe(bytesEl);
    return { conn: conn, bytes: bytesChart };
  }

  function drawCharts() {
    var s = series();
    if (!charts) charts = makeCharts();
    charts.conn.setData([s.x, s.c]);
    charts.bytes.setData([s.x, s.bo, s.bi]);
    var n = s.x.length;
    $("tile-cps").textContent = n ? rate(s.c[n - 1]) : "–";
    $("tile-bps").textContent = n ? bytes(s.bi[n - 1] + s.bo[n - 1]) + "/s" : "–";
    $("tile-bps-sub").textContent = n ? "in " + bytes(s.bi[n - 1]) + "/s · out " + bytes(s.bo[n - 1]) + "/s" : "";
    var last = samples[samples.length - 1];
    if (last) $("tile-total").textContent = count(last.c);
    var span = n ? Math.round((s.x[n - 1] - s.x[0]) / 60) : 0;
    $("chart-span").textContent = span >= 15 ? "last 15 min" : "last " + (span < 1 ? "minute" : span + " min") + " (up to 15)";
  }

  window.GoBalancerView = {
    count: count, rate: rate, bytes: bytes, ago: ago,
    parseTotals: parseTotals, addSample: addSample, drawCharts: drawCharts
  };
})();
`;
