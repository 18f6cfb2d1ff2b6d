// A million SOCKS5 codec cases (issue 7), run by hand (CI runs tens of thousands in
// test/unit/socks5-codec.test.ts and socks5-udp-codec.test.ts):
//
//   npm run build && node dist/bench/fuzz-codec.js [--cases 1000000] [--seed N]
//
// Properties, over parseGreeting, parseUserPass, parseRequest and parseUdpHeader:
//   1. random bytes: a parse, a need or a reply, never a throw, never a malformed result;
//   2. mutated valid messages (bytes flipped, set, inserted, deleted, truncated): the same;
//   3. any split of a valid message (plus trailing bytes) parses like the whole: every prefix
//      asks for more (never more than is missing), the whole parses with `used` = its length;
//   4. encode -> parse round trips of requests and UDP headers.
// Prints the cases per property and the total; exits 1 (with fast-check's counterexample, shrunk)
// on the first failure.
import { parseArgs } from 'node:util';
import fc from 'fast-check';
import { Reply } from '../src/errors.js';
import {
  encodeUdpHeader,
  parseGreeting,
  parseRequest,
  parseUdpHeader,
  parseUserPass,
  type Parsed,
  type SocksAddress,
} from '../src/inbound/socks5.js';

const { values } = parseArgs({
  options: { cases: { type: 'string', default: '1000000' }, seed: { type: 'string' } },
});
const TOTAL = Number(values.cases);
const SEED = values.seed !== undefined ? Number(values.seed) : Date.now() % 2 ** 31;
const REPLIES = new Set<number>(Object.values(Reply));

type Parser = (b: Uint8Array) => Parsed<unknown>;
const PARSERS: Record<string, Parser> = { greeting: parseGreeting, userpass: parseUserPass, request: parseRequest, udp: parseUdpHeader };

function fail(msg: string): never {
  throw new Error(msg);
}

/** property bodies actually run (fast-check's own count, checked against the plan) */
let executed = 0;

/** One of the three result shapes, well-formed, for this input. */
function checkTotal(name: string, parse: Parser, buf: Uint8Array): void {
  executed++;
  let r: Parsed<unknown>;
  try {
    r = parse(buf);
  } catch (err) {
    fail(`${name} threw on ${Buffer.from(buf).toString('hex')}: ${(err as Error).message}`);
  }
  if (r.ok) {
    if (!Number.isInteger(r.used) || r.used < 1 || r.used > buf.length) fail(`${name}: used ${r.used} of ${buf.length}`);
    if (r.value === undefined) fail(`${name}: ok without a value`);
  } else if ('need' in r) {
    if (name === 'udp') fail('udp: a datagram never needs more');
    if (!Number.isInteger(r.need) || r.need < 1) fail(`${name}: need ${r.need}`);
  } else {
    if (!REPLIES.has(r.reply) || r.reply === Reply.SUCCEEDED) fail(`${name}: reply ${r.reply}`);
    if (typeof r.why !== 'string' || !r.why) fail(`${name}: reply without why`);
  }
}

// ---- valid messages -------------------------------------------------------------------------------

const arbIPv4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map(([a, b, c, d]): SocksAddress => ({ kind: 'ipv4', ip: `${a}.${b}.${c}.${d}` }));
const arbIPv6 = fc.ipV6().map((ip): SocksAddress => ({ kind: 'ipv6', ip }));
const arbName = fc.stringMatching(/^[a-z0-9-]{1,30}(\.[a-z0-9-]{1,20}){0,4}$/).map((name): SocksAddress => ({ kind: 'domain', name }));
const arbAddress = fc.oneof(arbIPv4, arbIPv6, arbName);
const arbPort = fc.integer({ min: 0, max: 65535 });
const arbField = fc.uint8Array({ minLength: 0, maxLength: 255 }).map((b) => Buffer.from(Buffer.from(b).toString('utf8')).subarray(0, 255));

const validGreeting = fc
  .uniqueArray(fc.nat(255), { minLength: 1, maxLength: 255 })
  .map((m) => Buffer.from([0x05, m.length, ...m]));
const validUserPass = fc.tuple(arbField, arbField).map(([u, p]) => Buffer.concat([Buffer.from([0x01, u.length]), u, Buffer.from([p.length]), p]));
const validRequest = fc
  .tuple(fc.constantFrom(1, 2, 3), arbAddress, arbPort)
  .map(([cmd, a, port]) => Buffer.concat([Buffer.from([0x05, cmd, 0x00]), encodeUdpHeader(a, port).subarray(3)]));
const validUdp = fc
  .tuple(arbAddress, arbPort, fc.uint8Array({ maxLength: 64 }))
  .map(([a, port, data]) => Buffer.concat([encodeUdpHeader(a, port), data]));
const VALID: Record<string, fc.Arbitrary<Buffer>> = { greeting: validGreeting, userpass: validUserPass, request: validRequest, udp: validUdp };

const arbMutation = fc.record({
  kind: fc.constantFrom('flip', 'set', 'insert', 'delete', 'truncate'),
  at: fc.nat(100_000),
  byte: fc.nat(255),
});

function mutate(b: Buffer, ms: readonly { kind: string; at: number; byte: number }[]): Buffer {
  let out = Buffer.from(b);
  for (const m of ms) {
    const at = out.length ? m.at % (out.length + 1) : 0;
    if (m.kind === 'flip' && at < out.length) out[at] ^= 1 << (m.byte % 8);
    else if (m.kind === 'set' && at < out.length) out[at] = m.byte;
    else if (m.kind === 'insert') out = Buffer.concat([out.subarray(0, at), Buffer.from([m.byte]), out.subarray(at)]);
    else if (m.kind === 'delete') out = Buffer.concat([out.subarray(0, at), out.subarray(at + 1)]);
    else out = out.subarray(0, at);
  }
  return out;
}

// ---- the properties -------------------------------------------------------------------------------

interface Prop {
  name: string;
  share: number;
  prop: (runs: number) => void;
}

const props: Prop[] = [];
for (const [name, parse] of Object.entries(PARSERS)) {
  props.push({
    name: `${name}: random bytes`,
    share: 0.06,
    prop: (numRuns) =>
      fc.assert(
        fc.property(fc.uint8Array({ maxLength: 300 }), fc.boolean(), (b, lead) => {
          // half of them start like the message, so they get past the first byte
          const buf = lead && b.length ? Buffer.concat([Buffer.from([name === 'userpass' ? 0x01 : name === 'udp' ? 0x00 : 0x05]), b]) : b;
          checkTotal(name, parse, buf);
        }),
        { numRuns, seed: SEED },
      ),
  });
  props.push({
    name: `${name}: mutated valid messages`,
    share: 0.1,
    prop: (numRuns) =>
      fc.assert(
        fc.property(VALID[name], fc.array(arbMutation, { minLength: 1, maxLength: 4 }), (msg, ms) => checkTotal(name, parse, mutate(msg, ms))),
        { numRuns, seed: SEED },
      ),
  });
  if (name !== 'udp') {
    props.push({
      name: `${name}: any split parses like the whole`,
      share: 0.06,
      prop: (numRuns) =>
        fc.assert(
          fc.property(VALID[name], fc.uniqueArray(fc.nat(600), { maxLength: 8 }), fc.uint8Array({ maxLength: 16 }), (msg, cuts, trailer) => {
            executed++;
            for (const c of cuts) {
              const at = c % msg.length;
              const r = parse(msg.subarray(0, at));
              if (r.ok || !('need' in r)) fail(`${name}: a prefix of ${at}/${msg.length} bytes did not ask for more: ${JSON.stringify(r)}`);
              if (r.need > msg.length - at) fail(`${name}: need ${r.need} > ${msg.length - at} missing`);
            }
            const whole = parse(Buffer.concat([msg, trailer]));
            if (!whole.ok) fail(`${name}: the whole did not parse: ${msg.toString('hex')} -> ${JSON.stringify(whole)}`);
            if (whole.used !== msg.length) fail(`${name}: used ${whole.used}, message ${msg.length}`);
          }),
          { numRuns, seed: SEED },
        ),
    });
  }
}
props.push({
  name: 'request / udp: encode -> parse round trip',
  share: 0.04,
  prop: (numRuns) =>
    fc.assert(
      fc.property(fc.constantFrom(1, 2, 3), arbAddress, arbPort, (cmd, a, port) => {
        executed++;
        const head = encodeUdpHeader(a, port);
        const r = parseRequest(Buffer.concat([Buffer.from([0x05, cmd, 0x00]), head.subarray(3)]));
        const u = parseUdpHeader(head);
        if (!r.ok || !u.ok) fail(`round trip failed for ${JSON.stringify(a)}:${port}`);
        // addresses come back in canonical text (::0:0:0:0.0.0.0 is ::): compare them on the wire
        if (!encodeUdpHeader(r.value.address, r.value.port).equals(head) || r.value.command !== cmd) fail(`request round trip: ${JSON.stringify(r.value)} vs ${JSON.stringify(a)}`);
        if (!encodeUdpHeader(u.value.address, u.value.port).equals(head) || u.value.port !== port) fail(`udp round trip: ${JSON.stringify(u.value)} vs ${JSON.stringify(a)}`);
      }),
      { numRuns, seed: SEED },
    ),
});

const shares = props.reduce((s, p) => s + p.share, 0);
const started = performance.now();
let done = 0;
process.stdout.write(`fuzz-codec: ${TOTAL} cases, seed ${SEED} (replay with --seed ${SEED})\n`);
try {
  for (const [i, p] of props.entries()) {
    // the last property takes the rounding remainder, so the total is exact
    const runs = i === props.length - 1 ? TOTAL - done : Math.max(1, Math.round((TOTAL * p.share) / shares));
    const t0 = performance.now();
    p.prop(runs);
    done += runs;
    process.stdout.write(`  ${p.name.padEnd(44)} ${String(runs).padStart(8)} cases  ${((performance.now() - t0) / 1000).toFixed(2)} s\n`);
  }
} catch (err) {
  process.stdout.write(`FAILED after ${done} cases:\n${(err as Error).message}\n`);
  process.exit(1);
}
const s = (performance.now() - started) / 1000;
if (executed !== done) {
  process.stdout.write(`fuzz-codec: planned ${done} cases but ${executed} ran\n`);
  process.exit(1);
}
process.stdout.write(`fuzz-codec: ${executed} cases passed in ${s.toFixed(1)} s (${Math.round(executed / s)} cases/s)\n`);
