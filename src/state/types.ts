/**
 * Everything tsbridge knows, in memory: the domain's networks and endpoints, and the IPAM's pools.
 * On disk it is a versioned document of its own (src/state/disk.ts), converted on load and save.
 */
import type { Endpoint, Network } from '../domain/types.js';
import type { PoolRecord } from '../ipam/types.js';

export type { Endpoint, Network, Phase, PortMapping, Proto, Subnet } from '../domain/types.js';

export interface State {
  networks: Record<string, Network>;
  endpoints: Record<string, Endpoint>;
  pools: Record<string, PoolRecord>;
  /** The IPv6 unique-local /48 this host picks its automatic /64s from (generated once). */
  ulaBase: string | null;
}

export function emptyState(): State {
  return { networks: {}, endpoints: {}, pools: {}, ulaBase: null };
}
