import { isTsbridgeError } from '../../../src/errors.js';
import { DEFAULT_POOLS, parseDefaultPools, pickFreePool } from '../../../src/ipam/pools.js';
import type { DefaultPool, Family } from '../../../src/ipam/types.js';

const V4: DefaultPool[] = [
  { base: '10.210.0.0/16', size: 24 },
  { base: '10.211.0.0/16', size: 24 },
];
const MIXED: DefaultPool[] = [
  { base: 'fd42:1::/48', size: 64 },
  { base: '10.0.0.0/30', size: 31 },
  { base: 'fd42:2::/63', size: 64 },
];

describe('pickFreePool', () => {
  test.each<[string, DefaultPool[], Family, string[], string | null]>([
    ['nothing taken', V4, 4, [], '10.210.0.0/24'],
    ['first subnets taken', V4, 4, ['10.210.0.0/24', '10.210.1.0/24'], '10.210.2.0/24'],
    ['a gap is reused', V4, 4, ['10.210.0.0/24', '10.210.2.0/24'], '10.210.1.0/24'],
    ['taken smaller than the size', V4, 4, ['10.210.0.128/25'], '10.210.1.0/24'],
    ['taken larger than the size', V4, 4, ['10.210.0.0/20'], '10.210.16.0/24'],
    ['interface address with host bits', V4, 4, ['10.210.0.77/23'], '10.210.2.0/24'],
    ['host route (plain address)', V4, 4, ['10.210.0.1'], '10.210.1.0/24'],
    ['host route /32', V4, 4, ['10.210.0.255/32'], '10.210.1.0/24'],
    ['first base fully taken', V4, 4, ['10.210.0.0/16'], '10.211.0.0/24'],
    ['a /8 covers both bases', V4, 4, ['10.0.0.0/8'], null],
    ['default route covers everything', V4, 4, ['0.0.0.0/0'], null],
    ['junk and other family ignored', V4, 4, ['bogus', '10.210.0.0/33', '::/0', 'fd00::1', ''], '10.210.0.0/24'],
    ['IPv4 walks only IPv4 bases', MIXED, 4, [], '10.0.0.0/31'],
    ['IPv4 second half', MIXED, 4, ['10.0.0.1'], '10.0.0.2/31'],
    ['IPv4 all taken', MIXED, 4, ['10.0.0.1', '10.0.0.2/31'], null],
    ['IPv6 first', MIXED, 6, ['10.0.0.0/8'], 'fd42:1::/64'],
    ['IPv6 skips a taken /64', MIXED, 6, ['fd42:1::/64'], 'fd42:1:0:1::/64'],
    ['IPv6 host route', MIXED, 6, ['fd42:1::1'], 'fd42:1:0:1::/64'],
    ['IPv6 base covered, next base', MIXED, 6, ['fd42:1::/48'], 'fd42:2::/64'],
    ['IPv6 almost all taken', MIXED, 6, ['fd42:1::/48', 'FD42:2::/64'], 'fd42:2:0:1::/64'],
    ['IPv6 all taken', MIXED, 6, ['fd42::/16'], null],
    ['no defaults of the family', V4, 6, [], null],
  ])('%s', (_name, defaults, family, taken, expected) => {
    expect(pickFreePool(defaults, family, taken)).toBe(expected);
  });

  test('jumps over huge taken prefixes instead of walking subnet by subnet', () => {
    // 2^64 /128 subnets; everything up to the last one is taken.
    const defaults: DefaultPool[] = [{ base: 'fd00::/64', size: 128 }];
    const taken = ['fd00::/65', 'fd00::8000:0:0:0/66', 'fd00::c000:0:0:0/67'];
    const t0 = Date.now();
    expect(pickFreePool(defaults, 6, taken)).toBe('fd00::e000:0:0:0/128');
    expect(pickFreePool(defaults, 6, [...taken, 'fd00::e000:0:0:0/128'])).toBe('fd00::e000:0:0:1/128');
    expect(pickFreePool(defaults, 6, [...taken, 'fd00::e000:0:0:0/67'])).toBeNull();
    expect(Date.now() - t0).toBeLessThan(30_000); // a bound on hanging (a walk subnet by subnet never ends), not a performance figure
  });

  test('many taken subnets', () => {
    const taken = Array.from({ length: 255 }, (_, i) => `10.210.${i}.0/24`);
    expect(pickFreePool(V4, 4, taken)).toBe('10.210.255.0/24');
  });

  test('DEFAULT_POOLS', () => {
    expect(DEFAULT_POOLS).toEqual(V4);
    expect(pickFreePool(DEFAULT_POOLS, 6, [])).toBeNull();
  });
});

describe('parseDefaultPools', () => {
  test.each<[string, DefaultPool[]]>([
    ['10.210.0.0/16:24', [{ base: '10.210.0.0/16', size: 24 }]],
    [
      '10.210.0.0/16:24,fd42:1::/48:64',
      [
        { base: '10.210.0.0/16', size: 24 },
        { base: 'fd42:1::/48', size: 64 },
      ],
    ],
    [' 10.0.0.0/8:16 , FD42:0001::/48:48 ', [{ base: '10.0.0.0/8', size: 16 }, { base: 'fd42:1::/48', size: 48 }]],
    ['10.0.0.0/24:32', [{ base: '10.0.0.0/24', size: 32 }]],
    ['::/0:128', [{ base: '::/0', size: 128 }]],
  ])('%j', (spec, expected) => {
    expect(parseDefaultPools(spec)).toEqual(expected);
  });

  test.each([
    ['', 'comma separated'],
    ['   ', 'comma separated'],
    ['10.210.0.0/16', 'must be base/len:size'],
    ['fd42:1::/48', 'has no :size'],
    ['10.210.0.0/16:', 'not a number'],
    ['10.210.0.0/16:x', 'not a number'],
    ['10.210.0.0/16:024', 'not a number'],
    ['10.210.0.0/16:8', 'between 16 and 32'],
    ['10.210.0.0/16:33', 'between 16 and 32'],
    ['fd42:1::/48:129', 'between 48 and 128'],
    ['10.210.0.5/16:24', 'the network is 10.210.0.0/16'],
    ['10.210.0.0:24', 'address/prefix-length'],
    ['10.210.0.0/16:24,', 'must be base/len:size'],
    ['10.210.0.0/16:24,,10.211.0.0/16:24', 'must be base/len:size'],
  ])('rejects %j', (spec, detail) => {
    try {
      parseDefaultPools(spec);
    } catch (e) {
      expect(isTsbridgeError(e, 'BAD_OPTION')).toBe(true);
      if (!isTsbridgeError(e)) return;
      expect(e.params['option']).toBe('TSBRIDGE_DEFAULT_POOLS');
      expect(e.params['value']).toBe(spec);
      expect(String(e.params['detail'])).toContain(detail);
      return;
    }
    throw new Error('expected BAD_OPTION');
  });
});

describe('size-only pool requests', () => {
  test('sizeOnlyRequest: an all-zero network with a length is a size; anything else is not', async () => {
    const { sizeOnlyRequest } = await import('../../../src/ipam/pools.js');
    const { parsePrefix } = await import('../../../src/net/addr.js');
    expect(sizeOnlyRequest(parsePrefix('0.0.0.0/24'))).toBe(24);
    expect(sizeOnlyRequest(parsePrefix('::/96'))).toBe(96);
    expect(sizeOnlyRequest(parsePrefix('0.0.0.0/0'))).toBeNull();
    expect(sizeOnlyRequest(parsePrefix('10.0.0.0/24'))).toBeNull();
  });

  test('defaultsOfSize keeps the pools of the family that can hold that size', async () => {
    const { defaultsOfSize } = await import('../../../src/ipam/pools.js');
    const defaults = [{ base: '10.210.0.0/16', size: 24 }, { base: '10.220.0.0/20', size: 24 }, { base: 'fd42::/48', size: 64 }];
    expect(defaultsOfSize(defaults, 4, 18)).toEqual([{ base: '10.210.0.0/16', size: 18 }]);
    expect(defaultsOfSize(defaults, 4, 28)).toEqual([{ base: '10.210.0.0/16', size: 28 }, { base: '10.220.0.0/20', size: 28 }]);
    expect(defaultsOfSize(defaults, 6, 96)).toEqual([{ base: 'fd42::/48', size: 96 }]);
    expect(defaultsOfSize(defaults, 4, 8)).toEqual([]);
  });
});
