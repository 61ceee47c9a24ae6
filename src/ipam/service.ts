/**
 * The IPAM driver's use cases over the persisted pool records. Pure logic lives in
 * allocator.ts / pools.ts; this file orders it, persists it and reads the host's
 * routes (through HostView) so automatic pools never collide with them.
 */
import { randomBytes } from 'node:crypto';
import { fail, isTsbridgeError, TsbridgeError } from '../errors.js';
import type { State } from '../state/types.js';
import type { Db } from '../state/db.js';
import type { HostView } from '../kernel/types.js';
import { canonicalPrefix, parsePrefix, overlaps, parseAddress } from '../net/addr.js';
import { allocateAddress, newPoolRecord, poolId, releaseAddress } from './allocator.js';
import { pickFreePool } from './pools.js';
import type { AllocKind, DefaultPool, Family } from './types.js';

export interface PoolRequest {
  pool: string;
  subPool: string;
  v6: boolean;
}

/** An RFC 4193 unique local /48: fd + 40 random bits. */
export function ulaFromBytes(b: Uint8Array): string {
  const h = [...b.slice(0, 5)].map((x) => x.toString(16).padStart(2, '0')).join('');
  return canonicalPrefix(`fd${h.slice(0, 2)}:${h.slice(2, 6)}:${h.slice(6, 10)}::/48`);
}

export class IpamService {
  constructor(
    private readonly db: Db,
    private readonly host: HostView,
    private readonly defaults: () => DefaultPool[],
    private readonly random: (n: number) => Uint8Array = (n) => randomBytes(n),
  ) {}

  /**
   * The pools to pick from for a family. IPv6 without configured pools uses this
   * host's unique local /48 (generated once, kept in the state), carved into /64s.
   */
  private poolsFor(family: Family, s: State): DefaultPool[] {
    const mine = this.defaults().filter((d) => parsePrefix(d.base).family === family);
    if (mine.length > 0 || family === 4) return mine;
    if (!s.ulaBase) s.ulaBase = ulaFromBytes(this.random(5));
    return [{ base: s.ulaBase, size: 64 }];
  }

  async requestPool(req: PoolRequest): Promise<{ poolId: string; pool: string }> {
    const family: Family = req.v6 ? 6 : 4;
    return this.db.tx(async (s) => {
      let pool: string;
      let auto = false;
      if (req.pool) {
        pool = canonicalPrefix(req.pool);
        if (parsePrefix(pool).family !== family) {
          fail('BAD_CIDR', { what: 'subnet', value: req.pool, detail: `expected an IPv${family} subnet` });
        }
        const mine = parsePrefix(pool);
        for (const other of Object.values(s.pools)) {
          if (overlaps(mine, parsePrefix(other.pool))) fail('POOL_OVERLAP', { pool, other: `${other.pool} (pool ${other.id})` });
        }
      } else {
        const taken = [...Object.values(s.pools).map((p) => p.pool), ...(await this.host.takenPrefixes())];
        const candidates = this.poolsFor(family, s);
        const picked = pickFreePool(candidates, family, taken);
        if (!picked) {
          const pools = candidates.map((d) => `${d.base}:${d.size}`).join(', ');
          fail('NO_FREE_POOL', { family: `IPv${family}`, pools: pools || 'none configured' });
        }
        pool = picked;
        auto = true;
      }
      const rec = newPoolRecord({ id: poolId(family, pool), pool, subPool: req.subPool || null, auto });
      s.pools[rec.id] = rec;
      await this.db.save();
      return { poolId: rec.id, pool: rec.pool };
    });
  }

  async releasePool(id: string): Promise<void> {
    await this.db.tx(async (s) => {
      if (!s.pools[id]) return;
      delete s.pools[id];
      await this.db.save();
    });
  }

  async requestAddress(id: string, address: string, kind: AllocKind): Promise<string> {
    return this.db.tx(async (s) => {
      const rec = s.pools[id];
      if (!rec) fail('UNKNOWN_POOL', { poolId: id });
      let a;
      try {
        a = allocateAddress(rec, { address: address || null, kind });
      } catch (e) {
        // The IPAM never learns a network's name, but when a tsbridge network uses this
        // pool its ID tells the user which network is full (`docker network ls` shows it).
        const net = Object.values(s.networks).find((n) => [...n.ipv4, ...n.ipv6].some((x) => x.subnet === rec.pool));
        if (net && isTsbridgeError(e, 'POOL_EXHAUSTED')) {
          throw new TsbridgeError('POOL_EXHAUSTED', { ...e.params, network: ` of network ${net.id.slice(0, 12)}` });
        }
        throw e;
      }
      s.pools[id] = a.pool;
      await this.db.save();
      return a.cidr;
    });
  }

  async releaseAddress(id: string, address: string): Promise<void> {
    await this.db.tx(async (s) => {
      const rec = s.pools[id];
      if (!rec || address === '') return;
      parseAddress(address.split('/')[0]!);
      const next = releaseAddress(rec, address.split('/')[0]!);
      if (Object.keys(next.allocated).length === Object.keys(rec.allocated).length) return;
      s.pools[id] = next;
      await this.db.save();
    });
  }
}
