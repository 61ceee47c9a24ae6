/**
 * tsbridge's nftables ruleset, rendered from data: a fixed skeleton (tables, shared sets and maps,
 * base chains and their fixed lines) plus what each network's kind contributes (rule lines per
 * chain, elements, sets of its own) and each endpoint's elements. Pure; the kinds decide what the
 * rules say (src/kinds/*), this file only how they are written down.
 *
 * tsbridge owns two tables and touches nothing else in nftables:
 *   table inet tsbridge   NAT (masquerade/SNAT, port publishing) and forwarding policy
 *   table bridge tsbridge  what happens between ports of one bridge (ICC, anti-spoofing)
 * Published ports live in maps, so matching a packet costs one lookup however many ports are
 * published, and publishing a port is one `add element`.
 *
 * `fullRuleset` rebuilds both tables in one transaction (start-up, network create/delete);
 * `addElements` / `deleteElements` change one endpoint's elements in one transaction.
 *
 * Base chains, by hook and priority (BASE_CHAINS; lower runs first). An operator's own table with
 * a chain on the same hook and a lower priority is evaluated before tsbridge's — docs/options.md,
 * "Firewall and the operator's own rules":
 *   inet   prerouting  raw (-300)       localnet     127.0.0.0/8 from the wire dropped
 *   inet   prerouting  raw (-300)       guard        (kinds: anti-spoofing on routed links, e.g. point-to-point)
 *   inet   prerouting  dstnat (-100)    prerouting   published ports: DNAT
 *   inet   output      -100             output       published ports from the host: DNAT
 *   inet   input       filter - 1       input        (kinds: e.g. internal networks reach nothing of the host)
 *   inet   forward     filter - 1       forward      (kinds: isolation between networks, inbound filter)
 *   inet   postrouting srcnat (100)     postrouting  (kinds: masquerade / SNAT, hairpin); loopback-sourced DNAT
 *   bridge prerouting  filter (-200)    prerouting   anti-spoofing (MAC, IPv4, ARP, IPv6, ND)
 *   inet   forward     filter + 1       forward_done clears the fail-closed mark (below)
 *   bridge forward     filter (-200)    forward      enable_icc=false
 *
 * Fail closed. The first lines of `forward` mark every packet to or from an interface the
 * iptables forward shim lets through (the kinds' `shim` entries) with one bit (`mark`, default
 * DEFAULT_MARK); the shim drops such packets without the bit (rules/iptables.ts). So when
 * someone removes tsbridge's tables (`nft flush ruleset`, a firewalld reload) and the shim
 * survives, nothing of tsbridge's networks is forwarded — not isolation-free — until the rules
 * are back. `forward_done`, right after iptables' filter FORWARD (priority 0), clears the bit
 * again: no other program sees it after that hook.
 *
 * 127.0.0.0/8 from the wire is dropped in `localnet` before DNAT: a port bound to 127.0.0.1 must
 * not be reachable from other hosts, and route_localnet must not open the host's loopback to
 * containers. ::1 is never DNATed: IPv6 has no route_localnet, a reply to ::1 arriving on a bridge
 * is dropped by the kernel; not DNATing lets the host refuse at once so a client falls back to
 * 127.0.0.1.
 */
import { fail } from '../../errors.js';
import type { Element, FirewallView, SetDecl } from '../types.js';

export const DEFAULT_TABLE = 'tsbridge';

/**
 * The packet-mark bit of fail-closed forwarding (TSBRIDGE_FWMARK). Bit 24: clear of the marks
 * Kubernetes' kube-proxy (0x4000, 0x8000), CNI portmap and netavark (0x2000), Cilium (0x0f00),
 * Istio (0x539), AWS VPC CNI (0x80), Tailscale (0xff0000), Weave and kube-router (0x10000–
 * 0x40000) use; Calico's default mask (0xffff0000) covers it: set another bit there.
 */
export const DEFAULT_MARK = 0x1000000;

type Family = 'inet' | 'bridge';

/** tsbridge's base chains (see the header): an operator's chain on the same hook with a lower priority runs first. */
export const BASE_CHAINS = [
  { family: 'inet', hook: 'prerouting', priority: -300, spelled: 'raw', chain: 'localnet' },
  { family: 'inet', hook: 'prerouting', priority: -300, spelled: 'raw', chain: 'guard' },
  { family: 'inet', hook: 'prerouting', priority: -100, spelled: 'dstnat', chain: 'prerouting' },
  { family: 'inet', hook: 'output', priority: -100, spelled: '-100', chain: 'output' },
  { family: 'inet', hook: 'input', priority: -1, spelled: 'filter - 1', chain: 'input' },
  { family: 'inet', hook: 'forward', priority: -1, spelled: 'filter - 1', chain: 'forward' },
  { family: 'inet', hook: 'forward', priority: 1, spelled: 'filter + 1', chain: 'forward_done' },
  { family: 'inet', hook: 'postrouting', priority: 100, spelled: 'srcnat', chain: 'postrouting' },
  { family: 'bridge', hook: 'prerouting', priority: -200, spelled: 'filter', chain: 'prerouting' },
  { family: 'bridge', hook: 'forward', priority: -200, spelled: 'filter', chain: 'forward' },
] as const;

/**
 * Anti-spoofing: a frame from a guarded port of a bridge (an endpoint's host veth) must carry
 * that endpoint's MAC, and its own addresses — IPv4 source, ARP sender (address and MAC), IPv6
 * source (link-local and :: allowed: neighbour discovery and DAD need them), and an IPv6
 * neighbour advertisement may only claim the endpoint's own addresses. Router advertisements and
 * redirects never come from a container. Anything else (another ethertype, VLAN tags) is dropped.
 * Frames from other ports (a NIC an operator enslaved) are not checked.
 */
const ANTI_SPOOF = [
  'iifname != @guarded accept',
  'iifname . ether saddr != @mac drop',
  'iifname . arp saddr ether != @mac drop',
  'arp saddr ip 0.0.0.0 accept',
  'iifname . arp saddr ip @addr4 accept',
  'iifname . ip saddr @addr4 accept',
  'icmpv6 type { nd-router-advert, nd-redirect } drop',
  'icmpv6 type nd-neighbor-advert iifname . @th,64,128 != @nd_target drop',
  'iifname . ip6 saddr @addr6 accept',
  'ip6 saddr { ::, fe80::/10 } accept',
  'drop',
];

/**
 * The shared sets and maps, in the order they are written. Kinds fill them with elements:
 *   inet bridges     interfaces leading to tsbridge networks (loopback-sourced DNAT goes out there)
 *   inet ports*      published ports: protocol . port (. host address) → address . port
 *   bridge no_icc    guarded ports whose traffic to other ports of their bridge is dropped
 *   bridge guarded, mac, addr4, addr6, nd_target   anti-spoofing, keyed by port
 */
export const SETS: SetDecl[] = [
  { set: 'inet bridges', type: 'ifname' },
  { set: 'inet ports4', type: 'inet_proto . inet_service : ipv4_addr . inet_service', map: true },
  { set: 'inet ports4_addr', type: 'ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service', map: true },
  { set: 'inet ports6', type: 'inet_proto . inet_service : ipv6_addr . inet_service', map: true },
  { set: 'inet ports6_addr', type: 'ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service', map: true },
  { set: 'bridge no_icc', type: 'ifname' },
  { set: 'bridge guarded', type: 'ifname' },
  { set: 'bridge mac', type: 'ifname . ether_addr' },
  { set: 'bridge addr4', type: 'ifname . ipv4_addr' },
  { set: 'bridge addr6', type: 'ifname . ipv6_addr' },
  // The target of a neighbour advertisement, read as 128 raw bits (nft 1.0.6 has no field name for it).
  { set: 'bridge nd_target', type: 'typeof iifname . @th,64,128' },
];

interface ChainDef {
  family: Family;
  name: string;
  /** Base chain type; absent for a regular chain. */
  type?: 'filter' | 'nat';
  /** Fixed lines before and after what networks contribute. */
  head?: string[];
  tail?: string[];
  /** Written only when some network contributes to it. */
  optional?: boolean;
}

/** The chains, in the order they are written; contributions go between head and tail, by network ID. */
const CHAINS: ChainDef[] = [
  // Before any NAT: nothing from the wire (or from a container) may reach 127.0.0.0/8. The
  // kernel drops such martians itself, but only until DNAT has rewritten them — and
  // route_localnet=1 on bridges would otherwise let containers reach the host's loopback.
  { family: 'inet', name: 'localnet', type: 'filter', head: ['iifname != "lo" ip daddr 127.0.0.0/8 drop'] },
  // Anti-spoofing where no bridge sees the frames (a kind's links routed by the host): before
  // conntrack, so a forged source creates no state.
  { family: 'inet', name: 'guard', type: 'filter', optional: true },
  { family: 'inet', name: 'prerouting', type: 'nat', head: ['fib daddr type local jump publish'] },
  { family: 'inet', name: 'output', type: 'nat', head: ['ip6 daddr ::1 return', 'fib daddr type local jump publish'] },
  {
    family: 'inet',
    name: 'publish',
    head: [
      'meta nfproto ipv4 dnat ip to ip daddr . meta l4proto . th dport map @ports4_addr',
      'meta nfproto ipv4 dnat ip to meta l4proto . th dport map @ports4',
      'meta nfproto ipv6 dnat ip6 to ip6 daddr . meta l4proto . th dport map @ports6_addr',
      'meta nfproto ipv6 dnat ip6 to meta l4proto . th dport map @ports6',
    ],
  },
  { family: 'inet', name: 'input', type: 'filter', optional: true },
  // Published ports reached from the host's loopback: the source must become a bridge address.
  { family: 'inet', name: 'postrouting', type: 'nat', tail: ['oifname @bridges ip saddr 127.0.0.0/8 ct status dnat masquerade'] },
  { family: 'inet', name: 'forward', type: 'filter' },
  { family: 'inet', name: 'forward_done', type: 'filter', optional: true },
  { family: 'bridge', name: 'prerouting', type: 'filter', tail: ANTI_SPOOF },
  { family: 'bridge', name: 'forward', type: 'filter', head: ['iifname @no_icc drop'] },
];

/** Chains a network may contribute lines to ("inet forward", …). */
export const CHAIN_NAMES: readonly string[] = CHAINS.filter((c) => c.name !== 'forward_done').map((c) => `${c.family} ${c.name}`);

const hex = (n: number) => `0x${(n >>> 0).toString(16).padStart(8, '0')}`;

/**
 * The fail-closed mark lines for the shim's interfaces: set at the head of `forward`, cleared in
 * `forward_done`. An iptables wildcard (`tsv+`) becomes nft's (`"tsv*"`).
 */
export function markLines(names: string[], mark: number): { set: string[]; clear: string[] } {
  const exact = [...new Set(names.filter((n) => !n.endsWith('+')))].sort();
  const wild = [...new Set(names.filter((n) => n.endsWith('+')))].sort().map((n) => `"${n.slice(0, -1)}*"`);
  const matches = [...(exact.length ? [`{ ${exact.map((n) => `"${n}"`).join(', ')} }`] : []), ...wild];
  const set: string[] = [];
  const clear: string[] = [];
  for (const m of matches) {
    for (const dir of ['iifname', 'oifname']) {
      set.push(`${dir} ${m} meta mark set meta mark | ${hex(mark)}`);
      clear.push(`${dir} ${m} meta mark set meta mark & ${hex(~mark)}`);
    }
  }
  return { set, clear };
}

function header(c: ChainDef): string {
  const b = BASE_CHAINS.find((x) => x.family === c.family && x.chain === c.name)!;
  return `    type ${c.type} hook ${b.hook} priority ${b.spelled}; policy accept;`;
}

function elementText(e: Element): string {
  return e.value === undefined ? e.key : `${e.key} : ${e.value}`;
}

function splitRef(ref: string): { family: Family; name: string } {
  const [family, name, ...rest] = ref.split(' ');
  if ((family !== 'inet' && family !== 'bridge') || !name || rest.length) fail('INTERNAL', { detail: `not a set of tsbridge's tables: "${ref}"` });
  return { family, name };
}

function setBlock(decl: SetDecl, elements: string[]): string[] {
  const { name } = splitRef(decl.set);
  const out = [`  ${decl.map ? 'map' : 'set'} ${name} {`, decl.type.startsWith('typeof ') ? `    ${decl.type}` : `    type ${decl.type}`];
  if (elements.length > 0) out.push(`    elements = { ${elements.join(', ')} }`);
  out.push('  }');
  return out;
}

/**
 * The whole of tsbridge's nftables state, as one `nft -f` script that replaces it atomically.
 * Networks are written in ID order, endpoints in ID order; a map key twice (never by
 * reservation) is written once, the first by endpoint ID winning, so start-up cannot fail on it.
 */
export function fullRuleset(view: FirewallView, TABLE: string = DEFAULT_TABLE, mark: number = DEFAULT_MARK): string {
  const nets = [...view.networks].sort((a, b) => a.id.localeCompare(b.id));
  const eps = [...view.endpoints].sort((a, b) => a.id.localeCompare(b.id));
  const L: string[] = [];
  // Declaring a table before deleting it makes the delete safe when it does not exist yet.
  L.push(`table inet ${TABLE}`, `delete table inet ${TABLE}`);
  L.push(`table bridge ${TABLE}`, `delete table bridge ${TABLE}`);
  if (nets.length === 0) return L.join('\n') + '\n'; // nothing to do: leave no trace

  const decls = [...SETS, ...nets.flatMap((n) => n.rules.sets)];
  const elements = new Map<string, string[]>(decls.map((d) => [d.set, []]));
  const seen = new Set<string>();
  for (const e of [...nets.flatMap((n) => n.rules.elements), ...eps.flatMap((x) => x.elements)]) {
    const list = elements.get(e.set);
    if (!list) fail('INTERNAL', { detail: `element for an undeclared set "${e.set}"` });
    const id = `${e.set} ${e.key}`;
    if (seen.has(id)) continue;
    seen.add(id);
    list.push(elementText(e));
  }
  for (const c of nets.flatMap((n) => Object.keys(n.rules.chains))) {
    if (!CHAIN_NAMES.includes(c)) fail('INTERNAL', { detail: `no chain "${c}" in tsbridge's tables` });
  }

  const marks = markLines(nets.flatMap((n) => n.rules.shim.map((x) => x.name)), mark);
  for (const family of ['inet', 'bridge'] as const) {
    L.push(`table ${family} ${TABLE} {`);
    for (const d of decls) if (splitRef(d.set).family === family) L.push(...setBlock(d, elements.get(d.set)!));
    for (const c of CHAINS.filter((x) => x.family === family)) {
      const key = `${c.family} ${c.name}`;
      const added = key === 'inet forward_done' ? marks.clear : nets.flatMap((n) => n.rules.chains[key] ?? []);
      if (c.optional && added.length === 0) continue;
      const first = key === 'inet forward' ? marks.set : [];
      L.push(`  chain ${c.name} {`);
      if (c.type) L.push(header(c));
      for (const line of [...first, ...(c.head ?? []), ...added, ...(c.tail ?? [])]) L.push(`    ${line}`);
      L.push('  }');
    }
    L.push('}');
  }
  return L.join('\n') + '\n';
}

/** Elements grouped by set, sets in the order they first appear (one statement per set). */
function bySet(elements: Element[]): Map<string, Element[]> {
  const out = new Map<string, Element[]>();
  for (const e of elements) out.set(e.set, [...(out.get(e.set) ?? []), e]);
  return out;
}

function statement(verb: 'add' | 'delete', set: string, items: string[], TABLE: string): string {
  const { family, name } = splitRef(set);
  return `${verb} element ${family} ${TABLE} ${name} { ${items.join(', ')} }`;
}

/** One transaction adding these elements; '' when there are none. */
export function addElements(elements: Element[], TABLE: string = DEFAULT_TABLE): string {
  const L = [...bySet(elements)].map(([set, els]) => statement('add', set, els.map(elementText), TABLE));
  return L.length ? L.join('\n') + '\n' : '';
}

/**
 * One transaction deleting these elements, whether or not they are there: nft 1.0.6 has no
 * `destroy`, and adding before deleting makes the delete succeed either way, so a repeated delete
 * is harmless. A map's elements are added with their values and deleted by their keys.
 */
export function deleteElements(elements: Element[], TABLE: string = DEFAULT_TABLE): string {
  const L: string[] = [];
  for (const [set, els] of bySet(elements)) {
    L.push(statement('add', set, els.map(elementText), TABLE));
    L.push(statement('delete', set, els.map((e) => e.key), TABLE));
  }
  return L.length ? L.join('\n') + '\n' : '';
}
