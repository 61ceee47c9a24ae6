/**
 * The kernel, as tsbridge's logic sees it: links, firewall, sysctls — and read-only views of the
 * host. One real implementation (src/kernel/real/*) runs commands; unit tests use test/fakes.
 * Every method is idempotent. Nothing here knows about kinds of network: kinds describe what they
 * need in this vocabulary (src/kinds/types.ts), and the driver hands it over.
 */
import type { Listener, Proto } from '../domain/types.js';

// ------------------------------------------------------------------------------------- links

export interface BridgeSpec {
  name: string;
  mtu: number;
  /** Addresses to hold, with prefix length (gateway v4 and v6). */
  addresses: string[];
  mac: string;
}

export interface VethSpec {
  hostName: string;
  peerName: string;
  /** The bridge the host end is enslaved to (hairpin on); null: it stays a plain link. */
  master: string | null;
  mtu: number;
  /** MAC of the container side. */
  mac: string;
  /** Addresses the host end holds, with prefix length (e.g. a gateway /32 on a point-to-point link). */
  hostAddresses: string[];
}

/** A route in the host's main table straight out of one link (scope link), e.g. a /32 to a container. */
export interface RouteSpec {
  /** CIDR. */
  to: string;
  dev: string;
}

/** A VXLAN device enslaved to a bridge (an overlay network's tunnel end on this host). */
export interface VxlanSpec {
  name: string;
  /** VXLAN network identifier. */
  vni: number;
  /** This host's underlay address (the tunnel's source). */
  local: string;
  /** UDP port (4789, IANA's). */
  port: number;
  mtu: number;
  /** The bridge it is a port of (learning off on that port). */
  master: string;
}

/**
 * A remote endpoint as a VXLAN device holds it: a static FDB entry (MAC → the remote host's
 * underlay address), the same MAC behind the VXLAN port in the bridge's FDB, and a permanent
 * neighbour entry (address → MAC) that the device's ARP/ND proxy answers from.
 */
export interface RemoteEndpoint {
  address: string;
  mac: string;
  /** Underlay address of the host holding it. */
  vtep: string;
}

export interface LinkInfo {
  name: string;
  kind: string;
  master: string | null;
  /** Made by this tsbridge instance (its alias says so). */
  owned: boolean;
}

export interface Links {
  /** Creates the bridge or brings an existing one to the spec (addresses, MTU, up). */
  ensureBridge(spec: BridgeSpec): Promise<void>;
  /** Creates the veth pair (replacing a leftover of the same name), enslaves the host side when it has a master, and brings it up. */
  ensureVeth(spec: VethSpec): Promise<void>;
  /** Enslaves an existing host-side veth to the bridge (hairpin on, up), e.g. after the bridge was rebuilt. */
  attachToBridge(hostName: string, bridge: string): Promise<void>;
  /** Adds (or replaces) routes; a route goes with its link. */
  ensureRoutes(routes: RouteSpec[]): Promise<void>;
  /**
   * Creates the VXLAN device (learning off, ARP/ND proxy on) on its bridge, or brings an existing
   * one to the spec — a device with another VNI, source or port is made again.
   */
  ensureVxlan(spec: VxlanSpec): Promise<void>;
  /** The remote endpoints a VXLAN device holds (its static FDB entries with their neighbour entries). */
  remoteEndpoints(vxlan: string): Promise<RemoteEndpoint[]>;
  /**
   * Removes, then adds, remote endpoints of a VXLAN device: FDB entries on the device and on its
   * bridge, neighbour entries on the device. Removing what is not there is fine.
   */
  changeRemoteEndpoints(vxlan: string, change: { add: RemoteEndpoint[]; remove: RemoteEndpoint[] }): Promise<void>;
  /** Deletes links by name; missing ones are fine. */
  deleteLinks(names: string[]): Promise<void>;
  /** All links in the host namespace. */
  list(): Promise<LinkInfo[]>;
}

// ---------------------------------------------------------------------------------- firewall

/**
 * One element of one of tsbridge's nftables sets or maps. `set` names it with its table's
 * family ("inet ports4", "bridge guarded"); a map element has a value.
 */
export interface Element {
  set: string;
  key: string;
  value?: string;
}

/** A set or map a network declares for itself (its name unique to it, e.g. carrying its ID). */
export interface SetDecl {
  /** "inet NAME" or "bridge NAME". */
  set: string;
  /** nft type: `ifname . ipv4_addr`, or for a map `KEY : VALUE`; `typeof …` as written. */
  type: string;
  map?: boolean;
}

/** An interface the iptables forward shim lets through (src/kernel/rules/iptables.ts). */
export interface ShimBridge {
  name: string;
  internal: boolean;
}

/** What one network adds to tsbridge's ruleset: data the nft renderer composes. */
export interface NetworkRules {
  /** Rule lines per base chain ("inet forward", "inet postrouting", "bridge forward", …), in order. */
  chains: Partial<Record<string, string[]>>;
  /** Elements it adds to shared sets (its bridge in "inet bridges"). */
  elements: Element[];
  /** Sets and maps of its own. */
  sets: SetDecl[];
  /** What the forward shim must let through for it. */
  shim: ShimBridge[];
}

/** Everything tsbridge's firewall holds: live networks' contributions and their endpoints' elements. */
export interface FirewallView {
  networks: { id: string; rules: NetworkRules }[];
  endpoints: { id: string; elements: Element[] }[];
}

/** One endpoint's elements: what it is a member of while it exists, and its published ports. */
export interface EndpointElements {
  member: Element[];
  ports: Element[];
}

export interface Firewall {
  /** Replaces all of tsbridge's rules with those of this view: one nft transaction, then the forward shim. */
  apply(view: FirewallView): Promise<void>;
  /** Adds an endpoint's elements (membership and any ports) in one transaction. */
  addEndpoint(ep: EndpointElements): Promise<void>;
  /** Removes an endpoint's elements (ports and membership) in one transaction; ones already gone are fine. */
  removeEndpoint(ep: EndpointElements): Promise<void>;
  /** Publishes ports: their map elements, in one transaction. Never touches membership. */
  addPorts(ports: Element[]): Promise<void>;
  /** Unpublishes ports (ones already gone are fine), in one transaction. Never touches membership. */
  removePorts(ports: Element[]): Promise<void>;
  /**
   * Re-checks what other programs may have changed around tsbridge's rules (dockerd creating
   * DOCKER-USER or its isolation chains after tsbridge started) and repairs only what differs.
   */
  refresh(view: FirewallView): Promise<void>;
  /** Forgets conntrack entries of these UDP/SCTP host ports so remapped flows don't go stale. */
  flushConntrack(entries: { proto: Proto; hostPort: number }[]): Promise<void>;
}

// ----------------------------------------------------------------------------------- sysctls

export interface SysctlSetting {
  key: string;
  value: string;
}

export interface Sysctl {
  /** Sets a sysctl (path under /proc/sys, dotted or slashed); no-op when it already holds the value. */
  ensure(key: string, value: string): Promise<void>;
}

// ---------------------------------------------------------------------------- views of the host

/** What the IPAM needs to know about the host: addresses in use that a pool must avoid. */
export interface HostView {
  /** Route destinations, interface addresses and nameservers (CIDRs or plain addresses). */
  takenPrefixes(): Promise<string[]>;
}

/** What port publishing needs to know about the host: sockets a published port must not steal. */
export interface HostPorts {
  listening(): Promise<Listener[]>;
  /** The kernel's ephemeral port range (ip_local_port_range), for HostPort 0. */
  ephemeralRange(): Promise<[number, number]>;
}

export interface Kernel {
  links: Links;
  firewall: Firewall;
  sysctl: Sysctl;
}
