/**
 * Property-based fuzzing of the whole plugin edge (fast-check, seeded): sequences of the calls
 * recorded from Docker 20.10, in their order, some sent as recorded and some mutated — keys
 * dropped or set to odd values (JavaScript's own property names, wrong types, other IDs, huge
 * numbers), bodies replaced by random JSON or by text, calls sent to another route. After every
 * call:
 *  - the plugin answered, with JSON (Err and Error alike on a failure);
 *  - a refused call changed nothing: not the state in memory, not the saved state, not the
 *    (fake) kernel;
 *  - the saved state is a valid state document (parseState), agrees with memory, and holds
 *    together (endpoints on known networks, pools under their own IDs).
 * A failure prints fast-check's seed and the shrunk sequence; re-run with that seed to replay it.
 */
import fc from 'fast-check';
import { createApp, routes, type AppDeps } from '../../src/server/app.js';
import { silentLogger } from '../../src/logging.js';
import { parseState } from '../../src/state/store.js';
import { encodeState } from '../../src/state/disk.js';
import { FakeHost } from '../fakes/host.js';
import { loadRecorded } from '../fakes/recorded.js';
import { makeWorld, type World } from '../fakes/world.js';
import { serveOnSocket, socketRequest } from '../lib/http.js';

const recorded = loadRecorded();
const CALLS = [...routes({ driver: null as never, ipam: null as never, log: silentLogger() }).keys()];

let w: World;
let srv: Awaited<ReturnType<typeof serveOnSocket>>;

beforeAll(async () => {
  // The app reads driver and IPAM through these getters: every run gets a fresh world.
  const deps: AppDeps = {
    get driver() {
      return w.driver;
    },
    get ipam() {
      return w.ipam;
    },
    log: silentLogger(),
  };
  srv = await serveOnSocket(createApp(deps));
});

afterAll(async () => {
  await srv.close();
});

const ODD_STRINGS = [
  '__proto__', 'constructor', 'toString', 'prototype', 'hasOwnProperty', '', ' ', '0', '-1', 'null', 'tsb-v4-10.99.0.0/24', 'tsb-v6-::/0',
  'a'.repeat(64), 'g'.repeat(64), 'ab'.repeat(6), '10.99.0.5', '10.99.0.5/24', '0.0.0.0', '::', '::1', '::ffff:127.0.0.1', '300.1.1.1',
  '10.0.0.0/0', 'fd00::/8', '02:42:ac:11:00:02', 'ZZ:42:ac:11:00:02', 'com.docker.network.gateway', 'io.tsbridge.x', 'x'.repeat(300), '\u0000', 'é',
];
const oddValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(...ODD_STRINGS),
  fc.jsonValue({ maxDepth: 2 }),
  fc.integer({ min: -2, max: 70_000 }),
  fc.constantFrom(0, 6, 17, 132, 65535, 65536, 1e308, -0, 0.5),
  fc.constant(undefined),
);

type Mutation =
  | { kind: 'asRecorded' }
  | { kind: 'set'; path: number[]; value: unknown }
  | { kind: 'delete'; path: number[] }
  | { kind: 'body'; value: unknown }
  | { kind: 'text'; text: string }
  | { kind: 'truncate'; at: number }
  | { kind: 'route'; route: number }
  | { kind: 'id'; field: string; value: string };

const path = fc.array(fc.nat({ max: 20 }), { minLength: 1, maxLength: 3 });
const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 6, arbitrary: fc.constant({ kind: 'asRecorded' as const }) },
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('set' as const), path, value: oddValue }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('delete' as const), path }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('body' as const), value: fc.jsonValue({ maxDepth: 3 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('text' as const), text: fc.string({ maxLength: 40 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('truncate' as const), at: fc.nat({ max: 400 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('route' as const), route: fc.nat({ max: CALLS.length - 1 }) }) },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('id' as const),
      field: fc.constantFrom('NetworkID', 'EndpointID', 'PoolID'),
      value: fc.constantFrom('__proto__', 'constructor', 'toString', 'valueOf', 'tsb-v4-10.99.0.0/24', 'a'.repeat(64), 'AB'.repeat(32), ''),
    }),
  },
);

/** A walk down an object along `path` (each number picks a key modulo the keys there). */
function walk(o: unknown, path: number[]): { parent: Record<string, unknown>; key: string } | null {
  let parent: Record<string, unknown> | null = null;
  let key = '';
  let cur = o;
  for (const n of path) {
    if (typeof cur !== 'object' || cur === null) break;
    const keys = Object.keys(cur);
    if (keys.length === 0) break;
    parent = cur as Record<string, unknown>;
    key = keys[n % keys.length]!;
    cur = parent[key];
  }
  return parent ? { parent, key } : null;
}

/** The request to send: call and body text (undefined = no body). */
function build(rec: (typeof recorded)[number], m: Mutation, mapPool: (id: string) => string): { call: string; body: string | undefined } {
  const req = rec.request === null ? null : (structuredClone(rec.request) as Record<string, unknown>);
  if (req && typeof req.PoolID === 'string') req.PoolID = mapPool(req.PoolID);
  const text = (v: unknown) => (v === undefined ? undefined : JSON.stringify(v));
  switch (m.kind) {
    case 'asRecorded':
      return { call: rec.call, body: text(req ?? undefined) };
    case 'set':
    case 'delete': {
      const spot = walk(req, m.path);
      if (spot && m.kind === 'set') spot.parent[spot.key] = m.value;
      if (spot && m.kind === 'delete') delete spot.parent[spot.key];
      return { call: rec.call, body: text(req ?? undefined) };
    }
    case 'body':
      return { call: rec.call, body: JSON.stringify(m.value) };
    case 'text':
      return { call: rec.call, body: m.text };
    case 'truncate':
      return { call: rec.call, body: (text(req) ?? '').slice(0, m.at) };
    case 'route':
      return { call: CALLS[m.route]!, body: text(req ?? undefined) };
    case 'id':
      if (req && Object.hasOwn(req, m.field)) req[m.field] = m.value;
      return { call: rec.call, body: text(req ?? undefined) };
  }
}

function world(): World {
  return makeWorld({ host: new FakeHost({ ephemeral: [49152, 49160], listeners: [{ proto: 'tcp', ip: '', port: 22 }] }) });
}

async function observed() {
  await w.driver.settle(); // background link removal of an earlier call must not count for this one
  return { state: structuredClone(w.db.state), saved: structuredClone(w.store.saved), kernel: w.kernel.snapshot() };
}

function checkState(): void {
  if (w.store.saved === null) return;
  const doc = parseState(JSON.stringify(encodeState(w.store.saved)));
  expect(doc).toEqual(w.db.state);
  for (const [id, e] of Object.entries(doc.endpoints)) {
    expect(e.id).toBe(id);
    expect(Object.hasOwn(doc.networks, e.networkId)).toBe(true);
  }
  for (const [id, n] of Object.entries(doc.networks)) expect(n.id).toBe(id);
  for (const [id, p] of Object.entries(doc.pools)) expect(p.id).toBe(id);
}

test('random and mutated Docker calls: always a JSON answer, refusals change nothing, the state stays valid', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.uniqueArray(fc.nat({ max: recorded.length - 1 }), { minLength: 5, maxLength: 30 }).map((xs) => xs.sort((a, b) => a - b)),
      fc.array(mutation, { minLength: 30, maxLength: 30 }),
      async (indexes, mutations) => {
        w = world();
        const pools = new Map<string, string>();
        const mapPool = (theirs: string) => [...pools.entries()].find(([pool]) => theirs.endsWith(`-${pool}`))?.[1] ?? theirs;
        for (let i = 0; i < indexes.length; i++) {
          const { call, body } = build(recorded[indexes[i]!]!, mutations[i]!, mapPool);
          const before = await observed();
          const r = await socketRequest(srv.socket, { path: call, body });
          const where = `${call} ${body?.slice(0, 300)} → ${r.status} ${r.raw.slice(0, 300)}`;
          expect({ where, json: r.body !== undefined && /^application\/json/.test(String(r.headers['content-type'])) }).toEqual({ where, json: true });
          if (r.status === 200) {
            if (call === '/IpamDriver.RequestPool') pools.set(r.body.Pool, r.body.PoolID);
          } else {
            expect({ where, Err: typeof r.body.Err, same: r.body.Err === r.body.Error }).toEqual({ where, Err: 'string', same: true });
            expect({ where, message: r.body.Err }).not.toEqual({ where, message: expect.stringMatching(/^internal error/) });
            expect({ where, after: await observed() }).toEqual({ where, after: before });
          }
          checkState();
        }
      },
    ),
    { seed: 1_511_2024, numRuns: 100 },
  );
});
