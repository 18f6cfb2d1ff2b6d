// Summarise a heap profile from alloc-sample.ts: bytes allocated per flow, by function.
//   node dist/bench/alloc-top.js FILE.heapprofile FLOWS [N]
import { readFileSync } from 'node:fs';

interface HeapNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children?: HeapNode[];
}

process.stdout.on('error', () => process.exit(0)); // piped into head
const [file, flowsArg, nArg] = process.argv.slice(2);
const flows = Number(flowsArg);
if (file === undefined || !(flows > 0)) {
  process.stderr.write('usage: node dist/bench/alloc-top.js FILE.heapprofile FLOWS [N]\n');
  process.exit(2);
}
const top = Number(nArg ?? 30);
const head = (JSON.parse(readFileSync(file, 'utf8')) as { head: HeapNode }).head;
const short = (url: string): string => url.replace(/^file:\/\/.*?\/(dist\/|node_modules\/)/, '$1').replace(/^node:/, '');
const byFn = new Map<string, number>();
let total = 0;
const walk = (n: HeapNode): void => {
  total += n.selfSize;
  if (n.selfSize > 0) {
    const f = n.callFrame;
    const k = `${f.functionName || '(anonymous)'}${f.url ? ` ${short(f.url)}:${f.lineNumber + 1}` : ''}`;
    byFn.set(k, (byFn.get(k) ?? 0) + n.selfSize);
  }
  for (const c of n.children ?? []) walk(c);
};
walk(head);
process.stdout.write(`${file}: ${(total / 2 ** 20).toFixed(1)} MiB sampled over ${flows} flows = ${Math.round(total / flows)} B per flow\n`);
for (const [k, b] of [...byFn].sort((a, z) => z[1] - a[1]).slice(0, top)) {
  process.stdout.write(`  ${String(Math.round(b / flows)).padStart(6)} B/flow ${((100 * b) / total).toFixed(1).padStart(5)}%  ${k}\n`);
}
