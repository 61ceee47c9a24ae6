/**
 * The uplink kind (containers on the LAN) through the protocol edge, the driver, the reconciler
 * and the firewall, over FakeKernel: what it refuses before anything is touched, the links,
 * sysctls and rules it makes, how an uplink's addresses and routes move to the bridge and back —
 * after failures, crashes and reboots too. After every test nftables equals the full ruleset the
 * state calls for (the strict model).
 */
import { Reconciler } from '../../src/driver/reconcile.js';
import { bridgeName, hostVethName } from '../../src/domain/names.js';
import type { Network, NetworkSpec } from '../../src/domain/types.js';
import { describeRoute } from '../../src/kernel/held.js';
import { forwardChainRules } from '../../src/kernel/rules/iptables.js';
import type { HeldAddress, HeldRoute, UplinkSpec } from '../../src/kernel/types.js';
import { KINDS } from '../../src/kinds/registry.js';
import { uplinkKind, uplinkLan } from '../../src/kinds/uplink/index.js';
import { silentLogger } from '../../src/logging.js';
import { parseCreateNetwork } from '../../src/protocol/network.js';
import { Db } from '../../src/state/db.js';
import { FakeKernel } from '../fakes/kernel.js';
import {
  EP_1, EP_2, NET_A, NET_B, codeOf, endpointSpec, errorOf, firewallAgrees, makeWorld, networkSpec, portReq, type World,
} from '../fakes/world.js';

const UPLINK = 'lan0';
const BR = bridgeName(NET_B);
const LAN_MAC = '52:54:00:aa:bb:cc';
const ADDRS: HeldAddress[] = [{ cidr: '10.230.5.10/24', broadcast: '10.230.5.255' }, { cidr: '10.230.5.11/24' }, { cidr: 'fd5a:5::10/64' }];
const ROUTES: HeldRoute[] = [
  { to: '0.0.0.0/0', via: '10.230.5.1' },
  { to: '10.231.0.0/16', via: '10.230.5.2', metric: 50, proto: 'static' },
  { to: '10.232.0.0/16', via: '10.230.5.2', table: 100 },
  { to: '::/0', via: 'fd5a:5::1', metric: 1024 },
];

/** CreateNetwork as Docker sends it for `docker network create -d tsbridge -o … --subnet 10.230.5.0/24 --gateway 10.230.5.1`. */
function lan(generic: Record<string, string> = {}, over: { internal?: boolean; id?: string; v6?: boolean } = {}): NetworkSpec {
  return parseCreateNetwork({
    NetworkID: over.id ?? NET_B,
    Options: {
      'com.docker.network.enable_ipv6': !!over.v6,
      'com.docker.network.internal': !!over.internal,
      'com.docker.network.generic': { 'io.tsbridge.uplink': UPLINK, ...generic },
    },
    IPv4Data: [{ AddressSpace: 'local', Pool: '10.230.5.0/24', Gateway: '10.230.5.1/24' }],
    IPv6Data: over.v6 ? [{ AddressSpace: 'local', Pool: 'fd5a:5::/64', Gateway: 'fd5a:5::1/64' }] : [],
  });
}

const MOVE = { 'io.tsbridge.uplink_move_addresses': 'true' };

/** The LAN's NIC, bare (as a free uplink) or holding the host's LAN configuration. */
function addUplink(k: FakeKernel, held: boolean, mtu = 1500): void {
  k.addHostInterface(UPLINK, { mac: LAN_MAC, mtu, ...(held ? { addresses: ADDRS, routes: ROUTES } : {}) });
}

let w: World;
beforeEach(() => {
  w = makeWorld();
});
afterEach(() => {
  const { kernel, state } = firewallAgrees(w);
  expect(kernel).toEqual(state);
});

describe('options', () => {
  test('io.tsbridge.uplink selects the kind by itself; its settings', () => {
    expect(KINDS.select({ 'io.tsbridge.uplink': 'eth1' }).name).toBe('uplink');
    expect(lan()).toMatchObject({
      kind: 'uplink',
      settings: { uplink: UPLINK, moveAddresses: false, bridge: BR, bridgeNamedByUser: false, mtuFromUplink: true },
    });
    expect(lan({ ...MOVE, 'com.docker.network.bridge.name': 'br-lan', 'com.docker.network.driver.mtu': '1400' })).toMatchObject({
      mtu: 1400,
      settings: { moveAddresses: true, bridge: 'br-lan', bridgeNamedByUser: true, mtuFromUplink: false },
    });
  });

  test.each([
    ['no uplink', { 'io.tsbridge.mode': 'uplink', 'io.tsbridge.uplink': '' }, 'invalid option io.tsbridge.uplink=: a network of mode uplink needs the host interface it takes over: -o io.tsbridge.uplink=IFACE'],
    ['lo', { 'io.tsbridge.uplink': 'lo' }, 'invalid option io.tsbridge.uplink=lo: the loopback interface leads to no LAN'],
    ['a name of tsbridge', { 'io.tsbridge.uplink': 'tsb-0123456789a' }, "invalid option io.tsbridge.uplink=tsb-0123456789a: that name is one of tsbridge's own links (tsb-, tsv, tsc)"],
    ['a bad name', { 'io.tsbridge.uplink': 'eth1;reboot' }, 'invalid option io.tsbridge.uplink=eth1;reboot: an interface name is 1 to 15 letters, digits, "_" or "-"'],
    ['a bad boolean', { 'io.tsbridge.uplink_move_addresses': 'yes' }, 'invalid option io.tsbridge.uplink_move_addresses=yes: expected a boolean (true/false/1/0)'],
    ['the bridge named after the uplink', { 'com.docker.network.bridge.name': UPLINK }, 'invalid option com.docker.network.bridge.name=lan0: the bridge cannot be named after the uplink it takes over'],
    ['an option of the NAT bridge', { 'com.docker.network.bridge.enable_icc': 'false' }, 'invalid option com.docker.network.bridge.enable_icc=false: not an option of mode uplink'],
  ])('%s is refused', (_what, generic, message) => {
    expect(errorOf(() => lan(generic)).message).toBe(message);
  });

  test('an internal network with an uplink is refused', () => {
    expect(errorOf(() => lan({}, { internal: true })).message).toBe(
      'invalid option io.tsbridge.uplink=lan0: an internal network has no way out, and an uplink is one: drop --internal, or the uplink',
    );
  });

  test('mode uplink without the uplink option is refused', () => {
    const e = errorOf(() =>
      parseCreateNetwork({
        NetworkID: NET_B,
        Options: { 'com.docker.network.generic': { 'io.tsbridge.mode': 'uplink' } },
        IPv4Data: [{ Pool: '10.230.5.0/24', Gateway: '10.230.5.1/24' }],
      }),
    );
    expect(e.code).toBe('BAD_OPTION');
    expect(e.params.option).toBe('io.tsbridge.uplink');
  });

  test('tsbridge status shows the uplink and what differs from the defaults', () => {
    const spec = lan({ ...MOVE, 'com.docker.network.bridge.name': 'br-lan' });
    expect(uplinkKind.describe({ ...spec, phase: 'ready' })).toEqual({
      'io.tsbridge.uplink': UPLINK, 'io.tsbridge.uplink_move_addresses': true, 'com.docker.network.bridge.name': 'br-lan',
    });
    expect(uplinkKind.describe({ ...lan(), phase: 'ready' })).toEqual({ 'io.tsbridge.uplink': UPLINK });
  });

  test('uplinkLan says which subnets and interfaces an uplink network shares with the host; null for other kinds', () => {
    expect(uplinkLan(lan({}, { v6: true }))).toEqual({ subnets: ['10.230.5.0/24', 'fd5a:5::/64'], interfaces: [UPLINK, BR] });
    expect(uplinkLan(networkSpec())).toBeNull();
  });
});

describe('what is refused before anything is touched', () => {
  async function refused(spec: NetworkSpec, message: string | RegExp): Promise<void> {
    const before = w.kernel.snapshot();
    const e = await w.driver.createNetwork(spec).then(() => null, (x: Error) => x);
    expect(e?.message).toEqual(typeof message === 'string' ? message : expect.stringMatching(message));
    expect(w.kernel.snapshot()).toEqual(before);
    expect(w.db.state.networks).toEqual({});
    // nothing changed: only reads
    expect(w.kernel.calls.map((c) => c.method).filter((m) => !['list', 'inspect'].includes(m))).toEqual([]);
  }

  test('an interface that does not exist', async () => {
    await refused(lan(), 'invalid option io.tsbridge.uplink=lan0: there is no interface named lan0 on this host');
  });

  test('a bridge, a port of a bridge, a non-Ethernet interface, a link of tsbridge', async () => {
    w.kernel.addHostInterface(UPLINK, { kind: 'bridge' });
    await refused(lan(), /^invalid option io.tsbridge.uplink=lan0: it is a bridge, and a bridge cannot be a port of another bridge/);
    w.kernel.addHostInterface(UPLINK, { master: 'br0' });
    await refused(lan(), 'invalid option io.tsbridge.uplink=lan0: it is already a port of br0: take it out first (ip link set lan0 nomaster)');
    w.kernel.addHostInterface(UPLINK, { kind: 'wireguard', linkType: 'none' });
    await refused(lan(), 'invalid option io.tsbridge.uplink=lan0: it is not an Ethernet interface (link type none), and a bridge takes only Ethernet ports');
    w.kernel.nics.clear();
    // a link this instance made that no network names (a leftover)
    await w.kernel.links.ensureBridge({ name: 'mybr', mtu: 1500, addresses: [], mac: LAN_MAC });
    w.kernel.calls.length = 0;
    await refused(lan({ 'io.tsbridge.uplink': 'mybr' }), "invalid option io.tsbridge.uplink=mybr: it is one of tsbridge's own links");
    await w.kernel.links.deleteLinks(['mybr']);
  });

  test("another network's bridge", async () => {
    await w.driver.createNetwork(networkSpec({ id: NET_A, bridge: 'mybr' }));
    expect(await w.driver.createNetwork(lan({ 'io.tsbridge.uplink': 'mybr' })).catch((e: Error) => e.message)).toBe(`bridge name mybr is already used by network ${NET_A}`);
    expect(Object.keys(w.db.state.networks)).toEqual([NET_A]);
  });

  test('an interface holding addresses or routes, unless they may move; one holding what cannot move', async () => {
    addUplink(w.kernel, true);
    await refused(
      lan(),
      'invalid option io.tsbridge.uplink=lan0: it holds address 10.230.5.10/24, address 10.230.5.11/24, address fd5a:5::10/64, ' +
        'route default via 10.230.5.1, route 10.231.0.0/16 via 10.230.5.2 metric 50, route 10.232.0.0/16 via 10.230.5.2 table 100, route default via fd5a:5::1 metric 1024, ' +
        "which would stop working once it is a port of the network's bridge; give -o io.tsbridge.uplink_move_addresses=true to move them to the bridge while the network exists, or take them off lan0 first",
    );
    w.kernel.addHostInterface(UPLINK, { routes: [{ to: '10.240.0.0/16' }] });
    await refused(lan(), /it holds route 10.240.0.0\/16, which would stop working/);
    w.kernel.addHostInterface(UPLINK, { unmovable: ['10.240.0.0/16 nexthop via 10.230.5.2 nexthop via 10.230.5.3'] });
    await refused(lan(MOVE), 'invalid option io.tsbridge.uplink=lan0: it holds what tsbridge cannot move as it is: 10.240.0.0/16 nexthop via 10.230.5.2 nexthop via 10.230.5.3; take that off lan0 first');
  });

  test('an MTU larger than the uplink\'s', async () => {
    addUplink(w.kernel, false, 1400);
    await refused(lan({ 'com.docker.network.driver.mtu': '1500' }), 'invalid option com.docker.network.driver.mtu=1500: larger than the MTU of lan0 (1400): frames to and from the LAN would be lost');
  });

  test('an uplink another network took, and a bridge named after it', async () => {
    addUplink(w.kernel, false);
    await w.driver.createNetwork(lan());
    const other = 'cccc000000000000000000000000000000000000000000000000000000000003';
    expect(await w.driver.createNetwork(lan({}, { id: other })).catch((e: Error) => e.message)).toBe(`interface lan0 is already taken over by network ${NET_B}`);
    expect(await w.driver.createNetwork(networkSpec({ id: other, bridge: UPLINK, ipv4: [{ subnet: '10.20.0.0/24', gateway: '10.20.0.1/24' }] })).catch((e: Error) => e.message)).toBe(
      `interface lan0 is already taken over by network ${NET_B}`,
    );
    expect(Object.keys(w.db.state.networks)).toEqual([NET_B]);
  });
});

describe('a network on a bare uplink', () => {
  beforeEach(async () => {
    addUplink(w.kernel, false, 9000);
    await w.driver.createNetwork(lan());
  });

  test('a bridge with the uplink as its port, its MAC and MTU; no address; IPv6 off on it; no NAT, no routes', () => {
    const snap = w.kernel.snapshot();
    expect(snap.bridges).toEqual([{ name: BR, mtu: 9000, mac: LAN_MAC, addresses: [] }]);
    expect(snap.nics).toEqual([expect.objectContaining({ name: UPLINK, master: BR, up: true, mtu: 9000, addresses: [] })]);
    expect(snap.routes).toEqual([]);
    expect(snap.heldRoutes).toEqual([]);
    expect(snap.sysctls).toEqual({ 'net.ipv4.ip_forward': '1', 'net.ipv6.conf.all.forwarding': '1', [`net.ipv6.conf.${BR}.disable_ipv6`]: '1' });
    expect(snap.firewall).toMatchObject({ tables: true, bridges: [], ports: [] });
    const net = w.db.state.networks[NET_B]!;
    expect(net.adopted).toEqual({ mac: LAN_MAC, mtu: 9000, up: true, addresses: [], routes: [] });
  });

  test('the rules: no chain line, no shared element; the forward shim lets through what stays within the bridge', () => {
    const net = w.db.state.networks[NET_B]!;
    const rules = uplinkKind.rules(net);
    expect(rules).toEqual({ chains: {}, elements: [], sets: [], shim: [{ name: BR, internal: true }] });
    expect(forwardChainRules(rules.shim)).toEqual([`-A TSBRIDGE-FORWARD -i ${BR} -o ${BR} -j ACCEPT`]);
  });

  test('endpoints: a veth on the bridge with the uplink\'s MTU, anti-spoofing, the LAN router as gateway', async () => {
    await w.driver.createEndpoint(endpointSpec({ networkId: NET_B, ipv4: '10.230.5.100/24' }));
    const snap = w.kernel.snapshot();
    expect(snap.veths).toEqual([expect.objectContaining({ host: hostVethName(EP_1), bridge: BR, mtu: 9000 })]);
    expect(snap.firewall.guarded).toEqual([hostVethName(EP_1)]);
    expect(snap.firewall.noIcc).toEqual([]);
    expect(await w.driver.join(NET_B, EP_1)).toEqual({ srcName: expect.stringMatching(/^tsc/), dstPrefix: 'eth', gateway: '10.230.5.1', gatewayIpv6: '', staticRoutes: [] });
  });

  test('publishing a port is refused clearly; a container without ports is fine', async () => {
    await w.driver.createEndpoint(endpointSpec({ networkId: NET_B, ipv4: '10.230.5.100/24' }));
    expect(await w.driver.programExternalConnectivity(NET_B, EP_1, [])).toEqual([]);
    const e = await w.driver.programExternalConnectivity(NET_B, EP_1, [portReq(80, 8080)]).catch((x: Error & { code?: string }) => x);
    expect((e as { code: string }).code).toBe('NO_PUBLISHING');
    expect((e as Error).message).toBe(
      "network bbbb00000000 publishes no ports: its containers are on the LAN of lan0 and reached at their own addresses (as with Docker's macvlan and ipvlan): run the container without -p/-P and connect to its address",
    );
    expect(w.kernel.snapshot().firewall.ports).toEqual([]);
    expect(w.db.state.endpoints[EP_1]!.ports).toEqual([]);
  });

  test('removal gives the uplink back as it was and leaves nothing', async () => {
    await w.driver.createEndpoint(endpointSpec({ networkId: NET_B, ipv4: '10.230.5.100/24' }));
    await w.driver.deleteEndpoint(NET_B, EP_1);
    await w.driver.settle();
    await w.driver.deleteNetwork(NET_B);
    const fresh = new FakeKernel({ sysctls: { 'net.ipv4.ip_forward': '1', 'net.ipv6.conf.all.forwarding': '1' } });
    addUplink(fresh, false, 9000);
    expect(w.kernel.snapshot()).toEqual(fresh.snapshot());
  });

  test('a repeated CreateNetwork is idempotent (the record is not part of the spec)', async () => {
    const before = w.kernel.snapshot();
    await w.driver.createNetwork(lan());
    expect(w.kernel.snapshot()).toEqual(before);
  });

  test('a NAT network beside it keeps its own rules; the uplink network is in none of its sets', async () => {
    await w.driver.createNetwork(networkSpec({ id: NET_A }));
    await w.driver.createEndpoint(endpointSpec({ networkId: NET_A }));
    await w.driver.createEndpoint(endpointSpec({ networkId: NET_B, endpointId: EP_2, ipv4: '10.230.5.100/24' }));
    expect(w.kernel.snapshot().firewall).toMatchObject({ bridges: [bridgeName(NET_A)], guarded: [hostVethName(EP_1), hostVethName(EP_2)].sort() });
  });
});

describe('moving the addresses and routes of an uplink', () => {
  test('they move to the bridge (which takes the uplink\'s MAC), recorded in the state before the kernel changes', async () => {
    addUplink(w.kernel, true);
    let savedAtAdoption: Network | undefined;
    const adopt = w.kernel.links.adoptUplink;
    w.kernel.links.adoptUplink = async (spec: UplinkSpec) => {
      savedAtAdoption = structuredClone(w.store.saved?.networks[NET_B]);
      return adopt(spec);
    };
    await w.driver.createNetwork(lan(MOVE));
    expect(savedAtAdoption).toMatchObject({ phase: 'creating', adopted: { mac: LAN_MAC, mtu: 1500, up: true, addresses: ADDRS, routes: ROUTES } });
    const snap = w.kernel.snapshot();
    expect(snap.bridges).toEqual([{ name: BR, mtu: 1500, mac: LAN_MAC, addresses: ADDRS.map((a) => a.cidr).sort() }]);
    expect(snap.nics).toEqual([expect.objectContaining({ name: UPLINK, master: BR, addresses: [] })]);
    expect(snap.heldRoutes).toEqual(ROUTES.map((r) => `${describeRoute(r)} dev ${BR}`).sort());
    // IPv6 stays on for the bridge (it holds the host's IPv6 address), without router advertisements
    expect(snap.sysctls[`net.ipv6.conf.${BR}.accept_ra`]).toBe('0');
    expect(snap.sysctls[`net.ipv6.conf.${BR}.disable_ipv6`]).toBeUndefined();
  });

  test('removal moves them back: the host is as it was', async () => {
    addUplink(w.kernel, true);
    const before = w.kernel.snapshot();
    await w.driver.createNetwork(lan(MOVE));
    await w.driver.createEndpoint(endpointSpec({ networkId: NET_B, ipv4: '10.230.5.100/24' }));
    await w.driver.deleteNetwork(NET_B);
    expect(w.kernel.snapshot()).toEqual(before);
  });

  test.each(['ensureBridge', 'adoptUplink', 'apply'] as const)('a failure at %s (after half its work) gives everything back', async (method) => {
    addUplink(w.kernel, true);
    const before = w.kernel.snapshot();
    w.kernel.failNext(method, { partial: true });
    expect(await codeOf(w.driver.createNetwork(lan(MOVE)))).toBe('KERNEL');
    expect(w.kernel.snapshot()).toEqual(before);
    expect(w.db.state.networks).toEqual({});
    expect(w.store.saved?.networks).toEqual({});
  });

  test('a kernel without IPv6 settings: the bridge is made all the same (the IPv6 knob is optional)', async () => {
    addUplink(w.kernel, true);
    w.kernel.failNext('sysctl');
    await w.driver.createNetwork(lan(MOVE));
    expect(w.db.state.networks[NET_B]?.phase).toBe('ready');
    expect(w.kernel.snapshot().nics[0]!.master).toBe(BR);
  });

  test('when giving back fails too, the record stays (deleting, no rules) and the next start gives it back', async () => {
    addUplink(w.kernel, true);
    const before = w.kernel.snapshot();
    w.kernel.failNext('apply');
    w.kernel.failNext('releaseUplink');
    expect(await codeOf(w.driver.createNetwork(lan(MOVE)))).toBe('KERNEL');
    expect(w.store.saved?.networks[NET_B]).toMatchObject({ phase: 'deleting', adopted: { addresses: ADDRS } });
    expect(w.kernel.snapshot().nics[0]!.master).toBe(BR); // still taken
    // meanwhile nobody else takes it
    expect(await w.driver.createNetwork(lan({}, { id: 'cccc000000000000000000000000000000000000000000000000000000000003' })).catch((e: Error) => e.message)).toMatch(/interface lan0 is already taken over/);
    const db = new Db(w.store, await w.store.load());
    const report = await new Reconciler(db, w.kernel, silentLogger()).startup();
    expect(report.networksDropped).toBe(1);
    expect(w.kernel.snapshot()).toEqual(before);
    expect(db.state.networks).toEqual({});
    w.db.state.networks = {}; // the afterEach check reads w's state
  });

  test('a removal whose giving back fails puts the network back as it was; a repeated DeleteNetwork finishes it', async () => {
    addUplink(w.kernel, true);
    const before = w.kernel.snapshot();
    await w.driver.createNetwork(lan(MOVE));
    const made = w.kernel.snapshot();
    w.kernel.failNext('releaseUplink');
    expect(await codeOf(w.driver.deleteNetwork(NET_B))).toBe('KERNEL');
    expect(w.store.saved?.networks[NET_B]?.phase).toBe('ready');
    expect(w.kernel.snapshot()).toEqual(made);
    await w.driver.deleteNetwork(NET_B);
    expect(w.kernel.snapshot()).toEqual(before);
  });
});

describe('start-up', () => {
  async function restartOn(kernel: FakeKernel) {
    const db = new Db(w.store, await w.store.load());
    const report = await new Reconciler(db, kernel, silentLogger()).startup();
    return { db, report };
  }

  test('plugin restart with the kernel intact: nothing changes', async () => {
    addUplink(w.kernel, true);
    await w.driver.createNetwork(lan(MOVE));
    await w.driver.createEndpoint(endpointSpec({ networkId: NET_B, ipv4: '10.230.5.100/24' }));
    const before = w.kernel.snapshot();
    const { db } = await restartOn(w.kernel);
    expect(w.kernel.snapshot()).toEqual(before);
    expect(db.state).toEqual(w.db.state);
  });

  test('reboot: the bridge is rebuilt, the uplink (back as the host configures it at boot) taken over again, its addresses moved again', async () => {
    addUplink(w.kernel, true);
    await w.driver.createNetwork(lan(MOVE));
    const running = w.kernel.snapshot();
    const booted = new FakeKernel({ sysctls: { 'net.ipv4.ip_forward': '1', 'net.ipv6.conf.all.forwarding': '1' } });
    addUplink(booted, true);
    const { report } = await restartOn(booted);
    expect(report.networksRestored).toBe(1);
    expect(booted.snapshot()).toEqual(running);
  });

  test('reboot with the uplink left bare (bridge gone, nothing on the NIC): rebuilt from the record', async () => {
    addUplink(w.kernel, true);
    await w.driver.createNetwork(lan(MOVE));
    const running = w.kernel.snapshot();
    const booted = new FakeKernel({ sysctls: { 'net.ipv4.ip_forward': '1', 'net.ipv6.conf.all.forwarding': '1' } });
    addUplink(booted, false);
    await restartOn(booted);
    expect(booted.snapshot()).toEqual(running);
  });

  test('a crash in the middle of the move (state: creating, half moved) is undone', async () => {
    addUplink(w.kernel, true);
    const before = w.kernel.snapshot();
    const spec = lan(MOVE);
    const net: Network = { ...spec, phase: 'creating', adopted: { mac: LAN_MAC, mtu: 1500, up: true, addresses: ADDRS as never, routes: ROUTES as never } };
    await w.db.tx(async (s) => {
      s.networks[NET_B] = net;
      await w.db.save();
    });
    // half moved: the bridge holds the first address and the default route, the NIC is its port
    const plan = uplinkKind.network(net);
    await w.kernel.links.ensureBridge(plan.bridge!);
    await w.kernel.links.adoptUplink({ ...plan.uplinks![0]!, was: { up: true, mtu: 1500, addresses: ADDRS.slice(0, 1), routes: ROUTES.slice(0, 1) } });
    expect(w.kernel.snapshot()).not.toEqual(before);
    const { db, report } = await restartOn(w.kernel);
    expect(report.networksDropped).toBe(1);
    expect(w.kernel.snapshot()).toEqual(before);
    expect(db.state.networks).toEqual({});
    w.db.state.networks = {};
  });

  test('a ready network whose move a crash interrupted at start-up is finished', async () => {
    addUplink(w.kernel, true);
    await w.driver.createNetwork(lan(MOVE));
    const running = w.kernel.snapshot();
    // the bridge lost half of it (as if a start-up had been killed while moving it back)
    const net = w.db.state.networks[NET_B]!;
    await w.kernel.links.releaseUplink({ ...uplinkKind.network(net).uplinks![0]!, was: { up: true, mtu: 1500, addresses: ADDRS.slice(1), routes: ROUTES.slice(2) } });
    await restartOn(w.kernel);
    expect(w.kernel.snapshot()).toEqual(running);
  });

  test('an uplink that is gone does not keep the plugin (or other networks) down', async () => {
    addUplink(w.kernel, false);
    await w.driver.createNetwork(lan());
    await w.driver.createNetwork(networkSpec({ id: NET_A }));
    const booted = new FakeKernel({ sysctls: { 'net.ipv4.ip_forward': '1', 'net.ipv6.conf.all.forwarding': '1' } });
    const { report } = await restartOn(booted);
    expect(report.networksRestored).toBe(2);
    expect(booted.snapshot().bridges.map((b) => b.name).sort()).toEqual([bridgeName(NET_A), BR].sort());
  });

  test('a record of the wrong shape is a STATE error, before anything changes', async () => {
    addUplink(w.kernel, false);
    await w.driver.createNetwork(lan());
    w.store.saved!.networks[NET_B]!.adopted = { mac: LAN_MAC, addresses: 'all' };
    const kernel = new FakeKernel();
    expect(await codeOf(restartOn(kernel))).toBe('STATE');
    expect(kernel.snapshot()).toEqual(new FakeKernel().snapshot());
  });
});
