// Summarise a V8 .cpuprofile (node --cpu-prof): the top entries by self time, and the time in
// each source file, as percentages of the sampled total. For bench/README.md's before/after.
//   node dist/bench/prof-top.js FILE.cpuprofile [N]
import { readFileSync } from 'node:fs';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

process.stdout.on('error', () => process.exit(0)); // piped into head
const [file, nArg] = process.argv.slice(2);
if (file === undefined) {
  process.stderr.write('usage: node dist/bench/prof-top.js FILE.cpuprofile [N]\n');
  process.exit(2);
}
const top = Number(nArg ?? 25);
const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
const byId = new Map(p.nodes.map((n) => [n.id, n]));
const self = new Map<number, number>();
for (let i = 0; i < p.samples.length; i++) self.set(p.samples[i], (self.get(p.samples[i]) ?? 0) + (p.timeDeltas[i] ?? 0));

const short = (url: string): string => url.replace(/^file:\/\/.*?\/(dist\/|node_modules\/)/, '$1').replace(/^node:/, '');
const total = [...self.values()].reduce((a, b) => a + b, 0);
const idle = [...self].filter(([id]) => byId.get(id)?.callFrame.functionName === '(idle)').reduce((a, [, t]) => a + t, 0);
const busy = total - idle;

const fnSelf = new Map<string, number>();
const fileSelf = new Map<string, number>();
for (const [id, t] of self) {
  const f = byId.get(id)?.callFrame;
  if (f === undefined || f.functionName === '(idle)') continue;
  const where = f.url === '' ? '' : ` ${short(f.url)}:${f.lineNumber + 1}`;
  const k = `${f.functionName || '(anonymous)'}${where}`;
  fnSelf.set(k, (fnSelf.get(k) ?? 0) + t);
  const fk = f.url === '' ? f.functionName : short(f.url);
  fileSelf.set(fk, (fileSelf.get(fk) ?? 0) + t);
}
const pct = (t: number): string => `${((100 * t) / busy).toFixed(1).padStart(5)}%`;
const print = (title: string, m: Map<string, number>): void => {
  process.stdout.write(`${title}\n`);
  for (const [k, t] of [...m].sort((a, b) => b[1] - a[1]).slice(0, top)) process.stdout.write(`  ${pct(t)}  ${k}\n`);
};
process.stdout.write(`${file}: ${(total / 1e6).toFixed(2)} s sampled, ${(busy / 1e6).toFixed(2)} s busy (percentages of busy)\n`);
print('self time by function:', fnSelf);
print('self time by file:', fileSelf);

// inclusive (total) time of holdfast's own functions: where a flow's time goes, by caller
const parent = new Map<number, number>();
for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const incl = new Map<string, number>();
for (const [id, t] of self) {
  const seen = new Set<string>();
  for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
    const f = byId.get(cur)?.callFrame;
    if (f === undefined || !f.url.includes('/dist/src/')) continue;
    const k = `${f.functionName || '(anonymous)'} ${short(f.url)}:${f.lineNumber + 1}`;
    if (seen.has(k)) continue;
    seen.add(k);
    incl.set(k, (incl.get(k) ?? 0) + t);
  }
}
print("total time of holdfast's functions (callees included):", incl);
