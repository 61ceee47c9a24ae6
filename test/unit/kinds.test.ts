/**
 * The seam every kind of network goes through: how options select a kind, how the protocol edge
 * hands a kind its own options, and that a kind wired quite unlike the NAT bridge (no bridge;
 * a /32 gateway on each host veth, routes, per-interface sysctls, a set of its own, lifecycle
 * hooks — test/fakes/kinds.ts) runs through the same driver, reconciler and firewall.
 */
import { Reconciler } from '../../src/driver/reconcile.js';
import { hostVethName, peerVethName } from '../../src/domain/names.js';
import { bridgeKind } from '../../src/kinds/bridge/index.js';
import { KINDS } from '../../src/kinds/registry.js';
import { makeRegistry } from '../../src/kinds/select.js';
import { silentLogger } from '../../src/logging.js';
import { parseCreateNetwork } from '../../src/protocol/network.js';
import { routes } from '../../src/server/app.js';
import { Db } from '../../src/state/db.js';
import { FakeKernel } from '../fakes/kernel.js';
import { POINT_PEER, POINT_PROXY, pointKind, testKinds, type LifecycleLog } from '../fakes/kinds.js';
import {
  EP_1, EP_2, NET_B, codeOf, endpointSpec, errorOf, firewallAgrees, makeWorld, networkSpec, portReq, rulesOf, type World,
} from '../fakes/world.js';
import type { NetworkSpec } from '../../src/domain/types.js';

const NET = 'b428f65ce838648217a3c236a05ad428b2174f664bf9170615a85731a589d16f';

function createNetwork(generic: Record<string, unknown> = {}) {
  return {
    NetworkID: NET,
    Options: { 'com.docker.network.enable_ipv6': false, 'com.docker.network.generic': generic },
    IPv4Data: [{ AddressSpace: 'local', Gateway: '10.99.0.1/24', Pool: '10.99.0.0/24' }],
    IPv6Data: [],
  };
}

describe('the registry', () => {
  const kinds = testKinds();

  test('no mode: the first kind (the NAT bridge); a mode names its kind', () => {
    expect(kinds.select({}).name).toBe('bridge');
    expect(kinds.select({ 'io.tsbridge.mode': 'point' }).name).toBe('point');
    expect(kinds.select({ 'io.tsbridge.mode': 'bridge', [POINT_PEER]: 'x' }).name).toBe('bridge');
    expect(KINDS.select({}).name).toBe('bridge');
    expect(KINDS.fallback).toBe(bridgeKind);
  });

  test('a kind claims options that ask for it without a mode', () => {
    expect(kinds.select({ [POINT_PEER]: 'x' }).name).toBe('point');
  });

  test('options two kinds claim must name a mode', () => {
    const both = makeRegistry([bridgeKind, pointKind(), { ...pointKind(), name: 'point2' }]);
    expect(errorOf(() => both.select({ [POINT_PEER]: 'x' })).message).toBe(
      'invalid option io.tsbridge.mode=: these options fit modes point and point2: name one',
    );
  });

  test('an unknown mode is BAD_OPTION listing the modes; a stored network of an unknown kind is a STATE error', () => {
    expect(errorOf(() => kinds.select({ 'io.tsbridge.mode': 'overlay' })).message).toBe('invalid option io.tsbridge.mode=overlay: the modes are bridge, point');
    const e = errorOf(() => kinds.get('overlay'));
    expect(e.code).toBe('STATE');
    expect(e.message).toContain('a network of kind "overlay"');
  });

  test('no kinds, or two of one name, is a programming error', () => {
    expect(() => makeRegistry([])).toThrow();
    expect(() => makeRegistry([bridgeKind, bridgeKind])).toThrow(/two kinds of network named "bridge"/);
  });
});

describe('the protocol edge hands each kind its own options', () => {
  const kinds = testKinds();

  test("the kind's settings come from its options; common options are the same for every kind", () => {
    const spec = parseCreateNetwork(createNetwork({ 'io.tsbridge.mode': 'point', [POINT_PROXY]: 'false', 'com.docker.network.driver.mtu': '1400' }), kinds);
    expect(spec).toMatchObject({ kind: 'point', mtu: 1400, settings: { proxyArp: false, peer: '' } });
    expect(parseCreateNetwork(createNetwork({ [POINT_PEER]: 'p' }), kinds)).toMatchObject({ kind: 'point', settings: { proxyArp: true, peer: 'p' } });
  });

  test("an option of another kind is BAD_OPTION naming the network's mode, before the kind sees anything", () => {
    expect(errorOf(() => parseCreateNetwork(createNetwork({ 'io.tsbridge.mode': 'point', 'com.docker.network.bridge.enable_icc': 'false' }), kinds)).message).toBe(
      'invalid option com.docker.network.bridge.enable_icc=false: not an option of mode point',
    );
    expect(errorOf(() => parseCreateNetwork(createNetwork({ [POINT_PROXY]: 'true' }), kinds)).message).toBe(
      `invalid option ${POINT_PROXY}=true: not an option of mode bridge`,
    );
  });

  test("the kind validates its own values; an option no kind knows is still UNSUPPORTED_OPTION", () => {
    expect(errorOf(() => parseCreateNetwork(createNetwork({ 'io.tsbridge.mode': 'point', [POINT_PROXY]: 'maybe' }), kinds)).code).toBe('BAD_OPTION');
    expect(errorOf(() => parseCreateNetwork(createNetwork({ 'io.tsbridge.nope': '1' }), kinds)).code).toBe('UNSUPPORTED_OPTION');
  });
});

/** A network of the point kind, 10.30.0.0/24, gateway .1. */
function pointSpec(over: Partial<NetworkSpec> = {}): NetworkSpec {
  return {
    id: NET_B,
    kind: 'point',
    ipv4: [{ subnet: '10.30.0.0/24', gateway: '10.30.0.1/24' }],
    ipv6: [],
    enableIpv6: false,
    internal: false,
    mtu: 1500,
    ifacePrefix: 'eth',
    settings: { proxyArp: true, peer: '' },
    ...over,
  };
}

describe('a point-to-point kind through the driver, the reconciler and the firewall', () => {
  let log: LifecycleLog;
  let w: World;
  beforeEach(() => {
    log = { calls: [], refuse: null, failStart: null };
    w = makeWorld({ kinds: testKinds(log) });
  });
  afterEach(() => {
    const { kernel, state } = firewallAgrees(w);
    expect(kernel).toEqual(state);
  });

  const ep1 = () => endpointSpec({ networkId: NET_B, ipv4: '10.30.0.2/24' });

  test('a network: no bridge, forwarding on, its own set, its work started', async () => {
    await w.driver.createNetwork(pointSpec());
    const snap = w.kernel.snapshot();
    expect(snap.bridges).toEqual([]);
    expect(snap.sysctls['net.ipv4.ip_forward']).toBe('1');
    expect(snap.nft['inet tsbridge']!.sets.point_bbbb0000).toEqual({ kind: 'set', type: 'type ifname', elements: [] });
    expect(snap.nft['inet tsbridge']!.chains.forward!.rules).toEqual(['oifname @point_bbbb0000 ct state established,related accept']);
    expect(snap.firewall.bridges).toEqual([]);
    expect(log.calls).toEqual(['beforeCreate bbbb', 'start bbbb']);
    expect(w.db.state.networks[NET_B]?.phase).toBe('ready');
  });

  test('an endpoint: a veth without a master, the gateway /32 on its host end, a /32 route to the container, proxy ARP, its element', async () => {
    await w.driver.createNetwork(pointSpec());
    const { mac } = await w.driver.createEndpoint(ep1());
    const snap = w.kernel.snapshot();
    expect(snap.veths).toEqual([{ host: hostVethName(EP_1), peer: peerVethName(EP_1), bridge: null, mtu: 1500, mac, hostAddresses: ['10.30.0.1/32'] }]);
    expect(snap.routes).toEqual([`10.30.0.2/32 ${hostVethName(EP_1)}`]);
    expect(snap.sysctls[`net.ipv4.conf.${hostVethName(EP_1)}.proxy_arp`]).toBe('1');
    expect(snap.nft['inet tsbridge']!.sets.point_bbbb0000!.elements).toEqual([`"${hostVethName(EP_1)}"`]);
    expect(snap.firewall.guarded).toEqual([]); // no bridge: not in the bridge table's guard
  });

  test('Join answers what the kind says, static routes included, and the protocol edge passes them to Docker', async () => {
    await w.driver.createNetwork(pointSpec());
    await w.driver.createEndpoint(ep1());
    const join = routes({ driver: w.driver, ipam: w.ipam, log: silentLogger() }).get('/NetworkDriver.Join')!.handler;
    expect(await join({ NetworkID: NET_B, EndpointID: EP_1 })).toEqual({
      InterfaceName: { SrcName: peerVethName(EP_1), DstPrefix: 'eth' },
      Gateway: '10.30.0.1',
      StaticRoutes: [{ Destination: '10.30.0.1/32', RouteType: 1, NextHop: '' }],
      DisableGatewayService: false,
    });
  });

  test('ports publish through the shared maps', async () => {
    await w.driver.createNetwork(pointSpec());
    await w.driver.createEndpoint(ep1());
    await w.driver.programExternalConnectivity(NET_B, EP_1, [portReq(80, 8080)]);
    expect(w.kernel.snapshot().firewall.ports).toEqual(['tcp 0.0.0.0:8080 -> 10.30.0.2:80']);
    await w.driver.revokeExternalConnectivity(NET_B, EP_1);
    expect(w.kernel.snapshot().firewall.ports).toEqual([]);
  });

  test('beside a NAT bridge network, each keeps its own; deleting one leaves the other', async () => {
    await w.driver.createNetwork(networkSpec());
    await w.driver.createNetwork(pointSpec());
    await w.driver.createEndpoint(endpointSpec());
    await w.driver.createEndpoint(endpointSpec({ networkId: NET_B, endpointId: EP_2, ipv4: '10.30.0.2/24' }));
    let snap = w.kernel.snapshot();
    expect(snap.firewall.bridges).toEqual(['tsb-aaaa0000000']);
    expect(snap.firewall.guarded).toEqual([hostVethName(EP_1)]);
    await w.driver.deleteNetwork(NET_B);
    snap = w.kernel.snapshot();
    expect(snap.veths.map((v) => v.host)).toEqual([hostVethName(EP_1)]);
    expect(snap.routes).toEqual([]);
    expect(snap.nft['inet tsbridge']!.sets.point_bbbb0000).toBeUndefined();
    expect(log.calls).toEqual(['beforeCreate bbbb', 'start bbbb', 'stop bbbb', 'afterDelete bbbb']);
  });

  test('a host check refusing the network leaves nothing: no state, no kernel change, no work started', async () => {
    log.refuse = new Error('uplink eth9 holds an address');
    const before = w.kernel.snapshot();
    await expect(w.driver.createNetwork(pointSpec())).rejects.toBe(log.refuse);
    expect(w.kernel.snapshot()).toEqual(before);
    expect(w.db.state.networks).toEqual({});
    expect(w.store.saved?.networks ?? {}).toEqual({});
    expect(log.calls).toEqual(['beforeCreate bbbb']);
  });

  test('its work failing to start undoes the network', async () => {
    log.failStart = new Error('etcd unreachable');
    const before = w.kernel.snapshot();
    await expect(w.driver.createNetwork(pointSpec())).rejects.toBe(log.failStart);
    expect(w.kernel.snapshot()).toEqual(before);
    expect(w.db.state.networks).toEqual({});
    expect(w.store.saved?.networks ?? {}).toEqual({});
  });

  test('a retried create re-makes what went missing and starts nothing twice', async () => {
    await w.driver.createNetwork(pointSpec());
    await w.driver.createNetwork(pointSpec());
    expect(log.calls).toEqual(['beforeCreate bbbb', 'start bbbb']);
  });

  test('after a reboot the reconciler brings it back the same way: unjoined veth, its address, route and sysctl; its work started', async () => {
    await w.driver.createNetwork(pointSpec());
    await w.driver.createEndpoint(ep1());
    const made = w.kernel.snapshot();
    await w.driver.shutdown();
    expect(log.calls.at(-1)).toBe('stop bbbb');

    const kernel = new FakeKernel({ sysctls: { 'net.ipv4.ip_forward': '1', 'net.ipv6.conf.all.forwarding': '1' } });
    const db = new Db(w.store, await w.store.load());
    const r = new Reconciler(db, kernel, silentLogger(), { kinds: w.runtime.kinds, lifecycles: w.runtime.lifecycles, ctx: w.runtime.ctx });
    const report = await r.startup();
    expect(report).toMatchObject({ networksRestored: 1, vethsRecreated: 1, endpointsDropped: 0, staleLinksRemoved: [] });
    const back = kernel.snapshot();
    expect({ veths: back.veths, routes: back.routes, sysctls: back.sysctls, nft: back.nft }).toEqual({
      veths: made.veths, routes: made.routes, sysctls: made.sysctls, nft: made.nft,
    });
    expect(back.nft).toEqual(rulesOf(db.state, w.runtime.kinds));
    expect(log.calls.at(-1)).toBe('start bbbb');
  });

  test('a plugin restart with the kernel intact changes nothing', async () => {
    await w.driver.createNetwork(pointSpec());
    await w.driver.createEndpoint(ep1());
    await w.driver.join(NET_B, EP_1);
    const before = w.kernel.snapshot();
    const db = new Db(w.store, await w.store.load());
    const report = await new Reconciler(db, w.kernel, silentLogger(), w.runtime).startup();
    expect(report).toMatchObject({ endpointsDropped: 0, vethsRecreated: 0, staleLinksRemoved: [] });
    expect(w.kernel.snapshot()).toEqual(before);
  });

  test('a failure at any kernel step of an endpoint leaves nothing of it', async () => {
    await w.driver.createNetwork(pointSpec());
    for (const method of ['ensureVeth', 'ensureRoutes', 'sysctl', 'addEndpoint'] as const) {
      const before = w.kernel.snapshot();
      w.kernel.failNext(method, { partial: true });
      expect(await codeOf(w.driver.createEndpoint(ep1()))).toBe('KERNEL');
      expect({ method, snap: w.kernel.snapshot() }).toEqual({ method, snap: before });
      expect(w.db.state.endpoints).toEqual({});
    }
  });
});

/** Options a kind cannot do without (its defaults are otherwise taken). */
const REQUIRED: Record<string, Record<string, string>> = {
  uplink: { 'io.tsbridge.uplink': 'eth9' },
};

test('every kind registered for real parses the defaults and produces rules nft accepts', () => {
  // What a kind cannot do without (an overlay's name).
  const needs: Record<string, Record<string, string>> = { overlay: { 'io.tsbridge.overlay': 'blue' } };
  for (const kind of KINDS.all) {
    const spec = parseCreateNetwork(createNetwork({ 'io.tsbridge.mode': kind.name, ...REQUIRED[kind.name], ...needs[kind.name] }));
    expect(spec.kind).toBe(kind.name);
    const w = makeWorld();
    w.db.state.networks[spec.id] = { ...spec, phase: 'ready' };
    expect(() => rulesOf(w.db.state)).not.toThrow();
  }
});

test('the point kind is not registered for real', () => {
  expect(KINDS.all.map((k) => k.name)).not.toContain('point');
  expect(KINDS.fallback.name).toBe('bridge');
});
