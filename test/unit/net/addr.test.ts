import { isTsbridgeError } from '../../../src/errors.js';
import {
  canonicalAddress,
  canonicalPrefix,
  containsAddress,
  containsPrefix,
  formatAddress,
  formatPrefix,
  lastAddress,
  overlaps,
  parseAddress,
  parseInterfaceCidr,
  parsePrefix,
  prefixSize,
  subnets,
} from '../../../src/net/addr.js';
import { errorOf } from '../../fakes/world.js';

describe('parseAddress / canonicalAddress', () => {
  test.each([
    ['0.0.0.0', 4, 0n, '0.0.0.0'],
    ['10.0.0.1', 4, 0x0a000001n, '10.0.0.1'],
    ['255.255.255.255', 4, 0xffffffffn, '255.255.255.255'],
    ['::', 6, 0n, '::'],
    ['::1', 6, 1n, '::1'],
    ['1::', 6, 1n << 112n, '1::'],
    ['2001:DB8::1', 6, (0x20010db8n << 96n) | 1n, '2001:db8::1'],
    ['2001:0db8:0000:0000:0000:0000:0000:0001', 6, (0x20010db8n << 96n) | 1n, '2001:db8::1'],
    ['1:2:3:4:5:6:7::', 6, 0x0001000200030004000500060007_0000n, '1:2:3:4:5:6:7:0'],
    ['::2:3:4:5:6:7:8', 6, 0x0000000200030004000500060007_0008n, '0:2:3:4:5:6:7:8'],
    ['::ffff:1.2.3.4', 6, (0xffffn << 32n) | 0x01020304n, '::ffff:1.2.3.4'],
    ['0:0:0:0:0:ffff:0102:0304', 6, (0xffffn << 32n) | 0x01020304n, '::ffff:1.2.3.4'],
    ['::1.2.3.4', 6, 0x01020304n, '::102:304'],
    ['64:ff9b::10.0.0.1', 6, (0x0064ff9bn << 96n) | 0x0a000001n, '64:ff9b::a00:1'],
  ])('%s', (text, family, value, canonical) => {
    expect(parseAddress(text)).toEqual({ family, value });
    expect(canonicalAddress(text)).toBe(canonical);
  });

  test.each([
    [''],
    ['10.0.0'],
    ['10.0.0.0.1'],
    ['10.0.0.256'],
    ['010.0.0.1'],
    ['10.0.0.01'],
    ['10.0.0.1 '],
    ['+1.0.0.1'],
    ['10.0.0.1/32'],
    ['1:2:3:4:5:6:7:8:9'],
    ['1:2:3:4:5:6:7'],
    ['1:2:3:4:5:6:7:8::'],
    ['::1:2:3:4:5:6:7:8'],
    ['1::2::3'],
    [':::'],
    [':1::'],
    ['1:'],
    ['12345::'],
    ['g::1'],
    ['fe80::1%eth0'],
    ['::1.2.3'],
    ['1.2.3.4::'],
    ['::1.2.3.4:1'],
    ['::ffff:01.2.3.4'],
  ])('rejects %j', (text) => {
    expect(errorOf(() => parseAddress(text)).code).toBe('BAD_ADDRESS');
  });
});

describe('formatAddress (RFC 5952)', () => {
  test.each([
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
    ['2001:db8:0:0:0:1:0:0', '2001:db8::1:0:0'],
    ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'],
    ['0:0:1:0:0:0:0:0', '0:0:1::'],
    ['0:0:0:0:0:0:0:1', '::1'],
    ['fd00:0:0:0:0:0:0:0', 'fd00::'],
    ['2001:DB8:AAAA:BBBB:CCCC:DDDD:EEEE:1', '2001:db8:aaaa:bbbb:cccc:dddd:eeee:1'],
    ['1:0:1:0:1:0:1:0', '1:0:1:0:1:0:1:0'],
  ])('%s -> %s', (text, canonical) => {
    const { family, value } = parseAddress(text);
    expect(formatAddress(family, value)).toBe(canonical);
  });
});

describe('parsePrefix', () => {
  test.each([
    ['10.0.0.0/24', '10.0.0.0/24', 256n, '10.0.0.255'],
    ['10.0.0.0/8', '10.0.0.0/8', 1n << 24n, '10.255.255.255'],
    ['0.0.0.0/0', '0.0.0.0/0', 1n << 32n, '255.255.255.255'],
    ['10.0.0.4/30', '10.0.0.4/30', 4n, '10.0.0.7'],
    ['10.0.0.5/32', '10.0.0.5/32', 1n, '10.0.0.5'],
    ['FD00:1:0::/64', 'fd00:1::/64', 1n << 64n, 'fd00:1::ffff:ffff:ffff:ffff'],
    ['::/0', '::/0', 1n << 128n, 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'],
    ['fd00::1/128', 'fd00::1/128', 1n, 'fd00::1'],
  ])('%s', (text, canonical, size, last) => {
    const p = parsePrefix(text);
    expect(formatPrefix(p)).toBe(canonical);
    expect(canonicalPrefix(text)).toBe(canonical);
    expect(prefixSize(p)).toBe(size);
    expect(formatAddress(p.family, lastAddress(p))).toBe(last);
  });

  test.each([
    ['10.0.0.5/24', 'the network is 10.0.0.0/24'],
    ['fd00::1/64', 'the network is fd00::/64'],
    ['10.0.0.0', 'address/prefix-length'],
    ['10.0.0.0/33', 'from 0 to 32'],
    ['fd00::/129', 'from 0 to 128'],
    ['10.0.0.0/024', 'from 0 to 32'],
    ['10.0.0.0/', 'from 0 to 32'],
    ['10.0.0.0/-1', 'from 0 to 32'],
    ['10.0.0/24', 'IPv4'],
    ['10.0.0.0/24/1', 'from 0 to 32'],
  ])('rejects %s', (text, detail) => {
    const err = errorOf(() => parsePrefix(text, 'subnet'));
    expect(err.code).toBe('BAD_CIDR');
    expect(err.params['what']).toBe('subnet');
    expect(err.params['value']).toBe(text);
    expect(String(err.params['detail'])).toContain(detail);
  });

  test('names the thing being parsed', () => {
    expect(errorOf(() => parsePrefix('x/1', 'ip range')).message).toMatch(/^invalid ip range "x\/1": /);
  });
});

describe('parseInterfaceCidr', () => {
  test.each([
    ['10.0.0.1/24', 4, 0x0a000001n, 24],
    ['10.0.0.0/24', 4, 0x0a000000n, 24],
    ['fd00::1/64', 6, (0xfd00n << 112n) | 1n, 64],
  ])('%s', (text, family, address, length) => {
    expect(parseInterfaceCidr(text)).toEqual({ family, address, length });
  });

  test.each([['10.0.0.1'], ['10.0.0.1/33'], ['010.0.0.1/24']])('rejects %s', (text) => {
    expect(errorOf(() => parseInterfaceCidr(text)).code).toBe('BAD_CIDR');
  });
});

describe('containment and overlap', () => {
  const p = (s: string) => parsePrefix(s);
  test.each([
    ['10.0.0.0/24', '10.0.0.0/25', true, true],
    ['10.0.0.0/24', '10.0.0.128/25', true, true],
    ['10.0.0.0/24', '10.0.0.0/24', true, true],
    ['10.0.0.0/25', '10.0.0.0/24', false, true],
    ['10.0.0.0/24', '10.0.1.0/24', false, false],
    ['0.0.0.0/0', '10.0.1.0/24', true, true],
    ['fd00::/64', 'fd00::8000:0:0:0/65', true, true],
    ['fd00::/64', 'fd00:0:0:1::/64', false, false],
    ['0.0.0.0/0', '::/0', false, false],
    ['10.0.0.0/8', '::a00:0/104', false, false],
  ])('%s vs %s', (outer, inner, contains, overlap) => {
    expect(containsPrefix(p(outer), p(inner))).toBe(contains);
    expect(overlaps(p(outer), p(inner))).toBe(overlap);
    expect(overlaps(p(inner), p(outer))).toBe(overlap);
  });

  test.each([
    ['10.0.0.0/24', '10.0.0.0', true],
    ['10.0.0.0/24', '10.0.0.255', true],
    ['10.0.0.0/24', '10.0.1.0', false],
    ['10.0.0.0/24', '9.255.255.255', false],
    ['fd00::/64', 'fd00::ffff:ffff:ffff:ffff', true],
    ['fd00::/64', 'fd00:0:0:1::', false],
    ['0.0.0.0/0', '::', false],
  ])('%s contains %s: %s', (prefix, address, expected) => {
    const a = parseAddress(address);
    expect(containsAddress(p(prefix), a.family, a.value)).toBe(expected);
  });
});

describe('subnets', () => {
  test.each([
    ['10.0.0.0/24', 26, ['10.0.0.0/26', '10.0.0.64/26', '10.0.0.128/26', '10.0.0.192/26']],
    ['10.0.0.0/24', 24, ['10.0.0.0/24']],
    ['10.0.0.0/30', 32, ['10.0.0.0/32', '10.0.0.1/32', '10.0.0.2/32', '10.0.0.3/32']],
    ['fd00::/62', 64, ['fd00::/64', 'fd00:0:0:1::/64', 'fd00:0:0:2::/64', 'fd00:0:0:3::/64']],
    ['255.255.255.0/24', 25, ['255.255.255.0/25', '255.255.255.128/25']],
  ])('%s into /%i', (base, length, expected) => {
    expect([...subnets(parsePrefix(base), length)].map(formatPrefix)).toEqual(expected);
  });

  test('is lazy for huge bases', () => {
    const it = subnets(parsePrefix('fd00::/48'), 128);
    expect(formatPrefix(it.next().value as ReturnType<typeof parsePrefix>)).toBe('fd00::/128');
    expect(formatPrefix(it.next().value as ReturnType<typeof parsePrefix>)).toBe('fd00::1/128');
  });

  test.each([
    ['10.0.0.0/24', 23],
    ['10.0.0.0/24', 33],
    ['fd00::/64', 129],
  ])('%s into /%i is refused at once', (base, length) => {
    expect(errorOf(() => subnets(parsePrefix(base), length)).code).toBe('BAD_CIDR');
  });
});
