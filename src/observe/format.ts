// `holdfast status` for a terminal: the /status JSON as two aligned tables, interfaces and flows.
// Pure: format(status, now) -> string, so the output for a known state is a golden test.
import type { StatusFlow, StatusInterface, StatusJson } from './status.js';
import { isLinkLocal } from '../net/addr.js';

export interface FormatOptions {
  /** ANSI colour (bold headers, dim idle rows, green/red state) */
  readonly color?: boolean;
  /** show at most this many flows (the rest are counted) */
  readonly maxFlows?: number;
  /** where the status came from, for the title line */
  readonly source?: string;
}

export const IEC = ['B', 'KiB', 'MiB', 'GiB', 'TiB'] as const;

/** 0 B, 512 B, 1.5 KiB, 12.0 MiB, 120 MiB: at most three digits before the point */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n) || n < 0) return '-';
  let u = 0;
  while (n >= 1000 && u < IEC.length - 1) {
    n /= 1024;
    u++;
  }
  if (u === 0) return `${Math.round(n)} B`;
  return `${n < 100 ? n.toFixed(1) : Math.round(n)} ${IEC[u]}`;
}

export function formatRate(bytesPerSecond: number): string {
  return `${formatBytes(bytesPerSecond)}/s`;
}

/** 0s, 42s, 2m05s, 1h02m, 3d04h */
export function formatAge(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d${String(h % 24).padStart(2, '0')}h`;
}

/**
 * Worth a row or a card: carries or carried flows, or could (a default route or a global
 * address). Loopback without traffic, veths and bridges with only link-local addresses are not.
 */
export function isNotable(i: StatusInterface): boolean {
  if (i.flows > 0 || i.bytesUpTotal + i.bytesDownTotal > 0) return true;
  if (i.loopback) return false;
  return i.defaultRoutes.length > 0 || i.addresses.some((a) => !isLinkLocal(a));
}

function clip(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, max - 1)}…`;
}

type Align = 'left' | 'right';
interface Column {
  readonly title: string;
  readonly align: Align;
}
/** One row: a cell may hold several lines (an interface's addresses); style colours a whole row. */
interface Row {
  readonly cells: readonly (string | readonly string[])[];
  readonly style?: (s: string) => string;
}

function table(cols: readonly Column[], rows: readonly Row[], bold: (s: string) => string, indent = '  '): string[] {
  const lines = (c: string | readonly string[]) => (typeof c === 'string' ? [c] : c.length ? c : ['']);
  const width = cols.map((c, i) => Math.max(c.title.length, ...rows.map((r) => Math.max(...lines(r.cells[i]).map((l) => l.length)))));
  const render = (cells: readonly string[]) =>
    (indent + cells.map((c, i) => (cols[i].align === 'right' ? c.padStart(width[i]) : c.padEnd(width[i]))).join('  ')).trimEnd();
  const out = [bold(render(cols.map((c) => c.title)))];
  for (const r of rows) {
    const cellLines = r.cells.map(lines);
    const height = Math.max(...cellLines.map((l) => l.length));
    for (let k = 0; k < height; k++) {
      const line = render(cellLines.map((l) => l[k] ?? ''));
      out.push(r.style ? r.style(line) : line);
    }
  }
  return out;
}

function stateOf(i: StatusInterface): string {
  if (!i.adminUp) return 'down';
  if (!i.carrier) return 'no carrier';
  return 'up';
}

/** Global addresses; link-local ones only counted. */
function addressesOf(i: StatusInterface): string[] {
  const global = i.addresses.filter((a) => !isLinkLocal(a));
  const ll = i.addresses.length - global.length;
  return ll ? [...global, `+${ll} link-local`] : global;
}

function routesOf(i: StatusInterface): string[] {
  const rs = i.defaultRoutes.length ? i.defaultRoutes : i.defaultRoute ? [i.defaultRoute] : [];
  return rs.map((r) => `${r.gateway ? `via ${r.gateway}` : 'direct'} metric ${r.metric}`);
}

function bestOf(st: StatusJson, i: StatusInterface): string {
  const fams = [st.best.ipv4 === i.name && 'IPv4', st.best.ipv6 === i.name && 'IPv6'].filter(Boolean);
  return fams.join('+');
}

/** Interfaces: best first, then usable, then by kernel index; loopback last. */
function sortInterfaces(st: StatusJson): StatusInterface[] {
  const rank = (i: StatusInterface) => (i.loopback ? 3 : bestOf(st, i) ? 0 : i.up ? 1 : 2);
  return [...st.interfaces].sort((a, b) => rank(a) - rank(b) || a.index - b.index);
}

/** Flows: grouped by interface (in the interface order), oldest first within each. */
function sortFlows(flows: readonly StatusFlow[], ifOrder: readonly string[]): StatusFlow[] {
  const pos = (f: StatusFlow) => {
    if (f.egress === null) return -1;
    const p = ifOrder.indexOf(f.egress);
    return p < 0 ? ifOrder.length : p;
  };
  return [...flows].sort((a, b) => pos(a) - pos(b) || a.startedAt - b.startedAt || a.id - b.id);
}

export function format(st: StatusJson, now: number, opts: FormatOptions = {}): string {
  const c = opts.color === true;
  const sgr = (code: string) => (s: string) => (c ? `\x1b[${code}m${s}\x1b[0m` : s);
  const bold = sgr('1');
  const dim = sgr('2');
  const green = sgr('32');
  const yellow = sgr('33');

  const out: string[] = [];
  const { ipv4, ipv6 } = st.best;
  const bestText =
    ipv4 && ipv6 ? (ipv4 === ipv6 ? ipv4 : `${ipv4} (IPv4), ${ipv6} (IPv6)`) : ipv4 ? `${ipv4} (IPv4 only)` : ipv6 ? `${ipv6} (IPv6 only)` : '';
  out.push(
    `${bold('holdfast')}${opts.source ? ` at ${opts.source}` : ''}, up ${formatAge(now - st.startedAt)}, ` +
      `pinning by ${st.binder === 'device' ? 'device' : 'source address only'}`,
  );
  out.push(
    `${bestText ? `new flows go via ${bestText}` : 'no default route: only local destinations are reachable'}; ` +
      `${st.totals.live} live flow${st.totals.live === 1 ? '' : 's'}, ${st.totals.opened} opened, ${st.totals.cut} cut`,
  );

  out.push('', bold('INTERFACES'));
  const all = sortInterfaces(st);
  const ifs = all.filter(isNotable);
  const quiet = all.filter((i) => !isNotable(i));
  // type, metered and role (issue 15), when the status has them (older holdfasts do not)
  const roles = ifs.some((i) => i.role !== undefined);
  const typeOf = (i: StatusInterface) => `${i.type ?? '-'}${i.metered ? ', metered' : ''}`;
  const roleCols: Column[] = roles ? [{ title: 'TYPE', align: 'left' }, { title: 'ROLE', align: 'left' }] : [];
  if (ifs.length) out.push(
    ...table(
      [
        { title: 'NAME', align: 'left' },
        { title: 'STATE', align: 'left' },
        ...roleCols,
        { title: 'BEST', align: 'left' },
        { title: 'ADDRESSES', align: 'left' },
        { title: 'DEFAULT ROUTE', align: 'left' },
        { title: 'FLOWS', align: 'right' },
        { title: 'DOWN', align: 'right' },
        { title: 'UP', align: 'right' },
        { title: 'RATE DOWN', align: 'right' },
        { title: 'RATE UP', align: 'right' },
      ],
      ifs.map((i) => ({
        cells: [
          i.name,
          stateOf(i),
          ...(roles ? [typeOf(i), i.role ?? '-'] : []),
          bestOf(st, i) || '-',
          i.addresses.length ? addressesOf(i) : ['-'],
          routesOf(i).length ? routesOf(i) : ['-'],
          String(i.flows),
          formatBytes(i.bytesDownTotal),
          formatBytes(i.bytesUpTotal),
          formatRate(i.rateDown),
          formatRate(i.rateUp),
        ],
        style: bestOf(st, i) ? green : i.up ? undefined : i.loopback ? dim : yellow,
      })),
      bold,
    ),
  );

  if (quiet.length) {
    out.push(dim(`  idle, not shown: ${quiet.map((i) => `${i.name} (${stateOf(i)})`).join(', ')}`));
  }

  out.push('', bold('FLOWS'));
  if (st.flows.length === 0) out.push(dim('  no live flows'));
  else {
    const sorted = sortFlows(
      st.flows,
      ifs.map((i) => i.name),
    );
    const max = opts.maxFlows ?? Infinity;
    const shown = sorted.slice(0, max);
    out.push(
      ...table(
        [
          { title: 'ID', align: 'right' },
          { title: 'KIND', align: 'left' },
          { title: 'DESTINATION', align: 'left' },
          { title: 'INTERFACE', align: 'left' },
          { title: 'PLACED BY', align: 'left' },
          { title: 'AGE', align: 'right' },
          { title: 'DOWN', align: 'right' },
          { title: 'UP', align: 'right' },
          { title: 'RATE DOWN', align: 'right' },
          { title: 'RATE UP', align: 'right' },
        ],
        shown.map((f) => ({
          cells: [
            String(f.id),
            f.kind,
            clip(f.dst, 48),
            f.egress ?? '(dialing)',
            f.placedBy ?? '-',
            formatAge(now - f.startedAt),
            formatBytes(f.bytesDown),
            formatBytes(f.bytesUp),
            formatRate(f.rateDown),
            formatRate(f.rateUp),
          ],
          style: f.placedBy === 'fallback' ? yellow : undefined,
        })),
        bold,
      ),
    );
    if (sorted.length > shown.length) out.push(dim(`  … and ${sorted.length - shown.length} more`));
  }
  return out.join('\n') + '\n';
}
