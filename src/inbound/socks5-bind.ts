// SOCKS5 BIND (RFC 1928 section 4): listen for one inbound connection from the peer the client
// names, pinned like a TCP flow.
//
// DST.ADDR is the peer the client expects (FTP's active mode: the server it has a control
// connection to). The listener is pinned (device + address) to the egress the policy picks for
// that address, the kernel's choice or, when the client already has flows to it, affinity's, so
// the peer's connection and every reply to it use the interface of the client's other flows with
// that peer, and stay there when routes change. The first reply names the listening address and
// port. Only a connection from the expected peer's IP (any of them, for a name; any peer at all
// for 0.0.0.0 or ::) is taken; others are reset and counted, and the wait goes on. The second
// reply names the peer; then bytes are relayed, and the flow (kind socks5-bind) ends like a
// CONNECT tunnel. The port in DST.PORT is not checked: the peer's source port is its own choice.
//
// When no expected peer connects within `bind.acceptTimeout`, the second reply is 0x06 (TTL
// expired: RFC 1928 names no code for this, and 0x06 is what holdfast sends for a connect that
// timed out, which clients read as a timeout). A client that ends or closes its connection while
// waiting ends the BIND.
import type { Server, Socket } from 'node:net';
import type { CloseReason, Egress, Target } from '../contracts.js';
import { boundAddressOf } from '../egress/dial-udp.js';
import { DialTimeoutError, HfCode, HoldfastError, Reply, hfCodeOf, toSocksReply } from '../errors.js';
import type { Flow } from '../flows.js';
import type { SocksCommandContext } from './socks5-session.js';
import { encodeReply } from './socks5.js';
import { relayFlow } from './tunnel.js';
import { unmap } from '../net/addr.js';
import { guarded } from './validate.js';

/** BIND outcomes that are not flows of their own (plain fields, no events). */
export interface BindCounters {
  /** BIND requests that got a listener */
  binds: number;
  /** connections from a peer other than the expected one, reset */
  peersRefused: number;
  /** no expected peer within bind.acceptTimeout */
  timeouts: number;
}

export function newBindCounters(): BindCounters {
  return { binds: 0, peersRefused: 0, timeouts: 0 };
}

/** Client bytes held while waiting for the peer; past this, reading pauses. */
const MAX_EARLY_BYTES = 64 * 1024;

function isUnspecified(ip: string): boolean {
  return ip === '0.0.0.0' || ip === '::';
}

export function handleBind(c: SocksCommandContext): void {
  const { socket, ctx, dst } = c;
  const x = ctx.socks5;
  if (!x) {
    socket.end(encodeReply(Reply.CMD_UNSUPPORTED));
    socket.destroySoon();
    return;
  }
  let flow: Flow;
  try {
    flow = ctx.flows.open('socks5-bind', c.client, dst);
  } catch (err) {
    ctx.counters.limitRefusals++;
    socket.end(encodeReply(toSocksReply(err)));
    socket.destroySoon();
    return;
  }

  let state: 'listening' | 'relaying' | 'done' = 'listening';
  let server: Server | undefined;
  let timer: { cancel(): void } | undefined;
  const early: Buffer[] = c.pipelined.length ? [c.pipelined] : [];
  let earlyBytes = c.pipelined.length;

  const stopWaiting = () => {
    timer?.cancel();
    socket.removeListener('data', onEarlyData);
    socket.removeListener('end', onLeft);
    socket.removeListener('close', onLeft);
    if (server) {
      server.close();
      server.removeAllListeners('connection');
      server.on('connection', (s: Socket) => s.destroy());
    }
  };
  /** the end before any relay: an error reply if the client is still there, else just close */
  const fail = (reason: CloseReason, err?: unknown) => {
    if (state !== 'listening') return;
    state = 'done';
    stopWaiting();
    flow.end(reason, err);
    if (socket.destroyed) return;
    if (err) socket.end(encodeReply(toSocksReply(err)));
    else socket.end();
    socket.destroySoon();
  };
  const onLeft = () => fail('client left');
  const onEarlyData = (chunk: Buffer) => {
    early.push(chunk);
    earlyBytes += chunk.length;
    if (earlyBytes >= MAX_EARLY_BYTES) socket.pause();
  };
  socket.on('data', onEarlyData);
  socket.once('end', onLeft);
  socket.once('close', onLeft);
  socket.resume();
  flow.onCut((err) => {
    if (state === 'relaying') socket.resetAndDestroy();
    else fail('cut', err);
  });

  let allowed: Set<string> | undefined; // undefined: any peer
  const onConnection = (peer: Socket) =>
    guarded(flow.log, 'bind accept', (err) => {
      peer.destroy();
      if (state === 'listening') fail('failed', err);
      else socket.destroy();
    }, () => accept(peer));
  const accept = (peer: Socket) => {
    peer.on('error', () => {
      /* a reset peer ends in 'close' */
    });
    const ip = unmap(peer.remoteAddress ?? '');
    if (state !== 'listening') {
      peer.destroy();
      return;
    }
    if (allowed && !allowed.has(ip)) {
      x.bindCounters.peersRefused++;
      flow.log.debug({ peer: ip, expected: dst.host }, 'bind peer refused');
      peer.resetAndDestroy();
      return;
    }
    state = 'relaying';
    stopWaiting();
    socket.write(encodeReply(Reply.SUCCEEDED, { ip, port: peer.remotePort ?? 0 }));
    for (const b of early) {
      flow.bytesUp += b.length;
      peer.write(b);
    }
    early.length = 0;
    relayFlow(ctx, flow, socket, peer);
  };

  const begin = async () => {
    const targets = await ctx.connector.resolve(dst);
    if (!targets.some((t) => isUnspecified(t.ip))) allowed = new Set(targets.map((t) => unmap(t.ip)));
    const target: Target = targets[0];
    const candidates = await x.policy.candidates(target, dst);
    const failures: string[] = [];
    let lastErr: unknown;
    for (const egress of candidates) {
      if (state !== 'listening') return;
      let s: Server;
      try {
        s = await x.pinned.listen(egress, onConnection);
      } catch (err) {
        lastErr = err;
        failures.push(`${egress.ifname} ${egress.source}: ${hfCodeOf(err)}`);
        continue;
      }
      if (state !== 'listening') {
        s.close();
        return;
      }
      listening(s, egress, target, failures.join('; '));
      return;
    }
    throw lastErr ?? new HoldfastError(HfCode.NO_EGRESS, `bind for ${dst.host}: no interface`);
  };

  const listening = (s: Server, egress: Egress, target: Target, attempts: string) => {
    server = s;
    const addr = s.address();
    const bound = boundAddressOf(addr && typeof addr === 'object' ? addr : { address: '', port: 0 }, egress);
    x.bindCounters.binds++;
    flow.pinned({ egress, target, localAddress: bound.ip, attempts });
    // the flow holds this placement (affinity) until it ends
    flow.hold(x.policy.lease(dst, target, egress));
    socket.write(encodeReply(Reply.SUCCEEDED, bound));
    const ms = x.bindAcceptTimeoutMs;
    if (ms > 0) {
      timer = ctx.flows.clock.setTimeout(() => {
        if (state !== 'listening') return;
        x.bindCounters.timeouts++;
        fail('timeout', new DialTimeoutError(`bind on ${bound.ip}:${bound.port}: no connection from ${dst.host} in ${ms} ms`));
      }, ms);
    }
  };

  begin().catch((err: unknown) => fail('dial failed', err));
}
