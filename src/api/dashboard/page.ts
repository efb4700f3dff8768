/**
 * The dashboard's HTML and CSS, served at / and /dashboard/assets/app.css. Strings in a
 * .ts module for the same reason as client.ts: tsc carries them into dist/.
 * Everything the page loads comes from this process (see the CSP in dashboard.ts).
 */
export const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>GoBalancer</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/dashboard/assets/uplot.css">
<link rel="stylesheet" href="/dashboard/assets/app.css">
</head>
<body>
<header class="top">
  <div class="brand"><span class="logo" aria-hidden="true"></span>GoBalancer</div>
  <div id="live" class="live" role="status"><span class="dot" aria-hidden="true"></span><span id="live-text">connecting…</span></div>
</header>
<main>
  <section class="tiles" aria-label="Summary">
    <div class="tile" id="tile-up-card"><div class="label">Backends up</div><div class="value" id="tile-up">–</div><div class="sub" id="tile-up-sub"></div></div>
    <div class="tile"><div class="label">Active connections</div><div class="value" id="tile-active">–</div><div class="sub">open now</div></div>
    <div class="tile"><div class="label">Connections / s</div><div class="value" id="tile-cps">–</div><div class="sub">accepted, last 2 s</div></div>
    <div class="tile"><div class="label">Throughput</div><div class="value" id="tile-bps">–</div><div class="sub" id="tile-bps-sub"></div></div>
    <div class="tile"><div class="label">Connections accepted</div><div class="value" id="tile-total">–</div><div class="sub">since start</div></div>
  </section>

  <section class="charts">
    <div class="card"><h2>Connections per second <span class="span" id="chart-span"></span></h2><div class="chart" id="chart-conn"></div></div>
    <div class="card"><h2>Bytes per second</h2><div class="chart" id="chart-bytes"></div></div>
  </section>

  <section class="card backends" aria-labelledby="backends-title">
    <div class="card-head">
      <h2 id="backends-title">Backends</h2>
      <form id="add-form" class="add" autocomplete="off">
        <input id="add-address" name="address" placeholder="host:port" aria-label="Address (host:port)" required spellcheck="false">
        <input id="add-weight" name="weight" type="number" min="1" step="1" value="1" aria-label="Weight" title="Weight">
        <button id="add-button" type="submit">Add backend</button>
      </form>
    </div>
    <div id="notice" class="notice" role="alert" hidden><span id="notice-text"></span><button id="notice-close" type="button" class="close" aria-label="Dismiss">×</button></div>
    <div class="table-wrap">
      <table>
        <thead><tr>
          <th>Backend</th><th>Status</th><th>Weight</th>
          <th class="num">Active</th><th class="num">Total</th><th class="num">Failed</th>
          <th class="num">Bytes in</th><th class="num">Bytes out</th>
          <th>Last check</th><th>Last error</th><th class="actions">Admin state</th>
        </tr></thead>
        <tbody id="rows"></tbody>
      </table>
      <p id="empty" class="empty" hidden>No backends yet. Add one with the form above.</p>
    </div>
  </section>
</main>

<div id="auth" class="overlay" hidden>
  <form id="auth-form" class="dialog" autocomplete="off">
    <h2>API token</h2>
    <p>This balancer's API needs a bearer token (<code>api.token</code>). It is kept for this tab only.</p>
    <input id="auth-token" type="password" aria-label="API token" placeholder="token" required>
    <p id="auth-error" class="auth-error" role="alert" hidden></p>
    <button type="submit">Unlock</button>
  </form>
</div>
<script src="/dashboard/assets/uplot.js"></script>
<script src="/dashboard/assets/view.js"></script>
<script src="/dashboard/assets/app.js"></script>
</body>
</html>
`;

export const PAGE_CSS = `
:root {
  --font: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", "DejaVu Sans", sans-serif;
  --mono: ui-monospace, "SF Mono", Menlo, Consolas, "DejaVu Sans Mono", monospace;
  --bg: #f4f6f9; --card: #ffffff; --text: #18202c; --muted: #6b7686; --line: #e3e7ee; --grid: #eef1f5;
  --head: #101826; --head-text: #e8edf5;
  --accent: #2f6fed; --accent-fill: rgba(47, 111, 237, 0.10);
  --in: #2f6fed; --in-fill: rgba(47, 111, 237, 0.08); --out: #12a37a; --out-fill: rgba(18, 163, 122, 0.08);
  --up: #12a37a; --up-bg: #e3f6ef; --down: #d6384b; --down-bg: #fce8ea; --drain: #c27c0e; --drain-bg: #fdf1dc;
  --radius: 10px;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #0e131b; --card: #151c26; --text: #e4e9f1; --muted: #8b96a8; --line: #253041; --grid: #1e2835;
    --head: #0a0e14; --accent-fill: rgba(47, 111, 237, 0.18); --in-fill: rgba(47, 111, 237, 0.14); --out-fill: rgba(18, 163, 122, 0.14);
    --up-bg: rgba(18, 163, 122, 0.18); --down-bg: rgba(214, 56, 75, 0.2); --drain-bg: rgba(194, 124, 14, 0.2);
  }
}
* { box-sizing: border-box; }
html, body { margin: 0; }
body { background: var(--bg); color: var(--text); font: 14px/1.45 var(--font); -webkit-font-smoothing: antialiased; }
button, input { font: inherit; color: inherit; }
code { font-family: var(--mono); font-size: 0.92em; }
[hidden] { display: none !important; }

.top { display: flex; align-items: center; justify-content: space-between; gap: 12px; padding: 12px 24px; background: var(--head); color: var(--head-text); position: sticky; top: 0; z-index: 5; }
.brand { display: flex; align-items: center; gap: 10px; font-weight: 650; font-size: 16px; letter-spacing: 0.01em; }
.logo { width: 18px; height: 18px; border-radius: 5px; background: linear-gradient(135deg, #2f6fed, #12a37a); }
.live { display: flex; align-items: center; gap: 8px; font-size: 12.5px; color: #aab4c3; min-width: 0; }
.live #live-text { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.live .dot { width: 8px; height: 8px; border-radius: 50%; background: var(--up); box-shadow: 0 0 0 3px rgba(18, 163, 122, 0.25); flex: none; }
.live.down .dot { background: var(--down); box-shadow: 0 0 0 3px rgba(214, 56, 75, 0.25); }
.live.down { color: #f3a3ad; }

main { max-width: 1440px; margin: 0 auto; padding: 20px 24px 40px; display: grid; gap: 16px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: var(--radius); padding: 16px 18px; min-width: 0; }
h2 { font-size: 13px; font-weight: 650; margin: 0 0 10px; text-transform: uppercase; letter-spacing: 0.05em; color: var(--muted); }
h2 .span { text-transform: none; letter-spacing: 0; font-weight: 500; margin-left: 6px; }

.tiles { display: grid; grid-template-columns: repeat(5, minmax(0, 1fr)); gap: 12px; }
.tile { background: var(--card); border: 1px solid var(--line); border-left: 4px solid var(--accent); border-radius: var(--radius); padding: 12px 16px; min-width: 0; }
.tile#tile-up-card { border-left-color: var(--up); }
.tile.warn#tile-up-card { border-left-color: var(--drain); }
.tile.bad#tile-up-card { border-left-color: var(--down); }
.tile .label { font-size: 12px; color: var(--muted); font-weight: 550; }
.tile .value { font-size: 26px; font-weight: 650; font-variant-numeric: tabular-nums; letter-spacing: -0.01em; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.tile .sub { font-size: 12px; color: var(--muted); min-height: 1.45em; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }

.charts { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 16px; }
.chart { width: 100%; min-height: 190px; }
.uplot { font-family: var(--font); }
.u-legend { font-size: 12px; color: var(--muted); text-align: left; margin-top: 4px; }
.u-legend th { font-weight: 550; }
.u-legend .u-value { font-variant-numeric: tabular-nums; color: var(--text); }
.u-legend .u-marker { border-radius: 3px; }

.card-head { display: flex; align-items: center; justify-content: space-between; gap: 12px; flex-wrap: wrap; margin-bottom: 10px; }
.card-head h2 { margin: 0; }
.add { display: flex; gap: 8px; flex-wrap: wrap; }
.add #add-address { width: 220px; font-family: var(--mono); font-size: 13px; }
.add #add-weight { width: 72px; }
input { background: var(--card); border: 1px solid var(--line); border-radius: 7px; padding: 6px 10px; outline: none; }
input:focus { border-color: var(--accent); box-shadow: 0 0 0 3px var(--accent-fill); }
button { border: 1px solid var(--accent); background: var(--accent); color: #fff; border-radius: 7px; padding: 6px 14px; font-weight: 600; cursor: pointer; }
button:hover { filter: brightness(1.08); }
button:disabled { opacity: 0.55; cursor: progress; }
button.small { padding: 3px 10px; font-size: 12.5px; }
button.danger { background: transparent; color: var(--down); border-color: var(--line); }
button.danger:hover, button.danger.armed { background: var(--down); color: #fff; border-color: var(--down); }

.notice { display: flex; align-items: flex-start; justify-content: space-between; gap: 12px; padding: 9px 12px; border-radius: 8px; margin-bottom: 10px; font-weight: 500; }
.notice.error { background: var(--down-bg); color: var(--down); }
.notice.ok { background: var(--up-bg); color: var(--up); }
.notice .close { background: none; border: none; color: inherit; padding: 0 4px; font-size: 18px; line-height: 1; }

.table-wrap { overflow-x: auto; }
.table-wrap table { width: 100%; border-collapse: collapse; font-size: 13px; }
.table-wrap th { text-align: left; font-size: 11.5px; font-weight: 650; color: var(--muted); text-transform: uppercase; letter-spacing: 0.04em; padding: 8px 10px; border-bottom: 1px solid var(--line); white-space: nowrap; }
.table-wrap td { padding: 9px 10px; border-bottom: 1px solid var(--line); vertical-align: middle; }
.table-wrap tbody tr:last-child td { border-bottom: none; }
.table-wrap tbody tr:hover td { background: var(--grid); }
tr.st-down td:first-child { box-shadow: inset 3px 0 0 var(--down); }
tr.st-draining td:first-child { box-shadow: inset 3px 0 0 var(--drain); }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.bad { color: var(--down); font-weight: 600; }
.backend { white-space: nowrap; }
.addr { font-family: var(--mono); font-size: 12.5px; font-weight: 550; }
.badge { display: inline-block; margin-left: 8px; padding: 1px 7px; border-radius: 999px; font-size: 11px; font-weight: 600; color: var(--muted); background: var(--grid); border: 1px solid var(--line); }
.badge.src-api { color: var(--accent); border-color: var(--accent-fill); background: var(--accent-fill); }
.traits { display: block; margin-top: 2px; font-size: 11px; color: var(--muted); }
.traits:empty { display: none; }
.pill { display: inline-flex; align-items: center; gap: 6px; padding: 2px 9px 2px 8px; border-radius: 999px; font-size: 12px; font-weight: 650; }
.pill::before { content: ""; width: 7px; height: 7px; border-radius: 50%; background: currentColor; }
.pill.up { color: var(--up); background: var(--up-bg); }
.pill.down { color: var(--down); background: var(--down-bg); }
.pill.draining { color: var(--drain); background: var(--drain-bg); }
.weight { display: flex; gap: 6px; align-items: center; }
.weight input { width: 64px; padding: 3px 8px; font-variant-numeric: tabular-nums; }
.weight button { visibility: hidden; }
.weight.dirty button, .weight:focus-within button { visibility: visible; }
.when { color: var(--muted); white-space: nowrap; }
.lasterr { color: var(--down); max-width: 260px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.actions { text-align: right; }
.actions button { margin-top: 2px; margin-bottom: 2px; }
.admin-state-slot { display: inline-flex; margin-right: 8px; vertical-align: middle; white-space: nowrap; }
.admin-state-slot button.seg { padding: 3px 8px; background: transparent; color: var(--muted); border-color: var(--line); border-radius: 0; margin-left: -1px; font-weight: 600; text-transform: capitalize; }
.admin-state-slot button.seg:first-child { border-radius: 7px 0 0 7px; margin-left: 0; }
.admin-state-slot button.seg:last-child { border-radius: 0 7px 7px 0; }
.admin-state-slot button.seg.on { background: var(--accent-fill); color: var(--accent); border-color: var(--accent); position: relative; }
.admin-state-slot button.seg.on[data-state="drain"], .admin-state-slot button.seg.on[data-state="maint"] { background: var(--drain-bg); color: var(--drain); border-color: var(--drain); }
.empty { color: var(--muted); text-align: center; padding: 24px 0 12px; margin: 0; }

.overlay { position: fixed; inset: 0; background: rgba(10, 14, 20, 0.55); display: grid; place-items: center; z-index: 10; padding: 16px; }
.dialog { background: var(--card); border-radius: 12px; padding: 22px 24px; width: min(380px, 100%); display: grid; gap: 12px; box-shadow: 0 20px 60px rgba(0, 0, 0, 0.3); }
.dialog h2 { margin: 0; font-size: 16px; color: var(--text); text-transform: none; letter-spacing: 0; }
.dialog p { margin: 0; color: var(--muted); }
.dialog .auth-error { color: var(--down); font-weight: 550; }

@media (max-width: 1100px) {
  .tiles { grid-template-columns: repeat(3, minmax(0, 1fr)); }
  .charts { grid-template-columns: minmax(0, 1fr); }
}
@media (max-width: 760px) {
  .top { padding: 10px 14px; }
  main { padding: 14px 12px 32px; gap: 12px; }
  .tiles { grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 8px; }
  .tile .value { font-size: 21px; }
  .add, .add #add-address { width: 100%; }
  .add #add-address { flex: 1 1 160px; }
  /* The table becomes one card per backend, each value under its column's name. */
  .table-wrap table, .table-wrap tbody, .table-wrap tr, .table-wrap td { display: block; }
  .table-wrap thead { display: none; }
  .table-wrap tbody tr { border: 1px solid var(--line); border-radius: 8px; margin-bottom: 10px; padding: 6px 0; }
  .table-wrap td { display: flex; justify-content: space-between; align-items: center; gap: 12px; border: none; padding: 4px 12px; text-align: right; }
  .table-wrap td::before { content: attr(data-label); color: var(--muted); font-size: 12px; text-align: left; }
  td.backend { font-size: 14px; }
  .lasterr { max-width: none; white-space: normal; }
  tr.st-down td:first-child, tr.st-draining td:first-child { box-shadow: none; }
}
`;
