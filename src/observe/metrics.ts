// /metrics: a Prometheus view of the stats. Every metric is filled from Stats when scraped
// (prom-client `collect`), so nothing is counted twice and nothing runs when nobody scrapes.
// Its own Registry, not prom-client's global one: several holdfasts in one process (tests) or
// an embedding application keep their metrics apart.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Counter, Gauge, Registry } from 'prom-client';
import { bestDefault } from '../net/monitor.js';
import type { Stats } from './stats.js';

export interface Metrics {
  readonly registry: Registry;
  /** GET /metrics */
  handle(req: IncomingMessage, res: ServerResponse): void;
}

import { VERSION } from '../version.js';

export { VERSION };

/** Fill a counter from a map "a|b" -> n, labels named in order. */
function fromMap(c: Counter<string> | Gauge<string>, names: readonly string[], m: ReadonlyMap<string, number>): void {
  c.reset();
  for (const [key, n] of m) {
    const parts = key.split('|');
    const labels: Record<string, string> = {};
    names.forEach((name, i) => (labels[name] = parts[i] ?? ''));
    if (c instanceof Counter) c.inc(labels, n);
    else c.set(labels, n);
  }
}

/**
 * `refusals`: the inbound's refusal counters (clientsRefused, authFailures, badHandshakes, ...),
 * shown as holdfast_refusals_total{reason}. `best`: where new flows go per family, roles counted
 * (the policy's answer); without it, the lowest-metric default route.
 */
export function createMetrics(
  stats: Stats,
  binder: 'device' | 'source',
  refusals?: () => Readonly<Record<string, number>>,
  best?: (family: 4 | 6) => string | undefined,
  forward?: () => { readonly resumes: number; readonly resumeFailures: number },
): Metrics {
  const registry = new Registry();
  const registers = [registry];

  new Gauge({
    name: 'holdfast_info',
    help: 'Always 1; labels tell the version and how flows are pinned (device or source address only)',
    labelNames: ['version', 'binder'],
    registers,
    collect() {
      this.set({ version: VERSION, binder }, 1);
    },
  });
  new Gauge({
    name: 'holdfast_start_time_seconds',
    help: 'When this holdfast started (seconds since the epoch)',
    registers,
    collect() {
      this.set(stats.startedAt / 1000);
    },
  });
  new Gauge({
    name: 'holdfast_flows_open',
    help: 'Live flows by kind and egress, the interface they are pinned to ("" while dialing)',
    labelNames: ['kind', 'egress'],
    registers,
    collect() {
      const m = new Map<string, number>();
      for (const f of stats.liveFlows()) {
        const k = `${f.kind}|${f.interface ?? ''}`;
        m.set(k, (m.get(k) ?? 0) + 1);
      }
      fromMap(this, ['kind', 'egress'], m);
    },
  });
  new Counter({
    name: 'holdfast_flows_total',
    help: 'Flows begun, by kind',
    labelNames: ['kind'],
    registers,
    collect() {
      fromMap(this, ['kind'], stats.counters().flowsOpened);
    },
  });
  new Counter({
    name: 'holdfast_flows_closed_total',
    help: 'Flows ended, by kind and reason (done, client left, upstream left, reset, idle, shutdown, cut, dial failed, timeout, upstream error, failed)',
    labelNames: ['kind', 'reason'],
    registers,
    collect() {
      fromMap(this, ['kind', 'reason'], stats.counters().flowsClosed);
    },
  });
  new Counter({
    name: 'holdfast_bytes_total',
    help: 'Bytes relayed, by egress (the interface the flow was pinned to) and direction (up: client to upstream)',
    labelNames: ['egress', 'direction'],
    registers,
    collect() {
      this.reset();
      for (const [name, b] of stats.bytesByInterface()) {
        this.inc({ egress: name, direction: 'up' }, b.up);
        this.inc({ egress: name, direction: 'down' }, b.down);
      }
    },
  });
  new Counter({
    name: 'holdfast_cuts_total',
    help: 'Flows cut because their egress lost carrier or its address past the grace period, by egress and reason',
    labelNames: ['egress', 'reason'],
    registers,
    collect() {
      fromMap(this, ['egress', 'reason'], stats.counters().cuts);
    },
  });
  new Counter({
    name: 'holdfast_moves_total',
    help: 'MPTCP flows not cut when their egress was lost, because a subflow on another interface lived; by the interface they moved to',
    labelNames: ['egress'],
    registers,
    collect() {
      fromMap(this, ['egress'], stats.counters().moves);
    },
  });
  new Counter({
    name: 'holdfast_fallbacks_total',
    help: "Flows placed on another interface than the kernel's choice because it failed or stalled",
    labelNames: ['egress'],
    registers,
    collect() {
      fromMap(this, ['egress'], stats.counters().fallbacks);
    },
  });
  new Counter({
    name: 'holdfast_affinity_placements_total',
    help: 'Flows placed by affinity: joined the interface of live (or lingering) flows to the same destination',
    labelNames: ['egress'],
    registers,
    collect() {
      fromMap(this, ['egress'], stats.counters().affinity);
    },
  });
  new Counter({
    name: 'holdfast_dial_errors_total',
    help: 'Flows whose upstream could not be reached, by HF_* code',
    labelNames: ['code'],
    registers,
    collect() {
      fromMap(this, ['code'], stats.counters().dialErrors);
    },
  });
  new Counter({
    name: 'holdfast_route_changes_total',
    help: 'Network changes seen by the monitor that changed default routes',
    registers,
    collect() {
      this.reset();
      this.inc(stats.counters().routeChanges);
    },
  });
  new Counter({
    name: 'holdfast_net_changes_total',
    help: 'Network changes seen by the monitor (interfaces, carrier, addresses or default routes)',
    registers,
    collect() {
      this.reset();
      this.inc(stats.counters().netChanges);
    },
  });
  if (refusals) {
    new Counter({
      name: 'holdfast_refusals_total',
      help: 'Connections and requests refused or cut at the door, by reason (the counters under "refusals" in /status)',
      labelNames: ['reason'],
      registers,
      collect() {
        this.reset();
        for (const [reason, n] of Object.entries(refusals())) this.inc({ reason }, n);
      },
    });
  }
  if (forward) {
    new Counter({
      name: 'holdfast_forward_resumes_total',
      help: 'Plain-HTTP downloads continued on a new connection (Range, If-Range) after their upstream died mid-body',
      registers,
      collect() {
        this.reset();
        this.inc(forward().resumes);
      },
    });
    new Counter({
      name: 'holdfast_forward_resume_failures_total',
      help: 'Resumes tried that did not splice (no 206 of the same range and validator, or no new connection): the client was cut',
      registers,
      collect() {
        this.reset();
        this.inc(forward().resumeFailures);
      },
    });
  }
  new Gauge({
    name: 'holdfast_interface_up',
    help: '1 if the interface is up with carrier, else 0',
    labelNames: ['interface'],
    registers,
    collect() {
      this.reset();
      for (const i of stats.net().interfaces) this.set({ interface: i.name }, i.up && i.carrier ? 1 : 0);
    },
  });
  new Gauge({
    name: 'holdfast_interface_best',
    help: '1 for the interface where new flows go now, per family: the best default route among the interfaces of the best role',
    labelNames: ['interface', 'family'],
    registers,
    collect() {
      this.reset();
      const snap = stats.net();
      const b4 = best ? best(4) : bestDefault(snap, 4)?.ifname;
      const b6 = best ? best(6) : bestDefault(snap, 6)?.ifname;
      for (const i of snap.interfaces) {
        if (i.loopback) continue;
        this.set({ interface: i.name, family: 'ipv4' }, b4 === i.name ? 1 : 0);
        this.set({ interface: i.name, family: 'ipv6' }, b6 === i.name ? 1 : 0);
      }
    },
  });

  return {
    registry,
    handle(req, res) {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' });
        res.end('holdfast: /metrics answers GET\n');
        return;
      }
      registry.metrics().then(
        (text) => {
          res.writeHead(200, {
            'content-type': registry.contentType,
            'content-length': Buffer.byteLength(text),
            'cache-control': 'no-store',
          });
          res.end(text);
        },
        (err: Error) => {
          const body = `holdfast: metrics failed: ${err.message}\n`;
          res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) });
          res.end(body);
        },
      );
    },
  };
}
