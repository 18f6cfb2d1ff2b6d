// Flags for Debian's Chromium in tests: no sandbox (root), and none of its own background traffic
// (sync, component updates, pings, QUIC). Tests run it where only loopback or the lab exists anyway.
export const quietChromiumArgs: readonly string[] = [
  '--no-sandbox',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
  '--disable-default-apps',
  '--disable-domain-reliability',
  '--no-pings',
  // on-demand component installs ignore --disable-component-update: send their update checks to a
  // dead loopback port (a direct connection: Chromium never proxies loopback)
  '--component-updater=url-source=http://127.0.0.1:9/',
];
