/**
 * Golden tests of the rules as the NAT bridge kind contributes them and the renderer writes them:
 * the nft script for a whole state, one endpoint's elements added and deleted, the map elements
 * of published ports, anti-spoofing, and the iptables side of the FORWARD shim. Every script is
 * also loaded into the strict nftables model (test/fakes/nft.ts), which refuses what nft refuses.
 */
import { endpointElements, firewallView } from '../../src/driver/realize.js';
import type { Endpoint, Network, PortMapping } from '../../src/domain/types.js';
import { BASE_CHAINS, addElements, deleteElements, fullRuleset } from '../../src/kernel/rules/nft.js';
import type { Element, FirewallView, NetworkRules } from '../../src/kernel/types.js';
import {
  forwardChainRestore, forwardChainRules, jumpPosition, parseFilterSave, shimParent,
} from '../../src/kernel/rules/iptables.js';
import { BRIDGE_DEFAULTS, type BridgeSettings } from '../../src/kinds/bridge/settings.js';
import { KINDS } from '../../src/kinds/registry.js';
import { guardElements, linkLocal } from '../../src/kinds/common/guard.js';
import { portElements } from '../../src/kinds/common/ports.js';
import { COMMON_DEFAULTS } from '../../src/protocol/network.js';
import { emptyState, type State } from '../../src/state/types.js';
import { NftModel, modelOf } from '../fakes/nft.js';

type NetworkFields = Partial<Omit<Network, 'settings'> & BridgeSettings> & { id: string; bridge: string };

function network(over: NetworkFields): Network {
  const f = { ...COMMON_DEFAULTS, ...BRIDGE_DEFAULTS, phase: 'ready' as const, ipv4: [], ipv6: [], ...over };
  return {
    id: f.id, kind: 'bridge', phase: f.phase, ipv4: f.ipv4, ipv6: f.ipv6, enableIpv6: f.enableIpv6, internal: f.internal, mtu: f.mtu, ifacePrefix: f.ifacePrefix,
    settings: { bridge: f.bridge, bridgeNamedByUser: f.bridgeNamedByUser, icc: f.icc, masquerade: f.masquerade, hostBindingIpv4: f.hostBindingIpv4, snatIpv4: f.snatIpv4, inhibitIpv4: f.inhibitIpv4 },
  };
}

function endpoint(over: Partial<Endpoint> & { id: string; networkId: string; hostVeth: string }): Endpoint {
  return { phase: 'ready', peerVeth: 'tsc' + over.id.slice(0, 12), mac: '02:00:00:00:00:01', ipv4: null, ipv6: null, joined: true, ports: [], ...over };
}

function stateOf(networks: Network[], endpoints: Endpoint[]): State {
  const s = emptyState();
  for (const n of networks) s.networks[n.id] = n;
  for (const e of endpoints) s.endpoints[e.id] = e;
  return s;
}

/** The firewall's view of these records, as the driver builds it. */
function viewOf(networks: Network[], endpoints: Endpoint[]): FirewallView {
  return firewallView(stateOf(networks, endpoints), KINDS);
}

/** An endpoint's elements as the firewall adds them: its ports, then its membership. */
function added(ep: Endpoint, net: Network, TABLE?: string): string {
  const e = endpointElements(ep, net, KINDS);
  return addElements([...e.ports, ...e.member], TABLE);
}

function deleted(ep: Endpoint, net: Network): string {
  const e = endpointElements(ep, net, KINDS);
  return deleteElements([...e.ports, ...e.member]);
}

const tcp = (hostIp: string, hostPort: number, containerPort: number): PortMapping => ({ proto: 'tcp', hostIp, hostPort, containerPort });

/** Internal network: no NAT, no way in or out. */
const internal = network({ id: 'aaaa01', bridge: 'tsb-internal', internal: true, ipv4: [{ subnet: '10.1.0.0/24', gateway: '10.1.0.1/24' }] });
/** icc=false, SNAT to a host address, dual stack. */
const isolated = network({
  id: 'bbbb02',
  bridge: 'tsb-isolated',
  icc: false,
  snatIpv4: '192.0.2.10',
  enableIpv6: true,
  ipv4: [{ subnet: '10.2.0.0/24', gateway: '10.2.0.1/24' }],
  ipv6: [{ subnet: 'fd00:2::/64', gateway: 'fd00:2::1/64' }],
});

/** Ports of every host-address kind on a dual-stack endpoint. */
const web = endpoint({
  id: 'e1e1e1e1e1e1aa',
  networkId: 'bbbb02',
  hostVeth: 'tsve1e1e1e1e1e1',
  ipv4: '10.2.0.2/24',
  ipv6: 'fd00:2::2/64',
  ports: [
    tcp('', 8080, 80),
    tcp('0.0.0.0', 8081, 81),
    tcp('::', 8082, 82),
    { proto: 'udp', hostIp: '127.0.0.1', hostPort: 5353, containerPort: 53 },
    tcp('2001:db8::1', 8443, 443),
  ],
});
/** IPv4 only: '' publishes on IPv4 alone. */
const v4only = endpoint({
  id: 'e2e2e2e2e2e2bb',
  networkId: 'bbbb02',
  hostVeth: 'tsve2e2e2e2e2e2',
  ipv4: '10.2.0.3/24',
  ports: [{ proto: 'sctp', hostIp: '', hostPort: 9000, containerPort: 9000 }],
});
const inInternal = endpoint({ id: 'e3e3e3e3e3e3cc', networkId: 'aaaa01', hostVeth: 'tsve3e3e3e3e3e3', ipv4: '10.1.0.2/24' });
/** Not ready yet: must not appear. */
const halfMade = endpoint({ id: 'e4e4e4e4e4e4dd', networkId: 'bbbb02', hostVeth: 'tsve4e4e4e4e4e4', phase: 'creating', ipv4: '10.2.0.4/24', ports: [tcp('', 7777, 77)] });
/** A network being deleted, with an endpoint: neither may appear. */
const leaving = network({ id: 'cccc03', bridge: 'tsb-leaving', phase: 'deleting', ipv4: [{ subnet: '10.3.0.0/24', gateway: '10.3.0.1/24' }] });
const onLeaving = endpoint({ id: 'e5e5e5e5e5e5ee', networkId: 'cccc03', hostVeth: 'tsve5e5e5e5e5e5', ipv4: '10.3.0.2/24', ports: [tcp('', 6666, 66)] });

const view: FirewallView = viewOf([isolated, leaving, internal], [v4only, halfMade, web, onLeaving, inInternal]);

describe('portElements', () => {
  test('each host-address kind goes to its family and map', () => {
    expect(portElements(web, web.ports)).toEqual([
      { set: 'inet ports4', key: 'tcp . 8080', value: '10.2.0.2 . 80' },
      { set: 'inet ports6', key: 'tcp . 8080', value: 'fd00:2::2 . 80' },
      { set: 'inet ports4', key: 'tcp . 8081', value: '10.2.0.2 . 81' },
      { set: 'inet ports6', key: 'tcp . 8082', value: 'fd00:2::2 . 82' },
      { set: 'inet ports4_addr', key: '127.0.0.1 . udp . 5353', value: '10.2.0.2 . 53' },
      { set: 'inet ports6_addr', key: '2001:db8::1 . tcp . 8443', value: 'fd00:2::2 . 443' },
    ]);
  });

  test('an endpoint without an address of a family gets nothing in that family', () => {
    expect(portElements(v4only, v4only.ports)).toEqual([{ set: 'inet ports4', key: 'sctp . 9000', value: '10.2.0.3 . 9000' }]);
    const v6only = { ...web, ipv4: null };
    expect(portElements(v6only, v6only.ports).map((e) => e.set)).toEqual(['inet ports6', 'inet ports6', 'inet ports6_addr']);
    expect(portElements({ ...web, ipv6: null }, [tcp('::', 1, 1)])).toEqual([]);
  });

  test('no ports, no elements', () => {
    expect(portElements(inInternal, inInternal.ports)).toEqual([]);
  });
});

describe('fullRuleset', () => {
  const script = fullRuleset(view);

  test('starts by replacing both tables in the same transaction', () => {
    expect(script.split('\n').slice(0, 4)).toEqual([
      'table inet tsbridge',
      'delete table inet tsbridge',
      'table bridge tsbridge',
      'delete table bridge tsbridge',
    ]);
  });

  test('maps hold every published port of ready endpoints, and nothing else', () => {
    expect(script).toContain('    elements = { tcp . 8080 : 10.2.0.2 . 80, tcp . 8081 : 10.2.0.2 . 81, sctp . 9000 : 10.2.0.3 . 9000 }');
    expect(script).toContain('    elements = { tcp . 8080 : fd00:2::2 . 80, tcp . 8082 : fd00:2::2 . 82 }');
    expect(script).toContain('    elements = { 127.0.0.1 . udp . 5353 : 10.2.0.2 . 53 }');
    expect(script).toContain('    elements = { 2001:db8::1 . tcp . 8443 : fd00:2::2 . 443 }');
    expect(script).not.toContain('7777'); // endpoint still creating
    expect(script).not.toContain('6666'); // network being deleted
    expect(script).not.toContain('tsb-leaving');
  });

  test('the bridges set names the live bridges (sorted by network ID)', () => {
    expect(script).toContain('  set bridges {\n    type ifname\n    elements = { "tsb-internal", "tsb-isolated" }\n  }');
  });

  test('egress: SNAT to host_ipv4 for the IPv4 subnet, masquerade for IPv6, nothing for the internal network', () => {
    expect(script).toContain('    ip saddr 10.2.0.0/24 oifname != "tsb-isolated" snat ip to 192.0.2.10');
    expect(script).toContain('    ip6 saddr fd00:2::/64 oifname != "tsb-isolated" masquerade');
    expect(script).not.toMatch(/saddr 10\.1\.0\.0\/24/);
  });

  test('hairpin: DNATed traffic from a subnet back onto its own bridge is masqueraded, matched without the input interface', () => {
    // With br_netfilter a hairpinned packet is bridged, and netfilter sees no input interface
    // in postrouting: a rule on iifname would never match.
    expect(script).toContain('    oifname "tsb-isolated" ip saddr 10.2.0.0/24 ct status dnat masquerade\n    oifname "tsb-isolated" ip6 saddr fd00:2::/64 ct status dnat masquerade');
    const postrouting = script.slice(script.indexOf('  chain postrouting {'), script.indexOf('  chain forward {'));
    expect(postrouting).not.toContain('iifname');
    expect(script).not.toMatch(/oifname "tsb-internal" ip saddr/); // internal: nothing is published
  });

  test('from the host: 127.0.0.0/8 sources masqueraded onto the bridges; ::1 is never DNATed', () => {
    expect(script).toContain('    oifname @bridges ip saddr 127.0.0.0/8 ct status dnat masquerade');
    expect(script).toContain('  chain output {\n    type nat hook output priority -100; policy accept;\n    ip6 daddr ::1 return\n    fib daddr type local jump publish\n  }');
    expect(script).not.toContain('ip6 saddr ::1');
  });

  test('127.0.0.0/8 arriving on any interface but lo is dropped before NAT', () => {
    expect(script).toContain('  chain localnet {\n    type filter hook prerouting priority raw; policy accept;\n    iifname != "lo" ip daddr 127.0.0.0/8 drop\n  }');
  });

  test('a host port held twice in the state (never by reservation) is written once, first endpoint by ID wins', () => {
    const clash = endpoint({ id: 'e0e0e0e0e0e0ff', networkId: 'bbbb02', hostVeth: 'tsve0e0e0e0e0e0', ipv4: '10.2.0.9/24', ports: [tcp('', 8080, 99)] });
    const s = fullRuleset(viewOf([isolated, leaving, internal], [v4only, halfMade, web, onLeaving, inInternal, clash]));
    expect(() => modelOf(s)).not.toThrow();
    expect(s).toContain('elements = { tcp . 8080 : 10.2.0.9 . 99, tcp . 8081 : 10.2.0.2 . 81, sctp . 9000 : 10.2.0.3 . 9000 }');
    expect(s.match(/tcp \. 8080 : [0-9.]+ \./g)).toHaveLength(1);
  });

  test('forwarding: the internal network is closed both ways; others accept replies and published ports only', () => {
    expect(script).toContain('    iifname "tsb-internal" oifname != "tsb-internal" drop\n    oifname "tsb-internal" iifname != "tsb-internal" drop');
    expect(script).toContain(
      [
        '    oifname "tsb-isolated" iifname != "tsb-isolated" ct state established,related accept',
        '    oifname "tsb-isolated" iifname != "tsb-isolated" ct status dnat accept',
        '    oifname "tsb-isolated" iifname != "tsb-isolated" drop',
      ].join('\n'),
    );
  });

  test('icc=false: the ready endpoints of that network are in no_icc, others are not', () => {
    expect(script).toContain('  set no_icc {\n    type ifname\n    elements = { "tsve1e1e1e1e1e1", "tsve2e2e2e2e2e2" }\n  }');
    expect(script).not.toContain('tsve4e4e4e4e4e4'); // not ready: in no set at all
  });

  test('internal networks: nothing from their bridge reaches the host but replies (and neighbour discovery)', () => {
    expect(script).toContain(
      [
        '  chain input {',
        '    type filter hook input priority filter - 1; policy accept;',
        '    iifname "tsb-internal" ct state established,related accept',
        '    iifname "tsb-internal" icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept',
        '    iifname "tsb-internal" drop',
        '  }',
      ].join('\n'),
    );
    const open = network({ id: 'dddd04', bridge: 'tsb-open', ipv4: [{ subnet: '10.4.0.0/24', gateway: '10.4.0.1/24' }] });
    expect(fullRuleset(viewOf([open], []))).not.toContain('chain input');
  });

  test('anti-spoofing: every ready endpoint of every network is guarded, with its MAC and addresses', () => {
    const set = (name: string) => new RegExp(`  set ${name} \\{\\n    (type|typeof) [^\\n]+\\n    elements = \\{ ([^}]*) \\}`).exec(script)?.[2];
    expect(set('guarded')).toBe('"tsve1e1e1e1e1e1", "tsve2e2e2e2e2e2", "tsve3e3e3e3e3e3"');
    expect(set('mac')).toBe('"tsve1e1e1e1e1e1" . 02:00:00:00:00:01, "tsve2e2e2e2e2e2" . 02:00:00:00:00:01, "tsve3e3e3e3e3e3" . 02:00:00:00:00:01');
    expect(set('addr4')).toBe('"tsve1e1e1e1e1e1" . 10.2.0.2, "tsve2e2e2e2e2e2" . 10.2.0.3, "tsve3e3e3e3e3e3" . 10.1.0.2');
    expect(set('addr6')).toBe('"tsve1e1e1e1e1e1" . fd00:2::2');
    expect(script).toContain('  set nd_target {\n    typeof iifname . @th,64,128\n');
    const chain = script.slice(script.indexOf('  chain prerouting {', script.indexOf('table bridge tsbridge {')));
    expect(chain.slice(0, chain.indexOf('  }'))).toBe(
      [
        '  chain prerouting {',
        '    type filter hook prerouting priority filter; policy accept;',
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
        '',
      ].join('\n'),
    );
  });

  test('every base chain is declared with the hook and priority BASE_CHAINS documents', () => {
    // The optional chains appear once a network contributes to them (here an anti-spoofing line in `guard`).
    const guarded = { id: 'ffff09', rules: { chains: { 'inet guard': ['iifname "tsvffff09" ip saddr != 10.9.0.2 drop'] }, elements: [], sets: [], shim: [] } };
    const script = fullRuleset({ ...view, networks: [...view.networks, guarded] });
    for (const c of BASE_CHAINS) {
      const table = script.slice(script.indexOf(`table ${c.family} tsbridge {`));
      const body = table.slice(table.indexOf(`  chain ${c.chain} {`));
      expect(body.split('\n')[1]).toMatch(new RegExp(`^    type (filter|nat) hook ${c.hook} priority ${c.spelled.replace(/[-+]/g, '\\$&')}; policy accept;$`));
    }
    const declared = script.match(/hook \w+ priority/g)!.length;
    expect(declared).toBe(BASE_CHAINS.length);
  });

  test('does not depend on the order of the state', () => {
    const shuffled = viewOf([internal, leaving, isolated], [inInternal, onLeaving, web, halfMade, v4only]);
    expect(fullRuleset(shuffled)).toBe(script);
  });

  test('whole script', () => {
    expect(script).toMatchSnapshot();
  });

  test('nft accepts it (the strict model), and applying it twice is the same as once', () => {
    const m = new NftModel();
    m.apply(script);
    const once = m.dump();
    m.apply(script);
    expect(m.dump()).toEqual(once);
  });

  test('no networks: only the two table deletions (each behind the declaration that makes it safe)', () => {
    const empty = fullRuleset(viewOf([], []));
    expect(empty).toBe('table inet tsbridge\ndelete table inet tsbridge\ntable bridge tsbridge\ndelete table bridge tsbridge\n');
    expect(empty.match(/^delete table/gm)).toHaveLength(2);
    // only networks being deleted is the same as none
    expect(fullRuleset(viewOf([leaving], [onLeaving]))).toBe(empty);
    expect(modelOf(empty)).toEqual({});
  });
});

describe('guardElements', () => {
  test("an endpoint's port, MAC and addresses; neighbour advertisements may claim its address and its link-local one", () => {
    expect(guardElements(web)).toEqual([
      { set: 'bridge guarded', key: '"tsve1e1e1e1e1e1"' },
      { set: 'bridge mac', key: '"tsve1e1e1e1e1e1" . 02:00:00:00:00:01' },
      { set: 'bridge addr4', key: '"tsve1e1e1e1e1e1" . 10.2.0.2' },
      { set: 'bridge addr6', key: '"tsve1e1e1e1e1e1" . fd00:2::2' },
      { set: 'bridge nd_target', key: '"tsve1e1e1e1e1e1" . 0xfd000002000000000000000000000002' },
      { set: 'bridge nd_target', key: '"tsve1e1e1e1e1e1" . 0xfe80000000000000000000fffe000001' },
    ]);
  });

  test('the EUI-64 link-local address of a MAC (the universal/local bit flipped, ff:fe in the middle)', () => {
    expect(linkLocal('02:42:ac:11:00:02').toString(16)).toBe('fe80000000000000' + '0042acfffe110002');
    expect(linkLocal('00:1b:21:3a:4f:5c').toString(16)).toBe('fe80000000000000' + '021b21fffe3a4f5c');
  });

  test('no IPv6 address: only the link-local one may be claimed', () => {
    const of = (set: string) => guardElements(v4only).filter((e) => e.set === set).map((e) => e.key);
    expect(of('bridge addr6')).toEqual([]);
    expect(of('bridge nd_target')).toEqual(['"tsve2e2e2e2e2e2" . 0xfe80000000000000000000fffe000001']);
  });
});

describe("an endpoint's elements, added and deleted", () => {
  const guardAdd = (veth: string, ip: string) => [
    `add element bridge tsbridge guarded { "${veth}" }`,
    `add element bridge tsbridge mac { "${veth}" . 02:00:00:00:00:01 }`,
    `add element bridge tsbridge addr4 { "${veth}" . ${ip} }`,
    `add element bridge tsbridge nd_target { "${veth}" . 0xfe80000000000000000000fffe000001 }`,
  ];

  test("add: one add per map, then the endpoint's guard, then the ICC entry when icc=false", () => {
    expect(added(v4only, isolated).trimEnd().split('\n')).toEqual([
      'add element inet tsbridge ports4 { sctp . 9000 : 10.2.0.3 . 9000 }',
      ...guardAdd('tsve2e2e2e2e2e2', '10.2.0.3'),
      'add element bridge tsbridge no_icc { "tsve2e2e2e2e2e2" }',
    ]);
  });

  test('delete: all elements of a map first added, then deleted by their keys, one statement each', () => {
    const lines = deleted(web, isolated).trimEnd().split('\n');
    expect(lines.slice(0, 8)).toEqual([
      'add element inet tsbridge ports4 { tcp . 8080 : 10.2.0.2 . 80, tcp . 8081 : 10.2.0.2 . 81 }',
      'delete element inet tsbridge ports4 { tcp . 8080, tcp . 8081 }',
      'add element inet tsbridge ports6 { tcp . 8080 : fd00:2::2 . 80, tcp . 8082 : fd00:2::2 . 82 }',
      'delete element inet tsbridge ports6 { tcp . 8080, tcp . 8082 }',
      'add element inet tsbridge ports4_addr { 127.0.0.1 . udp . 5353 : 10.2.0.2 . 53 }',
      'delete element inet tsbridge ports4_addr { 127.0.0.1 . udp . 5353 }',
      'add element inet tsbridge ports6_addr { 2001:db8::1 . tcp . 8443 : fd00:2::2 . 443 }',
      'delete element inet tsbridge ports6_addr { 2001:db8::1 . tcp . 8443 }',
    ]);
    const bridgeSets = lines.slice(8);
    expect(bridgeSets.map((l) => l.split(' ').slice(0, 5).join(' '))).toEqual(
      ['guarded', 'mac', 'addr4', 'addr6', 'nd_target', 'no_icc'].flatMap((set) => [`add element bridge tsbridge ${set}`, `delete element bridge tsbridge ${set}`]),
    );
    expect(bridgeSets.at(-1)).toBe('delete element bridge tsbridge no_icc { "tsve1e1e1e1e1e1" }');
  });

  test('on the full ruleset: adding then deleting an endpoint leaves the ruleset as it was; deleting again is harmless', () => {
    const base = viewOf([isolated], []);
    const m = new NftModel();
    m.apply(fullRuleset(base));
    const before = m.dump();
    m.apply(added(web, isolated));
    expect(m.dump()).toEqual(modelOf(fullRuleset(viewOf([isolated], [web]))));
    m.apply(deleted(web, isolated));
    expect(m.dump()).toEqual(before);
    m.apply(deleted(web, isolated));
    expect(m.dump()).toEqual(before);
  });

  test('a thousand ports are still one statement per map', () => {
    const many = { ...v4only, ports: Array.from({ length: 1000 }, (_, i) => tcp('', 30000 + i, 80)) };
    const open = network({ id: 'dddd04', bridge: 'tsb-open', ipv4: [{ subnet: '10.4.0.0/24', gateway: '10.4.0.1/24' }] });
    const lines = added(many, open).trimEnd().split('\n').filter((l) => l.includes(' inet '));
    expect(lines).toHaveLength(1);
    expect(lines[0]!.match(/ : 10\.2\.0\.3 \. 80/g)).toHaveLength(1000);
  });

  test('the ports alone: only port elements, never the bridge table (what the port calls rely on)', () => {
    const ports = KINDS.get('bridge').ports(web, isolated, web.ports);
    const delta = deleteElements(ports);
    expect(delta).not.toContain('bridge tsbridge');
    expect(delta.trimEnd().split('\n')).toHaveLength(8);
    expect(addElements(KINDS.get('bridge').ports(v4only, isolated, []))).toBe('');
  });

  test('no ports, icc on: the guard alone', () => {
    const open = network({ id: 'dddd04', bridge: 'tsb-open', ipv4: [{ subnet: '10.4.0.0/24', gateway: '10.4.0.1/24' }] });
    expect(added({ ...v4only, networkId: 'dddd04', ports: [] }, open).trimEnd().split('\n')).toEqual(guardAdd('tsve2e2e2e2e2e2', '10.2.0.3'));
  });

  test("another instance's table", () => {
    expect(added(v4only, isolated, 'tsbridge_x')).not.toMatch(/ tsbridge /);
  });
});

describe('what a network contributes, composed', () => {
  const open = network({ id: 'dddd04', bridge: 'tsb-open', ipv4: [{ subnet: '10.4.0.0/24', gateway: '10.4.0.1/24' }] });
  const withRules = (extra: Partial<NetworkRules>): FirewallView => {
    const v = viewOf([open], []);
    return { ...v, networks: v.networks.map((n) => ({ ...n, rules: { ...n.rules, ...extra } })) };
  };

  test('a set of its own is declared in its table, with its elements; rules may use it', () => {
    const script = fullRuleset(withRules({
      sets: [{ set: 'inet vteps_dddd04', type: 'ipv4_addr' }],
      elements: [{ set: 'inet bridges', key: '"tsb-open"' }, { set: 'inet vteps_dddd04', key: '192.0.2.1' }],
      chains: { 'inet input': ['ip saddr @vteps_dddd04 udp dport 4789 accept'] },
    }));
    expect(script).toContain('  set vteps_dddd04 {\n    type ipv4_addr\n    elements = { 192.0.2.1 }\n  }');
    expect(script).toContain('    ip saddr @vteps_dddd04 udp dport 4789 accept');
    expect(modelOf(script)['inet tsbridge']!.sets.vteps_dddd04!.elements).toEqual(['192.0.2.1']);
  });

  test('lines go between a chain\'s fixed head and tail', () => {
    const script = fullRuleset(withRules({ chains: { 'bridge prerouting': ['iifname "x" drop'], 'bridge forward': ['iifname "y" drop'] } }));
    expect(script).toContain('    type filter hook prerouting priority filter; policy accept;\n    iifname "x" drop\n    iifname != @guarded accept');
    expect(script).toContain('    iifname @no_icc drop\n    iifname "y" drop\n  }');
  });

  test('a chain tsbridge does not have, or an element of a set nobody declared, is an internal error', () => {
    expect(() => fullRuleset(withRules({ chains: { 'inet nosuch': ['accept'] } }))).toThrow(/internal error: no chain "inet nosuch"/);
    const stray: Element = { set: 'inet nosuch', key: '1' };
    expect(() => fullRuleset(withRules({ elements: [stray] }))).toThrow(/internal error: element for an undeclared set "inet nosuch"/);
  });
});

describe('forward shim (iptables)', () => {
  test('rewrites the chain with accepts per bridge, sorted; internal bridges only within themselves', () => {
    expect(forwardChainRestore([{ name: 'tsb-zz', internal: false }, { name: 'tsb-aa', internal: true }])).toBe(
      [
        '*filter',
        ':TSBRIDGE-FORWARD - [0:0]',
        '-F TSBRIDGE-FORWARD',
        '-A TSBRIDGE-FORWARD -i tsb-aa -o tsb-aa -j ACCEPT',
        '-A TSBRIDGE-FORWARD -o tsb-zz -j ACCEPT',
        '-A TSBRIDGE-FORWARD -i tsb-zz -j ACCEPT',
        'COMMIT',
        '',
      ].join('\n'),
    );
  });

  test("with Docker's isolation chains: out of a bridge only DNATed traffic skips them, the rest goes through both first", () => {
    expect(forwardChainRules([{ name: 'tsb-zz', internal: false }, { name: 'tsb-aa', internal: true }], 'C', ['DOCKER-ISOLATION-STAGE-1', 'DOCKER-ISOLATION-STAGE-2'])).toEqual([
      '-A C -i tsb-aa -o tsb-aa -j ACCEPT',
      '-A C -o tsb-zz -j ACCEPT',
      '-A C -i tsb-zz -m conntrack --ctstate DNAT -j ACCEPT',
      '-A C -i tsb-zz -j DOCKER-ISOLATION-STAGE-1',
      '-A C -i tsb-zz -j DOCKER-ISOLATION-STAGE-2',
      '-A C -i tsb-zz -j ACCEPT',
    ]);
  });

  test('no bridges: an empty chain', () => {
    expect(forwardChainRestore([])).toBe('*filter\n:TSBRIDGE-FORWARD - [0:0]\n-F TSBRIDGE-FORWARD\nCOMMIT\n');
  });

  const save = [
    '# Generated by iptables-save v1.8.9 (nf_tables)',
    '*nat',
    ':PREROUTING ACCEPT [0:0]',
    ':DOCKER - [0:0]',
    '-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER',
    'COMMIT',
    '*filter',
    ':INPUT ACCEPT [0:0]',
    ':FORWARD DROP [12:720]',
    ':DOCKER-USER - [0:0]',
    ':DOCKER-ISOLATION-STAGE-2 - [0:0]',
    '-A FORWARD -j DOCKER-USER',
    '-A DOCKER-USER -s 198.51.100.0/24 -j DROP',
    '-A DOCKER-USER -j RETURN',
    'COMMIT',
  ].join('\n');

  test('reads the filter table of an iptables-save listing, and only it', () => {
    const v = parseFilterSave(save)!;
    expect([...v.chains]).toEqual(['INPUT', 'FORWARD', 'DOCKER-USER', 'DOCKER-ISOLATION-STAGE-2']);
    expect(v.rules).toEqual(['-A FORWARD -j DOCKER-USER', '-A DOCKER-USER -s 198.51.100.0/24 -j DROP', '-A DOCKER-USER -j RETURN']);
    expect(parseFilterSave('*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n')).toBeNull();
    expect(parseFilterSave('')).toBeNull();
  });

  test("the jump goes into DOCKER-USER after the operator's rules, before Docker's RETURN; into FORWARD first", () => {
    const v = parseFilterSave(save)!;
    expect(shimParent(v)).toBe('DOCKER-USER');
    expect(jumpPosition(v, 'DOCKER-USER')).toBe(2);
    expect(jumpPosition({ chains: v.chains, rules: ['-A DOCKER-USER -j RETURN'] }, 'DOCKER-USER')).toBe(1);
    expect(jumpPosition({ chains: v.chains, rules: ['-A DOCKER-USER -j DROP'] }, 'DOCKER-USER')).toBe(2); // no RETURN: append
    expect(jumpPosition({ chains: v.chains, rules: [] }, 'DOCKER-USER')).toBe(1);
    const noDocker = parseFilterSave('*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -j ufw-before-forward\nCOMMIT\n')!;
    expect(shimParent(noDocker)).toBe('FORWARD');
    expect(jumpPosition(noDocker, 'FORWARD')).toBe(1);
  });
});
