// The byte relay between a client socket and its upstream. Each direction ends alone (a clean
// end half-closes the other side); an error destroys both; the flow ends once, when both sockets
// have closed. Counters are plain number fields on the flow: no allocation, log or event per chunk.
import type { Socket } from 'node:net';

export interface RelayCounters {
  bytesUp: number;
  bytesDown: number;
}

export interface RelayEnd {
  /** 'done' (both sides ended cleanly), or the first error's code ('ECONNRESET', 'EPIPE', ...) */
  readonly reason: string;
  readonly error: Error | undefined;
}

/** A 'data' handler that forwards to dst with backpressure and counts into `counters[field]`. */
function forward(src: Socket, dst: Socket, counters: RelayCounters, field: 'bytesUp' | 'bytesDown'): void {
  src.on('data', (chunk: Buffer) => {
    counters[field] += chunk.length;
    if (!dst.write(chunk)) src.pause();
  });
  dst.on('drain', () => src.resume());
  // the client may have half-closed during the handshake, before the relay began
  if (src.readableEnded) dst.end();
  else src.on('end', () => dst.end());
}

/**
 * Relay client <-> upstream until both are closed. `onDone` is called exactly once.
 * Both sockets must have been created with allowHalfOpen: true.
 */
export function relay(
  client: Socket,
  upstream: Socket,
  counters: RelayCounters,
  onDone: (end: RelayEnd) => void,
): void {
  let open = 2;
  let firstError: Error | undefined;
  const onError = (err: Error) => {
    firstError ??= err;
    client.destroy();
    upstream.destroy();
  };
  const onClose = () => {
    if (--open > 0) return;
    const code = (firstError as NodeJS.ErrnoException | undefined)?.code;
    onDone({ reason: firstError ? (code ?? firstError.message) : 'done', error: firstError });
  };
  client.on('error', onError);
  upstream.on('error', onError);
  client.once('close', onClose);
  upstream.once('close', onClose);
  forward(client, upstream, counters, 'bytesUp');
  forward(upstream, client, counters, 'bytesDown');
  // a side that closed without error before the other ended (e.g. destroyed): take the other down
  client.once('close', () => {
    if (!upstream.destroyed && !upstream.writableEnded) upstream.destroySoon();
  });
  upstream.once('close', () => {
    if (!client.destroyed && !client.writableEnded) client.destroySoon();
  });
  client.resume();
  upstream.resume();
}
