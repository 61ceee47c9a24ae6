/**
 * nftables rules as a pure function of tsbridge's desired state.
 *
 * tsbridge owns two tables and touches nothing else in nftables:
 *   table inet tsbridge   NAT (masquerade/SNAT, port publishing) and forwarding policy
 *   table bridge tsbridge  what happens between ports of one bridge (ICC, anti-spoofing)
 * Published ports live in maps, so matching a packet costs one lookup however
 * many ports are published, and publishing a port is one `add element`.
 *
 * `fullRuleset` rebuilds both tables in one transaction (start-up, network
 * create/delete); `endpointDelta` adds or removes one endpoint's elements.
 *
 * Base chains, by hook and priority (BASE_CHAINS; lower runs first). An operator's own
 * table with a chain on the same hook and a lower priority is evaluated before
 * tsbridge's — docs/options.md, "Firewall and the operator's own rules":
 *   inet   prerouting  raw (-300)       localnet     127.0.0.0/8 from the wire dropped
 *   inet   prerouting  dstnat (-100)    prerouting   published ports: DNAT
 *   inet   output      -100             output       published ports from the host: DNAT
 *   inet   input       filter - 1       input        internal networks: nothing to the host
 *   inet   forward     filter - 1       forward      isolation between networks, inbound filter
 *   inet   postrouting srcnat (100)     postrouting  masquerade / SNAT, hairpin
 *   bridge prerouting  filter (-200)    prerouting   anti-spoofing (MAC, IPv4, ARP, IPv6, ND)
 *   bridge forward     filter (-200)    forward      enable_icc=false
 *
 * How each path to a published port works (docs/ports.md has the long form):
 *   from another host     prerouting DNAT; the container sees the client's own address
 *   from the host         output DNAT; via 127.0.0.0/8 the source is masqueraded to the
 *                         bridge address (route_localnet=1 on tsbridge bridges lets it out)
 *   hairpin               a container (or another container of its network) reaching the
 *                         port through a host address: the DNATed packet goes back out the
 *                         bridge it came from, source masqueraded to the bridge address —
 *                         matched on (bridge, source subnet), never on the input interface,
 *                         which netfilter does not know when br_netfilter bridges the packet
 *   other networks        routed between bridges, masqueraded like any egress
 *   ::1                   never DNATed: IPv6 has no route_localnet, a reply to ::1 arriving
 *                         on a bridge is dropped by the kernel; not DNATing lets the host
 *                         refuse at once so a client falls back to 127.0.0.1
 *   127.0.0.0/8 from the wire   dropped in `localnet` before DNAT: a port bound to
 *                         127.0.0.1 must not be reachable from other hosts, and
 *                         route_localnet must not open the host's loopback to containers
 */
import { parseAddress } from '../../net/addr.js';
import type { EndpointRecord, NetworkRecord, PortMapping } from '../../state/types.js';

export const DEFAULT_TABLE = 'tsbridge';

/** tsbridge's base chains (see the header): an operator's chain on the same hook with a lower priority runs first. */
export const BASE_CHAINS = [
  { family: 'inet', hook: 'prerouting', priority: -300, spelled: 'raw', chain: 'localnet' },
  { family: 'inet', hook: 'prerouting', priority: -100, spelled: 'dstnat', chain: 'prerouting' },
  { family: 'inet', hook: 'output', priority: -100, spelled: '-100', chain: 'output' },
  { family: 'inet', hook: 'input', priority: -1, spelled: 'filter - 1', chain: 'input' },
  { family: 'inet', hook: 'forward', priority: -1, spelled: 'filter - 1', chain: 'forward' },
  { family: 'inet', hook: 'postrouting', priority: 100, spelled: 'srcnat', chain: 'postrouting' },
  { family: 'bridge', hook: 'prerouting', priority: -200, spelled: 'filter', chain: 'prerouting' },
  { family: 'bridge', hook: 'forward', priority: -200, spelled: 'filter', chain: 'forward' },
] as const;

function header(family: 'inet' | 'bridge', chain: string, type: 'filter' | 'nat'): string {
  const c = BASE_CHAINS.find((b) => b.family === family && b.chain === chain)!;
  return `    type ${type} hook ${c.hook} priority ${c.spelled}; policy accept;`;
}

export interface FirewallView {
  networks: NetworkRecord[];
  endpoints: EndpointRecord[];
}

const q = (s: string) => `"${s}"`;

function familyOf(addr: string): 4 | 6 {
  return addr.includes(':') ? 6 : 4;
}

function hostOf(cidr: string): string {
  return cidr.split('/')[0]!;
}

/** One element of a port map: `key : value` is `element`, `key` alone deletes it. */
export interface PortElement {
  map: 'ports4' | 'ports4_addr' | 'ports6' | 'ports6_addr';
  key: string;
  element: string;
}

/** One map element per (mapping, family) this endpoint has an address for. */
export function portElements(ep: EndpointRecord): PortElement[] {
  const out: PortElement[] = [];
  for (const p of ep.ports) {
    for (const fam of [4, 6] as const) {
      const target = fam === 4 ? ep.ipv4 : ep.ipv6;
      if (!target) continue;
      if (p.hostIp !== '' && familyOf(p.hostIp) !== fam) continue; // '0.0.0.0' is IPv4 only, '::' IPv6 only
      out.push(portElement(p, fam, hostOf(target)));
    }
  }
  return out;
}

function portElement(p: PortMapping, fam: 4 | 6, target: string): PortElement {
  const value = `${target} . ${p.containerPort}`;
  const wildcard = p.hostIp === '' || p.hostIp === '0.0.0.0' || p.hostIp === '::';
  const map = wildcard ? (`ports${fam}` as const) : (`ports${fam}_addr` as const);
  const key = wildcard ? `${p.proto} . ${p.hostPort}` : `${p.hostIp} . ${p.proto} . ${p.hostPort}`;
  return { map, key, element: `${key} : ${value}` };
}

const MAP_TYPES: Record<string, string> = {
  ports4: 'inet_proto . inet_service : ipv4_addr . inet_service',
  ports4_addr: 'ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service',
  ports6: 'inet_proto . inet_service : ipv6_addr . inet_service',
  ports6_addr: 'ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service',
};

/** The whole of tsbridge's nftables state, as one `nft -f` script that replaces it atomically. */
export function fullRuleset(view: FirewallView, TABLE: string = DEFAULT_TABLE): string {
  const nets = view.networks.filter((n) => n.phase !== 'deleting').sort((a, b) => a.id.localeCompare(b.id));
  const eps = view.endpoints.filter((e) => e.phase === 'ready' && nets.some((n) => n.id === e.networkId));
  eps.sort((a, b) => a.id.localeCompare(b.id));
  const L: string[] = [];
  // Declaring a table before deleting it makes the delete safe when it does not exist yet.
  L.push(`table inet ${TABLE}`, `delete table inet ${TABLE}`);
  L.push(`table bridge ${TABLE}`, `delete table bridge ${TABLE}`);
  if (nets.length === 0) return L.join('\n') + '\n'; // nothing to do: leave no trace

  L.push(`table inet ${TABLE} {`);
  L.push(...setBlock('bridges', 'ifname', nets.map((n) => q(n.bridge))));
  const elements: Record<PortElement['map'], string[]> = { ports4: [], ports4_addr: [], ports6: [], ports6_addr: [] };
  const seen = new Set<string>();
  for (const ep of eps) {
    for (const e of portElements(ep)) {
      // A key twice would fail the whole transaction; reservation prevents it, this keeps start-up safe.
      if (seen.has(`${e.map} ${e.key}`)) continue;
      seen.add(`${e.map} ${e.key}`);
      elements[e.map].push(e.element);
    }
  }
  for (const [name, type] of Object.entries(MAP_TYPES)) L.push(...setBlock(name, type, elements[name as PortElement['map']], 'map'));

  // Before any NAT: nothing from the wire (or from a container) may reach 127.0.0.0/8. The
  // kernel drops such martians itself, but only until DNAT has rewritten them — and
  // route_localnet=1 on the bridges would otherwise let containers reach the host's loopback.
  L.push('  chain localnet {', header('inet', 'localnet', 'filter'));
  L.push('    iifname != "lo" ip daddr 127.0.0.0/8 drop', '  }');
  L.push('  chain prerouting {', header('inet', 'prerouting', 'nat'));
  L.push('    fib daddr type local jump publish', '  }');
  L.push('  chain output {', header('inet', 'output', 'nat'));
  L.push('    ip6 daddr ::1 return');
  L.push('    fib daddr type local jump publish', '  }');
  L.push('  chain publish {');
  L.push('    meta nfproto ipv4 dnat ip to ip daddr . meta l4proto . th dport map @ports4_addr');
  L.push('    meta nfproto ipv4 dnat ip to meta l4proto . th dport map @ports4');
  L.push('    meta nfproto ipv6 dnat ip6 to ip6 daddr . meta l4proto . th dport map @ports6_addr');
  L.push('    meta nfproto ipv6 dnat ip6 to meta l4proto . th dport map @ports6');
  L.push('  }');

  // Internal networks reach nothing but each other — not the host either. The host may still
  // open connections to their containers (replies come back); neighbour discovery must pass
  // for it to reach them over IPv6.
  const internal = nets.filter((n) => n.internal);
  if (internal.length > 0) {
    L.push('  chain input {', header('inet', 'input', 'filter'));
    for (const n of internal) {
      const br = q(n.bridge);
      L.push(`    iifname ${br} ct state established,related accept`);
      L.push(`    iifname ${br} icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept`);
      L.push(`    iifname ${br} drop`);
    }
    L.push('  }');
  }

  L.push('  chain postrouting {', header('inet', 'postrouting', 'nat'));
  for (const n of nets) {
    const br = q(n.bridge);
    if (n.internal) continue; // no published ports, no egress
    // Hairpin: a published port of this network reached from this network through a host address.
    for (const s of n.ipv4) L.push(`    oifname ${br} ip saddr ${s.subnet} ct status dnat masquerade`);
    for (const s of n.ipv6) L.push(`    oifname ${br} ip6 saddr ${s.subnet} ct status dnat masquerade`);
    if (!n.masquerade) continue;
    for (const s of n.ipv4) {
      L.push(`    ip saddr ${s.subnet} oifname != ${br} ${n.snatIpv4 ? `snat ip to ${n.snatIpv4}` : 'masquerade'}`);
    }
    for (const s of n.ipv6) L.push(`    ip6 saddr ${s.subnet} oifname != ${br} masquerade`);
  }
  // Published ports reached from the host's loopback: the source must become a bridge address.
  L.push('    oifname @bridges ip saddr 127.0.0.0/8 ct status dnat masquerade');
  L.push('  }');

  // Into a network: replies, published ports and traffic from the same bridge only — so no
  // other network (tsbridge's, Docker's, anyone's) and no other host reaches a container
  // directly. Out of a network to Docker's own bridges: the forward shim (rules/iptables.ts).
  L.push('  chain forward {', header('inet', 'forward', 'filter'));
  for (const n of nets) {
    const br = q(n.bridge);
    if (n.internal) {
      L.push(`    iifname ${br} oifname != ${br} drop`);
      L.push(`    oifname ${br} iifname != ${br} drop`);
      continue;
    }
    L.push(`    oifname ${br} iifname != ${br} ct state established,related accept`);
    L.push(`    oifname ${br} iifname != ${br} ct status dnat accept`);
    L.push(`    oifname ${br} iifname != ${br} drop`);
  }
  L.push('  }');
  L.push('}');

  // Between ports of one bridge: only what the bridge family sees.
  L.push(`table bridge ${TABLE} {`);
  const noIcc = eps.filter((e) => nets.find((n) => n.id === e.networkId && !n.icc)).map((e) => q(e.hostVeth));
  L.push(...setBlock('no_icc', 'ifname', noIcc));
  const guard = eps.map(guardElements);
  for (const [name, type] of Object.entries(GUARD_SETS)) {
    L.push(...setBlock(name, type, guard.flatMap((g) => g[name as keyof GuardElements])));
  }
  L.push('  chain prerouting {', header('bridge', 'prerouting', 'filter'));
  L.push(...ANTI_SPOOF);
  L.push('  }');
  L.push('  chain forward {', header('bridge', 'forward', 'filter'));
  L.push('    iifname @no_icc drop', '  }');
  L.push('}');
  return L.join('\n') + '\n';
}

/**
 * Anti-spoofing: a frame from a container's port of the bridge must carry that container's
 * MAC, and its own addresses — IPv4 source, ARP sender (address and MAC), IPv6 source (link-
 * local and :: allowed: neighbour discovery and DAD need them), and an IPv6 neighbour
 * advertisement may only claim the container's own addresses. Router advertisements and
 * redirects never come from a container. Anything else (another ethertype, VLAN tags) is
 * dropped. Frames from other ports (a NIC an operator enslaved) are not checked.
 */
const ANTI_SPOOF = [
  '    iifname != @guarded accept',
  '    iifname . ether saddr != @mac drop',
  '    iifname . arp saddr ether != @mac drop',
  '    arp saddr ip 0.0.0.0 accept',
  '    iifname . arp saddr ip @addr4 accept',
  '    iifname . ip saddr @addr4 accept',
  '    icmpv6 type { nd-router-advert, nd-redirect } drop',
  '    icmpv6 type nd-neighbor-advert iifname . @th,64,128 != @nd_target drop',
  '    iifname . ip6 saddr @addr6 accept',
  '    ip6 saddr { ::, fe80::/10 } accept',
  '    drop',
];

/** The anti-spoofing sets of the bridge table, with their types. */
const GUARD_SETS = {
  guarded: 'ifname',
  mac: 'ifname . ether_addr',
  addr4: 'ifname . ipv4_addr',
  addr6: 'ifname . ipv6_addr',
  // The target of a neighbour advertisement, read as 128 raw bits (nft 1.0.6 has no field name for it).
  nd_target: 'typeof iifname . @th,64,128',
} as const;

type GuardElements = Record<keyof typeof GUARD_SETS, string[]>;

/** One endpoint's elements of the anti-spoofing sets. */
export function guardElements(ep: EndpointRecord): GuardElements {
  const port = q(ep.hostVeth);
  const v4 = ep.ipv4 ? hostOf(ep.ipv4) : null;
  const v6 = ep.ipv6 ? hostOf(ep.ipv6) : null;
  return {
    guarded: [port],
    mac: [`${port} . ${ep.mac}`],
    addr4: v4 ? [`${port} . ${v4}`] : [],
    addr6: v6 ? [`${port} . ${v6}`] : [],
    nd_target: [...(v6 ? [hex128(parseAddress(v6).value)] : []), hex128(linkLocal(ep.mac))].map((h) => `${port} . ${h}`),
  };
}

/** The EUI-64 link-local address the kernel gives an interface with this MAC (RFC 4291 appendix A). */
export function linkLocal(mac: string): bigint {
  const b = mac.split(':').map((x) => parseInt(x, 16));
  const iid = [b[0]! ^ 0x02, b[1]!, b[2]!, 0xff, 0xfe, b[3]!, b[4]!, b[5]!];
  return (0xfe80n << 112n) | iid.reduce((acc, x) => (acc << 8n) | BigInt(x), 0n);
}

function hex128(v: bigint): string {
  return `0x${v.toString(16).padStart(32, '0')}`;
}

function setBlock(name: string, type: string, elements: string[], kind: 'set' | 'map' = 'set'): string[] {
  const out = [`  ${kind} ${name} {`, type.startsWith('typeof ') ? `    ${type}` : `    type ${type}`];
  if (elements.length > 0) out.push(`    elements = { ${elements.join(', ')} }`);
  out.push('  }');
  return out;
}

/**
 * One transaction adding (or deleting) an endpoint's elements: its published ports, and — with
 * `scope` 'all' — its membership of the bridge table (anti-spoofing sets, no_icc). The port
 * calls (Program/RevokeExternalConnectivity) pass 'ports': they must never drop a joined
 * container's guard or isolation.
 */
export function endpointDelta(
  ep: EndpointRecord,
  net: NetworkRecord,
  op: 'add' | 'delete',
  TABLE: string = DEFAULT_TABLE,
  scope: 'all' | 'ports' = 'all',
): string {
  const L: string[] = [];
  // nft 1.0.6 has no `destroy`: adding before deleting makes a delete succeed
  // whether or not the element was there, so a repeated delete is harmless.
  // All of an endpoint's ports go in one statement per map: one transaction, one
  // parse, however many ports.
  const byMap = new Map<string, PortElement[]>();
  for (const e of portElements(ep)) byMap.set(e.map, [...(byMap.get(e.map) ?? []), e]);
  for (const [map, els] of byMap) {
    L.push(`add element inet ${TABLE} ${map} { ${els.map((e) => e.element).join(', ')} }`);
    if (op === 'delete') L.push(`delete element inet ${TABLE} ${map} { ${els.map((e) => e.key).join(', ')} }`);
  }
  if (scope === 'ports') return L.length ? L.join('\n') + '\n' : '';
  const sets: [string, string[]][] = Object.entries(guardElements(ep));
  if (!net.icc) sets.push(['no_icc', [q(ep.hostVeth)]]);
  for (const [set, els] of sets) {
    if (els.length === 0) continue;
    L.push(`add element bridge ${TABLE} ${set} { ${els.join(', ')} }`);
    if (op === 'delete') L.push(`delete element bridge ${TABLE} ${set} { ${els.join(', ')} }`);
  }
  return L.join('\n') + '\n';
}
