/** Domain types for address management. Pure data: serialisable to the state file as is. */

import type { Family } from '../net/addr.js';

export type { Family };

/** Why an address is held. */
export type AllocKind = 'gateway' | 'aux' | 'endpoint';

/** One address pool handed to Docker by RequestPool. */
export interface PoolRecord {
  /** PoolID returned to Docker. Stable, derived from the pool: `tsb-v4-10.10.0.0/24`. */
  id: string;
  family: Family;
  /** Canonical CIDR (network address, lower-case, RFC 5952 for IPv6). */
  pool: string;
  /** Canonical CIDR inside `pool` from which dynamic addresses are picked (`--ip-range`), or null. */
  subPool: string | null;
  /** True when tsbridge picked the pool itself (no --subnet). */
  auto: boolean;
  /** Canonical address -> why it is held. */
  allocated: Record<string, AllocKind>;
  /** The last address handed out dynamically (round robin continues after it), or null. */
  cursor: string | null;
  /**
   * RequestPool calls answered with this pool and not released yet (absent: 1). A retried
   * RequestPool for the same subnet gets the same pool while nothing uses it; each ReleasePool
   * takes one claim back, the last one removes the pool.
   */
  claims?: number;
  /** When it was (last) requested, ms since the epoch; absent on records of an older tsbridge. */
  created?: number;
  /** When each held address was allocated, ms since the epoch (convergence spares young ones). */
  since?: Record<string, number>;
  /**
   * Set for the pool of an overlay (`--ipam-opt io.tsbridge.overlay=NAME`): its addresses are
   * allocated cluster-wide in etcd and only recorded here; the config is the overlay's as joined.
   */
  overlay?: OverlayPool;
}

/** An overlay's config as this host joined it (src/cluster). */
export interface OverlayPool {
  name: string;
  vni: number;
  /** The anycast gateway (no prefix length) and its MAC. */
  gateway: string;
  gatewayMac: string;
}

/** A default pool: carve `base` into subnets of prefix length `size`. */
export interface DefaultPool {
  base: string;
  size: number;
}
