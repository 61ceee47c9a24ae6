/**
 * Address and prefix maths for IPv4 and IPv6. Addresses are BigInts; text is
 * parsed strictly and formatted canonically (dotted quad, RFC 5952).
 *
 * Why not ip-cidr at run time: Docker's requests and the state need one canonical text per
 * address (RFC 5952; ip-cidr prints IPv6 uncompressed), refusals that say what is wrong in
 * tsbridge's error catalogue, and BigInt maths for allocation, carving default pools and
 * overlap checks, which ip-cidr does not offer. ip-cidr is kept as an independent oracle: a
 * property test (test/unit/addr-oracle.test.ts) checks these functions against it.
 */
import { fail, isTsbridgeError } from '../errors.js';

/** An address family. */
export type Family = 4 | 6;

/** A network prefix: `network` has no host bits set. */
export interface Prefix {
  family: Family;
  network: bigint;
  length: number;
}

/** An interface address with its prefix length ("10.0.0.1/24"); host bits allowed. */
export interface InterfaceCidr {
  family: Family;
  address: bigint;
  length: number;
}

/** Number of bits in an address of `family`. */
export function familyBits(family: Family): number {
  return family === 4 ? 32 : 128;
}

const DEC_OCTET = /^(0|[1-9]\d{0,2})$/;
const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;
const IPV4_MAPPED = 0xffffn << 32n;

function parseIPv4(s: string): bigint | null {
  const parts = s.split('.');
  if (parts.length !== 4) return null;
  let value = 0n;
  for (const part of parts) {
    if (!DEC_OCTET.test(part)) return null;
    const n = Number(part);
    if (n > 255) return null;
    value = (value << 8n) | BigInt(n);
  }
  return value;
}

/** Parses colon-separated groups; the last one may be a dotted quad (two groups). */
function parseGroups(s: string, allowIPv4Tail: boolean): number[] | null {
  if (s === '') return [];
  const parts = s.split(':');
  const groups: number[] = [];
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!;
    if (allowIPv4Tail && i === parts.length - 1 && part.includes('.')) {
      const v4 = parseIPv4(part);
      if (v4 === null) return null;
      groups.push(Number(v4 >> 16n), Number(v4 & 0xffffn));
    } else if (HEX_GROUP.test(part)) {
      groups.push(parseInt(part, 16));
    } else {
      return null;
    }
  }
  return groups;
}

function parseIPv6(s: string): bigint | null {
  const halves = s.split('::');
  if (halves.length > 2) return null;
  let groups: number[];
  if (halves.length === 1) {
    const all = parseGroups(s, true);
    if (all === null || all.length !== 8) return null;
    groups = all;
  } else {
    const head = parseGroups(halves[0]!, false);
    const tail = parseGroups(halves[1]!, true);
    // "::" stands for at least one zero group (RFC 4291 2.2).
    if (head === null || tail === null || head.length + tail.length > 7) return null;
    groups = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  }
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(g), 0n);
}

/** Parses a plain IPv4 (strict dotted quad) or IPv6 (RFC 4291) address; BAD_ADDRESS otherwise. */
export function parseAddress(s: string): { family: Family; value: bigint } {
  if (typeof s !== 'string' || s === '') fail('BAD_ADDRESS', { value: String(s), detail: 'empty address' });
  if (s.includes('/')) fail('BAD_ADDRESS', { value: s, detail: 'expected a plain address without a prefix length' });
  if (s.includes('%')) fail('BAD_ADDRESS', { value: s, detail: 'zone ids are not supported' });
  if (s.includes(':')) {
    const value = parseIPv6(s);
    if (value === null) fail('BAD_ADDRESS', { value: s, detail: 'not a valid IPv6 address' });
    return { family: 6, value };
  }
  const value = parseIPv4(s);
  if (value === null) {
    fail('BAD_ADDRESS', { value: s, detail: 'not a valid IPv4 address (four decimal octets 0-255, no leading zeros)' });
  }
  return { family: 4, value };
}

function formatIPv4(value: bigint): string {
  return [24n, 16n, 8n, 0n].map((shift) => String((value >> shift) & 0xffn)).join('.');
}

/** Formats an address: dotted quad, or RFC 5952 text (IPv4-mapped as ::ffff:a.b.c.d). */
export function formatAddress(family: Family, value: bigint): string {
  if (value < 0n || value >> BigInt(familyBits(family)) !== 0n) {
    fail('INTERNAL', { detail: `address value out of range for IPv${family}` });
  }
  if (family === 4) return formatIPv4(value);
  if (value >> 32n === IPV4_MAPPED >> 32n) return `::ffff:${formatIPv4(value & 0xffffffffn)}`;

  const groups: number[] = [];
  for (let shift = 112n; shift >= 0n; shift -= 16n) groups.push(Number((value >> shift) & 0xffffn));
  // Longest run of zero groups (length >= 2), first one on ties.
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (gs: number[]) => gs.map((g) => g.toString(16)).join(':');
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`;
}

/** Splits "addr/len" and parses both halves; errors are BAD_CIDR for `what`. */
function parseCidrParts(s: string, what: string): InterfaceCidr {
  const bad = (detail: string): never => fail('BAD_CIDR', { what, value: String(s), detail });
  if (typeof s !== 'string') return bad('expected a string');
  const slash = s.indexOf('/');
  if (slash < 0) return bad('expected address/prefix-length');
  const lenText = s.slice(slash + 1);
  let addr: { family: Family; value: bigint };
  try {
    addr = parseAddress(s.slice(0, slash));
  } catch (e) {
    if (isTsbridgeError(e, 'BAD_ADDRESS')) return bad(String(e.params['detail']));
    throw e;
  }
  const bits = familyBits(addr.family);
  if (!/^(0|[1-9]\d{0,2})$/.test(lenText) || Number(lenText) > bits) {
    return bad(`prefix length must be a number from 0 to ${bits}`);
  }
  return { family: addr.family, address: addr.value, length: Number(lenText) };
}

function hostMask(family: Family, length: number): bigint {
  return (1n << BigInt(familyBits(family) - length)) - 1n;
}

/** Parses "addr/len" as a network prefix; host bits set is BAD_CIDR naming the right network. */
export function parsePrefix(s: string, what = 'subnet'): Prefix {
  const { family, address, length } = parseCidrParts(s, what);
  const network = address & ~hostMask(family, length);
  if (network !== address) {
    const right = formatPrefix({ family, network, length });
    fail('BAD_CIDR', { what, value: s, detail: `host bits are set; the network is ${right}` });
  }
  return { family, network, length };
}

/** Parses an interface address such as "10.0.0.1/24" (host bits allowed). */
export function parseInterfaceCidr(s: string, what = 'address'): InterfaceCidr {
  return parseCidrParts(s, what);
}

/** The prefix that contains an interface address ("10.0.0.1/24" -> 10.0.0.0/24). */
export function networkOf(c: InterfaceCidr): Prefix {
  return { family: c.family, network: c.address & ~hostMask(c.family, c.length), length: c.length };
}

/** Canonical "network/len" text. */
export function formatPrefix(p: Prefix): string {
  return `${formatAddress(p.family, p.network)}/${p.length}`;
}

/** Parses and re-formats a prefix canonically. */
export function canonicalPrefix(s: string, what = 'subnet'): string {
  return formatPrefix(parsePrefix(s, what));
}

/** Parses and re-formats an address canonically. */
export function canonicalAddress(s: string): string {
  const { family, value } = parseAddress(s);
  return formatAddress(family, value);
}

/** Number of addresses in the prefix. */
export function prefixSize(p: Prefix): bigint {
  return 1n << BigInt(familyBits(p.family) - p.length);
}

/** The highest address in the prefix. */
export function lastAddress(p: Prefix): bigint {
  return p.network + prefixSize(p) - 1n;
}

/** True when the address lies in the prefix (false across families). */
export function containsAddress(p: Prefix, family: Family, value: bigint): boolean {
  return p.family === family && value >= p.network && value <= lastAddress(p);
}

/** True when `inner` lies entirely inside `outer` (false across families). */
export function containsPrefix(outer: Prefix, inner: Prefix): boolean {
  return inner.length >= outer.length && containsAddress(outer, inner.family, inner.network);
}

/** True when the two prefixes share any address (false across families). */
export function overlaps(a: Prefix, b: Prefix): boolean {
  return containsPrefix(a, b) || containsPrefix(b, a);
}

/** All subnets of `base` with prefix length `length`, ascending. Validates eagerly. */
export function subnets(base: Prefix, length: number): Generator<Prefix> {
  const bits = familyBits(base.family);
  if (!Number.isInteger(length) || length < base.length || length > bits) {
    fail('BAD_CIDR', {
      what: 'subnet size',
      value: `/${length}`,
      detail: `must be between /${base.length} and /${bits} to carve ${formatPrefix(base)}`,
    });
  }
  return (function* () {
    const step = 1n << BigInt(bits - length);
    const end = lastAddress(base);
    for (let network = base.network; network <= end; network += step) {
      yield { family: base.family, network, length };
    }
  })();
}
