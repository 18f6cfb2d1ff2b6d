// TCP keepalive on upstream sockets, set once a flow has lived a second. Most flows a browser
// makes end sooner: they never pay keepalive's four setsockopt calls (10-14 µs of a short flow's
// 300-400 here: bench/README "twelfth pass"). A flow that lives on gets the same keepalive as
// before, one to two seconds late: its first probe comes after dial.keepAlive idle counted from
// then, not from the connect, and a dead peer is found at most two seconds later.
import type { Socket } from 'node:net';

const kLate = Symbol('holdfast.lateKeepAlive');
const kMs = Symbol('holdfast.keepAliveMs');
const kAt = Symbol('holdfast.keepAliveAt');
type Late = Socket & { [kLate]?: LateKeepAlive | undefined; [kMs]?: number; [kAt]?: number };

/**
 * The sockets waiting for their keepalive, in the order they were added, each with the tick that
 * sets it: the second after its add, so a socket gets it one to two periods after it was added.
 * A socket that closes first is forgotten (the relay tells it, `keepAliveForget`): the list must
 * not keep a closed socket alive past the young collections. No timer runs while none wait.
 */
export class LateKeepAlive {
  #sockets: (Late | undefined)[] = [];
  /** the tick (of #ticks) at which each of #sockets gets its keepalive */
  #due: number[] = [];
  #ticks = 0;
  #timer: NodeJS.Timeout | undefined;

  /** `set`: keepalive with `ms` idle on this open socket (the addon's keepAlive on its fd, or Node's) */
  constructor(
    private readonly set: (socket: Socket, ms: number) => void,
    readonly periodMs = 1000,
  ) {}

  /** The number of sockets still waiting (for tests and diagnostics). */
  get size(): number {
    let n = 0;
    for (const s of this.#sockets) if (s !== undefined) n++;
    return n;
  }

  /** Set keepalive with `ms` idle (> 0) on this connected socket within two periods, if it is still open. */
  add(socket: Socket, ms: number): void {
    const s = socket as Late;
    s[kLate] = this;
    s[kMs] = ms;
    s[kAt] = this.#sockets.length;
    this.#sockets.push(s);
    this.#due.push(this.#ticks + 2);
    this.#timer ??= setInterval(tick, this.periodMs, this).unref();
  }

  /** Set it now on a socket that still waits for it; one not waiting is left as it is. */
  apply(socket: Socket): void {
    const s = socket as Late;
    if (s[kLate] !== this) return;
    this.forget(s);
    if (!s.destroyed) this.set(s, s[kMs]!);
  }

  /** It will not be set on this socket (it closed). */
  forget(socket: Socket): void {
    const s = socket as Late;
    if (s[kLate] !== this) return;
    s[kLate] = undefined;
    if (this.#sockets[s[kAt]!] === s) this.#sockets[s[kAt]!] = undefined;
  }

  tick(): void {
    const now = ++this.#ticks;
    const sockets = this.#sockets;
    const due = this.#due;
    let j = 0;
    for (let i = 0; i < sockets.length; i++) {
      const s = sockets[i];
      if (s === undefined) continue;
      if (due[i] <= now) {
        sockets[i] = undefined;
        this.apply(s);
        continue;
      }
      sockets[j] = s;
      due[j] = due[i];
      s[kAt] = j++;
    }
    sockets.length = j;
    due.length = j;
    if (j === 0) this.close();
  }

  /** Stop; the sockets still waiting get none. */
  close(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    for (const s of this.#sockets) if (s !== undefined) s[kLate] = undefined;
    this.#sockets.length = 0;
    this.#due.length = 0;
  }
}

function tick(late: LateKeepAlive): void {
  late.tick();
}

/**
 * Set the keepalive now if this socket still waits for it: before its fd is handed to the native
 * relay, which keeps a dup of it and closes the socket (a closed socket would get none).
 */
export function keepAliveNow(socket: Socket): void {
  (socket as Late)[kLate]?.apply(socket);
}

/** The socket closed: no keepalive for it, and no reference to it kept until the next tick. */
export function keepAliveForget(socket: Socket): void {
  (socket as Late)[kLate]?.forget(socket);
}
