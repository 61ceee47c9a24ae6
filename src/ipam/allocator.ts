/**
 * Pure address allocation over a PoolRecord. Every operation returns a new
 * record and never mutates its input, so callers can roll back by keeping
 * the old one.
 */
import { fail } from '../errors.js';
import {
  containsAddress,
  containsPrefix,
  formatAddress,
  formatPrefix,
  lastAddress,
  parseAddress,
  parsePrefix,
  type Prefix,
} from '../net/addr.js';
import type { AllocKind, Family, PoolRecord } from './types.js';

/** Inclusive range of addresses. */
export interface Range {
  first: bigint;
  last: bigint;
}

/** Result of an allocation: the new record, the address, and address/pool-length. */
export interface Allocation {
  pool: PoolRecord;
  address: string;
  cidr: string;
}

/** An address chosen in a pool, and where the round robin's cursor goes (the pool untouched). */
export interface Choice {
  address: string;
  cidr: string;
  cursor: string | null;
}

/**
 * Addresses of a prefix that may be handed to hosts. IPv4: no network or
 * broadcast address up to /30, /31 and /32 fully usable. IPv6: no
 * subnet-router anycast (all-zero host part) up to /126, /127 and /128 fully usable.
 */
export function usableRange(p: Prefix): Range {
  const last = lastAddress(p);
  if (p.family === 4) return p.length <= 30 ? { first: p.network + 1n, last: last - 1n } : { first: p.network, last };
  return p.length <= 126 ? { first: p.network + 1n, last } : { first: p.network, last };
}

/** PoolID for a canonical pool CIDR: `tsb-v4-10.10.0.0/24`. */
export function poolId(family: Family, canonicalPool: string): string {
  return `tsb-v${family}-${canonicalPool}`;
}

/** Builds an empty pool record from user text, validating and canonicalising it. `subPool` '' means none. */
export function newPoolRecord(args: { id: string; pool: string; subPool?: string | null; auto: boolean }): PoolRecord {
  const pool = parsePrefix(args.pool, 'subnet');
  let subPool: string | null = null;
  if (args.subPool) {
    const sub = parsePrefix(args.subPool, 'ip range');
    if (sub.family !== pool.family) {
      fail('BAD_CIDR', {
        what: 'ip range',
        value: args.subPool,
        detail: `it is IPv${sub.family} but subnet ${formatPrefix(pool)} is IPv${pool.family}`,
      });
    }
    if (!containsPrefix(pool, sub)) {
      fail('BAD_CIDR', { what: 'ip range', value: args.subPool, detail: `not inside subnet ${formatPrefix(pool)}` });
    }
    subPool = formatPrefix(sub);
  }
  return { id: args.id, family: pool.family, pool: formatPrefix(pool), subPool, auto: args.auto, allocated: {}, cursor: null };
}

function held(pool: PoolRecord, address: string): boolean {
  return Object.prototype.hasOwnProperty.call(pool.allocated, address);
}

function withAddress(pool: PoolRecord, address: string, kind: AllocKind, moveCursor: boolean): PoolRecord {
  return {
    ...pool,
    allocated: { ...pool.allocated, [address]: kind },
    cursor: moveCursor ? address : pool.cursor,
  };
}

function exhausted(pool: PoolRecord, inRange: boolean): never {
  return fail('POOL_EXHAUSTED', { pool: pool.pool, range: inRange && pool.subPool ? ` (range ${pool.subPool})` : '' });
}

/**
 * Walks `range` cyclically from `start`, returning the first free address.
 * A free one is certain within held-count + 1 probes, so this stays fast for
 * huge IPv6 ranges; a range no bigger than that is scanned in full.
 */
function findFree(pool: PoolRecord, range: Range, start: bigint): string | null {
  const size = range.last - range.first + 1n;
  const limitByHeld = BigInt(Object.keys(pool.allocated).length) + 1n;
  const probes = size < limitByHeld ? size : limitByHeld;
  let value = start;
  for (let i = 0n; i < probes; i++) {
    const text = formatAddress(pool.family, value);
    if (!held(pool, text)) return text;
    value = value === range.last ? range.first : value + 1n;
  }
  return null;
}

/** The stored cursor, or null when absent or unreadable (then round robin restarts at the range start). */
function parseCursor(cursor: string | null): { family: Family; value: bigint } | null {
  if (cursor === null) return null;
  try {
    return parseAddress(cursor);
  } catch {
    return null;
  }
}

function chooseExplicit(pool: PoolRecord, prefix: Prefix, addressText: string): Choice {
  const { family, value } = parseAddress(addressText);
  const address = formatAddress(family, value);
  if (!containsAddress(prefix, family, value)) fail('ADDRESS_OUT_OF_POOL', { address, pool: pool.pool });
  const usable = usableRange(prefix);
  if (value < usable.first || value > usable.last) {
    const what =
      family === 6 ? 'the subnet-router anycast address' : value === prefix.network ? 'the network address' : 'the broadcast address';
    fail('BAD_ADDRESS', { value: addressText, detail: `it is ${what} of ${pool.pool}` });
  }
  if (held(pool, address)) fail('ADDRESS_IN_USE', { address, pool: pool.pool });
  return { address, cidr: `${address}/${prefix.length}`, cursor: pool.cursor };
}

/**
 * Allocates one address. Explicit: must be usable in the pool (may be outside
 * subPool) and free. Dynamic gateway: first free usable address of the pool.
 * Dynamic other kinds: round robin in subPool (or pool) after `cursor`, which
 * then points at the new address. Returns a new record; the input is untouched.
 */
export function allocateAddress(pool: PoolRecord, req: { address?: string | null; kind: AllocKind }): Allocation {
  const c = chooseAddress(pool, req);
  return { pool: withAddress(pool, c.address, req.kind, c.cursor !== pool.cursor), address: c.address, cidr: c.cidr };
}

/**
 * The address `allocateAddress` would take, and the cursor after it, without copying the pool
 * (the IPAM then changes the pool in place: Db.addresses).
 */
export function chooseAddress(pool: PoolRecord, req: { address?: string | null; kind: AllocKind }): Choice {
  const prefix = parsePrefix(pool.pool, 'pool');
  if (req.address) return chooseExplicit(pool, prefix, req.address);

  const usable = usableRange(prefix);
  if (req.kind === 'gateway') {
    const address = findFree(pool, usable, usable.first) ?? exhausted(pool, false);
    return { address, cidr: `${address}/${prefix.length}`, cursor: pool.cursor };
  }

  const sub = pool.subPool ? parsePrefix(pool.subPool, 'ip range') : prefix;
  const range: Range = {
    first: sub.network > usable.first ? sub.network : usable.first,
    last: lastAddress(sub) < usable.last ? lastAddress(sub) : usable.last,
  };
  if (range.first > range.last) exhausted(pool, true);
  const cursor = parseCursor(pool.cursor);
  const inRange = cursor !== null && cursor.family === pool.family && cursor.value >= range.first && cursor.value <= range.last;
  // Right after the cursor, wrapping past the end; the range start without a usable cursor.
  const start = inRange && cursor.value < range.last ? cursor.value + 1n : range.first;
  const address = findFree(pool, range, start) ?? exhausted(pool, true);
  return { address, cidr: `${address}/${prefix.length}`, cursor: address };
}

/** Releases an address. Idempotent: an address not held returns an equal (copied) record. */
export function releaseAddress(pool: PoolRecord, address: string): PoolRecord {
  const { family, value } = parseAddress(address);
  const canonical = formatAddress(family, value);
  const allocated = { ...pool.allocated };
  if (family === pool.family) delete allocated[canonical];
  return { ...pool, allocated };
}
