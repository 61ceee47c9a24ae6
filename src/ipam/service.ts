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
import { canonicalAddress, canonicalPrefix, formatAddress, parsePrefix, overlaps, parseAddress } from '../net/addr.js';
import { allocateAddress, chooseAddress, newPoolRecord, poolId, releaseAddress } from './allocator.js';
import { defaultsOfSize, pickFreePool, sizeOnlyRequest } from './pools.js';
import type { AllocKind, DefaultPool, Family, PoolRecord } from './types.js';
import type { Logger } from '../logging.js';
import type { JoinedOverlay } from '../cluster/overlays.js';

export interface PoolRequest {
  pool: string;
  subPool: string;
  v6: boolean;
  /** `--ipam-opt io.tsbridge.overlay=NAME`: the pool of an overlay, allocated across hosts; '' = none. */
  overlay?: string;
}

/** What the IPAM needs of the cluster for overlay pools (src/cluster/service.ts provides it). */
export interface OverlayAddresses {
  join(name: string, subnet: string, gateway?: string): Promise<JoinedOverlay>;
  leave(name: string): Promise<unknown>;
  allocate(name: string, want?: string): Promise<string>;
  release(name: string, address: string): Promise<void>;
}

const OVERLAY_IPAM_OPTION = 'io.tsbridge.overlay';

/** An RFC 4193 unique local /48: fd + 40 random bits. */
export function ulaFromBytes(b: Uint8Array): string {
  const h = [...b.slice(0, 5)].map((x) => x.toString(16).padStart(2, '0')).join('');
  return canonicalPrefix(`fd${h.slice(0, 2)}:${h.slice(2, 6)}:${h.slice(6, 10)}::/48`);
}

/** No address held, and no network of the state on its subnet: nothing uses the pool yet. */
export function unused(p: PoolRecord, s: State): boolean {
  return Object.keys(p.allocated).length === 0 && !Object.values(s.networks).some((n) => [...n.ipv4, ...n.ipv6].some((x) => x.subnet === p.pool));
}

/** The record with allocation times only for addresses it still holds. */
export function withoutStale(p: PoolRecord): PoolRecord {
  if (!p.since) return p;
  const since = Object.fromEntries(Object.entries(p.since).filter(([a]) => Object.hasOwn(p.allocated, a)));
  return { ...p, since };
}

/**
 * Convergence (src/driver/converge.ts) releasing what no Docker network holds: whole pools, and
 * single addresses of pools that stay. Pure over the state; unknown IDs are skipped.
 */
export function forgetPools(s: State, pools: string[], addresses: { pool: string; address: string }[]): void {
  for (const id of pools) if (ownPool(s, id)) delete s.pools[id];
  for (const { pool, address } of addresses) {
    const rec = ownPool(s, pool);
    if (rec) s.pools[pool] = withoutStale(releaseAddress(rec, address));
  }
}

/** The pool of that ID, looked up among the state's own records only (an ID is never a prototype key). */
export function ownPool(s: State, id: string): PoolRecord | undefined {
  return Object.hasOwn(s.pools, id) ? s.pools[id] : undefined;
}

export class IpamService {
  constructor(
    private readonly db: Db,
    private readonly host: HostView,
    private readonly defaults: () => DefaultPool[],
    private readonly random: (n: number) => Uint8Array = (n) => randomBytes(n),
    /** Wall clock (ms since the epoch) for the records' creation times. */
    private readonly now: () => number = Date.now,
    /** The cluster, when TSBRIDGE_ETCD_ENDPOINTS is set: overlay pools need it. */
    private readonly overlays?: { cluster: OverlayAddresses; log: Logger },
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
    if (req.overlay) return this.requestOverlayPool(req, req.overlay);
    const family: Family = req.v6 ? 6 : 4;
    return this.db.tx(async (s) => {
      let pool: string;
      let auto = false;
      const size = req.pool ? sizeOnlyRequest(parsePrefix(req.pool)) : null;
      if (req.pool && size === null) {
        pool = canonicalPrefix(req.pool);
        if (parsePrefix(pool).family !== family) {
          fail('BAD_CIDR', { what: 'subnet', value: req.pool, detail: `expected an IPv${family} subnet` });
        }
        const mine = parsePrefix(pool);
        const asked = newPoolRecord({ id: poolId(family, pool), pool, subPool: req.subPool || null, auto: false });
        const same = ownPool(s, asked.id) ?? null;
        if (same && same.pool === asked.pool && same.subPool === asked.subPool && !same.auto && unused(same, s)) {
          // The same request again while nothing uses the pool: a retry (the reply to the first
          // was lost to a crash between save and reply), or a second network racing for the
          // subnet, which its own CreateNetwork refuses. The same answer; each ReleasePool
          // takes one claim back, so the loser's rollback cannot release the winner's pool.
          same.claims = (same.claims ?? 1) + 1;
          same.created = this.now();
          await this.db.save();
          return { poolId: same.id, pool: same.pool };
        }
        for (const other of Object.values(s.pools)) {
          if (overlaps(mine, parsePrefix(other.pool))) {
            const hint = unused(other, s) ? ' — nothing uses it: if no Docker network has that subnet either, `tsbridge gc` releases it' : '';
            fail('POOL_OVERLAP', { pool, other: `${other.pool} (pool ${other.id})${hint}` });
          }
        }
      } else {
        // No subnet, or only a size ("0.0.0.0/24"): a free subnet of the default pools.
        if (req.pool && parsePrefix(req.pool).family !== family) {
          fail('BAD_CIDR', { what: 'subnet', value: req.pool, detail: `expected an IPv${family} subnet` });
        }
        const taken = [...Object.values(s.pools).map((p) => p.pool), ...(await this.host.takenPrefixes())];
        const defaults = this.poolsFor(family, s);
        const candidates = size === null ? defaults : defaultsOfSize(defaults, family, size);
        if (size !== null && candidates.length === 0) {
          const pools = defaults.map((d) => d.base).join(', ') || 'none configured';
          fail('BAD_CIDR', { what: 'pool request', value: req.pool, detail: `no default pool can hold a /${size} (default pools: ${pools})` });
        }
        const picked = pickFreePool(candidates, family, taken);
        if (!picked) {
          const pools = candidates.map((d) => `${d.base}:${d.size}`).join(', ');
          fail('NO_FREE_POOL', { family: `IPv${family}`, pools: pools || 'none configured' });
        }
        pool = picked;
        auto = true;
      }
      const rec: PoolRecord = { ...newPoolRecord({ id: poolId(family, pool), pool, subPool: req.subPool || null, auto }), created: this.now() };
      s.pools[rec.id] = rec;
      await this.db.save();
      return { poolId: rec.id, pool: rec.pool };
    });
  }

  async releasePool(id: string): Promise<void> {
    const gone = await this.db.tx(async (s) => {
      const rec = ownPool(s, id);
      if (!rec) return undefined;
      if ((rec.claims ?? 1) > 1) {
        rec.claims = rec.claims! - 1;
        await this.db.save();
        return undefined;
      }
      delete s.pools[id];
      await this.db.save();
      return rec;
    });
    if (gone?.overlay) await this.bestEffort(`leaving overlay ${gone.overlay.name}`, (c) => c.leave(gone.overlay!.name));
  }

  // ------------------------------------------------------------------ overlays

  private cluster(): OverlayAddresses {
    if (!this.overlays) fail('CLUSTER_NOT_CONFIGURED', { option: OVERLAY_IPAM_OPTION });
    return this.overlays.cluster;
  }

  /**
   * The pool of an overlay: this host joins it in etcd (creating it, or agreeing with the subnet
   * the other hosts have) and records it with the overlay's config.
   */
  private async requestOverlayPool(req: PoolRequest, name: string): Promise<{ poolId: string; pool: string }> {
    const cluster = this.cluster();
    if (req.v6) fail('BAD_OPTION', { option: OVERLAY_IPAM_OPTION, value: name, detail: 'overlays are IPv4 only (for now): create the network without --ipv6' });
    if (!req.pool) fail('BAD_OPTION', { option: OVERLAY_IPAM_OPTION, value: name, detail: 'an overlay network needs --subnet (the same on every host)' });
    if (req.subPool) fail('BAD_OPTION', { option: OVERLAY_IPAM_OPTION, value: name, detail: '--ip-range is not supported on an overlay (addresses come from the whole subnet, across hosts)' });
    return this.db.tx(async (s) => {
      const pool = canonicalPrefix(req.pool);
      if (parsePrefix(pool).family !== 4) fail('BAD_CIDR', { what: 'subnet', value: req.pool, detail: 'expected an IPv4 subnet' });
      const mine = parsePrefix(pool);
      for (const other of Object.values(s.pools)) {
        if (other.overlay?.name === name) {
          // The same overlay asked again with another subnet says what the overlay's subnet is.
          if (other.pool !== pool) fail('OVERLAY_MISMATCH', { overlay: name, field: 'subnet', theirs: other.pool, ours: pool });
          fail('POOL_OVERLAP', { pool, other: `${other.pool} (pool ${other.id}: this host has overlay ${name} already)` });
        }
        if (overlaps(mine, parsePrefix(other.pool))) fail('POOL_OVERLAP', { pool, other: `${other.pool} (pool ${other.id})` });
      }
      const joined = await cluster.join(name, pool);
      const rec: PoolRecord = {
        ...newPoolRecord({ id: poolId(4, pool), pool, auto: false }),
        overlay: { name, vni: joined.config.vni, gateway: joined.config.gateway, gatewayMac: joined.config.gatewayMac },
      };
      s.pools[rec.id] = rec;
      try {
        await this.db.save();
      } catch (e) {
        await this.bestEffort(`leaving overlay ${name}`, (c) => c.leave(name));
        throw e;
      }
      return { poolId: rec.id, pool: rec.pool };
    });
  }

  /** An address of an overlay pool: the gateway is the overlay's; others are taken in etcd, then recorded. */
  private async requestOverlayAddress(s: State, rec: PoolRecord, address: string, kind: AllocKind): Promise<string> {
    const o = rec.overlay!;
    const length = parsePrefix(rec.pool).length;
    if (kind === 'gateway') {
      if (address && canonicalAddress(address) !== o.gateway) {
        fail('OVERLAY_MISMATCH', { overlay: o.name, field: 'gateway', theirs: o.gateway, ours: canonicalAddress(address) });
      }
      if (!rec.allocated[o.gateway]) s.pools[rec.id] = allocateAddress(rec, { address: o.gateway, kind }).pool;
      await this.db.save();
      return `${o.gateway}/${length}`;
    }
    const got = await this.cluster().allocate(o.name, address || undefined);
    try {
      s.pools[rec.id] = allocateAddress(rec, { address: got, kind }).pool;
      await this.db.save();
    } catch (e) {
      await this.bestEffort(`releasing ${got} in overlay ${o.name}`, (c) => c.release(o.name, got));
      throw e;
    }
    return `${got}/${length}`;
  }

  /** A cluster call whose failure must not fail the Docker call (the next reconcile with etcd finishes it). */
  private async bestEffort(op: string, fn: (c: OverlayAddresses) => Promise<unknown>): Promise<void> {
    if (!this.overlays) return;
    try {
      await fn(this.overlays.cluster);
    } catch (e) {
      this.overlays.log.warn('etcd not updated now; the next reconcile with etcd will', { op, error: e instanceof Error ? e.message : String(e) });
    }
  }

  async requestAddress(id: string, address: string, kind: AllocKind): Promise<string> {
    return this.db.tx(async (s) => {
      const rec = ownPool(s, id);
      if (!rec) fail('UNKNOWN_POOL', { poolId: id });
      if (rec.overlay) return this.requestOverlayAddress(s, rec, address, kind);
      let a;
      try {
        a = chooseAddress(rec, { address: address || null, kind });
      } catch (e) {
        // The IPAM never learns a network's name, but when a tsbridge network uses this
        // pool its ID tells the user which network is full (`docker network ls` shows it).
        const net = Object.values(s.networks).find((n) => [...n.ipv4, ...n.ipv6].some((x) => x.subnet === rec.pool));
        if (net && isTsbridgeError(e, 'POOL_EXHAUSTED')) {
          throw new TsbridgeError('POOL_EXHAUSTED', { ...e.params, network: ` of network ${net.id.slice(0, 12)}` });
        }
        throw e;
      }
      // In place: the cost does not grow with the addresses the pool holds.
      this.db.addresses(id, { set: { [a.address]: kind }, since: { [a.address]: this.now() }, cursor: a.cursor });
      // A container's address: written, synced by the next durable save — CreateEndpoint's, which
      // Docker sends next — or the store's own a second later. A machine crash that loses it loses
      // no address in use: Docker releases the endpoints of the containers it had at its next
      // start, and asks again. A gateway or an auxiliary address (a network being created) is synced
      // at once.
      await this.db.save({ sync: kind !== 'endpoint' });
      return a.cidr;
    });
  }

  async releaseAddress(id: string, address: string): Promise<void> {
    const released = await this.db.tx(async (s) => {
      const rec = ownPool(s, id);
      if (!rec || address === '') return undefined;
      const { family, value } = parseAddress(address.split('/')[0]!);
      const canonical = formatAddress(family, value);
      if (family !== rec.family || !Object.hasOwn(rec.allocated, canonical)) return undefined;
      const overlay = rec.overlay && rec.allocated[canonical] === 'endpoint' ? rec.overlay.name : undefined;
      // In place, as RequestAddress: its allocation time goes with it.
      this.db.addresses(id, { del: [canonical] });
      await this.db.save();
      return overlay ? { overlay, address: canonical } : undefined;
    });
    // Given back in etcd after the state: unreachable now, the next reconcile deletes the key.
    if (released) await this.bestEffort(`releasing ${address} in overlay ${released.overlay}`, (c) => c.release(released.overlay, released.address));
  }
}
