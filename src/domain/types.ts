/**
 * The domain: networks, endpoints and published ports as tsbridge's use cases and network kinds
 * see them. No wire shapes here (src/protocol parses Docker's requests into these) and no disk
 * shapes (src/state has its own versioned records and converts).
 */
import type { Family } from '../net/addr.js';

export type { Family };

export type Proto = 'tcp' | 'udp' | 'sctp';

/**
 * Where an object is in its life: `creating` (kernel objects may be half-made: a restart undoes
 * them), `ready`, `deleting` (a restart finishes removing it).
 */
export type Phase = 'creating' | 'ready' | 'deleting';

export interface Subnet {
  /** Canonical CIDR of the network. */
  subnet: string;
  /** Gateway with the subnet's prefix length, e.g. "10.10.0.1/24", or null. */
  gateway: string | null;
}

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** What a network's kind made of its own options: plain data only the kind reads. */
export type KindSettings = { [key: string]: JsonValue };

/** A network as Docker asks for it, validated: common fields plus its kind's settings. */
export interface NetworkSpec {
  id: string;
  /** The kind that wires this network (src/kinds/registry.ts). */
  kind: string;
  /** IPv4 subnets; none on an IPv6-only network. */
  ipv4: Subnet[];
  ipv6: Subnet[];
  enableIpv6: boolean;
  /** Docker's --internal: no way out of the network, nothing published. */
  internal: boolean;
  mtu: number;
  /** Interface name prefix inside containers (Docker's DstPrefix). */
  ifacePrefix: string;
  settings: KindSettings;
}

/** A network tsbridge holds. */
export interface Network extends NetworkSpec {
  phase: Phase;
  /**
   * When CreateNetwork made it (ms since the epoch); absent on records of an older tsbridge.
   * Convergence with Docker leaves a network Docker is still creating alone (src/driver/converge.ts).
   */
  created?: number;
  /**
   * What its kind took over from the host, as it was before (an uplink interface's addresses,
   * routes, MTU): recorded before the kernel is changed, so it can be given back. Absent for
   * kinds that take nothing.
   */
  adopted?: KindSettings;
}

/** CreateEndpoint, validated. Addresses carry the pool's prefix length. */
export interface EndpointSpec {
  networkId: string;
  endpointId: string;
  ipv4: string | null;
  ipv6: string | null;
  mac: string | null;
}

/** An endpoint tsbridge holds. Kernel names are stored, never recomputed. */
export interface Endpoint {
  id: string;
  networkId: string;
  phase: Phase;
  /** Host side of the veth pair (stays on the host). */
  hostVeth: string;
  /** Container side, moved into the sandbox by Docker at Join. */
  peerVeth: string;
  /** MAC of the container side. */
  mac: string;
  /** Address with prefix length, or null. */
  ipv4: string | null;
  ipv6: string | null;
  /** Set once Join succeeded (the peer then lives in the container's namespace). */
  joined: boolean;
  /** Published ports, programmed by ProgramExternalConnectivity. */
  ports: PortMapping[];
  /** When CreateEndpoint made it (ms since the epoch); absent on records of an older tsbridge. */
  created?: number;
}

/** A port binding as Docker sends it; HostPort 0 means "pick one". Ranges arrive one binding per port. */
export interface PortRequest {
  proto: Proto;
  containerPort: number;
  hostIp: string;
  hostPort: number;
  hostPortEnd: number;
}

/** A published port. */
export interface PortMapping {
  proto: Proto;
  /** Host address the port is bound to; '' = every address (both families where the endpoint has them). */
  hostIp: string;
  hostPort: number;
  containerPort: number;
}

/** A socket listening on the host, which a published port must not steal. */
export interface Listener {
  proto: Proto;
  /** Local address, '' for a wildcard (0.0.0.0 or ::). */
  ip: string;
  port: number;
}

/** A route Docker adds in the container at Join (its StaticRoutes). */
export interface StaticRoute {
  /** CIDR. */
  destination: string;
  /** 'via': through nextHop; 'connected': on the interface itself. */
  type: 'via' | 'connected';
  /** Address, or '' when connected. */
  nextHop: string;
}

/** What Join answers. */
export interface JoinInfo {
  /** The interface (in the host namespace) Docker moves into the container. */
  srcName: string;
  dstPrefix: string;
  /** Gateways without prefix length; '' = none. */
  gateway: string;
  gatewayIpv6: string;
  staticRoutes: StaticRoute[];
}
