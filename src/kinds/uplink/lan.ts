/**
 * What an uplink network legitimately shares with the host's routing: for checks elsewhere (a
 * subnet that shadows a host route is refused — but an uplink network's subnet *is* its LAN's, and
 * the host may well route that LAN through the uplink, or through the bridge once addresses moved
 * there). Pure: from the network's spec alone, before anything is made.
 */
import type { NetworkSpec } from '../../domain/types.js';
import { settingsOf } from './settings.js';

export interface UplinkLan {
  /** The network's subnets: the LAN's (IPv4 and IPv6, canonical). */
  subnets: string[];
  /** Interfaces a route to those subnets may go through without clashing: the uplink and the network's bridge. */
  interfaces: string[];
}

/** For a network of the uplink kind, its LAN's subnets and the interfaces that lead there; null for any other kind. */
export function uplinkLan(net: Pick<NetworkSpec, 'kind' | 'ipv4' | 'ipv6' | 'settings'>): UplinkLan | null {
  if (net.kind !== 'uplink') return null;
  const s = settingsOf(net);
  return {
    subnets: [...net.ipv4, ...net.ipv6].map((x) => x.subnet),
    interfaces: [s.uplink, s.bridge],
  };
}
