import type { PoolRecord } from '../ipam/types.js';

/**
 * Everything tsbridge knows, persisted as one JSON document.
 *
 * Records carry a `phase` so a crash at any point can be finished or undone at
 * the next start: `creating` (kernel objects may be half-made: undo them),
 * `ready`, `deleting` (finish removing). Kernel object names are stored, never
 * recomputed, so a later version that names things differently still finds them.
 */
export interface State {
  version: 1;
  networks: Record<string, NetworkRecord>;
  endpoints: Record<string, EndpointRecord>;
  pools: Record<string, PoolRecord>;
  /** The IPv6 unique-local /48 this host picks its automatic /64s from (generated once). */
  ulaBase: string | null;
}

export type Phase = 'creating' | 'ready' | 'deleting';

export interface Subnet {
  /** Canonical CIDR of the network. */
  subnet: string;
  /** Gateway with the subnet's prefix length, e.g. "10.10.0.1/24", or null (inhibit_ipv4). */
  gateway: string | null;
}

export interface NetworkOptions {
  /** Bridge interface name (do not change once stored). */
  bridge: string;
  /** True when the user chose the bridge name; tsbridge then never deletes a bridge it did not create. */
  bridgeNamedByUser: boolean;
  mtu: number;
  internal: boolean;
  icc: boolean;
  masquerade: boolean;
  /** Default host address for published ports, '' = all. */
  hostBindingIpv4: string;
  /** SNAT egress to this address instead of masquerade, '' = masquerade. */
  snatIpv4: string;
  /** Do not put the IPv4 gateway address on the bridge. */
  inhibitIpv4: boolean;
  /** Interface name prefix inside containers (Docker's DstPrefix). */
  ifacePrefix: string;
  enableIpv6: boolean;
}

/** What a network gets for every option the user did not set (Docker's bridge defaults). */
export const NETWORK_DEFAULTS: Omit<NetworkOptions, 'bridge'> = {
  bridgeNamedByUser: false,
  mtu: 1500,
  internal: false,
  icc: true,
  masquerade: true,
  hostBindingIpv4: '',
  snatIpv4: '',
  inhibitIpv4: false,
  ifacePrefix: 'eth',
  enableIpv6: false,
};

export interface NetworkRecord extends NetworkOptions {
  id: string;
  phase: Phase;
  ipv4: Subnet[];
  ipv6: Subnet[];
}

export type Proto = 'tcp' | 'udp' | 'sctp';

export interface PortMapping {
  proto: Proto;
  /** Host address the port is bound to; '' = every address (both families where the endpoint has them). */
  hostIp: string;
  hostPort: number;
  containerPort: number;
}

export interface EndpointRecord {
  id: string;
  networkId: string;
  phase: Phase;
  /** Host side of the veth pair (stays on the host, enslaved to the bridge). */
  hostVeth: string;
  /** Container side, moved into the sandbox by Docker at Join. */
  peerVeth: string;
  mac: string;
  /** Address with prefix length, or null. */
  ipv4: string | null;
  ipv6: string | null;
  /** Set once Join succeeded (the peer then lives in the container's namespace). */
  joined: boolean;
  /** Published ports, programmed by ProgramExternalConnectivity. */
  ports: PortMapping[];
}

export function emptyState(): State {
  return { version: 1, networks: {}, endpoints: {}, pools: {}, ulaBase: null };
}
