// The dashboard's endpoints on the listener: GET / (the page, web/dashboard.html), GET /events
// (Server-Sent Events: everything the page needs on connect, then one snapshot per second), the
// page's stylesheet and scripts from web/, and uPlot from its npm package under /assets/ (no CDN:
// holdfast works offline). Served only for requests addressed to
// holdfast itself (the listener's local endpoints), and only when the Host header names an
// address, localhost or this machine, so a web page cannot read it through DNS rebinding.
//
// Cost: nothing while no page is open. With pages open, one status snapshot is serialized per
// second and written to every page.
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { hostname } from 'node:os';
import { hostIsOurs } from '../inbound/host.js';
import { loadWebFiles, type WebFile } from './dashboard-page.js';
import type { SamplePoint, Stats } from './stats.js';
import type { StatusJson } from './status.js';

export type Handler = (req: IncomingMessage, res: ServerResponse) => void;

export interface Dashboard {
  /** path -> handler, for the listener's local endpoints */
  readonly routes: ReadonlyMap<string, Handler>;
  /** pages connected to /events now */
  readonly clients: number;
  /** End every event stream (shutdown). */
  close(): void;
}

/** A page that stops reading is dropped once this much is queued for it. */
const MAX_QUEUED_BYTES = 1 << 20;
/** Flows sent to the page per snapshot (the newest); /status has them all. */
const MAX_FLOWS = 500;

const require = createRequire(import.meta.url);

/** Scripts and styles only from holdfast itself; no inline script. */
const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; " +
  "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

interface Asset {
  readonly body: Buffer;
  readonly type: string;
}

function loadAsset(spec: string, type: string): Asset | undefined {
  try {
    return { body: readFileSync(require.resolve(spec)), type };
  } catch {
    return undefined;
  }
}

function uplotVersion(): string {
  try {
    return (JSON.parse(readFileSync(require.resolve('uplot/package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return '0';
  }
}

function sendText(res: ServerResponse, status: number, body: string, extra: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body), ...extra });
  res.end(body);
}

/** GET/HEAD only, Host ours; answers and returns false otherwise. */
function admit(req: IncomingMessage, res: ServerResponse): boolean {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    sendText(res, 405, 'holdfast: the dashboard answers GET\n', { allow: 'GET, HEAD' });
    return false;
  }
  if (!hostIsOurs(req.headers.host)) {
    sendText(res, 403, `holdfast: the dashboard answers requests to an address, localhost or ${hostname()}, not to "${req.headers.host}"\n`);
    return false;
  }
  return true;
}

/**
 * `decorate`: what the assembly adds to the sampler's status (each interface's type, metered
 * state and role, and `best` with roles counted), so the page shows what /status shows.
 */
export function createDashboard(stats: Stats, decorate: (s: StatusJson) => StatusJson = (s) => s): Dashboard {
  const version = uplotVersion();
  let web: Map<string, WebFile> | undefined;
  /** The page and its files, read from web/ on first use. */
  const webFile = (path: string): WebFile => (web ??= loadWebFiles(version)).get(path)!;
  const assets = new Map<string, Asset | null>();
  const assetOf = (path: string, spec: string, type: string): Asset | undefined => {
    if (!assets.has(path)) assets.set(path, loadAsset(spec, type) ?? null);
    return assets.get(path) ?? undefined;
  };

  const clients = new Set<ServerResponse>();
  let unsubscribe: (() => void) | undefined;
  let sentSeq = 0;
  let pending: NodeJS.Immediate | undefined;

  const snapshot = () => decorate(stats.status(MAX_FLOWS));

  const write = (res: ServerResponse, msg: string) => {
    if (res.destroyed || res.writableEnded) return;
    if (res.writableLength > MAX_QUEUED_BYTES) {
      res.destroy();
      return;
    }
    res.write(msg);
  };

  /** One message to every page: the status now, new events, and the newest sample (a tick) if any. */
  const broadcast = (type: 'tick' | 'update', point?: SamplePoint) => {
    if (pending) {
      clearImmediate(pending);
      pending = undefined;
    }
    if (clients.size === 0) return;
    const events = stats.events(sentSeq);
    if (events.length) sentSeq = events[events.length - 1].seq;
    const msg = `event: ${type}\ndata: ${JSON.stringify({ status: snapshot(), point, events })}\n\n`;
    for (const res of clients) write(res, msg);
  };

  const subscribe = () => {
    const offSample = stats.onSample((point) => broadcast('tick', point));
    // a route change or a cut shows at once, not at the next tick (a burst is one message)
    const offEvent = stats.onEvent(() => {
      pending ??= setImmediate(() => broadcast('update'));
    });
    return () => {
      offSample();
      offEvent();
      if (pending) clearImmediate(pending);
      pending = undefined;
    };
  };

  const drop = (res: ServerResponse) => {
    clients.delete(res);
    if (clients.size === 0 && unsubscribe) {
      unsubscribe();
      unsubscribe = undefined;
    }
  };

  const routes = new Map<string, Handler>();
  routes.set('/', (req, res) => {
    if (!admit(req, res)) return;
    const p = webFile('/');
    res.writeHead(200, {
      'content-type': p.type,
      'content-length': p.body.length,
      'cache-control': 'no-store',
      'content-security-policy': CSP,
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
    });
    res.end(req.method === 'HEAD' ? undefined : p.body);
  });
  for (const path of ['/assets/dashboard.css', '/assets/dashboard.js', '/assets/format.js']) {
    routes.set(path, (req, res) => {
      if (!admit(req, res)) return;
      const a = webFile(path);
      // no version in these URLs: the page always asks again (they are small)
      res.writeHead(200, { 'content-type': a.type, 'content-length': a.body.length, 'cache-control': 'no-cache', 'x-content-type-options': 'nosniff' });
      res.end(req.method === 'HEAD' ? undefined : a.body);
    });
  }
  routes.set('/events', (req, res) => {
    if (!admit(req, res)) return;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      'x-accel-buffering': 'no',
      'x-content-type-options': 'nosniff',
    });
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    req.socket.setNoDelay(true);
    const events = stats.events();
    // everything the page needs at once: no waiting a second for the first picture
    res.write(`retry: 2000\nevent: init\ndata: ${JSON.stringify({ status: snapshot(), history: stats.history(), events })}\n\n`);
    if (clients.size === 0 && events.length) sentSeq = events[events.length - 1].seq;
    clients.add(res);
    unsubscribe ??= subscribe();
    res.on('close', () => drop(res));
  });
  for (const [path, spec, type] of [
    ['/assets/uplot.js', 'uplot/dist/uPlot.iife.min.js', 'text/javascript; charset=utf-8'],
    ['/assets/uplot.css', 'uplot/dist/uPlot.min.css', 'text/css; charset=utf-8'],
  ] as const) {
    routes.set(path, (req, res) => {
      if (!admit(req, res)) return;
      const a = assetOf(path, spec, type);
      if (!a) {
        sendText(res, 404, `holdfast: ${spec} is not installed (npm ci)\n`);
        return;
      }
      res.writeHead(200, {
        'content-type': a.type,
        'content-length': a.body.length,
        // the page asks for ?v=<uplot version>: a new version is a new URL
        'cache-control': 'public, max-age=604800, immutable',
        'x-content-type-options': 'nosniff',
      });
      res.end(req.method === 'HEAD' ? undefined : a.body);
    });
  }

  return {
    routes,
    get clients() {
      return clients.size;
    },
    close() {
      for (const res of clients) res.end();
      clients.clear();
      unsubscribe?.();
      unsubscribe = undefined;
    },
  };
}
