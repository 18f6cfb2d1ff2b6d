#!/usr/bin/env node
// holdfast's command line. Each subcommand lives in src/commands/<name>.ts, parses its own
// flags, and returns an exit code.
import { fail } from './commands/common.js';

interface CommandModule {
  run(argv: string[]): Promise<number>;
}

/** name -> [one-line summary, loader]. Loaded lazily: `holdfast env` need not load undici. */
const commands: Record<string, [string, () => Promise<CommandModule>]> = {
  start: ['run the proxy (SOCKS5 and HTTP on one port, default 127.0.0.1:1080)', () => import('./commands/start.js')],
  status: ['show the interfaces and live flows of a running holdfast (--watch to follow)', () => import('./commands/status.js')],
  env: ['print the proxy variables for a shell: eval "$(holdfast env)"', () => import('./commands/env.js')],
  exec: ['run one command through holdfast: holdfast exec -- CMD ARGS...', () => import('./commands/exec.js')],
  pac: ['print the PAC file (also served at /proxy.pac)', () => import('./commands/pac.js')],
  doctor: ['check that this host can hold sessions, and how to fix it', () => import('./commands/doctor.js')],
  'system-proxy': ['point the desktop proxy setting at holdfast: on | off | status', () => import('./commands/system-proxy.js')],
  service: ['run holdfast at login, restarted if it dies: install | uninstall | status | print', () => import('./commands/service.js')],
};

function mainHelp(): string {
  const width = Math.max(...Object.keys(commands).map((c) => c.length)) + 2;
  const list = Object.entries(commands)
    .map(([name, [summary]]) => `  ${name.padEnd(width)} ${summary}`)
    .join('\n');
  return `holdfast: a local SOCKS5/HTTP proxy that keeps each connection on the network
interface it started on. When a better interface appears (Ethernet plugged in next to Wi-Fi, a
phone tether, a VPN), ongoing downloads stay where they are; only new connections move.

Usage: holdfast <command> [options]

Commands:
${list}
  ${'help'.padEnd(width)} show this help, or \`holdfast help <command>\`

Run \`holdfast <command> --help\` for a command's options. To run holdfast whenever you are logged
in, restarted if it dies: \`holdfast service install\` (systemd user unit, macOS LaunchAgent,
Windows Task Scheduler).
`;
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === '-h' || cmd === '--help') {
    process.stdout.write(mainHelp());
    return cmd === undefined ? 2 : 0;
  }
  if (cmd === 'help') {
    const sub = rest[0] ? commands[rest[0]] : undefined;
    if (sub) return (await sub[1]()).run(['--help']);
    process.stdout.write(mainHelp());
    return 0;
  }
  if (cmd === '--version' || cmd === '-V') {
    process.stdout.write(`holdfast ${(await import('./version.js')).VERSION}\n`);
    return 0;
  }
  const entry = commands[cmd];
  if (!entry) return fail(`unknown command "${cmd}"\n\n${mainHelp()}`);
  return (await entry[1]()).run(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // let pino's async destination flush, then leave even if a stray handle lingers
    setTimeout(() => process.exit(code), 200).unref();
  },
  (err) => {
    process.stderr.write(`holdfast: unexpected error: ${(err as Error).stack ?? err}\n`);
    process.exit(1);
  },
);
