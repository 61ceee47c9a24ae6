/**
 * Kernel names derived from Docker's IDs, so a restart finds what an earlier run made.
 * DO NOT CHANGE these formats: state written by earlier versions stores them, and
 * reconciliation recognises leftovers by these prefixes.
 */
import { createHash } from 'node:crypto';

export const BRIDGE_PREFIX = 'tsb-';
export const HOST_VETH_PREFIX = 'tsv';
export const PEER_VETH_PREFIX = 'tsc';
export const VXLAN_PREFIX = 'tsx';

/** tsb- + 11 hex of the network ID = 15 characters (IFNAMSIZ - 1). */
export function bridgeName(networkId: string): string {
  return BRIDGE_PREFIX + networkId.slice(0, 11);
}

export function hostVethName(endpointId: string): string {
  return HOST_VETH_PREFIX + endpointId.slice(0, 12);
}

export function peerVethName(endpointId: string): string {
  return PEER_VETH_PREFIX + endpointId.slice(0, 12);
}

/** An overlay network's VXLAN device: tsx + 12 hex of the network ID. */
export function vxlanName(networkId: string): string {
  return VXLAN_PREFIX + networkId.slice(0, 12);
}

/** A stable, locally administered unicast MAC derived from an ID. */
export function macFromId(id: string, salt = ''): string {
  const h = createHash('sha256').update(salt + id).digest();
  const bytes = [0x02, h[0]!, h[1]!, h[2]!, h[3]!, h[4]!];
  return bytes.map((b) => b.toString(16).padStart(2, '0')).join(':');
}

/** Does this link name look like one tsbridge makes? */
export function isOurLinkName(name: string): boolean {
  return (
    (name.startsWith(BRIDGE_PREFIX) && name.length === 15) ||
    ((name.startsWith(HOST_VETH_PREFIX) || name.startsWith(PEER_VETH_PREFIX) || name.startsWith(VXLAN_PREFIX)) && name.length === 15 && /^[a-z]{3}[0-9a-f]{12}$/.test(name))
  );
}
