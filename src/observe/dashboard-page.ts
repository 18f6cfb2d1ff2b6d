// The dashboard page: one HTML document with inline CSS and JS, no framework. uPlot (from the npm
// package, served by holdfast under /assets/) draws the chart; Server-Sent Events from /events
// bring a snapshot every second. The byte/rate/age formatting is the CLI's own functions, so the
// terminal and the page say the same thing the same way.
import { formatAge, formatBytes, formatRate, IEC, isLinkLocalAddress, isNotable } from './format.js';

const CSS = `
:root{color-scheme:light dark;
 --bg:#f6f7f9;--panel:#fff;--text:#1c2024;--muted:#60646c;--faint:#8b8d98;--border:#e0e1e6;--grid:#eceef0;
 --accent:#0d74ce;--accent-bg:#e6f4fe;--ok:#18794e;--ok-bg:#e6f6eb;--warn:#ab6400;--warn-bg:#fff7c2;--bad:#ce2c31;--bad-bg:#feebec;
 --shadow:0 1px 2px rgba(0,0,0,.04),0 1px 8px rgba(0,0,0,.04)}
@media (prefers-color-scheme:dark){:root{
 --bg:#111113;--panel:#18191b;--text:#edeef0;--muted:#b0b4ba;--faint:#777b84;--border:#2b2d31;--grid:#222325;
 --accent:#70b8ff;--accent-bg:#0d2847;--ok:#3dd68c;--ok-bg:#132d21;--warn:#ffca16;--warn-bg:#302008;--bad:#ff9592;--bad-bg:#3b1219;
 --shadow:none}}
*{box-sizing:border-box}
html{background:var(--bg);color:var(--text)}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;-webkit-font-smoothing:antialiased}
main{max-width:1320px;margin:0 auto;padding:20px 24px 32px}
.mono,code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace;font-size:12.5px}
.num{font-variant-numeric:tabular-nums}
header{display:flex;align-items:center;gap:12px;flex-wrap:wrap}
h1{font-size:19px;font-weight:650;letter-spacing:-.01em;margin:0;display:flex;align-items:center;gap:8px}
h1 svg{color:var(--accent)}
.pill{display:inline-flex;align-items:center;gap:6px;padding:2px 10px 2px 8px;border-radius:999px;font-size:12px;border:1px solid var(--border);color:var(--muted);background:var(--panel)}
.pill i{width:8px;height:8px;border-radius:50%;background:var(--faint)}
.pill.live i{background:var(--ok);box-shadow:0 0 0 3px var(--ok-bg)}
.meta{margin-left:auto;color:var(--muted);font-size:13px}
.lead{margin:14px 0 16px;font-size:15px;color:var(--muted)}
.lead b{color:var(--text);font-weight:600}
.banner{margin:0 0 16px;padding:10px 14px;border-radius:8px;background:var(--warn-bg);color:var(--warn);border:1px solid var(--border)}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(290px,1fr));gap:12px;margin-bottom:12px}
.quiet{margin:-4px 0 12px;color:var(--faint);font-size:12.5px}
.quiet:empty{display:none}
.panel,.card{background:var(--panel);border:1px solid var(--border);border-radius:10px;box-shadow:var(--shadow)}
.card{padding:14px 16px 12px;border-top:3px solid var(--c);transition:border-color .3s,box-shadow .3s}
.card.best{box-shadow:0 0 0 1px var(--accent),var(--shadow);border-color:var(--accent);border-top-color:var(--c)}
.card.off{opacity:.62}
.ctop{display:flex;align-items:center;gap:8px;margin-bottom:6px}
.ifname{font-weight:650;font-size:15px}
.sw{display:inline-block;width:10px;height:10px;border-radius:3px;background:var(--c);flex:none}
.badge{font-size:11.5px;font-weight:550;padding:1px 8px;border-radius:999px;background:var(--grid);color:var(--muted);white-space:nowrap}
.badge.up{background:var(--ok-bg);color:var(--ok)}
.badge.bad{background:var(--bad-bg);color:var(--bad)}
.badge.best{background:var(--accent-bg);color:var(--accent);margin-left:auto}
.addrs{color:var(--muted);line-height:1.55;min-height:1.55em;word-break:break-all}
.ll{color:var(--faint);font-family:system-ui,sans-serif;font-size:12px}
.route{color:var(--muted);font-size:12.5px;margin-top:2px}
.nums{display:grid;grid-template-columns:minmax(0,.6fr) minmax(0,1fr) minmax(0,1fr);gap:12px;margin-top:12px;padding-top:10px;border-top:1px solid var(--grid)}
.big{display:block;font-size:17px;overflow:hidden;text-overflow:ellipsis;font-weight:600;font-variant-numeric:tabular-nums;letter-spacing:-.01em;white-space:nowrap}
.lbl{display:block;font-size:11.5px;color:var(--faint);white-space:nowrap}
.panel{padding:14px 16px;min-width:0}
.ph{display:flex;align-items:baseline;gap:10px;margin-bottom:8px}
h2{font-size:14px;font-weight:620;margin:0}
.sub{color:var(--faint);font-size:12.5px}
.chartbox{margin-bottom:12px}
#chart{min-height:240px}
#chart .u-legend{font-size:12.5px;color:var(--muted);text-align:left;margin:6px 0 0 70px}
#chart .u-legend th{font-weight:550;color:var(--text)}
#chart .u-legend .u-value{font-variant-numeric:tabular-nums;min-width:6.5em}
#chart .u-legend .u-series:first-child{display:none}
#chart .u-legend .u-marker{border-radius:3px}
.lower{display:grid;grid-template-columns:minmax(0,2.1fr) minmax(300px,1fr);gap:12px;align-items:start}
@media (max-width:1000px){.lower{grid-template-columns:minmax(0,1fr)}}
#flows{width:100%;border-collapse:collapse;font-variant-numeric:tabular-nums}
#flows th{font-size:11.5px;font-weight:550;color:var(--faint);text-align:left;padding:4px 8px;border-bottom:1px solid var(--border);white-space:nowrap}
#flows td{padding:5px 8px;border-bottom:1px solid var(--grid);white-space:nowrap}
#flows .r{text-align:right}
tr.group td{padding-top:12px;border-bottom:1px solid var(--border);font-size:12.5px;color:var(--muted)}
tr.group b{color:var(--text);font-weight:620;margin:0 4px 0 2px}
tr.flow td:first-child{border-left:3px solid var(--c);padding-left:9px}
td.dst{max-width:300px;overflow:hidden;text-overflow:ellipsis}
.kind{color:var(--muted)}
.pb{font-size:11.5px;padding:1px 7px;border-radius:999px;background:var(--grid);color:var(--muted)}
.pb.affinity{background:var(--accent-bg);color:var(--accent)}
.pb.fallback{background:var(--warn-bg);color:var(--warn)}
.empty{color:var(--faint);padding:14px 8px}
.empty code{color:var(--muted)}
ol#feed{list-style:none;margin:0;padding:0;max-height:520px;overflow:auto}
#feed li{display:grid;grid-template-columns:auto auto 1fr;gap:8px;align-items:baseline;padding:6px 2px;border-bottom:1px solid var(--grid);font-size:13px}
#feed time{color:var(--faint);font-size:12px}
#feed .tag{font-size:11px;font-weight:600;text-transform:uppercase;letter-spacing:.04em;color:var(--faint)}
#feed .route .tag{color:var(--accent)}#feed .cut .tag{color:var(--bad)}#feed .fallback .tag{color:var(--warn)}
#feed .route .txt{font-weight:550}
.stale .cards,.stale .panel{opacity:.55}
footer{margin-top:18px;color:var(--faint);font-size:12.5px}
footer a{color:var(--muted)}
`;

// The page's script. Plain ES2020 for any current browser; the format functions are the CLI's.
const JS = `'use strict';
(() => {
const IEC = ${JSON.stringify(IEC)};
${formatBytes.toString()}
${formatRate.toString()}
${formatAge.toString()}
${isLinkLocalAddress.toString()}
${isNotable.toString()}
// interface colours: distinct in light and dark, and none of them the accent blue that marks the best card
const PALETTE = ['#8b5cf6','#f59e0b','#14b8a6','#ec4899','#84cc16','#ef4444','#06b6d4','#a16207'];
const LOOPBACK = '#94a3b8';
const WINDOW_S = 300;
/** y-axis steps on binary units, so ticks read 200 KiB/s, 1.0 MiB/s (not 977 KiB/s) */
const RATE_STEPS = [];
for (let k = 0; k < 5; k++) for (const m of [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]) RATE_STEPS.push(m * 1024 ** k);
const colors = new Map();
const loopbacks = new Set();
function colorOf(name) {
  if (loopbacks.has(name)) return LOOPBACK;
  let c = colors.get(name);
  if (!c) { c = PALETTE[colors.size % PALETTE.length]; colors.set(name, c); }
  return c;
}
const ESC = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ESC[c]);
const $ = (id) => document.getElementById(id);
$('example').textContent = 'curl -x http://' + location.host + ' http://example.org/';
const hhmmss = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });

/** Keep parent's children (after \`after\`) in the order of items, reusing elements by key. */
function sync(parent, after, items, key, make, update) {
  const old = new Map();
  for (let el = after ? after.nextElementSibling : parent.firstElementChild; el; el = el.nextElementSibling) old.set(el.dataset.key, el);
  let prev = after;
  for (const it of items) {
    const k = key(it);
    let el = old.get(k);
    if (el) old.delete(k); else { el = make(it); el.dataset.key = k; }
    update(el, it);
    const want = prev ? prev.nextElementSibling : parent.firstElementChild;
    if (el !== want) parent.insertBefore(el, want);
    prev = el;
  }
  for (const el of old.values()) el.remove();
}
function setHtml(el, html) { if (el._h !== html) { el.innerHTML = html; el._h = html; } }

// ---- interfaces, by kernel index, loopback last; those without flows, default route or global
// address (loopback at rest, veths, bridges) are only named
function ifaceOrder(st) {
  for (const i of st.interfaces) if (i.loopback) loopbacks.add(i.name);
  const shown = st.interfaces.filter(isNotable);
  shown.sort((a, b) => (a.loopback - b.loopback) || (a.index - b.index));
  for (const i of shown) colorOf(i.name);
  const quiet = st.interfaces.filter((i) => !isNotable(i));
  $('quiet').textContent = quiet.length ? 'Idle, not shown: ' + quiet.map((i) => i.name + ' (' + stateOf(i) + ')').join(', ') : '';
  return shown;
}
/** global addresses; link-local ones only counted (hover shows all) */
function addrsHtml(list) {
  const global = list.filter((a) => !isLinkLocalAddress(a));
  const ll = list.length - global.length;
  if (!list.length) return 'no address';
  return global.map(esc).join('<br>') + (ll ? (global.length ? '<br>' : '') + '<span class="ll">+' + ll + ' link-local</span>' : '');
}
function stateOf(i) { return !i.adminUp ? 'down' : !i.carrier ? 'no carrier' : 'up'; }
function bestFams(st, name) { return [st.best.ipv4 === name && 'IPv4', st.best.ipv6 === name && 'IPv6'].filter(Boolean); }
function routeText(r) { return (r.gateway ? 'via ' + r.gateway : 'direct') + ' · metric ' + r.metric; }

function renderCards(st, ifs) {
  sync($('cards'), null, ifs, (i) => i.name, (i) => {
    const el = document.createElement('article');
    el.dataset.interface = i.name;
    el.style.setProperty('--c', colorOf(i.name));
    return el;
  }, (el, i) => {
    const fams = bestFams(st, i.name);
    const state = stateOf(i);
    el.className = 'card' + (fams.length ? ' best' : '') + (i.up ? '' : ' off');
    const routes = i.defaultRoutes.length ? i.defaultRoutes.map(routeText).join('<br>') : (i.loopback ? 'loopback' : 'no default route');
    setHtml(el,
      '<div class="ctop"><span class="sw"></span><span class="ifname">' + esc(i.name) + '</span>' +
      '<span class="badge ' + (state === 'up' ? 'up' : 'bad') + '" data-role="state">' + state + '</span>' +
      (fams.length ? '<span class="badge best" data-role="best" title="lowest-metric default route (' + fams.join(', ') + '): new flows go here">new flows · ' + fams.join('+') + '</span>' : '') +
      '</div>' +
      '<div class="addrs mono" title="' + esc(i.addresses.join('\\n')) + '">' + addrsHtml(i.addresses) + '</div>' +
      '<div class="route">' + (i.defaultRoutes.length ? 'default ' : '') + routes + '</div>' +
      '<div class="nums">' +
        '<div><span class="big" data-role="flows">' + i.flows + '</span><span class="lbl">flows</span></div>' +
        '<div title="down ' + formatRate(i.rateDown) + ', up ' + formatRate(i.rateUp) + '"><span class="big">' + formatRate(i.rateDown + i.rateUp) + '</span><span class="lbl">now</span></div>' +
        '<div title="down ' + formatBytes(i.bytesDownTotal) + ', up ' + formatBytes(i.bytesUpTotal) + '"><span class="big">' + formatBytes(i.bytesDownTotal + i.bytesUpTotal) + '</span><span class="lbl">relayed</span></div>' +
      '</div>');
  });
}

// ---- flows, grouped under the interface each is pinned to
function renderFlows(st, ifs) {
  const groups = new Map();
  for (const i of ifs) groups.set(i.name, []);
  for (const f of st.flows) {
    const k = f.egress ?? '(dialing)';
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k).push(f);
  }
  const list = [...groups].filter(([, fl]) => fl.length > 0).map(([name, fl]) => ({ name, flows: fl.sort((a, b) => a.startedAt - b.startedAt || a.id - b.id) }));
  $('flowcount').textContent = st.totals.live + ' live' + (st.flowsOmitted ? ' (' + st.flowsOmitted + ' not shown)' : '');
  $('noflows').hidden = list.length > 0;
  sync($('flows'), $('flowshead'), list, (g) => g.name, (g) => {
    const tb = document.createElement('tbody');
    tb.dataset.interface = g.name;
    tb.style.setProperty('--c', g.name === '(dialing)' ? 'var(--faint)' : colorOf(g.name));
    const h = document.createElement('tr');
    h.className = 'group'; h.dataset.key = 'h';
    tb.append(h);
    return tb;
  }, (tb, g) => {
    const rate = g.flows.reduce((s, f) => s + f.rateDown + f.rateUp, 0);
    setHtml(tb.firstElementChild, '<td colspan="8"><span class="sw"></span><b>' + esc(g.name) + '</b>' +
      g.flows.length + ' flow' + (g.flows.length === 1 ? '' : 's') + ' · ' + formatRate(rate) + '</td>');
    sync(tb, tb.firstElementChild, g.flows, (f) => String(f.id), (f) => {
      const tr = document.createElement('tr');
      tr.className = 'flow';
      tr.dataset.flowId = f.id; tr.dataset.kind = f.kind; tr.dataset.destination = f.dst;
      tr.title = 'flow #' + f.id + ' from ' + f.client + (f.src ? ' · pinned to ' + f.src : '') + (f.ip ? ' → ' + f.ip : '');
      return tr;
    }, (tr, f) => {
      tr.dataset.placedBy = f.placedBy ?? '';
      setHtml(tr,
        '<td class="kind">' + esc(f.kind) + '</td>' +
        '<td class="dst mono">' + esc(f.dst) + '</td>' +
        '<td><span class="pb ' + esc(f.placedBy ?? '') + '">' + esc(f.placedBy ?? 'dialing') + '</span></td>' +
        '<td class="r">' + formatAge(st.now - f.startedAt) + '</td>' +
        '<td class="r">' + formatBytes(f.bytesDown) + '</td>' +
        '<td class="r">' + formatBytes(f.bytesUp) + '</td>' +
        '<td class="r">' + formatRate(f.rateDown) + '</td>' +
        '<td class="r">' + formatRate(f.rateUp) + '</td>');
    });
  });
}

// ---- events
let lastSeq = 0;
let epoch = 0;
function addEvents(evs) {
  const feed = $('feed');
  for (const e of evs) {
    if (e.seq <= lastSeq) continue;
    lastSeq = e.seq;
    const li = document.createElement('li');
    li.className = e.type;
    li.dataset.type = e.type;
    li.innerHTML = '<time class="num">' + hhmmss(e.at) + '</time><span class="tag">' + esc(e.type === 'net' ? 'network' : e.type) + '</span><span class="txt">' + esc(e.text) + '</span>';
    feed.prepend(li);
  }
  while (feed.children.length > 100) feed.lastElementChild.remove();
}

// ---- throughput history (up + down per interface) and the chart
let times = [];
let series = new Map();
function loadHistory(h) {
  times = h.t.slice();
  series = new Map();
  for (const s of h.series) series.set(s.name, s.down.map((d, k) => (d === null && s.up[k] === null ? null : (d || 0) + (s.up[k] || 0))));
}
function appendPoint(p) {
  times.push(p.t);
  for (const name of Object.keys(p.ifs)) if (!series.has(name)) series.set(name, new Array(times.length - 1).fill(null));
  for (const [name, v] of series) { const x = p.ifs[name]; v.push(x ? x.down + x.up : null); }
  const extra = times.length - WINDOW_S;
  if (extra > 0) { times.splice(0, extra); for (const v of series.values()) v.splice(0, extra); }
  for (const [name, v] of series) if (v.every((x) => x === null)) series.delete(name);
}
let plot = null;
let plotKey = '';
const cssVar = (n) => getComputedStyle(document.documentElement).getPropertyValue(n).trim();
function chartOpts(names, width) {
  const muted = cssVar('--faint'), grid = cssVar('--grid');
  const axis = { stroke: muted, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 }, font: '11.5px system-ui,sans-serif' };
  const latest = (u, sidx) => { const d = u.data[sidx]; for (let k = d.length - 1; k >= 0; k--) if (d[k] != null) return d[k]; return null; };
  const hhmm = (t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false, hour: '2-digit', minute: '2-digit' });
  return {
    width, height: 220,
    cursor: { drag: { x: false, y: false }, points: { size: 7 } },
    legend: { live: true, markers: { width: 0, fill: (u, i) => (i > 0 ? colorOf(names[i - 1]) : 'transparent') } },
    scales: {
      // the last 5 minutes; while holdfast is young, from its start (at least a minute)
      x: { time: true, range: (u, min, max) => { const hi = max ?? Date.now() / 1000; return [Math.max(hi - WINDOW_S, Math.min(min ?? hi, hi - 60)), hi]; } },
      y: { range: (u, min, max) => [0, Math.max(1024, (max || 0) * 1.15)] },
    },
    axes: [
      { ...axis, space: 70, incrs: [15, 30, 60, 120, 300], values: (u, vals) => vals.map((t) => (t % 60 ? ':' + String(t % 60).padStart(2, '0') : hhmm(t))) },
      { ...axis, size: 78, incrs: RATE_STEPS, values: (u, vals) => vals.map((v) => formatRate(v)) },
    ],
    series: [
      { label: '', value: (u, v, s, idx) => (idx == null ? 'now' : hhmmss(v * 1000)) },
      ...names.map((n) => ({
        label: n, stroke: colorOf(n), width: 2, fill: colorOf(n) + '14', points: { show: false },
        value: (u, v, s, idx) => { const x = idx == null ? latest(u, s) : v; return x == null ? '–' : formatRate(x); },
      })),
    ],
  };
}
function drawChart(ifs) {
  const box = $('chart');
  if (typeof uPlot === 'undefined') { box.textContent = 'The chart library did not load (/assets/uplot.js).'; return; }
  const index = new Map(ifs.map((i, k) => [i.name, k]));
  // a line for each interface shown as a card, and any other that carried bytes in the window
  const names = [...series.keys()]
    .filter((n) => index.has(n) || series.get(n).some((v) => v > 0))
    .sort((a, b) => (index.get(a) ?? 1e9) - (index.get(b) ?? 1e9) || (a < b ? -1 : 1));
  const data = [times, ...names.map((n) => series.get(n))];
  const key = names.join(',') + '|' + (dark.matches ? 'd' : 'l');
  if (!plot || key !== plotKey) {
    if (plot) plot.destroy();
    box.textContent = '';
    plot = new uPlot(chartOpts(names, box.clientWidth), data, box);
    plotKey = key;
  } else plot.setData(data);
}
const dark = matchMedia('(prefers-color-scheme: dark)');
dark.addEventListener('change', () => { plotKey = ''; if (last) render(last); });
new ResizeObserver(() => { if (plot) plot.setSize({ width: $('chart').clientWidth, height: 220 }); }).observe($('chart'));

// ---- header
function renderHeader(st) {
  const fams = [st.best.ipv4 && [st.best.ipv4, 'IPv4'], st.best.ipv6 && [st.best.ipv6, 'IPv6']].filter(Boolean);
  let lead;
  if (!fams.length) lead = 'No default route: only local destinations are reachable.';
  else if (fams.length === 2 && fams[0][0] === fams[1][0]) lead = 'New flows go via <b>' + esc(fams[0][0]) + '</b>.';
  else lead = 'New flows go via ' + fams.map(([n, f]) => '<b>' + esc(n) + '</b> (' + f + ')').join(', ') + '.';
  setHtml($('lead'), lead + ' Every live flow stays on the interface it began on.');
  $('meta').textContent = 'up ' + formatAge(st.now - st.startedAt) + ' · ' + st.totals.live + ' live · ' + st.totals.opened + ' opened · ' + st.totals.cut + ' cut';
  $('binder').hidden = st.binder === 'device';
}

let last = null;
let ready = false;
function render(st) {
  last = st;
  const ifs = ifaceOrder(st);
  renderHeader(st);
  renderCards(st, ifs);
  renderFlows(st, ifs);
  drawChart(ifs);
  if (!ready) {
    ready = true;
    performance.mark('hf-first-render');
    document.body.dataset.ready = '1';
  }
}

// ---- the stream
const live = $('live');
function connect() {
  const es = new EventSource('/events');
  es.addEventListener('init', (e) => {
    const m = JSON.parse(e.data);
    if (m.status.startedAt !== epoch) { epoch = m.status.startedAt; lastSeq = 0; $('feed').textContent = ''; }
    loadHistory(m.history);
    addEvents(m.events);
    render(m.status);
  });
  es.addEventListener('tick', (e) => {
    const m = JSON.parse(e.data);
    appendPoint(m.point);
    addEvents(m.events);
    render(m.status);
  });
  // between ticks, when something happens (a route change, a cut)
  es.addEventListener('update', (e) => {
    const m = JSON.parse(e.data);
    addEvents(m.events);
    render(m.status);
  });
  es.onopen = () => { live.className = 'pill live'; live.lastChild.textContent = 'live'; document.body.classList.remove('stale'); };
  es.onerror = () => { live.className = 'pill'; live.lastChild.textContent = 'reconnecting…'; document.body.classList.add('stale'); };
}
connect();
})();
`;

const LOGO =
  '<svg width="20" height="20" viewBox="0 0 20 20" aria-hidden="true"><circle cx="10" cy="5" r="2.6" fill="none" stroke="currentColor" stroke-width="1.8"/>' +
  '<path d="M10 7.6V17M4 11.5c0 3.2 2.7 5.5 6 5.5s6-2.3 6-5.5M6.5 10.5H4M16 10.5h-2.5" fill="none" stroke="currentColor" stroke-width="1.8" stroke-linecap="round"/></svg>';

export interface Page {
  readonly html: string;
  /** the inline script, for a hash in Content-Security-Policy */
  readonly script: string;
}

/** The page, built once. `assets` is the query suffix that versions /assets/ URLs. */
export function buildPage(assetsVersion: string): Page {
  const v = encodeURIComponent(assetsVersion);
  const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>holdfast</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/assets/uplot.css?v=${v}">
<style>${CSS}</style>
</head>
<body>
<main>
<header>
<h1>${LOGO}holdfast</h1>
<span class="pill" id="live"><i></i><span>connecting…</span></span>
<span class="meta num" id="meta"></span>
</header>
<p class="lead" id="lead">Loading…</p>
<p class="banner" id="binder" hidden>Pinning by source address only: the native addon is missing, so flows are not held across route changes unless source policy routing is set up. Run <code>holdfast doctor</code>.</p>
<section class="cards" id="cards" aria-label="interfaces"></section>
<p class="quiet" id="quiet"></p>
<section class="panel chartbox" aria-label="throughput">
<div class="ph"><h2>Throughput per interface</h2><span class="sub">bytes per second, up + down, over the last 5 minutes</span></div>
<div id="chart"></div>
</section>
<div class="lower">
<section class="panel" aria-label="live flows">
<div class="ph"><h2>Live flows</h2><span class="sub" id="flowcount"></span></div>
<table id="flows"><thead id="flowshead"><tr><th>Kind</th><th>Destination</th><th>Placed by</th><th class="r">Age</th><th class="r">Down</th><th class="r">Up</th><th class="r">Rate down</th><th class="r">Rate up</th></tr></thead></table>
<p class="empty" id="noflows">No live flows. Send something through this proxy, e.g. <code id="example"></code></p>
</section>
<section class="panel" aria-label="events">
<div class="ph"><h2>Events</h2><span class="sub">route changes, cuts, fallbacks</span></div>
<ol id="feed"></ol>
</section>
</div>
<footer>The same data as JSON at <a href="/status">/status</a>, for Prometheus at <a href="/metrics">/metrics</a>, and in a terminal: <code>holdfast status --watch</code>.</footer>
</main>
<script src="/assets/uplot.js?v=${v}"></script>
<script>${JS}</script>
</body>
</html>
`;
  return { html, script: JS };
}
