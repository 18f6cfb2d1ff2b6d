// What a flow allocates, by function: a preload for any Node proxy (holdfast, node-floor) that
// runs V8's sampling heap profiler with the objects the GC has already collected included, so
// the profile counts every allocation, not only what is still alive. Signals drive it:
//   node --import ./dist/bench/alloc-sample.js dist/src/cli.js start ...   # or floor-relay.js P
//   kill -USR2 <pid>     start sampling (after a warm-up)
//   ...                  a fixed number of flows (node dist/bench/flows.js)
//   kill -USR2 <pid>     stop and write $HOLDFAST_ALLOC_OUT (default /tmp/alloc-<pid>.heapprofile)
//   node dist/bench/alloc-top.js /tmp/alloc-<pid>.heapprofile <flows>
// HOLDFAST_ALLOC_SURVIVORS=1 leaves out what a young collection (scavenge) freed: the profile is
// then what outlived one (copied, promoted, freed later by a mark-compact, or still alive).
// Measurement only: the inspector session it opens is local to the process (no port).
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';

const session = new Session();
session.connect();
const post = (method: string, params?: object): Promise<unknown> =>
  new Promise((resolve, reject) => session.post(method, params ?? {}, (err, res) => (err ? reject(err) : resolve(res))));

let sampling = false;
process.on('SIGUSR2', () => {
  const step = sampling
    ? post('HeapProfiler.stopSampling').then((r) => {
        const out = process.env.HOLDFAST_ALLOC_OUT ?? `/tmp/alloc-${process.pid}.heapprofile`;
        writeFileSync(out, JSON.stringify((r as { profile: unknown }).profile));
        process.stderr.write(`alloc-sample: wrote ${out}\n`);
      })
    : post('HeapProfiler.enable')
        .then(() =>
          post('HeapProfiler.startSampling', {
            samplingInterval: 1024,
            includeObjectsCollectedByMajorGC: true,
            includeObjectsCollectedByMinorGC: process.env.HOLDFAST_ALLOC_SURVIVORS !== '1',
          }),
        )
        .then(() => process.stderr.write('alloc-sample: sampling\n'));
  sampling = !sampling;
  step.catch((err: unknown) => process.stderr.write(`alloc-sample: ${(err as Error).message}\n`));
});
