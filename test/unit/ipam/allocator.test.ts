import { isTsbridgeError } from '../../../src/errors.js';
import { formatAddress, parsePrefix } from '../../../src/net/addr.js';
import {
  allocateAddress,
  newPoolRecord,
  poolId,
  releaseAddress,
  usableRange,
} from '../../../src/ipam/allocator.js';
import type { AllocKind, PoolRecord } from '../../../src/ipam/types.js';
import { errorOf } from '../../fakes/world.js';

function pool(cidr: string, subPool: string | null = null, allocated: Record<string, AllocKind> = {}): PoolRecord {
  const rec = newPoolRecord({ id: 'p', pool: cidr, subPool, auto: false });
  return { ...rec, allocated };
}

/** Allocates `n` dynamic endpoint addresses in a row, returning the addresses and the final record. */
function allocateMany(rec: PoolRecord, n: number): { addresses: string[]; rec: PoolRecord } {
  const addresses: string[] = [];
  for (let i = 0; i < n; i++) {
    const r = allocateAddress(rec, { kind: 'endpoint' });
    addresses.push(r.address);
    rec = r.pool;
  }
  return { addresses, rec };
}

describe('usableRange', () => {
  test.each([
    ['10.0.0.0/24', '10.0.0.1', '10.0.0.254'],
    ['10.0.0.4/30', '10.0.0.5', '10.0.0.6'],
    ['10.0.0.4/31', '10.0.0.4', '10.0.0.5'],
    ['10.0.0.4/32', '10.0.0.4', '10.0.0.4'],
    ['fd00::/64', 'fd00::1', 'fd00::ffff:ffff:ffff:ffff'],
    ['fd00::/126', 'fd00::1', 'fd00::3'],
    ['fd00::/127', 'fd00::', 'fd00::1'],
    ['fd00::5/128', 'fd00::5', 'fd00::5'],
  ])('%s: %s - %s', (cidr, first, last) => {
    const p = parsePrefix(cidr);
    const r = usableRange(p);
    expect([formatAddress(p.family, r.first), formatAddress(p.family, r.last)]).toEqual([first, last]);
  });
});

describe('newPoolRecord / poolId', () => {
  test.each([
    ['10.10.0.0/24', null, 4, '10.10.0.0/24', null],
    ['10.10.0.0/16', '10.10.1.0/24', 4, '10.10.0.0/16', '10.10.1.0/24'],
    ['10.10.0.0/16', '', 4, '10.10.0.0/16', null],
    ['FD00:1:0::/64', 'fd00:1::8000:0:0:0/65', 6, 'fd00:1::/64', 'fd00:1:0:0:8000::/65'],
  ])('%s range %j', (cidr, subPool, family, canonical, canonicalSub) => {
    expect(newPoolRecord({ id: poolId(family as 4 | 6, canonical), pool: cidr, subPool, auto: true })).toEqual({
      id: `tsb-v${family}-${canonical}`,
      family,
      pool: canonical,
      subPool: canonicalSub,
      auto: true,
      allocated: {},
      cursor: null,
    });
  });

  test.each([
    ['10.10.0.5/24', null, 'subnet', 'the network is 10.10.0.0/24'],
    ['10.10.0.0/24', '10.10.1.0/25', 'ip range', 'not inside subnet 10.10.0.0/24'],
    ['10.10.0.0/24', '10.10.0.0/23', 'ip range', 'not inside subnet 10.10.0.0/24'],
    ['10.10.0.0/24', 'fd00::/120', 'ip range', 'IPv6'],
    ['10.10.0.0/24', '10.10.0.1/25', 'ip range', 'the network is 10.10.0.0/25'],
    ['bogus', null, 'subnet', 'address/prefix-length'],
  ])('rejects %s range %j', (cidr, subPool, what, detail) => {
    const err = errorOf(() => newPoolRecord({ id: 'x', pool: cidr, subPool, auto: false }));
    expect(err.code).toBe('BAD_CIDR');
    expect(err.params['what']).toBe(what);
    expect(String(err.params['detail'])).toContain(detail);
  });

  test.each([
    [4, '10.10.0.0/24', 'tsb-v4-10.10.0.0/24'],
    [6, 'fd00:1::/64', 'tsb-v6-fd00:1::/64'],
  ] as const)('poolId(%i, %s)', (family, cidr, id) => {
    expect(poolId(family, cidr)).toBe(id);
  });
});

describe('allocateAddress: dynamic round robin', () => {
  // full: the listed addresses are the whole range, so the next request fails.
  test.each([
    ['10.10.0.0/24', null, ['10.10.0.1', '10.10.0.2'], '/24', false],
    ['10.10.0.0/30', null, ['10.10.0.1', '10.10.0.2'], '/30', true],
    ['10.10.0.0/31', null, ['10.10.0.0', '10.10.0.1'], '/31', true],
    ['10.10.0.9/32', null, ['10.10.0.9'], '/32', true],
    ['10.10.0.0/16', '10.10.7.0/24', ['10.10.7.0', '10.10.7.1'], '/16', false],
    ['10.10.0.0/24', '10.10.0.252/30', ['10.10.0.252', '10.10.0.253', '10.10.0.254'], '/24', true],
    ['10.10.0.0/24', '10.10.0.0/30', ['10.10.0.1', '10.10.0.2', '10.10.0.3'], '/24', true],
    ['fd00::/64', null, ['fd00::1', 'fd00::2'], '/64', false],
    ['fd00::/126', null, ['fd00::1', 'fd00::2', 'fd00::3'], '/126', true],
    ['fd00::/127', null, ['fd00::', 'fd00::1'], '/127', true],
    ['fd00::7/128', null, ['fd00::7'], '/128', true],
    ['fd00::/64', 'fd00::ffff:ffff:ffff:fffe/127', ['fd00::ffff:ffff:ffff:fffe', 'fd00::ffff:ffff:ffff:ffff'], '/64', true],
  ])('%s range %j hands out %j', (cidr, subPool, expected, suffix, full) => {
    const { addresses, rec } = allocateMany(pool(cidr, subPool), expected.length);
    expect(addresses).toEqual(expected);
    expect(rec.cursor).toBe(expected[expected.length - 1]);
    expect(Object.keys(rec.allocated).sort()).toEqual([...expected].sort());
    expect(allocateAddress(pool(cidr, subPool), { kind: 'aux' }).cidr).toBe(`${expected[0]}${suffix}`);
    if (!full) return;
    const err = errorOf(() => allocateAddress(rec, { kind: 'endpoint' }));
    expect(err.code).toBe('POOL_EXHAUSTED');
    expect(err.params).toEqual({ pool: rec.pool, range: subPool ? ` (range ${rec.subPool})` : '' });
  });

  test('exhaustion leaves the input record unchanged', () => {
    const { rec } = allocateMany(pool('10.10.0.0/30'), 2);
    const before = structuredClone(rec);
    expect(errorOf(() => allocateAddress(rec, { kind: 'endpoint' })).message).toBe(
      'no free address left in pool 10.10.0.0/30',
    );
    expect(rec).toEqual(before);
  });

  test('never mutates the input record', () => {
    const rec = pool('10.10.0.0/24', null, { '10.10.0.1': 'gateway' });
    const before = structuredClone(rec);
    const r = allocateAddress(rec, { kind: 'endpoint' });
    expect(rec).toEqual(before);
    expect(r.pool).not.toBe(rec);
    expect(r.pool.allocated).not.toBe(rec.allocated);
  });

  test.each([
    ['10.10.0.0/24', null, 254],
    ['10.10.0.0/29', null, 6],
    ['fd00::/125', null, 7],
    ['10.10.0.0/16', '10.10.255.248/29', 7],
  ])('%s range %j: a released address comes back only after the wrap', (cidr, subPool, size) => {
    const first = allocateMany(pool(cidr, subPool), 3);
    const released = first.addresses[1]!;
    let rec = releaseAddress(first.rec, released);
    const seen: string[] = [];
    // Everything up to the end of the range is handed out before `released` again.
    for (;;) {
      const r = allocateAddress(rec, { kind: 'endpoint' });
      rec = r.pool;
      if (r.address === released) break;
      seen.push(r.address);
      expect(seen.length).toBeLessThan(size);
    }
    expect(seen.length).toBe(size - 3);
    expect(seen).not.toContain(released);
  });

  test('skips held addresses and wraps around to the range start', () => {
    const rec = {
      ...pool('10.10.0.0/29', null, { '10.10.0.1': 'gateway', '10.10.0.5': 'endpoint', '10.10.0.6': 'endpoint' }),
      cursor: '10.10.0.4',
    };
    expect(allocateMany(rec, 3).addresses).toEqual(['10.10.0.2', '10.10.0.3', '10.10.0.4']);
  });

  test.each([
    ['10.10.0.100', '10.10.0.0/24', '10.10.0.0/30', '10.10.0.1'],
    ['10.10.0.3', '10.10.0.0/24', '10.10.0.0/30', '10.10.0.1'],
    ['junk', '10.10.0.0/24', null, '10.10.0.1'],
    ['fd00::1', '10.10.0.0/24', null, '10.10.0.1'],
    ['10.10.0.254', '10.10.0.0/24', null, '10.10.0.1'],
  ])('cursor %s (outside, at the end of or not in the range of %s %j) restarts at the range start', (cursor, cidr, subPool, expected) => {
    expect(allocateAddress({ ...pool(cidr, subPool), cursor }, { kind: 'endpoint' }).address).toBe(expected);
  });

  test('is fast for a /64 with thousands held', () => {
    const allocated: Record<string, AllocKind> = {};
    for (let i = 1; i <= 5000; i++) allocated[`fd00::${i.toString(16)}`] = 'endpoint';
    const rec = pool('fd00::/64', null, allocated);
    const t0 = Date.now();
    expect(allocateAddress(rec, { kind: 'endpoint' }).address).toBe('fd00::1389');
    expect(allocateAddress({ ...rec, cursor: 'fd00::ffff:ffff:ffff:ffff' }, { kind: 'endpoint' }).address).toBe(
      'fd00::1389',
    );
    expect(allocateAddress(rec, { kind: 'gateway' }).address).toBe('fd00::1389');
    expect(Date.now() - t0).toBeLessThan(30_000); // a bound on hanging, not a performance figure
  });

  test('a subPool holding only the network address is exhausted at once', () => {
    const err = errorOf(() => allocateAddress(pool('10.10.0.0/24', '10.10.0.0/32'), { kind: 'endpoint' }));
    expect(err.message).toBe('no free address left in pool 10.10.0.0/24 (range 10.10.0.0/32)');
  });
});

describe('allocateAddress: gateway', () => {
  test.each([
    ['10.10.0.0/24', null, {}, '10.10.0.1/24'],
    ['10.10.0.0/16', '10.10.7.0/24', {}, '10.10.0.1/16'],
    ['10.10.0.0/24', null, { '10.10.0.1': 'endpoint', '10.10.0.2': 'aux' }, '10.10.0.3/24'],
    ['10.10.0.0/31', null, {}, '10.10.0.0/31'],
    ['fd00:1::/64', null, {}, 'fd00:1::1/64'],
    ['fd00:1::/127', null, {}, 'fd00:1::/127'],
  ] as const)('%s range %j held %j -> %s', (cidr, subPool, held, cidrOut) => {
    const rec = { ...pool(cidr, subPool, { ...held }), cursor: null };
    const r = allocateAddress(rec, { kind: 'gateway' });
    expect(r.cidr).toBe(cidrOut);
    expect(r.pool.allocated[r.address]).toBe('gateway');
    expect(r.pool.cursor).toBeNull();
  });

  test('full pool', () => {
    const err = errorOf(() => allocateAddress(pool('10.10.0.0/30', null, { '10.10.0.1': 'aux', '10.10.0.2': 'aux' }), { kind: 'gateway' }));
    expect(err.code).toBe('POOL_EXHAUSTED');
  });
});

describe('allocateAddress: explicit', () => {
  test.each([
    ['10.10.0.0/24', null, '10.10.0.7', 'endpoint', '10.10.0.7/24'],
    ['10.10.0.0/16', '10.10.7.0/24', '10.10.200.1', 'endpoint', '10.10.200.1/16'],
    ['10.10.0.0/16', '10.10.7.0/24', '10.10.0.1', 'gateway', '10.10.0.1/16'],
    ['10.10.0.0/31', null, '10.10.0.0', 'endpoint', '10.10.0.0/31'],
    ['10.10.0.0/31', null, '10.10.0.1', 'endpoint', '10.10.0.1/31'],
    ['10.10.0.9/32', null, '10.10.0.9', 'aux', '10.10.0.9/32'],
    ['fd00::/64', null, 'FD00:0::00AB', 'endpoint', 'fd00::ab/64'],
    ['fd00::/127', null, 'fd00::', 'gateway', 'fd00::/127'],
    ['fd00::/64', null, 'fd00::ffff:ffff:ffff:ffff', 'endpoint', 'fd00::ffff:ffff:ffff:ffff/64'],
  ] as const)('%s range %j: %s (%s)', (cidr, subPool, address, kind, cidrOut) => {
    const rec = { ...pool(cidr, subPool), cursor: null };
    const r = allocateAddress(rec, { address, kind });
    expect(r.cidr).toBe(cidrOut);
    expect(r.pool.allocated).toEqual({ [r.address]: kind });
    expect(r.pool.cursor).toBeNull();
    expect(rec.allocated).toEqual({});
  });

  test.each([
    ['10.10.0.0/24', '10.10.1.1', 'ADDRESS_OUT_OF_POOL', 'address 10.10.1.1 is not in pool 10.10.0.0/24'],
    ['10.10.0.0/24', 'fd00::1', 'ADDRESS_OUT_OF_POOL', 'address fd00::1 is not in pool 10.10.0.0/24'],
    ['10.10.0.0/24', '10.10.0.0', 'BAD_ADDRESS', 'network address of 10.10.0.0/24'],
    ['10.10.0.0/24', '10.10.0.255', 'BAD_ADDRESS', 'broadcast address of 10.10.0.0/24'],
    ['10.10.0.4/30', '10.10.0.7', 'BAD_ADDRESS', 'broadcast address of 10.10.0.4/30'],
    ['fd00::/64', 'fd00::', 'BAD_ADDRESS', 'subnet-router anycast address of fd00::/64'],
    ['10.10.0.0/24', '10.10.0.07', 'BAD_ADDRESS', 'invalid address "10.10.0.07"'],
    ['10.10.0.0/24', '10.10.0.7/24', 'BAD_ADDRESS', 'without a prefix length'],
    ['10.10.0.0/24', '10.10.0.1', 'ADDRESS_IN_USE', 'address 10.10.0.1 is already in use in pool 10.10.0.0/24'],
    ['fd00::/64', 'fd00:0::1', 'ADDRESS_IN_USE', 'address fd00::1 is already in use in pool fd00::/64'],
  ])('%s: %s -> %s', (cidr, address, code, message) => {
    const held = cidr.includes(':') ? 'fd00::1' : '10.10.0.1';
    const rec = pool(cidr, null, { [held]: 'gateway' });
    const before = structuredClone(rec);
    const err = errorOf(() => allocateAddress(rec, { address, kind: 'endpoint' }));
    expect(err.code).toBe(code);
    expect(err.message).toContain(message);
    expect(rec).toEqual(before);
  });
});

describe('releaseAddress', () => {
  const held = (): PoolRecord => ({
    ...pool('fd00::/64', null, { 'fd00::1': 'gateway', 'fd00::a': 'endpoint' }),
    cursor: 'fd00::a',
  });

  test.each([
    ['fd00::a', { 'fd00::1': 'gateway' }],
    ['FD00:0:0:0:0:0:0:A', { 'fd00::1': 'gateway' }],
    ['fd00::b', { 'fd00::1': 'gateway', 'fd00::a': 'endpoint' }],
    ['fd01::a', { 'fd00::1': 'gateway', 'fd00::a': 'endpoint' }],
    ['10.0.0.1', { 'fd00::1': 'gateway', 'fd00::a': 'endpoint' }],
  ])('release %s', (address, allocated) => {
    const rec = held();
    const out = releaseAddress(rec, address);
    expect(out).toEqual({ ...rec, allocated });
    expect(out).not.toBe(rec);
    expect(rec).toEqual(held());
    // Idempotent.
    expect(releaseAddress(out, address)).toEqual(out);
  });

  test.each([['10.0.0.05'], ['fd00::a/64'], ['']])('rejects %j', (address) => {
    expect(errorOf(() => releaseAddress(held(), address)).code).toBe('BAD_ADDRESS');
  });
});
