/**
 * The dashboard's two HTML documents. Everything dynamic is built by the bundled script
 * (/dashboard/app.js, from client/); the styles are inline so the page is one request plus one.
 */

const STYLE = `
:root { color-scheme: light dark; --fg: #1b1f24; --muted: #667; --bg: #fff; --panel: #f4f6f8; --line: #d8dde3; --accent: #2563eb; --bad: #c2410c; --ok: #15803d; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6e8eb; --muted: #9aa3ad; --bg: #111418; --panel: #1b2026; --line: #2c333b; --accent: #60a5fa; --bad: #fb923c; --ok: #4ade80; } }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; gap: 1rem; align-items: center; padding: .6rem 1rem; border-bottom: 1px solid var(--line); }
header h1 { font-size: 1.05rem; margin: 0; }
header .grow { flex: 1; }
main { display: grid; grid-template-columns: minmax(0, 3fr) minmax(320px, 2fr); gap: 1rem; padding: 1rem; }
section { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: .75rem; margin-bottom: 1rem; }
section h2 { font-size: .95rem; margin: 0 0 .5rem; }
.scroll { overflow-x: auto; }
table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: .25rem .4rem; border-bottom: 1px solid var(--line); white-space: nowrap; }
th[data-sort] { cursor: pointer; user-select: none; }
th[aria-sort=ascending]::after { content: ' ▲'; } th[aria-sort=descending]::after { content: ' ▼'; }
tbody tr.db:hover { background: color-mix(in srgb, var(--accent) 10%, transparent); cursor: pointer; }
tr.selected { outline: 2px solid var(--accent); }
.controls { display: flex; gap: .5rem; margin-bottom: .5rem; align-items: center; flex-wrap: wrap; }
input, select, button { font: inherit; color: inherit; background: var(--bg); border: 1px solid var(--line); border-radius: 4px; padding: .25rem .5rem; }
button { cursor: pointer; } button:disabled { opacity: .5; cursor: not-allowed; }
button.danger { border-color: var(--bad); color: var(--bad); }
.state-open, .state-running { color: var(--ok); } .state-idle, .state-draining { color: var(--accent); } .state-closed, .state-remote { color: var(--muted); } .state-dead { color: var(--bad); }
.muted { color: var(--muted); }
.cards { display: flex; gap: .75rem; flex-wrap: wrap; }
.card { min-width: 7rem; } .card b { display: block; font-size: 1.2rem; }
svg.chart { width: 100%; height: 90px; display: block; }
svg.chart polyline { fill: none; stroke: var(--accent); stroke-width: 1.5; }
svg.chart text { fill: var(--muted); font-size: 10px; }
code { word-break: break-all; font-size: 12px; }
ul.events { list-style: none; margin: 0; padding: 0; max-height: 14rem; overflow: auto; font-size: 12px; }
dialog { border: 1px solid var(--line); border-radius: 6px; background: var(--panel); color: var(--fg); }
.signin { max-width: 22rem; margin: 15vh auto; }
.signin input { width: 100%; margin: .5rem 0; }
.error { color: var(--bad); }
`;

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

export function dashboardPage(): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>pglite-gateway dashboard</title><link rel="icon" href="data:,"><style>${STYLE}</style></head>
<body><div id="app" class="muted" style="padding:1rem">Loading…</div>
<script src="/dashboard/app.js" defer></script></body></html>`;
}

export function signInPage(error?: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · pglite-gateway</title><link rel="icon" href="data:,"><style>${STYLE}</style></head>
<body><section class="signin"><h2>pglite-gateway dashboard</h2>
<form method="post" action="/dashboard/sign-in">
<label for="token">Admin token (ADMIN_TOKEN)</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
${error ? `<p class="error" role="alert">${escapeHtml(error)}</p>` : ''}
<button type="submit">Sign in</button></form></section></body></html>`;
}
