/**
 * RequestPool retried after a crash between save and reply (issue 11): the same request gets the
 * same answer instead of an overlap with its own earlier record; claims keep a racing second
 * request's rollback from releasing the pool of the network that won; creation and allocation
 * times are recorded for convergence.
 */
import { IpamService } from '../../src/ipam/service.js';
import { Db } from '../../src/state/db.js';
import { FakeHost } from '../fakes/host.js';
import { codeOf, makeWorld, networkSpec, type World } from '../fakes/world.js';

const req = (pool: string, subPool = '') => ({ pool, subPool, v6: false });

let w: World;
let clock: number;
beforeEach(() => {
  w = makeWorld();
  clock = 1_000_000;
  w.ipam = new IpamService(w.db, w.host, () => [{ base: '10.210.0.0/16', size: 24 }], undefined, () => clock);
});

/** The plugin restarts on the same state file: what a crash between save and reply leaves. */
async function restarted(): Promise<IpamService> {
  const db = new Db(w.store, await w.store.load());
  w.db = db;
  return new IpamService(db, new FakeHost(), () => [], undefined, () => clock);
}

test('a retried RequestPool after a crash between save and reply gets the same pool, not an overlap', async () => {
  const first = await w.ipam.requestPool(req('10.99.0.0/24'));
  // the reply never reached Docker; the plugin restarts; the user runs docker network create again
  const ipam = await restarted();
  clock += 5000;
  const second = await ipam.requestPool(req('10.99.0.0/24'));
  expect(second).toEqual(first);
  expect(w.db.state.pools[first.poolId]).toMatchObject({ claims: 2, created: clock });
  expect(w.store.saved!.pools[first.poolId]).toEqual(w.db.state.pools[first.poolId]);
  // The network that goes on to use it, and its removal: the retry's claim is released ...
  await ipam.requestAddress(second.poolId, '', 'gateway');
  await ipam.releaseAddress(second.poolId, '10.99.0.1');
  await ipam.releasePool(second.poolId);
  // ... and the pool stays with the first, lost claim: nothing uses it, convergence releases it
  // (test/unit/converge.test.ts); the same subnet asked again gets it back meanwhile.
  expect(w.db.state.pools[first.poolId]).toMatchObject({ claims: 1 });
  expect(await ipam.requestPool(req('10.99.0.0/24'))).toEqual(first);
});

test('the same request with an ip-range: same answer; another ip-range or a neighbouring subnet: overlap', async () => {
  const a = await w.ipam.requestPool(req('10.99.0.0/24', '10.99.0.128/25'));
  expect(await w.ipam.requestPool(req('10.99.0.0/24', '10.99.0.128/25'))).toEqual(a);
  expect(await codeOf(w.ipam.requestPool(req('10.99.0.0/24', '10.99.0.0/25')))).toBe('POOL_OVERLAP');
  expect(await codeOf(w.ipam.requestPool(req('10.99.0.0/24')))).toBe('POOL_OVERLAP');
  expect(await codeOf(w.ipam.requestPool(req('10.99.0.0/16')))).toBe('POOL_OVERLAP');
  expect(w.db.state.pools[a.poolId]!.claims).toBe(2);
});

test('a pool in use (an address held) is not handed out twice: overlap, as before', async () => {
  const a = await w.ipam.requestPool(req('10.99.0.0/24'));
  await w.ipam.requestAddress(a.poolId, '', 'gateway');
  const e = await w.ipam.requestPool(req('10.99.0.0/24')).catch((x) => x);
  expect(e.code).toBe('POOL_OVERLAP');
  expect(e.message).toBe('subnet 10.99.0.0/24 overlaps 10.99.0.0/24 (pool tsb-v4-10.99.0.0/24)');
});

test('a pool whose subnet a tsbridge network uses is not handed out twice', async () => {
  const a = await w.ipam.requestPool(req('10.10.0.0/24'));
  await w.driver.createNetwork(networkSpec());
  expect(await codeOf(w.ipam.requestPool(req('10.10.0.0/24')))).toBe('POOL_OVERLAP');
  expect(w.db.state.pools[a.poolId]!.claims ?? 1).toBe(1);
});

test('an overlap with a pool nothing uses says how to release it', async () => {
  await w.ipam.requestPool(req('10.99.0.0/24'));
  const e = await w.ipam.requestPool(req('10.99.0.0/23')).catch((x) => x);
  expect(e.message).toBe('subnet 10.99.0.0/23 overlaps 10.99.0.0/24 (pool tsb-v4-10.99.0.0/24) — nothing uses it: if no Docker network has that subnet either, `tsbridge gc` releases it');
});

test("two networks racing for one subnet: the loser's rollback does not release the winner's pool", async () => {
  const a = await w.ipam.requestPool(req('10.99.0.0/24')); // network A
  const b = await w.ipam.requestPool(req('10.99.0.0/24')); // network B, before A asked for its gateway
  expect(b).toEqual(a);
  const gw = await w.ipam.requestAddress(a.poolId, '10.99.0.1', 'gateway'); // A's gateway
  expect(gw).toBe('10.99.0.1/24');
  expect(await codeOf(w.ipam.requestAddress(b.poolId, '10.99.0.1', 'gateway'))).toBe('ADDRESS_IN_USE'); // B's fails
  await w.ipam.releasePool(b.poolId); // Docker rolls B back
  expect(w.db.state.pools[a.poolId]).toMatchObject({ allocated: { '10.99.0.1': 'gateway' }, claims: 1 });
  await w.ipam.releasePool(a.poolId);
  expect(w.db.state.pools).toEqual({});
});

test('automatic pools are never handed out twice: a retry gets another one, the first is left for convergence', async () => {
  const a = await w.ipam.requestPool(req(''));
  const b = await w.ipam.requestPool(req(''));
  expect(b.pool).not.toBe(a.pool);
});

test('creation and allocation times are recorded, and forgotten with the address', async () => {
  const a = await w.ipam.requestPool(req('10.99.0.0/24'));
  expect(w.db.state.pools[a.poolId]!.created).toBe(clock);
  clock += 1000;
  await w.ipam.requestAddress(a.poolId, '', 'gateway');
  clock += 1000;
  await w.ipam.requestAddress(a.poolId, '', 'endpoint');
  expect(w.db.state.pools[a.poolId]!.since).toEqual({ '10.99.0.1': 1_001_000, '10.99.0.2': 1_002_000 });
  await w.ipam.releaseAddress(a.poolId, '10.99.0.2');
  expect(w.db.state.pools[a.poolId]!.since).toEqual({ '10.99.0.1': 1_001_000 });
  expect(w.store.saved!.pools[a.poolId]!.since).toEqual({ '10.99.0.1': 1_001_000 });
});
