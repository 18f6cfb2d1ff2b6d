// @ts-check
// The dashboard's script: plain ES2020 for any current browser, checked by web/tsconfig.json.
// formatBytes, formatRate, formatAge, isLinkLocal and isNotable are the CLI's own functions,
// served by holdfast as /assets/format.js (web/globals.d.ts gives their types), so the terminal
// and the page say the same thing the same way.
'use strict';
(() => {
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

/** Keep parent's children (after `after`) in the order of items, reusing elements by key. */
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
  const global = list.filter((a) => !isLinkLocal(a));
  const ll = list.length - global.length;
  if (!list.length) return 'no address';
  return global.map(esc).join('<br>') + (ll ? (global.length ? '<br>' : '') + '<span class="ll">+' + ll + ' link-local</span>' : '');
}
function stateOf(i) { return !i.adminUp ? 'down' : !i.carrier ? 'no carrier' : 'up'; }
function bestFams(st, name) { return [st.best.ipv4 === name && 'IPv4', st.best.ipv6 === name && 'IPv6'].filter(Boolean); }
/** "wifi · metered · role backup": what decides whether new flows may come here (none for loopback) */
function placementText(i) {
  if (!i.role) return '';
  return [i.type, i.metered ? 'metered' : '', 'role ' + i.role].filter(Boolean).join(' · ');
}
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
      (i.role ? '<span class="badge' + (i.role === 'never' || i.role === 'backup' ? ' bad' : '') + '" data-role="placement" title="type, metered state and role' +
        (i.roleBy && i.roleBy !== 'default' ? ' (role by ' + esc(i.roleBy) + ')' : '') + '">' + esc(placementText(i)) + '</span>' : '') +
      (fams.length ? '<span class="badge best" data-role="best" title="best default route among the interfaces of the best role (' + fams.join(', ') + '): new flows go here">new flows · ' + fams.join('+') + '</span>' : '') +
      '</div>' +
      '<div class="addrs mono" title="' + esc(i.addresses.join('\n')) + '">' + addrsHtml(i.addresses) + '</div>' +
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
        '<td><span class="pb ' + esc(f.placedBy ?? '') + '">' + esc(f.placedBy ?? 'dialing') + '</span>' +
        // an MPTCP upstream: its subflows' interfaces, and where it moved from
        (f.transport === 'mptcp' ? ' <span class="pb mptcp" title="MPTCP subflows' + (f.movedFrom ? '; moved from ' + esc(f.movedFrom) : '') + '">mptcp ' +
          esc((f.subflows ?? []).join('+')) + '</span>' : '') + '</td>' +
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
