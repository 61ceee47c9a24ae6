/**
 * IpamService over Db(MemoryStore) and a FakeHost: pools (explicit and
 * automatic), addresses, releases, and many requests in flight at once.
 */
import { isTsbridgeError } from '../../src/errors.js';
import { overlaps, parsePrefix } from '../../src/net/addr.js';
import { IpamService } from '../../src/ipam/service.js';
import { Db } from '../../src/state/db.js';
import { FakeHost } from '../fakes/host.js';
import { codeOf, makeWorld, NET_A, networkSpec, type World } from '../fakes/world.js';

const v4 = (pool = '', subPool = '') => ({ pool, subPool, v6: false });

let w: World;
beforeEach(() => {
  w = makeWorld({ pools: [{ base: '10.210.0.0/16', size: 24 }] });
});

describe('requestPool', () => {
  test('an explicit pool is kept (canonical) with its sub-pool, and saved', async () => {
    const r = await w.ipam.requestPool(v4('10.99.0.0/24', '10.99.0.128/25'));
    expect(r).toEqual({ poolId: 'tsb-v4-10.99.0.0/24', pool: '10.99.0.0/24' });
    expect(w.db.state.pools[r.poolId]).toMatchObject({ pool: '10.99.0.0/24', subPool: '10.99.0.128/25', auto: false, allocated: {} });
    expect(w.store.saved?.pools[r.poolId]).toEqual(w.db.state.pools[r.poolId]);
  });

  test('an explicit IPv6 pool is written canonically', async () => {
    const r = await w.ipam.requestPool({ pool: 'FD00:0097:0:0::/64', subPool: '', v6: true });
    expect(r).toEqual({ poolId: 'tsb-v6-fd00:97::/64', pool: 'fd00:97::/64' });
  });

  test.each([
    ['host bits set', v4('10.99.0.1/24')],
    ['IPv6 subnet asked as IPv4', v4('fd00::/64')],
    ['IPv4 subnet asked as IPv6', { pool: '10.99.0.0/24', subPool: '', v6: true }],
    ['sub-pool outside the pool', v4('10.99.0.0/24', '10.98.0.0/25')],
    ['garbage', v4('not-a-subnet')],
  ])('refuses a bad explicit pool: %s', async (_what, req) => {
    expect(await codeOf(w.ipam.requestPool(req))).toBe('BAD_CIDR');
    expect(w.db.state.pools).toEqual({});
  });

  test('an explicit pool overlapping a held one is POOL_OVERLAP', async () => {
    await w.ipam.requestPool(v4('10.99.0.0/24'));
    expect(await codeOf(w.ipam.requestPool(v4('10.99.0.0/16')))).toBe('POOL_OVERLAP');
    expect(await codeOf(w.ipam.requestPool(v4('10.99.0.64/26')))).toBe('POOL_OVERLAP');
    expect(Object.keys(w.db.state.pools)).toEqual(['tsb-v4-10.99.0.0/24']);
  });

  test('an automatic pool avoids host routes, addresses and nameservers', async () => {
    w.host.routes = ['10.210.0.0/24', '10.210.1.7/32', '10.210.2.9'];
    const r = await w.ipam.requestPool(v4());
    expect(r.pool).toBe('10.210.3.0/24');
    expect(w.db.state.pools[r.poolId]!.auto).toBe(true);
  });

  test('an automatic pool avoids pools already held; a second request gets another pool while the first is held', async () => {
    await w.ipam.requestPool(v4('10.210.0.0/24'));
    const a = await w.ipam.requestPool(v4());
    const b = await w.ipam.requestPool(v4());
    expect([a.pool, b.pool]).toEqual(['10.210.1.0/24', '10.210.2.0/24']);
    await w.ipam.releasePool(a.poolId);
    expect((await w.ipam.requestPool(v4())).pool).toBe('10.210.1.0/24');
  });

  test('automatic requests in flight together get different pools', async () => {
    const got = await Promise.all(Array.from({ length: 10 }, () => w.ipam.requestPool(v4())));
    const pools = got.map((g) => g.pool);
    expect(new Set(pools).size).toBe(10);
    for (let i = 0; i < pools.length; i++) {
      for (let j = i + 1; j < pools.length; j++) expect(overlaps(parsePrefix(pools[i]!), parsePrefix(pools[j]!))).toBe(false);
    }
  });

  test('NO_FREE_POOL when every default subnet is taken', async () => {
    w = makeWorld({ pools: [{ base: '10.210.0.0/23', size: 24 }], host: new FakeHost({ routes: ['10.210.1.0/24'] }) });
    expect((await w.ipam.requestPool(v4())).pool).toBe('10.210.0.0/24');
    const saves = w.store.saves;
    expect(await codeOf(w.ipam.requestPool(v4()))).toBe('NO_FREE_POOL');
    expect(Object.keys(w.db.state.pools)).toHaveLength(1);
    expect(w.store.saves).toBe(saves);
  });

  test('an automatic IPv6 pool is a /64 of the host’s unique-local /48, remembered in the state', async () => {
    const a = await w.ipam.requestPool({ pool: '', subPool: '', v6: true });
    const b = await w.ipam.requestPool({ pool: '', subPool: '', v6: true });
    const base = w.db.state.ulaBase;
    expect(base).not.toBeNull();
    expect(overlaps(parsePrefix(base!), parsePrefix('fd00::/8'))).toBe(true);
    expect(parsePrefix(base!).length).toBe(48);
    for (const r of [a, b]) {
      expect(parsePrefix(r.pool).length).toBe(64);
      expect(overlaps(parsePrefix(r.pool), parsePrefix(base!))).toBe(true);
    }
    expect(a.pool).not.toBe(b.pool);
    expect(w.store.saved?.ulaBase).toBe(base);
  });

  test('the unique-local /48 is generated once and kept: a restart carves the same /48', async () => {
    let calls = 0;
    const random = (n: number) => {
      calls++;
      return Uint8Array.from({ length: n }, (_, i) => i + 1);
    };
    const ipam = new IpamService(w.db, w.host, () => [{ base: '10.210.0.0/16', size: 24 }], random);
    const v6 = { pool: '', subPool: '', v6: true };
    expect((await ipam.requestPool(v6)).pool).toBe('fd01:203:405::/64');
    expect((await ipam.requestPool(v6)).pool).toBe('fd01:203:405:1::/64');
    expect(w.db.state.ulaBase).toBe('fd01:203:405::/48');
    expect(calls).toBe(1);
    const again = new IpamService(new Db(w.store, await w.store.load()), w.host, () => [], () => Uint8Array.from([9, 9, 9, 9, 9]));
    expect((await again.requestPool(v6)).pool).toBe('fd01:203:405:2::/64');
  });

  test('configured IPv6 default pools are used instead of the unique-local /48', async () => {
    w = makeWorld({ pools: [{ base: '10.210.0.0/16', size: 24 }, { base: 'fd42:1::/48', size: 64 }] });
    w.host.routes = ['fd42:1::/64'];
    expect((await w.ipam.requestPool({ pool: '', subPool: '', v6: true })).pool).toBe('fd42:1:0:1::/64');
    expect(w.db.state.ulaBase).toBeNull();
  });

  test('a failed save leaves no pool behind', async () => {
    w.store.failSave();
    expect(await codeOf(w.ipam.requestPool(v4('10.99.0.0/24')))).toBe('STATE');
    expect(w.db.state.pools).toEqual({});
    // and the pool can be asked for again
    await expect(w.ipam.requestPool(v4('10.99.0.0/24'))).resolves.toMatchObject({ pool: '10.99.0.0/24' });
  });

  test('releasePool is idempotent and tolerates unknown IDs', async () => {
    const r = await w.ipam.requestPool(v4('10.99.0.0/24'));
    await w.ipam.releasePool(r.poolId);
    const saves = w.store.saves;
    await w.ipam.releasePool(r.poolId);
    await w.ipam.releasePool('pool-10.1.0.0/24');
    expect(w.db.state.pools).toEqual({});
    expect(w.store.saves).toBe(saves);
  });
});

describe('requestAddress / releaseAddress', () => {
  let poolId: string;
  beforeEach(async () => {
    poolId = (await w.ipam.requestPool(v4('10.99.0.0/24', '10.99.0.128/25'))).poolId;
  });

  test('gateway: the first usable address of the pool, as CIDR with the pool prefix length', async () => {
    expect(await w.ipam.requestAddress(poolId, '', 'gateway')).toBe('10.99.0.1/24');
    expect(w.db.state.pools[poolId]!.allocated).toEqual({ '10.99.0.1': 'gateway' });
  });

  test('explicit: that address, even outside the sub-pool', async () => {
    expect(await w.ipam.requestAddress(poolId, '10.99.0.5', 'endpoint')).toBe('10.99.0.5/24');
    expect(await w.ipam.requestAddress(poolId, '10.99.0.200', 'gateway')).toBe('10.99.0.200/24');
  });

  test('dynamic: picked from the sub-pool, one after another', async () => {
    expect(await w.ipam.requestAddress(poolId, '', 'endpoint')).toBe('10.99.0.128/24');
    expect(await w.ipam.requestAddress(poolId, '', 'endpoint')).toBe('10.99.0.129/24');
    expect(w.store.saved?.pools[poolId]?.allocated).toEqual({ '10.99.0.128': 'endpoint', '10.99.0.129': 'endpoint' });
  });

  test.each([
    ['an address held already', '10.99.0.5', 'ADDRESS_IN_USE'],
    ['an address outside the pool', '10.98.0.5', 'ADDRESS_OUT_OF_POOL'],
    ['the broadcast address', '10.99.0.255', 'BAD_ADDRESS'],
    ['not an address', '10.99.0.x', 'BAD_ADDRESS'],
  ])('refuses %s', async (_what, address, code) => {
    await w.ipam.requestAddress(poolId, '10.99.0.5', 'endpoint');
    const before = structuredClone(w.db.state);
    expect(await codeOf(w.ipam.requestAddress(poolId, address, 'endpoint'))).toBe(code);
    expect(w.db.state).toEqual(before);
  });

  test('an unknown pool is UNKNOWN_POOL', async () => {
    expect(await codeOf(w.ipam.requestAddress('tsb-v4-10.1.0.0/24', '', 'endpoint'))).toBe('UNKNOWN_POOL');
  });

  test('releaseAddress frees the address, is idempotent and tolerates unknown pools and empty addresses', async () => {
    await w.ipam.requestAddress(poolId, '10.99.0.5', 'endpoint');
    await w.ipam.releaseAddress(poolId, '10.99.0.5');
    expect(w.db.state.pools[poolId]!.allocated).toEqual({});
    expect(w.store.saved?.pools[poolId]?.allocated).toEqual({});
    const saves = w.store.saves;
    await w.ipam.releaseAddress(poolId, '10.99.0.5');
    await w.ipam.releaseAddress(poolId, '');
    await w.ipam.releaseAddress('tsb-v4-10.1.0.0/24', '10.1.0.5');
    expect(w.store.saves).toBe(saves);
    expect(await w.ipam.requestAddress(poolId, '10.99.0.5', 'endpoint')).toBe('10.99.0.5/24');
  });

  test('releaseAddress accepts the address with its prefix length', async () => {
    await w.ipam.requestAddress(poolId, '10.99.0.5', 'endpoint');
    await w.ipam.releaseAddress(poolId, '10.99.0.5/24');
    expect(w.db.state.pools[poolId]!.allocated).toEqual({});
  });

  test('a failed save leaves the address free', async () => {
    w.store.failSave();
    expect(await codeOf(w.ipam.requestAddress(poolId, '10.99.0.5', 'endpoint'))).toBe('STATE');
    expect(w.db.state.pools[poolId]!.allocated).toEqual({});
    expect(await w.ipam.requestAddress(poolId, '10.99.0.5', 'endpoint')).toBe('10.99.0.5/24');
  });
});

describe('many requests at once', () => {
  test('200 parallel requests on a /24 get distinct addresses; the pool then runs out at exactly its size', async () => {
    const { poolId } = await w.ipam.requestPool(v4('10.50.0.0/24'));
    await w.ipam.requestAddress(poolId, '', 'gateway'); // 10.50.0.1, as Docker does first

    const first = await Promise.all(Array.from({ length: 200 }, () => w.ipam.requestAddress(poolId, '', 'endpoint')));
    expect(new Set(first).size).toBe(200);
    for (const a of first) expect(a).toMatch(/^10\.50\.0\.(\d+)\/24$/);
    expect(first).not.toContain('10.50.0.1/24');
    const held = () => Object.keys(w.db.state.pools[poolId]!.allocated).sort();
    expect(held()).toHaveLength(201);
    expect(held()).toEqual([...new Set([...first.map((a) => a.split('/')[0]!), '10.50.0.1'])].sort());
    expect(w.store.saved?.pools[poolId]).toEqual(w.db.state.pools[poolId]);

    // 254 usable addresses: the gateway, 200 above, 53 more; the rest fail.
    const more = await Promise.allSettled(Array.from({ length: 60 }, () => w.ipam.requestAddress(poolId, '', 'endpoint')));
    const ok = more.filter((r) => r.status === 'fulfilled');
    const failed = more.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(ok).toHaveLength(53);
    expect(failed).toHaveLength(7);
    for (const f of failed) expect(isTsbridgeError(f.reason, 'POOL_EXHAUSTED')).toBe(true);
    expect(held()).toHaveLength(254);
    expect(held()).not.toContain('10.50.0.0');
    expect(held()).not.toContain('10.50.0.255');
    expect(w.store.saved?.pools[poolId]).toEqual(w.db.state.pools[poolId]);
  });

  test('parallel releases and requests keep the pool consistent', async () => {
    const { poolId } = await w.ipam.requestPool(v4('10.50.0.0/24'));
    const got = await Promise.all(Array.from({ length: 100 }, () => w.ipam.requestAddress(poolId, '', 'endpoint')));
    await Promise.all([
      ...got.slice(0, 50).map((a) => w.ipam.releaseAddress(poolId, a.split('/')[0]!)),
      ...Array.from({ length: 50 }, () => w.ipam.requestAddress(poolId, '', 'endpoint')),
    ]);
    expect(Object.keys(w.db.state.pools[poolId]!.allocated)).toHaveLength(100);
    expect(w.store.saved?.pools[poolId]).toEqual(w.db.state.pools[poolId]);
  });
});

describe('exhaustion names the network', () => {
  test('a full pool used by a tsbridge network: the error names that network', async () => {
    const { poolId } = await w.ipam.requestPool(v4('10.10.0.0/30'));
    await w.ipam.requestAddress(poolId, '', 'gateway');
    await w.driver.createNetwork(networkSpec({ ipv4: [{ subnet: '10.10.0.0/30', gateway: '10.10.0.1/30' }] }));
    await w.ipam.requestAddress(poolId, '', 'endpoint');
    await expect(w.ipam.requestAddress(poolId, '', 'endpoint')).rejects.toThrow(
      `no free address left in pool 10.10.0.0/30 of network ${NET_A.slice(0, 12)}`,
    );
  });

  test('a full pool no tsbridge network uses (e.g. serving the built-in bridge): the pool alone', async () => {
    const { poolId } = await w.ipam.requestPool(v4('10.10.1.0/31'));
    await w.ipam.requestAddress(poolId, '', 'endpoint');
    await w.ipam.requestAddress(poolId, '', 'endpoint');
    await expect(w.ipam.requestAddress(poolId, '', 'endpoint')).rejects.toThrow(/no free address left in pool 10\.10\.1\.0\/31$/);
  });
});

describe('a pool request that names only a size (Docker 29: "0.0.0.0/24", "::/96")', () => {
  test('0.0.0.0/24 is the first free /24 of the default pools, picked like an automatic pool', async () => {
    w.host.routes = ['10.210.0.0/24'];
    const r = await w.ipam.requestPool(v4('0.0.0.0/24'));
    expect(r).toEqual({ poolId: 'tsb-v4-10.210.1.0/24', pool: '10.210.1.0/24' });
    expect(w.db.state.pools[r.poolId]).toMatchObject({ auto: true, subPool: null });
  });

  test('another size carves the default pools in that size, avoiding what is held', async () => {
    const a = await w.ipam.requestPool(v4('0.0.0.0/26'));
    const b = await w.ipam.requestPool(v4('0.0.0.0/26'));
    const c = await w.ipam.requestPool(v4());
    expect([a.pool, b.pool, c.pool]).toEqual(['10.210.0.0/26', '10.210.0.64/26', '10.210.1.0/24']);
    expect((await w.ipam.requestPool(v4('0.0.0.0/20'))).pool).toBe('10.210.16.0/20');
  });

  test('::/96 is a /96 of the host’s unique-local /48', async () => {
    const r = await w.ipam.requestPool({ pool: '::/96', subPool: '', v6: true });
    const base = parsePrefix(w.db.state.ulaBase!);
    expect(parsePrefix(r.pool).length).toBe(96);
    expect(overlaps(parsePrefix(r.pool), base)).toBe(true);
    expect(r.pool).toBe(`${w.db.state.ulaBase!.replace('/48', '')}/96`);
  });

  test('a size no default pool can hold is BAD_CIDR saying so, and nothing is held', async () => {
    const e = await w.ipam.requestPool(v4('0.0.0.0/8')).catch((x: unknown) => x);
    expect(isTsbridgeError(e, 'BAD_CIDR')).toBe(true);
    expect((e as Error).message).toContain('no default pool can hold a /8 (default pools: 10.210.0.0/16)');
    expect(w.db.state.pools).toEqual({});
  });

  test('NO_FREE_POOL when every subnet of that size is taken', async () => {
    w = makeWorld({ pools: [{ base: '10.210.0.0/23', size: 24 }], host: new FakeHost({ routes: ['10.210.0.0/24'] }) });
    expect((await w.ipam.requestPool(v4('0.0.0.0/24'))).pool).toBe('10.210.1.0/24');
    expect(await codeOf(w.ipam.requestPool(v4('0.0.0.0/24')))).toBe('NO_FREE_POOL');
    expect(await codeOf(w.ipam.requestPool(v4('0.0.0.0/23')))).toBe('NO_FREE_POOL');
  });

  test('a size request of the other family is BAD_CIDR', async () => {
    expect(await codeOf(w.ipam.requestPool({ pool: '0.0.0.0/24', subPool: '', v6: true }))).toBe('BAD_CIDR');
    expect(await codeOf(w.ipam.requestPool(v4('::/96')))).toBe('BAD_CIDR');
  });

  test('through the protocol edge: RequestPool {Pool: "0.0.0.0/24"} answers a real /24', async () => {
    const { routes } = await import('../../src/server/app.js');
    const { silentLogger } = await import('../../src/logging.js');
    const table = routes({ driver: w.driver, ipam: w.ipam, log: silentLogger() });
    const reply = (await table.get('/IpamDriver.RequestPool')!.handler({ AddressSpace: 'local', Pool: '0.0.0.0/24', SubPool: '', Options: {}, V6: false })) as Record<string, string>;
    expect(reply).toEqual({ PoolID: 'tsb-v4-10.210.0.0/24', Pool: '10.210.0.0/24', Data: {} });
  });
});
