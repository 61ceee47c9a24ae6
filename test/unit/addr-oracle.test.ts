/**
 * tsbridge's address maths (src/net/addr.ts) checked against an independent implementation,
 * ip-cidr: for random IPv4 and IPv6 prefixes and addresses, both agree on a prefix's first and
 * last address, on containment and on overlap. ip-cidr serves here as the oracle; the plugin keeps
 * its own strict parser (see the comment at the top of src/net/addr.ts).
 */
import fc from 'fast-check';
import IPCIDR from 'ip-cidr';
import {
  containsAddress, containsPrefix, formatAddress, formatPrefix, lastAddress, overlaps, parseAddress, parsePrefix, type Family, type Prefix,
} from '../../src/net/addr.js';

const SEED = 20261201;

const family = fc.constantFrom<Family>(4, 6);
const prefixOf = (f: Family) =>
  fc.tuple(fc.bigInt({ min: 0n, max: (1n << (f === 4 ? 32n : 128n)) - 1n }), fc.integer({ min: 0, max: f === 4 ? 32 : 128 })).map(([v, len]): Prefix => {
    const bits = BigInt(f === 4 ? 32 : 128);
    const host = (1n << (bits - BigInt(len))) - 1n;
    return { family: f, network: v & ~host, length: len };
  });
const addressOf = (f: Family) => fc.bigInt({ min: 0n, max: (1n << (f === 4 ? 32n : 128n)) - 1n });

const oracle = (p: Prefix) => new IPCIDR(formatPrefix(p));
const big = (x: unknown) => x as bigint;

test('first and last address of a prefix agree with ip-cidr', () => {
  fc.assert(
    fc.property(family.chain(prefixOf), (p) => {
      const o = oracle(p);
      expect(big(o.start({ type: 'bigInteger' }))).toBe(p.network);
      expect(big(o.end({ type: 'bigInteger' }))).toBe(lastAddress(p));
      expect(parsePrefix(formatPrefix(p))).toEqual(p);
    }),
    { seed: SEED, numRuns: 500 },
  );
});

test('containment of an address agrees with ip-cidr', () => {
  const near = family.chain((f) =>
    fc.tuple(prefixOf(f), addressOf(f), fc.boolean()).map(([p, a, inside]) => {
      // Half the cases inside the prefix (the host bits of a random address), half anywhere.
      const bits = BigInt(f === 4 ? 32 : 128);
      const host = (1n << (bits - BigInt(p.length))) - 1n;
      return { p, a: inside ? p.network | (a & host) : a };
    }),
  );
  fc.assert(
    fc.property(near, ({ p, a }) => {
      const text = formatAddress(p.family, a);
      expect(parseAddress(text).value).toBe(a);
      expect(containsAddress(p, p.family, a)).toBe(oracle(p).contains(text));
    }),
    { seed: SEED, numRuns: 1000 },
  );
});

test('overlap and containment of prefixes agree with ip-cidr', () => {
  fc.assert(
    fc.property(
      family.chain((f) => fc.tuple(prefixOf(f), prefixOf(f))),
      ([a, b]) => {
        const oa = oracle(a);
        const ob = oracle(b);
        const [as, ae] = [big(oa.start({ type: 'bigInteger' })), big(oa.end({ type: 'bigInteger' }))];
        const [bs, be] = [big(ob.start({ type: 'bigInteger' })), big(ob.end({ type: 'bigInteger' }))];
        expect(overlaps(a, b)).toBe(as <= be && bs <= ae);
        expect(containsPrefix(a, b)).toBe(as <= bs && be <= ae);
      },
    ),
    { seed: SEED, numRuns: 1000 },
  );
});
