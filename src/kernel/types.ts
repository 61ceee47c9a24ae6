/**
 * The kernel, as tsbridge's logic sees it: links, firewall, sysctls.
 * One real implementation (src/kernel/real/*) runs commands; unit tests use
 * test/fakes. Every method is idempotent.
 */
import type { FirewallView } from './rules/nft.js';
import type { Listener } from '../driver/ports.js';
import type { EndpointRecord, NetworkRecord } from '../state/types.js';

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
  bridge: string;
  mtu: number;
  /** MAC of the container side. */
  mac: string;
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
  /** Creates the veth pair (replacing a leftover of the same name) and enslaves the host side. */
  ensureVeth(spec: VethSpec): Promise<void>;
  /** Enslaves an existing host-side veth to the bridge (hairpin on, up), e.g. after the bridge was rebuilt. */
  attachToBridge(hostName: string, bridge: string): Promise<void>;
  /** Deletes links by name; missing ones are fine. */
  deleteLinks(names: string[]): Promise<void>;
  /** All links in the host namespace. */
  list(): Promise<LinkInfo[]>;
}

export interface Firewall {
  /** Replaces all of tsbridge's rules with those for this view (one transaction per tool). */
  applyAll(view: FirewallView): Promise<void>;
  /**
   * Adds or removes one endpoint's rules in one transaction: its published ports and, with
   * scope 'all' (the default), its anti-spoofing and ICC set membership; 'ports' touches the
   * published ports alone.
   */
  applyEndpoint(ep: EndpointRecord, net: NetworkRecord, op: 'add' | 'delete', scope?: 'all' | 'ports'): Promise<void>;
  /**
   * Re-checks what other programs may have changed around tsbridge's rules (dockerd creating
   * DOCKER-USER or its isolation chains after tsbridge started) and repairs only what differs.
   * Optional: a kernel without such neighbours has nothing to re-check.
   */
  refresh?(view: FirewallView): Promise<void>;
  /** Forgets conntrack entries of these UDP/SCTP host ports so remapped flows don't go stale. */
  flushConntrack(entries: { proto: 'udp' | 'sctp' | 'tcp'; hostPort: number }[]): Promise<void>;
}

export interface Sysctl {
  /** Sets a sysctl (path under /proc/sys, dotted or slashed); no-op when it already holds the value. */
  ensure(key: string, value: string): Promise<void>;
}

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
