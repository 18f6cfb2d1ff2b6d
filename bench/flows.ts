// A fixed number of short flows through a proxy, for measurements that count per flow (a heap
// profile, a CPU profile, valgrind's instruction count): each flow is the rate scenario's (the
// tunnel, 1 KiB each way, the sink closes first), against a sink this process starts on loopback.
//   node dist/bench/flows.js --port P [--count 2000] [--concurrency 8] [--kind connect|socks5]
import { parseArgs } from 'node:util';
import { reqRespHeader, shortFlow } from './client.js';
import { startSink } from './sink.js';

const { values } = parseArgs({
  options: {
    port: { type: 'string' },
    count: { type: 'string', default: '2000' },
    concurrency: { type: 'string', default: '8' },
    kind: { type: 'string', default: 'connect' },
  },
});
const port = Number(values.port);
const count = Number(values.count);
const concurrency = Number(values.concurrency);
const kind = values.kind;
if (!(port > 0 && port < 65536) || !(count > 0) || !(concurrency > 0) || (kind !== 'connect' && kind !== 'socks5')) {
  process.stderr.write('usage: node dist/bench/flows.js --port P [--count N] [--concurrency C] [--kind connect|socks5]\n');
  process.exit(2);
}

const sink = await startSink();
const payload = Buffer.concat([reqRespHeader(1024), Buffer.alloc(1024, 'q')]);
const oneFlow = (): Promise<void> => shortFlow({ kind, port }, sink.raw, payload, 30_000);
let left = count;
let failed = 0;
const t0 = performance.now();
await Promise.all(
  Array.from({ length: concurrency }, async () => {
    while (left > 0) {
      left--;
      await oneFlow().catch(() => failed++);
    }
  }),
);
process.stdout.write(`${count - failed} flows (${failed} failed) in ${Math.round(performance.now() - t0)} ms\n`);
await sink.close();
process.exit(failed > 0 ? 1 : 0);
