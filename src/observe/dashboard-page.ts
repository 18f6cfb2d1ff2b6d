// The dashboard's files: web/dashboard.html, .css and .js, read from the package on disk (the
// script is checked by web/tsconfig.json as part of the build), and /assets/format.js, made here
// from the CLI's own format functions so the terminal and the page say the same thing the same
// way. uPlot (from its npm package, under /assets/ too) draws the chart.
import { readFileSync } from 'node:fs';
import { isLinkLocal } from '../net/addr.js';
import { formatAge, formatBytes, formatRate, IEC, isNotable } from './format.js';

export interface WebFile {
  readonly body: Buffer;
  readonly type: string;
}

/** web/ in the package: this module is dist/src/observe/dashboard-page.js. */
export const webDir = new URL('../../../web/', import.meta.url);

/** The CLI's format functions as a classic script: globals for the page's script. */
export function formatScript(): string {
  return [
    "'use strict';",
    `const IEC = ${JSON.stringify(IEC)};`,
    formatBytes.toString(),
    formatRate.toString(),
    formatAge.toString(),
    isLinkLocal.toString(),
    isNotable.toString(),
    '',
  ].join('\n');
}

/**
 * The page and its own assets, by path. `uplotVersion` versions the uPlot URLs (cached for a
 * week: a new version is a new URL). Throws if web/ is missing (a broken install).
 */
export function loadWebFiles(uplotVersion: string): Map<string, WebFile> {
  const read = (name: string) => readFileSync(new URL(name, webDir), 'utf8');
  const html = read('dashboard.html').replaceAll('{{uplot}}', encodeURIComponent(uplotVersion));
  return new Map([
    ['/', { body: Buffer.from(html), type: 'text/html; charset=utf-8' }],
    ['/assets/dashboard.css', { body: Buffer.from(read('dashboard.css')), type: 'text/css; charset=utf-8' }],
    ['/assets/dashboard.js', { body: Buffer.from(read('dashboard.js')), type: 'text/javascript; charset=utf-8' }],
    ['/assets/format.js', { body: Buffer.from(formatScript()), type: 'text/javascript; charset=utf-8' }],
  ]);
}
