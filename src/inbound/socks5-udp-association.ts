// One SOCKS5 UDP association (the relay socket for the client, the pinned upstream sockets, the
// names it resolved, its idle timer and its end). What it does is told in socks5-udp.ts.
import { createSocket, type RemoteInfo, type Socket as UdpSocket } from 'node:dgram';
import type { CloseReason, Destination, Egress, Family, Target } from '../contracts.js';
import { boundAddressOf } from '../egress/dial-udp.js';
import { HfCode, HoldfastError, Reply, hfCodeOf } from '../errors.js';
import type { Flow } from '../flows.js';
import type { Socks5Extras } from './context.js';
import type { SocksCommandContext } from './socks5-session.js';
import { encodeReply, encodeUdpHeader, parseUdpHeader } from './socks5.js';
import {
  MAX_NAMES,
  MAX_PAYLOAD,
  MAX_WAITING,
  NAME_TTL_MS,
  relayFail,
  targetOf,
  type UdpCounters,
} from './socks5-udp-datagram.js';
import { unmap } from '../net/addr.js';
import { guarded, isDestinationPort, isUnspecifiedIp } from './validate.js';

export class Association {
  readonly #c: SocksCommandContext;
  readonly #x: Socks5Extras;
  readonly #flow: Flow;
  readonly #counters: UdpCounters;
  readonly #clientIp: string;
  /** 0 until the client's first valid datagram (when the request named no port) */
  #clientPort: number;
  #relay: UdpSocket | undefined;
  #relayFamily: Family = 4;
  /** the pinned interface: set by the first upstream socket, kept for life */
  #egress: Egress | undefined;
  readonly #upstream = new Map<Family, UdpSocket>();
  /**
   * Upstream sockets open one at a time, so the first decides the interface: each datagram that
   * finds no socket for its family queues a step here (at most MAX_WAITING wait at once).
   */
  #opening: Promise<unknown> = Promise.resolve();
  #waiting = 0;
  readonly #names = new Map<string, { targets: Target[]; at: number }>();
  #lastActive = 0;
  /** the idle timeout this association began with (a reload applies to new ones) */
  readonly #idleMs: number;
  #idleTimer: { cancel(): void } | undefined;
  #ended = false;

  constructor(c: SocksCommandContext, x: Socks5Extras, flow: Flow) {
    this.#c = c;
    this.#x = x;
    this.#flow = flow;
    this.#counters = x.udpCounters;
    this.#clientIp = unmap(c.socket.remoteAddress ?? '');
    this.#clientPort = c.request.port;
    this.#idleMs = x.udpIdleTimeoutMs;
  }

  start(): void {
    const { socket } = this.#c;
    const flow = this.#flow;
    flow.onCut((err) => this.#finish('cut', err));
    // the control connection: its end ends the association; anything the client sends on it is ignored
    const onEarly = () => this.#finish('client left');
    socket.once('close', onEarly);
    const local = unmap(socket.localAddress ?? '127.0.0.1');
    this.#relayFamily = local.includes(':') ? 6 : 4;
    const relay = createSocket({ type: this.#relayFamily === 6 ? 'udp6' : 'udp4' });
    this.#relay = relay;
    relay.on('message', (msg, rinfo) => this.#guard('udp from client', () => this.#fromClient(msg, rinfo)));
    let bound = false;
    relay.on('error', (err) => {
      // before 'listening': the bind failed. After: sends report to their callback; nothing to do
      if (!bound) this.#failStart(err);
    });
    relay.once('listening', () => {
      bound = true;
      socket.removeListener('close', onEarly);
      if (this.#ended) return;
      const a = relay.address();
      socket.write(encodeReply(Reply.SUCCEEDED, { ip: unmap(a.address), port: a.port }));
      flow.log.debug({ relay: `${a.address}:${a.port}`, clientPort: this.#clientPort }, 'udp relay');
      socket.on('data', () => {
        /* nothing is expected on the control connection after the request */
      });
      socket.once('end', () => this.#finish('done'));
      socket.once('close', () => this.#finish('client left'));
      // a FIN that came with the request: the association is over before it began
      if (socket.readableEnded) return this.#finish('done');
      socket.resume();
      this.#lastActive = this.#clock().now();
      this.#armIdle(this.#idleMs);
    });
    try {
      relay.bind({ address: local, port: 0 });
    } catch (err) {
      this.#failStart(err);
    }
  }

  /** A throw while handling a datagram ends this association only (issue 11), never the process. */
  #guard(what: string, fn: () => void): void {
    guarded(this.#flow.log, what, (err) => this.#finish('failed', new HoldfastError(HfCode.INTERNAL, `${what}: ${(err as Error)?.message}`, { cause: err })), fn);
  }

  #clock() {
    return this.#c.ctx.flows.clock;
  }

  /** The relay socket could not be made: the association never began. */
  #failStart(err: unknown): void {
    if (this.#ended) return;
    const e = new HoldfastError(HfCode.INTERNAL, `udp relay on ${this.#c.socket.localAddress}: ${(err as Error).message}`, {
      cause: err,
    });
    this.#ended = true;
    this.#closeSockets();
    this.#flow.end('failed', e);
    relayFail(this.#c, e);
  }

  #armIdle(ms: number): void {
    if (ms <= 0 || this.#ended) return;
    this.#idleTimer = this.#clock().setTimeout(() => {
      const idle = this.#clock().now() - this.#lastActive;
      if (idle >= this.#idleMs) this.#finish('idle');
      else this.#armIdle(this.#idleMs - idle);
    }, ms);
  }

  // ---- client -> upstream -------------------------------------------------------------------

  #fromClient(msg: Buffer, rinfo: RemoteInfo): void {
    if (this.#ended) return;
    const counters = this.#counters;
    if (unmap(rinfo.address) !== this.#clientIp || (this.#clientPort !== 0 && rinfo.port !== this.#clientPort)) {
      counters.foreign++;
      return;
    }
    const h = parseUdpHeader(msg);
    if (!h.ok) {
      counters.malformed++;
      return;
    }
    if (h.value.frag !== 0) {
      counters.frag++;
      return;
    }
    // the client's port is fixed by its first valid datagram
    if (this.#clientPort === 0) this.#clientPort = rinfo.port;
    this.#lastActive = this.#clock().now();
    const payload = msg.subarray(h.used);
    const a = h.value.address;
    const port = h.value.port;
    // port 0 is no destination (dgram.send throws on it)
    if (!isDestinationPort(port)) {
      counters.badPort++;
      return;
    }
    if (a.kind !== 'domain') {
      if (isUnspecifiedIp(a.ip)) {
        counters.loop++;
        return;
      }
      this.#toTarget(targetOf(a.ip, port, a.kind === 'ipv6'), payload);
      return;
    }
    const key = a.name.toLowerCase();
    const hit = this.#names.get(key);
    if (hit && this.#clock().now() - hit.at < NAME_TTL_MS) {
      this.#toTarget(this.#pick(hit.targets, port), payload, a.name);
      return;
    }
    if (!this.#hold()) return;
    const dst: Destination = { host: a.name, port, isName: true };
    this.#c.ctx.connector.resolve(dst).then(
      (targets) => {
        this.#waiting--;
        if (this.#ended) return;
        if (this.#names.size >= MAX_NAMES) this.#names.delete(this.#names.keys().next().value!);
        this.#names.set(key, { targets, at: this.#clock().now() });
        this.#toTarget(this.#pick(targets, port), payload, a.name);
      },
      () => {
        this.#waiting--;
        counters.unresolved++;
      },
    );
  }

  /** Count one more datagram waiting; false (and counted) if too many already are. */
  #hold(): boolean {
    if (this.#waiting >= MAX_WAITING) {
      this.#counters.queueFull++;
      return false;
    }
    this.#waiting++;
    return true;
  }

  /** Of a name's addresses: one of a family that has an upstream socket, else the first. */
  #pick(targets: readonly Target[], port: number): Target {
    const t = targets.find((t) => this.#upstream.has(t.family)) ?? targets[0];
    return { ip: t.ip, family: t.family, port };
  }

  /** Send `payload` to `target` (resolved from `name`, if the client gave one). */
  #toTarget(target: Target, payload: Buffer, name?: string): void {
    if (isUnspecifiedIp(target.ip)) {
      this.#counters.loop++; // a name that resolved to 0.0.0.0 or ::
      return;
    }
    if (payload.length > MAX_PAYLOAD[target.family]) {
      this.#counters.oversized++;
      return;
    }
    const s = this.#upstream.get(target.family);
    if (s) {
      this.#send(s, target, payload);
      return;
    }
    if (!this.#hold()) return;
    const dst: Destination = name ? { host: name, port: target.port, isName: true } : { host: target.ip, port: target.port, isName: false };
    this.#open(target, dst).then((sock) => {
      this.#waiting--;
      if (this.#ended) return;
      if (sock) this.#send(sock, target, payload);
      else this.#counters.noEgress++;
    });
  }

  #send(s: UdpSocket, target: Target, payload: Buffer): void {
    const flow = this.#flow;
    flow.datagramsUp = (flow.datagramsUp ?? 0) + 1;
    flow.bytesUp += payload.length;
    try {
      s.send(payload, target.port, target.ip, this.#onSent);
    } catch (err) {
      // a value Node refuses synchronously (bad port or address): this datagram only
      this.#counters.sendFailed++;
      this.#flow.log.debug({ err, ip: target.ip, port: target.port }, 'udp send refused');
    }
  }

  readonly #onSent = (err: Error | null) => {
    if (!err) return;
    if ((err as NodeJS.ErrnoException).code === 'EMSGSIZE') this.#counters.oversized++;
    else this.#counters.sendFailed++;
  };

  /**
   * An upstream socket for target's family, pinned: the first one to the policy's first
   * candidate for `target` (the association's interface from then on), later ones to that same
   * interface. Resolves undefined (and counts nothing: the caller does) when none can be made
   * for this target; a datagram to another destination waiting behind it tries its own.
   */
  #open(target: Target, dst: Destination): Promise<UdpSocket | undefined> {
    const run = async (): Promise<UdpSocket | undefined> => {
      try {
        return await this.#openNow(target, dst);
      } catch (err) {
        this.#flow.log.warn({ err, ip: target.ip }, 'udp upstream failed');
        return undefined;
      }
    };
    const p = this.#opening.then(run, run);
    this.#opening = p;
    return p;
  }

  async #openNow(target: Target, dst: Destination): Promise<UdpSocket | undefined> {
    if (this.#ended) return undefined;
    const have = this.#upstream.get(target.family);
    if (have) return have; // opened by a datagram that waited ahead of this one
    const log = this.#flow.log;
    let candidates: Egress[];
    try {
      candidates = await this.#x.policy.candidates(target, dst);
    } catch (err) {
      log.debug({ dst: dst.host, ip: target.ip, code: hfCodeOf(err) }, 'udp no egress');
      return undefined;
    }
    const pinned = this.#egress;
    if (pinned) {
      // another family: the same interface, with its address of that family
      candidates = candidates.filter((e) => e.ifname === pinned.ifname).map((e) => ({ ...e, placedBy: pinned.placedBy }));
      if (candidates.length === 0) {
        log.debug({ ip: target.ip, egress: pinned.ifname }, 'udp no egress for family');
        return undefined;
      }
    }
    const failures: string[] = [];
    for (const egress of candidates) {
      let s: UdpSocket;
      try {
        s = await this.#x.pinned.udp(egress);
      } catch (err) {
        failures.push(`${egress.ifname} ${egress.source}: ${hfCodeOf(err)}`);
        continue;
      }
      if (this.#ended) {
        s.close();
        return undefined;
      }
      s.on('message', (msg, rinfo) => this.#guard('udp from upstream', () => this.#fromUpstream(msg, rinfo)));
      s.on('error', () => {
        this.#counters.sendFailed++;
      });
      this.#upstream.set(egress.family, s);
      const bound = boundAddressOf(s.address(), egress);
      if (!pinned) {
        this.#egress = egress;
        this.#flow.pinned({ egress, target, localAddress: bound.ip, attempts: failures.join('; ') }, dst);
      } else {
        log.debug({ ip: target.ip, egress: egress.ifname, src: bound.ip }, 'udp second family');
      }
      // the flow holds this placement (affinity) until it ends
      this.#flow.hold(this.#x.policy.lease(dst, target, egress));
      return s;
    }
    log.debug({ ip: target.ip, attempts: failures.join('; ') }, 'udp no egress');
    return undefined;
  }

  // ---- upstream -> client -------------------------------------------------------------------

  #fromUpstream(msg: Buffer, rinfo: RemoteInfo): void {
    if (this.#ended || !this.#relay) return;
    const head = encodeUdpHeader({ ip: rinfo.address }, rinfo.port);
    if (head.length + msg.length > MAX_PAYLOAD[this.#relayFamily]) {
      this.#counters.oversized++;
      return;
    }
    this.#lastActive = this.#clock().now();
    const flow = this.#flow;
    flow.datagramsDown = (flow.datagramsDown ?? 0) + 1;
    flow.bytesDown += msg.length;
    try {
      this.#relay.send([head, msg], this.#clientPort, this.#clientIp, this.#onSent);
    } catch (err) {
      this.#counters.sendFailed++;
      this.#flow.log.debug({ err }, 'udp send to client refused');
    }
  }

  // ---- the end ------------------------------------------------------------------------------

  #closeSockets(): void {
    for (const s of [this.#relay, ...this.#upstream.values()]) {
      if (!s) continue;
      try {
        s.close();
      } catch {
        /* already closed */
      }
    }
    this.#upstream.clear();
  }

  /** End once: close the sockets, close (or reset, when cut) the control connection; the flow gives back its leases. */
  #finish(reason: CloseReason, err?: Error): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#idleTimer?.cancel();
    this.#closeSockets();
    const { socket } = this.#c;
    if (!socket.destroyed) {
      if (reason === 'cut') socket.resetAndDestroy();
      else {
        socket.end();
        socket.destroySoon();
      }
    }
    this.#flow.end(reason, err);
  }
}
