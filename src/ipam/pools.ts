/** Default pools: where tsbridge carves a subnet from when Docker asks for none. */
import { fail, isTsbridgeError } from '../errors.js';
import {
  familyBits,
  formatPrefix,
  lastAddress,
  networkOf,
  overlaps,
  parseAddress,
  parseInterfaceCidr,
  parsePrefix,
  type Prefix,
} from '../net/addr.js';
import type { DefaultPool, Family } from './types.js';

/** Built-in IPv4 defaults. IPv6 defaults are chosen by the service at runtime. */
export const DEFAULT_POOLS: DefaultPool[] = [
  { base: '10.210.0.0/16', size: 24 },
  { base: '10.211.0.0/16', size: 24 },
];

const POOLS_OPTION = 'TSBRIDGE_DEFAULT_POOLS';

/** A taken entry as a prefix: CIDR (host bits allowed) or plain address; null if unparsable. */
function takenPrefix(entry: string): Prefix | null {
  try {
    if (entry.includes('/')) return networkOf(parseInterfaceCidr(entry));
    const { family, value } = parseAddress(entry);
    return { family, network: value, length: familyBits(family) };
  } catch (e) {
    if (isTsbridgeError(e)) return null;
    throw e;
  }
}

/**
 * First subnet (canonical CIDR) of the `family` defaults, in order and
 * ascending, that overlaps none of `taken` (CIDRs or plain addresses; other
 * families and junk ignored). null when all are taken. A blocking taken
 * prefix is skipped in one jump, so huge taken prefixes cost one step.
 */
export function pickFreePool(defaults: DefaultPool[], family: Family, taken: string[]): string | null {
  const blocked = taken.map(takenPrefix).filter((p): p is Prefix => p !== null && p.family === family);
  for (const def of defaults) {
    const base = parsePrefix(def.base, 'default pool');
    if (base.family !== family) continue;
    if (def.size < base.length || def.size > familyBits(family)) {
      fail('BAD_CIDR', { what: 'default pool', value: def.base, detail: `subnet size /${def.size} does not fit` });
    }
    const step = 1n << BigInt(familyBits(family) - def.size);
    const end = lastAddress(base);
    let network = base.network;
    while (network <= end) {
      const candidate: Prefix = { family, network, length: def.size };
      const hits = blocked.filter((b) => overlaps(candidate, b));
      if (hits.length === 0) return formatPrefix(candidate);
      // Jump past the furthest-reaching blocker, to the next subnet boundary.
      const past = hits.reduce((max, b) => (lastAddress(b) > max ? lastAddress(b) : max), network) + 1n;
      network = ((past + step - 1n) / step) * step;
    }
  }
  return null;
}

/**
 * A pool request that names only a size ("0.0.0.0/24", "::/96": Docker 29 asks so for "any
 * pool of that size", moby#50114): the prefix length, or null for an ordinary subnet.
 */
export function sizeOnlyRequest(p: Prefix): number | null {
  return p.network === 0n && p.length > 0 ? p.length : null;
}

/**
 * The default pools of `family` carved into subnets of `size` instead of their own size: those
 * whose base can hold a /size. Empty when none can.
 */
export function defaultsOfSize(defaults: DefaultPool[], family: Family, size: number): DefaultPool[] {
  return defaults.filter((d) => {
    const base = parsePrefix(d.base, 'default pool');
    return base.family === family && size >= base.length && size <= familyBits(family);
  }).map((d) => ({ base: d.base, size }));
}

/** Parses "base:size,base:size" (IPv6 split on the last ':'), e.g. "10.210.0.0/16:24,fd42:1::/48:64". */
export function parseDefaultPools(spec: string): DefaultPool[] {
  const bad = (detail: string): never => fail('BAD_OPTION', { option: POOLS_OPTION, value: spec, detail });
  const entries = spec.split(',').map((e) => e.trim());
  if (spec.trim() === '') bad('expected a comma separated list of base/len:size');
  return entries.map((entry) => {
    const colon = entry.lastIndexOf(':');
    if (colon < 0) return bad(`entry "${entry}" must be base/len:size`);
    const sizeText = entry.slice(colon + 1);
    if (sizeText.includes('/')) return bad(`entry "${entry}" has no :size`);
    let base: Prefix;
    try {
      base = parsePrefix(entry.slice(0, colon), 'default pool');
    } catch (e) {
      if (isTsbridgeError(e)) return bad(`entry "${entry}": ${e.message}`);
      throw e;
    }
    const bits = familyBits(base.family);
    if (!/^(0|[1-9]\d{0,2})$/.test(sizeText)) return bad(`entry "${entry}": size "${sizeText}" is not a number`);
    const size = Number(sizeText);
    if (size < base.length || size > bits) {
      return bad(`entry "${entry}": size must be between ${base.length} and ${bits}`);
    }
    return { base: formatPrefix(base), size };
  });
}
