/**
 * What a network's subnets and an endpoint's addresses must satisfy before anything is made
 * (docs/options.md, "Subnets and addresses", has each rule beside what Docker's bridge does):
 *
 *   - no /0: it would claim every address of its family;
 *   - a gateway inside its subnet; subnets of one network that do not overlap each other;
 *   - an endpoint address inside a subnet of its network, with that subnet's prefix length;
 *   - against the host (skipped for a kind whose subnets are a host link's, `sharesHostSubnet`):
 *     not containing the next hop of a default route (the bridge's connected route would
 *     shadow the way out: the host is cut off), not overlapping a subnet connected to the
 *     interface a default route leaves through (the host's uplink LAN), not containing a
 *     nameserver the host uses.
 *
 * Pure: the host's routes and nameservers are handed in (HostRoutes reads them).
 */
import { fail } from '../errors.js';
import { containsAddress, formatPrefix, networkOf, overlaps, parseAddress, parseInterfaceCidr, parsePrefix, type Prefix } from '../net/addr.js';
import type { HostRoute } from '../kernel/types.js';
import type { Network, NetworkSpec } from '../domain/types.js';

/** The network's own subnets: no /0, gateways inside, no two overlapping. */
export function checkSubnets(spec: Pick<NetworkSpec, 'ipv4' | 'ipv6'>): void {
  const all = [...spec.ipv4, ...spec.ipv6];
  const parsed: Prefix[] = [];
  for (const s of all) {
    const p = parsePrefix(s.subnet);
    if (p.length === 0) {
      fail('BAD_CIDR', { what: 'subnet', value: s.subnet, detail: 'a /0 would claim every address of its family (the host\'s own way out included)' });
    }
    if (s.gateway) {
      const gw = parseInterfaceCidr(s.gateway, 'gateway');
      if (!containsAddress(p, gw.family, gw.address)) {
        fail('BAD_ADDRESS', { value: s.gateway.split('/')[0]!, detail: `the gateway is outside subnet ${s.subnet}` });
      }
    }
    for (const [i, q] of parsed.entries()) {
      if (overlaps(p, q)) fail('POOL_OVERLAP', { pool: s.subnet, other: `${all[i]!.subnet}, another subnet of the same network` });
    }
    parsed.push(p);
  }
}

/** An endpoint's address (with prefix length) must sit in one of its network's subnets of that family. */
export function checkEndpointAddress(address: string | null, net: Pick<Network, 'ipv4' | 'ipv6'>): void {
  if (!address) return;
  const a = parseInterfaceCidr(address);
  const subnets = a.family === 4 ? net.ipv4 : net.ipv6;
  const home = subnets.find((s) => containsAddress(parsePrefix(s.subnet), a.family, a.address));
  const plain = address.split('/')[0]!;
  if (!home) {
    fail('BAD_ADDRESS', { value: plain, detail: `it is in no subnet of the network (${subnets.map((s) => s.subnet).join(', ') || `no IPv${a.family} subnet`})` });
  }
  if (parsePrefix(home.subnet).length !== a.length) {
    fail('BAD_ADDRESS', { value: address, detail: `its prefix length /${a.length} is not that of subnet ${home.subnet}` });
  }
}

/**
 * The host's routes and nameservers a new network's subnets must leave alone. `ownLinks` are
 * tsbridge's own interfaces (their routes are other networks', already checked against the state).
 */
export function checkAgainstHost(spec: Pick<NetworkSpec, 'ipv4' | 'ipv6'>, routes: HostRoute[], nameservers: string[], ownLinks: Set<string>): void {
  const defaults = routes.filter((r) => parsePrefix(r.to).length === 0 && !ownLinks.has(r.dev));
  const uplinks = new Set(defaults.map((r) => r.dev));
  for (const s of [...spec.ipv4, ...spec.ipv6]) {
    const p = parsePrefix(s.subnet);
    for (const d of defaults) {
      if (!d.via) continue;
      const hop = parseAddress(d.via);
      if (containsAddress(p, hop.family, hop.value)) {
        fail('POOL_OVERLAP', { pool: s.subnet, other: `the next hop ${d.via} of the host's default route (via ${d.dev}): the host would lose its way out` });
      }
    }
    for (const r of routes) {
      if (!uplinks.has(r.dev) || r.via) continue;
      const q = parsePrefix(r.to);
      if (q.length > 0 && overlaps(p, q)) {
        fail('POOL_OVERLAP', { pool: s.subnet, other: `${formatPrefix(q)}, the subnet of the host's uplink ${r.dev}` });
      }
    }
    for (const ns of nameservers) {
      let a;
      try {
        a = parseAddress(ns);
      } catch {
        continue;
      }
      if (containsAddress(p, a.family, a.value)) {
        fail('POOL_OVERLAP', { pool: s.subnet, other: `the host's nameserver ${ns}` });
      }
    }
  }
}

/** The prefix of an interface address, e.g. for messages. */
export function subnetOf(cidr: string): string {
  return formatPrefix(networkOf(parseInterfaceCidr(cidr)));
}
