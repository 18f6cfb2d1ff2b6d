// A stranded desktop: the desktop's proxy setting points at a holdfast that does not answer (it
// died, SIGKILL included, while `--system-proxy` held the setting), so every app that follows the
// setting has no network. `holdfast doctor` asks this; `holdfast system-proxy off` (or the next
// `holdfast start --system-proxy`, at its exit) puts back the user's own settings, saved when
// holdfast first changed them.
import { endpointText, type ProxyEndpoint } from '../pac.js';
import { backendFor, detectDesktop, pointsAt, readState, statePath, systemExec, type CurrentProxy } from './proxy.js';
import { probeHoldfast } from './service-install.js';

export interface StrandedCheck {
  readonly id: 'system-proxy-answers';
  readonly status: 'warn';
  readonly summary: string;
  readonly fix: string;
}

export interface StrandedOptions {
  readonly env?: NodeJS.ProcessEnv;
  /** holdfast's configured listeners (the desktop may point at these) */
  readonly listeners: readonly ProxyEndpoint[];
}

/**
 * A warning when the desktop points at holdfast (a configured listener, or the endpoint the saved
 * state says holdfast set) and nothing answers there; undefined when the desktop does
 * not point at holdfast, every such holdfast answers, or the setting cannot be read.
 */
export async function strandedDesktopCheck(o: StrandedOptions): Promise<StrandedCheck | undefined> {
  const env = o.env ?? process.env;
  const desktop = detectDesktop(env);
  if (!desktop) return undefined;
  const backend = backendFor(desktop);
  const ctx = { exec: systemExec(env), env };
  if (backend.unavailable(ctx)) return undefined;
  let current: CurrentProxy[];
  let state;
  try {
    current = backend.current(ctx);
    state = readState(statePath(env));
  } catch {
    return undefined; // the system-proxy check reports an unreadable setting
  }
  const candidates = [...(state ? [state.endpoint] : []), ...o.listeners];
  const seen = new Set<string>();
  const dead: string[] = [];
  for (const ep of candidates) {
    const at = endpointText(ep);
    if (seen.has(at)) continue;
    seen.add(at);
    const pointing = current.filter((c) => pointsAt(c, ep));
    if (pointing.length === 0) continue;
    const r = await probeHoldfast(ep);
    // something answering there is the listener check's business; nothing answering strands the desktop
    if (r.answers !== 'none') continue;
    dead.push(`${pointing.map((c) => `${c.scope}: ${c.mode}`).join(', ')} -> ${at} (no answer: ${r.why ?? ''})`);
  }
  if (dead.length === 0) return undefined;
  return {
    id: 'system-proxy-answers',
    status: 'warn',
    summary: `${desktop} proxy points at a holdfast that does not answer, so apps that follow it have no network: ${dead.join('; ')}`,
    fix: state
      ? `holdfast system-proxy off (puts back your own settings, saved in ${statePath(env)}), or start holdfast again (holdfast service install keeps it running)`
      : 'start holdfast (holdfast service install keeps it running), or clear the desktop proxy setting',
  };
}
