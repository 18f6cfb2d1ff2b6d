// The life of a tunnel flow (SOCKS5 CONNECT, HTTP CONNECT), shared by both inbounds: open the
// flow, dial, answer the client only after upstream answered, pass on what the client sent
// early, relay, and end the flow once. The protocol parts are the two reply functions.
import type { Socket } from 'node:net';
import type { Destination, DialResult, FlowKind } from '../contracts.js';
import { Cancel } from '../cancel.js';
import { LoopError } from '../errors.js';
import type { Flow } from '../flows.js';
import { relay } from '../relay.js';
import type { InboundContext } from './context.js';

export interface TunnelProtocol {
  /** the bytes that tell the client the tunnel is up */
  success(up: DialResult): Buffer | string;
  /** the bytes that tell the client why not (then the connection is closed) */
  failure(err: unknown): Buffer | string;
}

/**
 * Relay with the idle timeout, ending the flow once (the flow gives back its lease as it ends).
 * A bulk tunnel may move to the native relay (ctx.relay): then a cut resets it there, and the
 * idle timeout reads the native relay's last activity.
 */
export function relayFlow(
  ctx: InboundContext,
  flow: Flow,
  client: Socket,
  upstream: Socket,
  onFirstUp: ((flow: Flow) => void) | undefined = undefined,
): void {
  const control = relay(
    client,
    upstream,
    flow,
    (end) => {
      if (end.reason === 'idle') ctx.counters.idleTimeouts++;
      flow.end(end.reason, end.error);
    },
    {
      offload: ctx.relay,
      idleMs: ctx.idleTimeoutMs,
      // the sockets are closed now: a cut resets both sides in the native relay
      onOffload: () => flow.onCut((err) => control.stop('cut', err, true)),
      onFirstUp,
    },
  );
}

function unexpected(ctx: InboundContext, flow: Flow, client: Socket, err: unknown, upstream?: Socket): void {
  ctx.log.error({ err, client: flow.client }, 'unexpected error; this connection is closed');
  flow.end('failed', err);
  client.destroy();
  upstream?.destroy();
}

/**
 * Open a tunnel for `dst` on behalf of `client` (paused; its early bytes are in `pipelined`
 * or still in the socket's buffer). Replies and errors go through `proto`.
 */
export function openTunnel(
  ctx: InboundContext,
  kind: FlowKind,
  client: Socket,
  clientName: string,
  dst: Destination,
  pipelined: Buffer,
  proto: TunnelProtocol,
): void {
  let flow: Flow;
  try {
    flow = ctx.flows.open(kind, clientName, dst);
  } catch (err) {
    ctx.counters.limitRefusals++;
    client.end(proto.failure(err));
    client.destroySoon();
    return;
  }
  const cancel = new Cancel();
  let replied = false;
  const onEarlyClose = () => cancel.abort(new Error('client left'));
  client.on('close', onEarlyClose); // removed once the dial settles
  flow.onCut((err) => {
    if (!replied) cancel.abort(err);
    else client.resetAndDestroy();
  });
  // a throw in either step (a bug, or a value Node refused) ends this flow, not the process: each
  // catches its own, so the chain needs no promise more for a .catch
  ctx.connector.open(dst, cancel).then(
    (up) => {
      try {
        // the flow owns the placement from here, whatever ends it
        flow.hold(up.lease);
        client.removeListener('close', onEarlyClose);
        if (client.destroyed || flow.ended) {
          up.socket.destroy();
          flow.end('client left');
          return;
        }
        replied = true;
        flow.pinned(up);
        client.write(proto.success(up));
        // once the client's first bytes are upstream the flow waits for its server, and the loop
        // has time to spare (ctx.waiting): now for bytes sent with the request, else at the relay's
        // first chunk up
        if (pipelined.length) {
          flow.bytesUp += pipelined.length;
          up.socket.write(pipelined);
        }
        relayFlow(ctx, flow, client, up.socket, pipelined.length ? undefined : ctx.waiting);
        if (pipelined.length) ctx.waiting?.(flow);
      } catch (err) {
        unexpected(ctx, flow, client, err, up.socket);
      }
    },
    (err: unknown) => {
      try {
        client.removeListener('close', onEarlyClose);
        if (err instanceof LoopError) ctx.counters.loopRefusals++;
        else ctx.fdExhausted?.(err, 'dial');
        flow.end(cancel.aborted ? 'client left' : 'dial failed', err);
        if (!client.destroyed) {
          client.end(proto.failure(err));
          client.destroySoon();
        }
      } catch (bug) {
        unexpected(ctx, flow, client, bug);
      }
    },
  );
}
