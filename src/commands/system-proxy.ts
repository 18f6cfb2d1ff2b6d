// `holdfast system-proxy on|off|status`: point the whole desktop at holdfast, and back.
import { connect } from 'node:net';
import { defaultConfigPath } from '../config.js';
import { endpointText, type ProxyEndpoint } from '../pac.js';
import {
  backendFor,
  desktops,
  detectDesktop,
  pointsAt,
  proxyTarget,
  readState,
  statePath,
  systemExec,
  systemProxyOff,
  systemProxyOn,
  type BackendContext,
  type Desktop,
  type SystemProxyOptions,
} from '../system/proxy.js';
import { fail, loadTargetOr, parseCommand, targetOptions } from './common.js';

export const help = `Usage: holdfast system-proxy on|off|status [options]

Point the desktop's proxy setting at holdfast (on), put back exactly what was there before (off),
or show the setting (status).

  GNOME (also Cinnamon, MATE, Budgie, Unity)  gsettings org.gnome.system.proxy
  KDE Plasma                                  kwriteconfig5/6, kioslaverc [Proxy Settings]
  macOS                                       networksetup, every enabled network service
  Windows                                     reg.exe, HKCU Internet Settings (+ WinHTTP: --winhttp)

\`on\` saves the settings it changes in $XDG_STATE_HOME/holdfast/system-proxy.json (else
~/.local/state/holdfast/); \`on\` again keeps that first copy, and \`off\` restores it and deletes
the file. \`holdfast start --system-proxy\` does on/off around the proxy's life.

Options:
      --manual            the proxy by address: HTTP, HTTPS and SOCKS at holdfast, bypass list
                          from pac.bypass (default)
      --pac               the PAC URL http://HOST:PORT/proxy.pac (holdfast must be running)
  -n, --dry-run           print the commands instead of running them
  -d, --desktop NAME      ${desktops.join(' | ')} (default: from the platform and XDG_CURRENT_DESKTOP)
      --service NAME      macOS: only this network service (repeatable; default: all enabled)
      --winhttp           Windows: set the WinHTTP proxy too (elevated shell)
      --json              status as JSON
  -c, --config FILE       configuration file (YAML); default: ${defaultConfigPath}
  -l, --listen HOST:PORT  point at this listener instead of the config's first one
  -h, --help              show this help

Examples:
  holdfast system-proxy on            # every app that follows the desktop setting
  holdfast system-proxy on --pac --dry-run
  holdfast system-proxy off
`;

/** Does anything accept a connection at endpoint (within 1 s)? */
function answers(endpoint: ProxyEndpoint): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: endpoint.host, port: endpoint.port });
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(1000, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

export async function run(argv: string[]): Promise<number> {
  const parsed = parseCommand(
    argv,
    help,
    {
        manual: { type: 'boolean' },
        pac: { type: 'boolean' },
        'dry-run': { type: 'boolean', short: 'n' },
        desktop: { type: 'string', short: 'd' },
        service: { type: 'string', multiple: true },
        winhttp: { type: 'boolean' },
        json: { type: 'boolean' },
        ...targetOptions,
    },
    true,
  );
  if (typeof parsed === 'number') return parsed;
  const { values, positionals } = parsed;
  const action = positionals[0];
  if (positionals.length !== 1 || !['on', 'off', 'status'].includes(action)) return fail(`system-proxy: expected on, off or status\n\n${help}`);
  if (values.manual && values.pac) return fail('system-proxy: --manual and --pac exclude each other');
  if (values.desktop !== undefined && !(desktops as readonly string[]).includes(values.desktop)) {
    return fail(`--desktop ${values.desktop}: expected one of ${desktops.join(', ')}`);
  }
  const env = process.env;
  const stateFile = statePath(env);
  const ctx: BackendContext = { exec: systemExec(env), env, services: values.service, winhttp: values.winhttp };
  const out = (line: string) => process.stdout.write(`${line}\n`);
  const note = (line: string) => process.stderr.write(`holdfast: ${line}\n`);

  if (action === 'off') {
    const o: SystemProxyOptions = { desktop: (values.desktop as Desktop | undefined) ?? detectDesktop(env) ?? 'gnome', ctx, stateFile, dryRun: values['dry-run'], out };
    let r;
    try {
      r = systemProxyOff(o);
    } catch (err) {
      note(`system-proxy off: ${(err as Error).message}`);
      return 1;
    }
    for (const w of r.warnings) note(`warning: ${w}`);
    if (!r.restored) note(`nothing to restore: no saved settings at ${stateFile} (the proxy setting was not changed by holdfast)`);
    else if (!values['dry-run']) note('system proxy restored to the settings saved by `on`');
    return 0;
  }

  const desktop = (values.desktop as Desktop | undefined) ?? detectDesktop(env);
  if (!desktop) {
    return fail(
      `system-proxy: cannot tell the desktop (XDG_CURRENT_DESKTOP=${env.XDG_CURRENT_DESKTOP ?? ''}); pass --desktop ${desktops.join('|')}`,
    );
  }
  const target = loadTargetOr(values);
  if (typeof target === 'number') return target;

  if (action === 'status') {
    const backend = backendFor(desktop);
    const state = readState(stateFile);
    const why = backend.unavailable(ctx);
    let current: ReturnType<typeof backend.current> = [];
    let error: string | undefined;
    if (why) error = why;
    else {
      try {
        current = backend.current(ctx);
      } catch (err) {
        error = (err as Error).message;
      }
    }
    const report = {
      desktop,
      holdfast: endpointText(target.endpoint),
      changedByHoldfast: state ? { mode: state.mode, since: state.savedAt, stateFile } : null,
      settings: current.map((c) => ({ ...c, pointsAtHoldfast: pointsAt(c, target.endpoint) })),
      ...(error ? { error } : {}),
    };
    if (values.json) out(JSON.stringify(report, null, 2));
    else {
      out(`desktop: ${desktop}`);
      out(`holdfast: ${report.holdfast}`);
      out(state ? `changed by holdfast: ${state.mode} since ${state.savedAt} (saved settings: ${stateFile})` : 'changed by holdfast: no');
      for (const s of report.settings) {
        const where = s.mode === 'pac' ? ` ${s.pacUrl}` : s.mode === 'manual' ? ` http ${s.http ?? '-'} socks ${s.socks ?? '-'}` : '';
        out(`${s.scope}: ${s.mode}${where}${s.pointsAtHoldfast ? ' (holdfast)' : ''}`);
      }
      if (error) out(`error: ${error}`);
    }
    return error ? 1 : 0;
  }

  // on
  const mode = values.pac ? 'pac' : 'manual';
  const o: SystemProxyOptions = { desktop, ctx, stateFile, dryRun: values['dry-run'], out };
  let r;
  try {
    r = systemProxyOn(o, proxyTarget(target.endpoint, target.cfg.pac.bypass, mode));
  } catch (err) {
    note(`system-proxy on: ${(err as Error).message}`);
    return 1;
  }
  for (const w of r.warnings) note(`warning: ${w}`);
  if (values['dry-run']) return 0;
  note(
    `system proxy (${desktop}, ${mode}) points at ${endpointText(target.endpoint)}; ` +
      `${r.saved ? 'previous settings saved' : 'the settings saved by an earlier `on` are kept'} in ${stateFile}; ` +
      '`holdfast system-proxy off` puts them back',
  );
  if (!(await answers(target.endpoint))) {
    note(`warning: nothing answers at ${endpointText(target.endpoint)} yet: start holdfast (holdfast start), or apps lose the network`);
  }
  return 0;
}
