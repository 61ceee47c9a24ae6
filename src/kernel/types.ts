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

/**
 * A route in the host's main table: straight out of one link (scope link), e.g. a /32 to a
 * container — it goes with its link; or `unreachable`, through no link: what no more specific
 * route claims is refused at once (e.g. the addresses of a point-to-point network's subnet that no
 * container holds, which would otherwise follow the default route out of the host).
 */
export type RouteSpec = LinkRoute | UnreachableRoute;

export interface LinkRoute {
  /** CIDR. */
  to: string;
  dev: string;
}

export interface UnreachableRoute {
  /** CIDR. */
  to: string;
  unreachable: true;
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

/** An address an interface holds (IPv4, or IPv6 other than link-local), as `ip address` shows it. */
export interface HeldAddress {
  /** Canonical address with prefix length, e.g. "10.0.0.5/24". */
  cidr: string;
  /** IPv4 broadcast address, when one is set. */
  broadcast?: string;
  /** When not global: "site", "link" or "host". */
  scope?: string;
  /** The kernel makes no prefix route for it. */
  noprefixroute?: boolean;
  /** Metric of its prefix route, when not the kernel's default. */
  metric?: number;
}

/** A route through an interface, without the interface: what moves with the interface's addresses. */
export interface HeldRoute {
  /** Canonical destination with prefix length; the default route is 0.0.0.0/0 or ::/0. */
  to: string;
  /** Next hop, when not on-link. */
  via?: string;
  /** Routing table number, when not main (254). */
  table?: number;
  metric?: number;
  /** Who made it ("static", "boot", "dhcp", "ra", a number …), when said. */
  proto?: string;
  /** "link" or "host", when said. */
  scope?: string;
  /** Preferred source address. */
  src?: string;
  onlink?: boolean;
}

/** An interface tsbridge did not make, as it is now (what a network that takes it over records). */
export interface InterfaceState {
  name: string;
  /** Link kind ("veth", "bond", "bridge", …; '' for a plain NIC). */
  kind: string;
  /** Link type: "ether" for Ethernet, "loopback", "none" (a tunnel), … */
  linkType: string;
  master: string | null;
  /** Made by this tsbridge instance (its alias says so). */
  owned: boolean;
  /** Administratively up. */
  up: boolean;
  mtu: number;
  mac: string;
  /** Its addresses, primary before secondary (IPv6 link-local ones are not listed: every interface has its own). */
  addresses: HeldAddress[];
  /** Routes through it in every table but `local`, except those the kernel makes for its addresses. */
  routes: HeldRoute[];
  /** Routes through it that cannot be moved as they are (multipath, nexthop objects, encapsulation), as `ip route` prints them. */
  unmovable: string[];
}

/**
 * An existing host interface a network takes over as a port of its bridge (an uplink to a LAN),
 * and how it was before — recorded in the state before anything is changed, so it can be given
 * back as it was, after a crash too.
 */
export interface UplinkSpec {
  name: string;
  /** The bridge it becomes a port of. */
  bridge: string;
  /** How it was before it was taken; null when nothing was recorded (it is then only enslaved and released). */
  was: {
    up: boolean;
    mtu: number;
    /** Addresses and routes moved from it to the bridge while it is a port (and back on release). */
    addresses: HeldAddress[];
    routes: HeldRoute[];
  } | null;
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
  /** Removes routes; missing ones are fine (an unreachable route has no link to go with). */
  deleteRoutes(routes: RouteSpec[]): Promise<void>;
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
  /** One interface as it is now (addresses, routes, MTU, up state), or null when there is none of that name. */
  inspect(name: string): Promise<InterfaceState | null>;
  /**
   * Makes an existing interface a port of the bridge (up), with the addresses and routes it was
   * recorded with moved to the bridge: the bridge gets them first (routes replaced in place, so a
   * default route switches over at once), then the interface loses them. Idempotent; checks the
   * result. 'missing' when there is no interface of that name (nothing done).
   */
  adoptUplink(spec: UplinkSpec): Promise<'adopted' | 'missing'>;
  /**
   * Gives an adopted interface back as it was recorded: no master, its addresses and routes
   * (taken off the bridge), its MTU and up state. Every step is tried, then the result checked;
   * a failure lists what could not be restored. 'missing' when the interface is gone.
   */
  releaseUplink(spec: UplinkSpec): Promise<'released' | 'missing'>;
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
  /** An interface name, or an iptables wildcard (`tsv+`: every interface whose name starts so). */
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
  /** Read-only: what of the rules this view calls for is missing or altered now (`tsbridge doctor`). */
  diagnose?(view: FirewallView): Promise<FirewallFinding[]>;
}

// ----------------------------------------------------------------------------------- sysctls

export interface SysctlSetting {
  key: string;
  value: string;
  /** Skipped when it cannot be set (a kernel without IPv6 has no net.ipv6 settings at all). */
  optional?: boolean;
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

/** A route of the host's main table: destination (`0.0.0.0/0`, `::/0` for a default route), next hop, device. */
export interface HostRoute {
  to: string;
  /** Next hop, or null for a route straight out of the device (its connected subnet). */
  via: string | null;
  dev: string;
}

/** What a new network's subnets must leave alone on the host (src/driver/subnets.ts). */
export interface HostRoutes {
  /** Routes of the main table, default routes included. */
  routeTable(): Promise<HostRoute[]>;
  /** Nameservers the host uses (/etc/resolv.conf). */
  nameservers(): Promise<string[]>;
}

/** What port publishing needs to know about the host: sockets a published port must not steal. */
export interface HostPorts {
  listening(): Promise<Listener[]>;
  /** The kernel's ephemeral port range (ip_local_port_range), for HostPort 0. */
  ephemeralRange(): Promise<[number, number]>;
}

// ------------------------------------------------------------------------- reading (doctor)

/** A link as `tsbridge doctor` compares it with what a plan says. */
export interface LinkDetail {
  name: string;
  kind: string;
  master: string | null;
  mtu: number;
  /** Administratively up. */
  up: boolean;
  /** Addresses with prefix length, link-local IPv6 ones left out. */
  addresses: string[];
  mac: string;
  /** Made by this tsbridge instance (its alias says so). */
  owned: boolean;
}

/** Read-only views of the kernel for `tsbridge doctor` (src/driver/doctor.ts). */
export interface KernelInspect {
  /** Every link of the host namespace with its details. */
  links(): Promise<LinkDetail[]>;
  /** Routes of the main table straight out of a link, as `to` (CIDR) and `dev`. */
  routes(): Promise<RouteSpec[]>;
  /** A sysctl's value, or null when there is no such sysctl. */
  sysctl(key: string): Promise<string | null>;
}

/** One thing of tsbridge's firewall not as it should be. */
export interface FirewallFinding {
  /** What: `nftables`, `iptables shim (iptables)`, … */
  what: string;
  problem: string;
}

export interface Kernel {
  links: Links;
  firewall: Firewall;
  sysctl: Sysctl;
  /** Read-only views for `tsbridge doctor`; absent where nothing reads them. */
  inspect?: KernelInspect;
}
