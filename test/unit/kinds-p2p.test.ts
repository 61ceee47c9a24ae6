/**
 * The point-to-point kind (`-o io.tsbridge.mode=p2p`) without a kernel: its options, the links,
 * addresses, routes and sysctls it plans, what Join answers, the rules it renders — and the driver
 * and start-up reconciliation over the strict fake kernel, where after every operation (failed
 * ones included) nftables holds exactly the state's full ruleset.
 */
import { Reconciler } from '../../src/driver/reconcile.js';
import { hostVethName, peerVethName } from '../../src/domain/names.js';
import type { Network, NetworkSpec } from '../../src/domain/types.js';
import { forwardChainRules } from '../../src/kernel/rules/iptables.js';
import { fullRuleset } from '../../src/kernel/rules/nft.js';
import { firewallView } from '../../src/driver/realize.js';
import { KINDS } from '../../src/kinds/registry.js';
import { p2pKind } from '../../src/kinds/p2p/index.js';
import { P2P_DEFAULTS, type P2pSettings } from '../../src/kinds/p2p/settings.js';
import { silentLogger } from '../../src/logging.js';
import { parseCreateNetwork } from '../../src/protocol/network.js';
import { Db } from '../../src/state/db.js';
import { emptyState } from '../../src/state/types.js';
import { FakeKernel } from '../fakes/kernel.js';
import { modelOf } from '../fakes/nft.js';
import {
  EP_1, EP_2, EP_3, NET_A, NET_B, codeOf, endpointSpec, errorOf, firewallAgrees, makeWorld, networkSpec, portReq, rulesOf, type World,
} from '../fakes/world.js';

const V1 = hostVethName(EP_1);
const V2 = hostVethName(EP_2);

/** A p2p network: 10.30.0.0/24 (gateway .1), with IPv6 fd5e:30::/64 when asked. */
function p2pSpec(over: Partial<NetworkSpec> = {}, settings: Partial<P2pSettings> = {}, v6 = false): NetworkSpec {
  return {
    id: NET_A,
    kind: 'p2p',
    ipv4: [{ subnet: '10.30.0.0/24', gateway: '10.30.0.1/24' }],
    ipv6: v6 ? [{ subnet: 'fd5e:30::/64', gateway: 'fd5e:30::1/64' }] : [],
    enableIpv6: v6,
    internal: false,
    mtu: 1500,
    ifacePrefix: 'eth',
    settings: { ...P2P_DEFAULTS, ...settings },
    ...over,
  };
}
const ready = (s: NetworkSpec): Network => ({ ...s, phase: 'ready' });

function create(generic: Record<string, string>, gateway = '10.99.0.1/24') {
  return {
    NetworkID: NET_A,
    Options: { 'com.docker.network.enable_ipv6': false, 'com.docker.network.generic': { 'io.tsbridge.mode': 'p2p', ...generic } },
    IPv4Data: [{ AddressSpace: 'local', Pool: '10.99.0.0/24', ...(gateway ? { Gateway: gateway } : {}) }],
    IPv6Data: [],
  };
}

describe('options', () => {
  test('defaults, and the NAT bridge options it shares, with their meaning', () => {
    expect(parseCreateNetwork(create({}))).toMatchObject({ kind: 'p2p', settings: { icc: true, masquerade: true, hostBindingIpv4: '', snatIpv4: '' } });
    const spec = parseCreateNetwork(create({
      'com.docker.network.bridge.enable_icc': 'false',
      'com.docker.network.bridge.enable_ip_masquerade': '0',
      'com.docker.network.bridge.host_binding_ipv4': '127.0.0.1',
      'com.docker.network.host_ipv4': '192.0.2.7',
      'com.docker.network.driver.mtu': '1400',
    }));
    expect(spec).toMatchObject({ mtu: 1400, settings: { icc: false, masquerade: false, hostBindingIpv4: '127.0.0.1', snatIpv4: '192.0.2.7' } });
  });

  test.each(['com.docker.network.bridge.name', 'com.docker.network.bridge.inhibit_ipv4', 'com.docker.network.bridge.gateway_mode_ipv4'])(
    'a bridge-only option (%s) is not an option of mode p2p',
    (option) => {
      expect(errorOf(() => parseCreateNetwork(create({ [option]: 'x' }))).message).toBe(`invalid option ${option}=x: not an option of mode p2p`);
    },
  );

  test('a subnet without a gateway is refused: there would be nothing to route through', () => {
    expect(errorOf(() => parseCreateNetwork(create({}, ''))).message).toBe(
      'invalid option io.tsbridge.mode=p2p: subnet 10.99.0.0/24 has no gateway address, which point-to-point links need',
    );
  });
});

describe('plans', () => {
  const n = ready(p2pSpec({}, {}, true));
  const ep = { id: EP_1, networkId: NET_A, phase: 'ready' as const, hostVeth: V1, peerVeth: peerVethName(EP_1), mac: '02:00:00:00:00:01', ipv4: '10.30.0.2/24', ipv6: 'fd5e:30::2/64', joined: false, ports: [] };

  test('the network: no bridge, no link, an unreachable route per subnet, forwarding on', () => {
    expect(p2pKind.network(n)).toEqual({
      bridge: null,
      links: [],
      routes: [{ to: '10.30.0.0/24', unreachable: true }, { to: 'fd5e:30::/64', unreachable: true }],
      sysctls: [{ key: 'net.ipv4.ip_forward', value: '1' }, { key: 'net.ipv6.conf.all.forwarding', value: '1' }],
    });
    // IPv6 data of a network without IPv6 is ignored.
    expect(p2pKind.network(ready({ ...p2pSpec({}, {}, true), enableIpv6: false })).routes).toEqual([{ to: '10.30.0.0/24', unreachable: true }]);
  });

  test('an endpoint: a veth without a master, the gateways on its host end, routes to the container, proxy ARP without delay, route_localnet', () => {
    expect(p2pKind.endpoint(ep, n)).toEqual({
      veth: { hostName: V1, peerName: peerVethName(EP_1), master: null, mtu: 1500, mac: '02:00:00:00:00:01', hostAddresses: ['10.30.0.1/32', 'fd5e:30::1/128'] },
      routes: [{ to: '10.30.0.2/32', dev: V1 }, { to: 'fd5e:30::2/128', dev: V1 }],
      sysctls: [
        { key: `net.ipv4.conf.${V1}.proxy_arp`, value: '1' },
        { key: `net.ipv4.neigh.${V1}.proxy_delay`, value: '0' },
        { key: `net.ipv4.conf.${V1}.route_localnet`, value: '1' },
      ],
    });
    expect(p2pKind.endpoint(ep, ready({ ...n, internal: true })).sysctls.map((s) => s.key)).not.toContain(`net.ipv4.conf.${V1}.route_localnet`);
  });

  test('with two subnets, the gateway of the subnet holding the address', () => {
    const two = ready(p2pSpec({ ipv4: [{ subnet: '10.30.0.0/24', gateway: '10.30.0.1/24' }, { subnet: '10.31.0.0/24', gateway: '10.31.0.254/24' }] }));
    expect(p2pKind.endpoint({ ...ep, ipv4: '10.31.0.7/24', ipv6: null }, two).veth.hostAddresses).toEqual(['10.31.0.254/32']);
    expect(p2pKind.join({ ...ep, ipv4: '10.31.0.7/24', ipv6: null }, two).gateway).toBe('10.31.0.254');
  });

  test('Join: the gateways; for IPv6 the gateway on the link and both halves of the subnet through it', () => {
    expect(p2pKind.join(ep, n)).toEqual({
      srcName: peerVethName(EP_1),
      dstPrefix: 'eth',
      gateway: '10.30.0.1',
      gatewayIpv6: 'fd5e:30::1',
      staticRoutes: [
        { destination: 'fd5e:30::1/128', type: 'connected', nextHop: '' },
        { destination: 'fd5e:30::/65', type: 'via', nextHop: 'fd5e:30::1' },
        { destination: 'fd5e:30:0:0:8000::/65', type: 'via', nextHop: 'fd5e:30::1' },
      ],
    });
    // Internal: no default route; the routes between containers stay.
    expect(p2pKind.join(ep, ready({ ...n, internal: true }))).toMatchObject({ gateway: '', gatewayIpv6: '', staticRoutes: [expect.anything(), expect.anything(), expect.anything()] });
    expect(p2pKind.join({ ...ep, ipv6: null }, n).staticRoutes).toEqual([]);
  });
});

describe('rules', () => {
  const P = '@p2p_aaaa00000000';

  test('anti-spoofing, isolation, masquerade and hairpin on the network\'s own set of veths', () => {
    const r = p2pKind.rules(ready(p2pSpec({}, {}, true)));
    expect(r.chains).toEqual({
      'inet guard': [
        `iifname ${P} iifname . ip saddr != @p2p4_aaaa00000000 drop`,
        `iifname ${P} icmpv6 type { nd-router-advert, nd-redirect } drop`,
        `iifname ${P} ip6 saddr != { ::, fe80::/10 } iifname . ip6 saddr != @p2p6_aaaa00000000 drop`,
      ],
      'inet forward': [
        `oifname ${P} iifname != ${P} ct state established,related accept`,
        `oifname ${P} iifname != ${P} ct status dnat accept`,
        `oifname ${P} iifname != ${P} drop`,
      ],
      'inet postrouting': [
        `oifname ${P} ip saddr 10.30.0.0/24 ct status dnat masquerade`,
        `oifname ${P} ip6 saddr fd5e:30::/64 ct status dnat masquerade`,
        `ip saddr 10.30.0.0/24 oifname != ${P} masquerade`,
        `ip6 saddr fd5e:30::/64 oifname != ${P} masquerade`,
      ],
    });
    expect(r.sets).toEqual([
      { set: 'inet p2p_aaaa00000000', type: 'ifname' },
      { set: 'inet p2p4_aaaa00000000', type: 'ifname . ipv4_addr' },
      { set: 'inet p2p6_aaaa00000000', type: 'ifname . ipv6_addr' },
    ]);
    expect(r.shim).toEqual([{ name: 'tsv+', internal: false }]);
  });

  test('icc=false: traffic between its veths dropped but for published ports through a host address', () => {
    expect(p2pKind.rules(ready(p2pSpec({}, { icc: false }))).chains['inet forward']!.slice(-2)).toEqual([
      `iifname ${P} oifname ${P} ct status dnat accept`,
      `iifname ${P} oifname ${P} drop`,
    ]);
  });

  test('SNAT instead of masquerade; no masquerade at all', () => {
    expect(p2pKind.rules(ready(p2pSpec({}, { snatIpv4: '192.0.2.7' }))).chains['inet postrouting']).toContain(`ip saddr 10.30.0.0/24 oifname != ${P} snat ip to 192.0.2.7`);
    expect(p2pKind.rules(ready(p2pSpec({}, { masquerade: false }))).chains['inet postrouting']).toEqual([`oifname ${P} ip saddr 10.30.0.0/24 ct status dnat masquerade`]);
  });

  test('internal: nothing in or out, not the host; no NAT, no ports', () => {
    const n = ready(p2pSpec({ internal: true }));
    const r = p2pKind.rules(n);
    expect(r.chains['inet input']).toEqual([
      `iifname ${P} ct state established,related accept`,
      `iifname ${P} icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept`,
      `iifname ${P} drop`,
    ]);
    expect(r.chains['inet forward']).toEqual([`iifname ${P} oifname != ${P} drop`, `oifname ${P} iifname != ${P} drop`]);
    expect(r.chains['inet postrouting']).toBeUndefined();
    expect(p2pKind.publishing(n)).toBeNull();
  });

  test('members: the veth in the network\'s set and in `bridges` (127.0.0.1), its addresses keyed by it', () => {
    const ep = { id: EP_1, networkId: NET_A, phase: 'ready' as const, hostVeth: V1, peerVeth: peerVethName(EP_1), mac: '02:00:00:00:00:01', ipv4: '10.30.0.2/24', ipv6: 'fd5e:30::2/64', joined: true, ports: [] };
    expect(p2pKind.members(ep, ready(p2pSpec({}, {}, true)))).toEqual([
      { set: 'inet p2p_aaaa00000000', key: `"${V1}"` },
      { set: 'inet bridges', key: `"${V1}"` },
      { set: 'inet p2p4_aaaa00000000', key: `"${V1}" . 10.30.0.2` },
      { set: 'inet p2p6_aaaa00000000', key: `"${V1}" . fd5e:30::2` },
    ]);
  });

  test('the forward shim lets every host veth through once, however many p2p networks', () => {
    const s = emptyState();
    s.networks[NET_A] = ready(p2pSpec());
    s.networks[NET_B] = ready(p2pSpec({ id: NET_B, ipv4: [{ subnet: '10.31.0.0/24', gateway: '10.31.0.1/24' }] }));
    const shims = firewallView(s, KINDS).networks.flatMap((n) => n.rules.shim);
    expect(forwardChainRules(shims)).toEqual(['-A TSBRIDGE-FORWARD -o tsv+ -j ACCEPT', '-A TSBRIDGE-FORWARD -i tsv+ -j ACCEPT']);
    expect(() => modelOf(fullRuleset(firewallView(s, KINDS)))).not.toThrow();
  });
});

describe('through the driver, the firewall and the reconciler', () => {
  let w: World;
  beforeEach(() => {
    w = makeWorld();
  });
  afterEach(() => {
    const { kernel, state } = firewallAgrees(w);
    expect(kernel).toEqual(state);
  });

  const ep1 = () => endpointSpec({ ipv4: '10.30.0.2/24', ipv6: 'fd5e:30::2/64' });
  const ep2 = () => endpointSpec({ endpointId: EP_2, ipv4: '10.30.0.3/24', ipv6: 'fd5e:30::3/64' });

  test('a network and two endpoints: routes, veths, sysctls and every element in place', async () => {
    await w.driver.createNetwork(p2pSpec({}, {}, true));
    expect(w.kernel.snapshot().routes).toEqual(['10.30.0.0/24 unreachable', 'fd5e:30::/64 unreachable']);
    await w.driver.createEndpoint(ep1());
    await w.driver.createEndpoint(ep2());
    const snap = w.kernel.snapshot();
    expect(snap.bridges).toEqual([]);
    expect(snap.veths.map((v) => [v.host, v.bridge, v.hostAddresses])).toEqual([
      [V1, null, ['10.30.0.1/32', 'fd5e:30::1/128']],
      [V2, null, ['10.30.0.1/32', 'fd5e:30::1/128']],
    ]);
    expect(snap.routes).toEqual([
      `10.30.0.0/24 unreachable`, `10.30.0.2/32 ${V1}`, `10.30.0.3/32 ${V2}`, 'fd5e:30::/64 unreachable', `fd5e:30::2/128 ${V1}`, `fd5e:30::3/128 ${V2}`,
    ]);
    expect(snap.sysctls[`net.ipv4.neigh.${V2}.proxy_delay`]).toBe('0');
    expect(snap.nft['inet tsbridge']!.sets.p2p_aaaa00000000!.elements).toEqual([`"${V1}"`, `"${V2}"`]);
    expect(snap.firewall.bridges).toEqual([V1, V2]);
    expect(snap.firewall.guarded).toEqual([]); // no bridge table guard: the inet guard instead
    expect(snap.nft['inet tsbridge']!.chains.guard!.base).toMatchObject({ hook: 'prerouting', priority: 'raw' });
  });

  test('published ports through the shared maps; revoke removes them; membership stays', async () => {
    await w.driver.createNetwork(p2pSpec({}, {}, true));
    await w.driver.createEndpoint(ep1());
    await w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(80, 8080)]);
    expect(w.kernel.snapshot().firewall.ports).toEqual(['tcp 0.0.0.0:8080 -> 10.30.0.2:80', 'tcp [::]:8080 -> [fd5e:30::2]:80']);
    await w.driver.revokeExternalConnectivity(NET_A, EP_1);
    expect(w.kernel.snapshot().firewall.ports).toEqual([]);
    expect(w.kernel.snapshot().nft['inet tsbridge']!.sets.p2p4_aaaa00000000!.elements).toEqual([`"${V1}" . 10.30.0.2`]);
  });

  test('a failure at any kernel step of an endpoint leaves nothing of it', async () => {
    await w.driver.createNetwork(p2pSpec({}, {}, true));
    for (const method of ['ensureVeth', 'ensureRoutes', 'sysctl', 'addEndpoint'] as const) {
      const before = w.kernel.snapshot();
      w.kernel.failNext(method, { partial: true });
      expect(await codeOf(w.driver.createEndpoint(ep1()))).toBe('KERNEL');
      expect({ method, snap: w.kernel.snapshot() }).toEqual({ method, snap: before });
      expect(w.db.state.endpoints).toEqual({});
    }
  });

  test('a failure creating the network (its routes, its rules) leaves no route, no rule, no record', async () => {
    for (const method of ['ensureRoutes', 'apply'] as const) {
      const before = w.kernel.snapshot();
      w.kernel.failNext(method, { partial: true });
      expect(await codeOf(w.driver.createNetwork(p2pSpec({}, {}, true)))).toBe('KERNEL');
      expect({ method, snap: w.kernel.snapshot() }).toEqual({ method, snap: before });
      expect(w.db.state.networks).toEqual({});
    }
  });

  test('deleting the network removes its endpoints\' veths (their routes with them), its unreachable routes and its rules', async () => {
    await w.driver.createNetwork(p2pSpec({}, {}, true));
    await w.driver.createEndpoint(ep1());
    await w.driver.createNetwork(networkSpec({ id: NET_B, bridge: 'tsb-bbbb0000000' }));
    await w.driver.createEndpoint(endpointSpec({ networkId: NET_B, endpointId: EP_3 }));
    await w.driver.deleteNetwork(NET_A);
    const snap = w.kernel.snapshot();
    expect(snap.routes).toEqual([]);
    expect(snap.veths.map((v) => v.host)).toEqual([hostVethName(EP_3)]);
    expect(Object.keys(snap.nft['inet tsbridge']!.sets).filter((s) => s.startsWith('p2p'))).toEqual([]);
    expect(snap.nft['inet tsbridge']!.chains.guard).toBeUndefined();
  });

  test('beside a NAT bridge, each network keeps its own', async () => {
    await w.driver.createNetwork(networkSpec({ id: NET_B, bridge: 'tsb-bbbb0000000' }));
    await w.driver.createNetwork(p2pSpec());
    await w.driver.createEndpoint(endpointSpec({ networkId: NET_B, endpointId: EP_3 }));
    await w.driver.createEndpoint(endpointSpec({ ipv4: '10.30.0.2/24' }));
    const snap = w.kernel.snapshot();
    expect(snap.firewall.guarded).toEqual([hostVethName(EP_3)]);
    expect(snap.firewall.bridges).toEqual(['tsb-bbbb0000000', V1]);
  });

  test('after a reboot start-up rebuilds it: unreachable routes, unjoined veths with their addresses, routes and sysctls, the ruleset', async () => {
    await w.driver.createNetwork(p2pSpec({}, {}, true));
    await w.driver.createEndpoint(ep1());
    const made = w.kernel.snapshot();
    const kernel = new FakeKernel({ sysctls: { 'net.ipv4.ip_forward': '1', 'net.ipv6.conf.all.forwarding': '1' } });
    const db = new Db(w.store, await w.store.load());
    const report = await new Reconciler(db, kernel, silentLogger()).startup();
    expect(report).toMatchObject({ networksRestored: 1, vethsRecreated: 1, endpointsDropped: 0 });
    const back = kernel.snapshot();
    expect({ veths: back.veths, routes: back.routes, sysctls: back.sysctls, nft: back.nft }).toEqual({ veths: made.veths, routes: made.routes, sysctls: made.sysctls, nft: made.nft });
    expect(back.nft).toEqual(rulesOf(db.state));
  });

  test('a joined endpoint whose container died at the reboot is dropped, its elements with it', async () => {
    await w.driver.createNetwork(p2pSpec());
    await w.driver.createEndpoint(endpointSpec({ ipv4: '10.30.0.2/24' }));
    await w.driver.join(NET_A, EP_1);
    const kernel = new FakeKernel({ sysctls: { 'net.ipv4.ip_forward': '1' } });
    const db = new Db(w.store, await w.store.load());
    expect(await new Reconciler(db, kernel, silentLogger()).startup()).toMatchObject({ endpointsDropped: 1, vethsRecreated: 0 });
    expect(kernel.snapshot().routes).toEqual(['10.30.0.0/24 unreachable']);
    expect(kernel.nft.dump()).toEqual(rulesOf(db.state));
  });

  test('a network a crash left `deleting` is finished at start-up: its unreachable routes too', async () => {
    await w.driver.createNetwork(p2pSpec());
    await w.db.tx(async (s) => {
      s.networks[NET_A]!.phase = 'deleting';
      await w.db.save();
    });
    const db = new Db(w.store, await w.store.load());
    const report = await new Reconciler(db, w.kernel, silentLogger()).startup();
    expect(report.networksDropped).toBe(1);
    expect(w.kernel.snapshot().routes).toEqual([]);
    w.db = db; // the afterEach compares with this state
  });

  test('a plugin restart with the kernel intact changes nothing', async () => {
    await w.driver.createNetwork(p2pSpec({}, {}, true));
    await w.driver.createEndpoint(ep1());
    await w.driver.join(NET_A, EP_1);
    await w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(80, 8080)]);
    const before = w.kernel.snapshot();
    const db = new Db(w.store, await w.store.load());
    const report = await new Reconciler(db, w.kernel, silentLogger()).startup();
    expect(report).toMatchObject({ endpointsDropped: 0, vethsRecreated: 0, staleLinksRemoved: [] });
    expect(w.kernel.snapshot()).toEqual(before);
  });
});
