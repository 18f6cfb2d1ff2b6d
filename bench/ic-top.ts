// Summarise a V8 inline-cache log (node --log-ic): the IC misses per flow, by the function whose
// code missed, the source position and the property, largest first. An IC that misses again and
// again at one place is usually objects of one kind with many hidden classes (issue 17, eighth
// pass: Node 20's net.Socket options).
//   node --log-ic --logfile=/tmp/ic.log --no-logfile-per-isolate dist/src/cli.js start ... &
//   node dist/bench/flows.js --port P --count 5000 --concurrency 1; kill %1
//   node dist/bench/ic-top.js /tmp/ic.log 5000 [MIN_PER_FLOW]
import { readFileSync } from 'node:fs';

process.stdout.on('error', () => process.exit(0)); // piped into head
const [file, flowsArg, minArg] = process.argv.slice(2);
const flows = Number(flowsArg);
if (file === undefined || !(flows > 0)) {
  process.stderr.write('usage: node dist/bench/ic-top.js LOG FLOWS [MIN_PER_FLOW]\n');
  process.exit(2);
}
const min = Number(minArg ?? 0.5);

/** A log line's fields: commas split them, except inside double quotes. */
function fields(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (const ch of line) {
    if (ch === '"') quoted = !quoted;
    else if (ch === ',' && !quoted) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out;
}

const IC = /^(LoadIC|KeyedLoadIC|StoreIC|KeyedStoreIC|LoadGlobalIC|StoreInArrayLiteralIC|DefineKeyedOwnIC),/;
// code-creation,TYPE,KIND,TIME,START,SIZE,NAME,...: the newest code object at an address wins
const codes: { start: number; end: number; name: string }[] = [];
const counts = new Map<string, number>();
let all = 0;
for (const line of readFileSync(file, 'utf8').split('\n')) {
  if (line.startsWith('code-creation,')) {
    const f = fields(line);
    const start = Number(f[4]);
    codes.push({ start, end: start + Number(f[5]), name: f[6] ?? '?' });
    continue;
  }
  const m = IC.exec(line);
  if (m === null) continue;
  all++;
  // TYPE,PC,TIME,LINE,COLUMN,OLD_STATE,NEW_STATE,MAP,KEY,...
  const f = fields(line);
  const pc = Number(f[1]);
  let name = '?';
  for (let i = codes.length - 1; i >= 0; i--) {
    if (pc >= codes[i].start && pc < codes[i].end) {
      name = codes[i].name;
      break;
    }
  }
  const key = `${m[1]} ${name.slice(0, 70)} @${f[3]}:${f[4]} ${f[8] ?? ''}`;
  counts.set(key, (counts.get(key) ?? 0) + 1);
}
const rows = [...counts].filter(([, n]) => n / flows >= min).sort((a, b) => b[1] - a[1]);
for (const [k, n] of rows) process.stdout.write(`${(n / flows).toFixed(2).padStart(7)}  ${k}\n`);
const shown = rows.reduce((a, [, n]) => a + n, 0);
process.stdout.write(`IC misses per flow: ${(all / flows).toFixed(1)} in all, ${(shown / flows).toFixed(1)} in the rows shown (>= ${min} per flow)\n`);
