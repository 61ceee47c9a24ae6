/**
 * DriverService over a strict FakeKernel and an in-memory store: what each
 * use case leaves in the kernel and the state, and that a failure at any step
 * leaves nothing half-made.
 */
import { TsbridgeError } from '../../src/errors.js';
import { hostVethName, macFromId, peerVethName } from '../../src/domain/names.js';
import type { KernelMethod } from '../fakes/kernel.js';
import { emptyState } from '../../src/state/types.js';
import { FakeHost } from '../fakes/host.js';
import { codeOf, EP_1, EP_2, EP_3, NET_A, NET_B, endpointSpec, firewallAgrees, makeWorld, networkSpec, portReq, type World } from '../fakes/world.js';

/** Everything a failed operation must leave as it found: kernel, in-memory state, saved state. */
function everything(w: World) {
  return { kernel: w.kernel.snapshot(), state: structuredClone(w.db.state), saved: structuredClone(w.store.saved ?? emptyState()) };
}

let w: World;
beforeEach(() => {
  w = makeWorld();
});

// Whatever a test did — failures and rollbacks included — nftables holds exactly the state's
// full ruleset: no element or map entry dropped, none left over.
afterEach(() => {
  const { kernel, state } = firewallAgrees(w);
  expect(kernel).toEqual(state);
});

describe('createNetwork', () => {
  test('makes the bridge with the gateway address and the MTU, and saves the network as ready', async () => {
    await w.driver.createNetwork(networkSpec({ mtu: 1400 }));
    const snap = w.kernel.snapshot();
    expect(snap.bridges).toEqual([{ name: 'tsb-aaaa0000000', mtu: 1400, mac: macFromId(NET_A, 'bridge'), addresses: ['10.10.0.1/24'] }]);
    expect(snap.firewall.bridges).toEqual(['tsb-aaaa0000000']);
    expect(snap.sysctls['net.ipv4.conf.tsb-aaaa0000000.route_localnet']).toBe('1');
    expect(w.db.state.networks[NET_A]?.phase).toBe('ready');
    expect(w.store.saved?.networks[NET_A]?.phase).toBe('ready');
  });

  test('puts the IPv6 gateway on the bridge only when IPv6 is enabled', async () => {
    const v6 = [{ subnet: 'fd00:10::/64', gateway: 'fd00:10::1/64' }];
    await w.driver.createNetwork(networkSpec({ enableIpv6: true, ipv6: v6 }));
    await w.driver.createNetwork(networkSpec({ id: NET_B, bridge: 'tsb-bbbb0000000', ipv4: [{ subnet: '10.20.0.0/24', gateway: '10.20.0.1/24' }], ipv6: [{ subnet: 'fd00:20::/64', gateway: 'fd00:20::1/64' }] }));
    const [a, b] = w.kernel.snapshot().bridges;
    expect(a!.addresses).toEqual(['10.10.0.1/24', 'fd00:10::1/64']);
    expect(b!.addresses).toEqual(['10.20.0.1/24']);
  });

  test('inhibit_ipv4 keeps the IPv4 gateway off the bridge', async () => {
    await w.driver.createNetwork(networkSpec({ inhibitIpv4: true }));
    expect(w.kernel.snapshot().bridges[0]!.addresses).toEqual([]);
  });

  test('a repeated identical request succeeds, and restores a bridge that went missing', async () => {
    await w.driver.createNetwork(networkSpec());
    const first = w.kernel.snapshot();
    await w.driver.createNetwork(networkSpec());
    expect(w.kernel.snapshot()).toEqual(first);
    await w.kernel.links.deleteLinks(['tsb-aaaa0000000']);
    await w.driver.createNetwork(networkSpec());
    expect(w.kernel.snapshot()).toEqual(first);
  });

  test('the same ID with different settings is NETWORK_EXISTS and changes nothing', async () => {
    await w.driver.createNetwork(networkSpec());
    const before = everything(w);
    expect(await codeOf(w.driver.createNetwork(networkSpec({ mtu: 9000 })))).toBe('NETWORK_EXISTS');
    expect(await codeOf(w.driver.createNetwork(networkSpec({ icc: false })))).toBe('NETWORK_EXISTS');
    expect(everything(w)).toEqual(before);
  });

  test('a bridge name used by another network is refused', async () => {
    await w.driver.createNetwork(networkSpec({ bridge: 'mybr0', bridgeNamedByUser: true }));
    const before = everything(w);
    const other = networkSpec({ id: NET_B, bridge: 'mybr0', bridgeNamedByUser: true, ipv4: [{ subnet: '10.20.0.0/24', gateway: '10.20.0.1/24' }] });
    expect(await codeOf(w.driver.createNetwork(other))).toBe('BRIDGE_NAME_IN_USE');
    expect(everything(w)).toEqual(before);
  });

  test('a bridge name held by an interface tsbridge did not make is refused and that interface is left alone', async () => {
    w.kernel.addForeignLink('mybr0', 'bridge');
    const before = everything(w);
    expect(await codeOf(w.driver.createNetwork(networkSpec({ bridge: 'mybr0', bridgeNamedByUser: true })))).toBe('BRIDGE_NAME_IN_USE');
    expect(everything(w)).toEqual(before);
  });

  test('a subnet overlapping another network is refused', async () => {
    await w.driver.createNetwork(networkSpec());
    const before = everything(w);
    const overlapping = networkSpec({ id: NET_B, bridge: 'tsb-bbbb0000000', ipv4: [{ subnet: '10.10.0.128/25', gateway: '10.10.0.129/25' }] });
    expect(await codeOf(w.driver.createNetwork(overlapping))).toBe('POOL_OVERLAP');
    expect(everything(w)).toEqual(before);
  });

  describe('a failure at any step leaves no bridge, no state entry, and propagates', () => {
    const kernelSteps: KernelMethod[] = ['list', 'ensureBridge', 'sysctl', 'apply'];

    test.each(kernelSteps)('%s fails', async (method) => {
      const before = everything(w);
      w.kernel.failNext(method);
      expect(await codeOf(w.driver.createNetwork(networkSpec()))).toBe('KERNEL');
      expect(everything(w)).toEqual(before);
      expect(w.kernel.pendingFailures()).toEqual([]);
    });

    test.each(['ensureBridge', 'apply'] as KernelMethod[])('%s fails after doing part of its work', async (method) => {
      const before = everything(w);
      w.kernel.failNext(method, { partial: true });
      expect(await codeOf(w.driver.createNetwork(networkSpec()))).toBe('KERNEL');
      expect(everything(w).kernel).toEqual(before.kernel);
      expect(w.db.state.networks).toEqual({});
      expect(w.store.saved?.networks ?? {}).toEqual({});
    });

    test.each([
      ['the first save (phase creating)', 0],
      ['the second save (phase ready)', 1],
    ])('%s fails', async (_what, after) => {
      const before = everything(w);
      w.store.failSave(after);
      expect(await codeOf(w.driver.createNetwork(networkSpec()))).toBe('STATE');
      expect(w.kernel.snapshot()).toEqual(before.kernel);
      expect(w.db.state).toEqual(before.state);
      expect(w.store.saved?.networks ?? {}).toEqual({});
    });

    test('with another network present, that network and its rules stay as they were', async () => {
      await w.driver.createNetwork(networkSpec());
      const before = everything(w);
      w.kernel.failNext('apply');
      const b = networkSpec({ id: NET_B, bridge: 'tsb-bbbb0000000', ipv4: [{ subnet: '10.20.0.0/24', gateway: '10.20.0.1/24' }] });
      expect(await codeOf(w.driver.createNetwork(b))).toBe('KERNEL');
      expect(everything(w)).toEqual(before);
    });

    test('the error thrown is the one the failing step raised', async () => {
      const boom = new TsbridgeError('KERNEL', { op: 'ip link add', detail: 'boom' });
      w.kernel.failNext('ensureBridge', { error: boom });
      await expect(w.driver.createNetwork(networkSpec())).rejects.toBe(boom);
    });
  });
});

describe('deleteNetwork', () => {
  test('removes the bridge, the endpoints and their veths, the rules and the state entry', async () => {
    await w.driver.createNetwork(networkSpec());
    await w.driver.createEndpoint(endpointSpec());
    await w.driver.deleteNetwork(NET_A);
    const snap = w.kernel.snapshot();
    expect(snap.bridges).toEqual([]);
    expect(snap.veths).toEqual([]);
    expect(snap.firewall).toEqual({ tables: false, bridges: [], ports: [], noIcc: [], guarded: [] });
    expect(snap.nft).toEqual({});
    expect(Object.keys(snap.sysctls).filter((k) => k.includes('tsb-'))).toEqual([]);
    expect(w.db.state.networks).toEqual({});
    expect(w.db.state.endpoints).toEqual({});
    expect(w.store.saved).toEqual(w.db.state);
  });

  test('is idempotent and tolerates unknown IDs', async () => {
    await w.driver.createNetwork(networkSpec());
    await w.driver.deleteNetwork(NET_A);
    const after = everything(w);
    await w.driver.deleteNetwork(NET_A);
    await w.driver.deleteNetwork(NET_B);
    expect(everything(w)).toEqual(after);
  });

  test('leaves other networks alone', async () => {
    await w.driver.createNetwork(networkSpec());
    await w.driver.createNetwork(networkSpec({ id: NET_B, bridge: 'tsb-bbbb0000000', ipv4: [{ subnet: '10.20.0.0/24', gateway: '10.20.0.1/24' }] }));
    await w.driver.createEndpoint(endpointSpec({ networkId: NET_B, ipv4: '10.20.0.2/24' }));
    await w.driver.deleteNetwork(NET_A);
    const snap = w.kernel.snapshot();
    expect(snap.bridges.map((b) => b.name)).toEqual(['tsb-bbbb0000000']);
    expect(snap.veths.map((v) => v.host)).toEqual([hostVethName(EP_1)]);
    expect(snap.firewall.bridges).toEqual(['tsb-bbbb0000000']);
  });
});

describe('createEndpoint', () => {
  beforeEach(async () => {
    await w.driver.createNetwork(networkSpec({ mtu: 1450 }));
  });

  test('makes a veth pair on the bridge with the network MTU, and returns a MAC derived from the ID when Docker gave none', async () => {
    const { mac } = await w.driver.createEndpoint(endpointSpec());
    expect(mac).toBe(macFromId(EP_1));
    expect(mac).toMatch(/^02(:[0-9a-f]{2}){5}$/);
    expect(w.kernel.snapshot().veths).toEqual([{ host: hostVethName(EP_1), peer: peerVethName(EP_1), bridge: 'tsb-aaaa0000000', mtu: 1450, mac, hostAddresses: [] }]);
    expect(w.db.state.endpoints[EP_1]).toMatchObject({ phase: 'ready', ipv4: '10.10.0.2/24', mac, joined: false, ports: [] });
    expect(w.store.saved?.endpoints[EP_1]?.phase).toBe('ready');
  });

  test("keeps Docker's MAC when it gave one", async () => {
    const { mac } = await w.driver.createEndpoint(endpointSpec({ mac: '02:42:0a:0a:00:02' }));
    expect(mac).toBe('02:42:0a:0a:00:02');
    expect(w.kernel.snapshot().veths[0]!.mac).toBe('02:42:0a:0a:00:02');
  });

  test('a repeat is idempotent; the same ID with other settings is ENDPOINT_EXISTS', async () => {
    await w.driver.createEndpoint(endpointSpec());
    const before = everything(w);
    expect(await w.driver.createEndpoint(endpointSpec())).toEqual({ mac: macFromId(EP_1) });
    expect(everything(w)).toEqual(before);
    expect(await codeOf(w.driver.createEndpoint(endpointSpec({ ipv4: '10.10.0.9/24' })))).toBe('ENDPOINT_EXISTS');
    expect(everything(w)).toEqual(before);
  });

  test('on an unknown network is UNKNOWN_NETWORK', async () => {
    expect(await codeOf(w.driver.createEndpoint(endpointSpec({ networkId: NET_B })))).toBe('UNKNOWN_NETWORK');
  });

  test.each([
    ['ensureVeth fails', { method: 'ensureVeth', partial: false }],
    ['ensureVeth fails after making the pair', { method: 'ensureVeth', partial: true }],
  ] as const)('%s: nothing is left and the error propagates', async (_t, f) => {
    const before = everything(w);
    w.kernel.failNext(f.method, { partial: f.partial });
    expect(await codeOf(w.driver.createEndpoint(endpointSpec()))).toBe('KERNEL');
    expect(everything(w)).toEqual(before);
  });

  test('adding the ICC rule fails: the veth pair is removed too', async () => {
    await w.driver.createNetwork(networkSpec({ id: NET_B, bridge: 'tsb-bbbb0000000', icc: false, ipv4: [{ subnet: '10.20.0.0/24', gateway: '10.20.0.1/24' }] }));
    const before = everything(w);
    w.kernel.failNext('addEndpoint', { partial: true });
    expect(await codeOf(w.driver.createEndpoint(endpointSpec({ networkId: NET_B, ipv4: '10.20.0.2/24' })))).toBe('KERNEL');
    expect(everything(w)).toEqual(before);
  });

  test('the save fails: nothing is left', async () => {
    const before = everything(w);
    w.store.failSave();
    expect(await codeOf(w.driver.createEndpoint(endpointSpec()))).toBe('STATE');
    expect(w.kernel.snapshot()).toEqual(before.kernel);
    expect(w.db.state).toEqual(before.state);
    expect(w.store.saved).toEqual(before.saved);
  });

  test('a missing bridge is a kernel error, not a veth dangling nowhere', async () => {
    await w.kernel.links.deleteLinks(['tsb-aaaa0000000']);
    expect(await codeOf(w.driver.createEndpoint(endpointSpec()))).toBe('KERNEL');
    expect(w.kernel.snapshot().veths).toEqual([]);
    expect(w.db.state.endpoints).toEqual({});
  });
});

describe('deleteEndpoint', () => {
  beforeEach(async () => {
    await w.driver.createNetwork(networkSpec({ icc: false }));
    await w.driver.createEndpoint(endpointSpec());
    await w.driver.createEndpoint(endpointSpec({ endpointId: EP_2, ipv4: '10.10.0.3/24' }));
  });

  test('removes exactly that veth pair, its ICC entry and its record', async () => {
    await w.driver.deleteEndpoint(NET_A, EP_1);
    await w.driver.settle(); // the veth goes in the background
    const snap = w.kernel.snapshot();
    expect(snap.veths.map((v) => v.host)).toEqual([hostVethName(EP_2)]);
    expect(snap.firewall.noIcc).toEqual([hostVethName(EP_2)]);
    expect(Object.keys(w.db.state.endpoints)).toEqual([EP_2]);
    expect(w.store.saved).toEqual(w.db.state);
  });

  test('is idempotent and tolerates unknown IDs and a mismatched network', async () => {
    await w.driver.deleteEndpoint(NET_A, EP_1);
    await w.driver.settle();
    const after = everything(w);
    await w.driver.deleteEndpoint(NET_A, EP_1);
    await w.driver.deleteEndpoint(NET_A, EP_3);
    await w.driver.deleteEndpoint(NET_B, EP_2); // EP_2 lives on NET_A
    await w.driver.settle();
    expect(everything(w)).toEqual(after);
  });

  test('works when the container already took the veth away', async () => {
    w.kernel.removeVethBehindOurBack(hostVethName(EP_1));
    await w.driver.deleteEndpoint(NET_A, EP_1);
    await w.driver.settle();
    expect(w.db.state.endpoints[EP_1]).toBeUndefined();
    expect(w.kernel.snapshot().veths.map((v) => v.host)).toEqual([hostVethName(EP_2)]);
  });
});

describe('join and leave', () => {
  const v6net = () =>
    networkSpec({ id: NET_B, bridge: 'tsb-bbbb0000000', enableIpv6: true, ifacePrefix: 'net', ipv4: [{ subnet: '10.20.0.0/24', gateway: '10.20.0.1/24' }], ipv6: [{ subnet: 'fd00:20::/64', gateway: 'fd00:20::1/64' }] });

  test('returns the peer veth and the gateway without mask, no IPv6 gateway on an IPv4 network', async () => {
    await w.driver.createNetwork(networkSpec());
    await w.driver.createEndpoint(endpointSpec());
    expect(await w.driver.join(NET_A, EP_1)).toEqual({ srcName: peerVethName(EP_1), dstPrefix: 'eth', gateway: '10.10.0.1', gatewayIpv6: '', staticRoutes: [] });
    expect(w.db.state.endpoints[EP_1]!.joined).toBe(true);
    expect(w.store.saved?.endpoints[EP_1]?.joined).toBe(true);
  });

  test('GatewayIPv6 only when the network has IPv6 and the endpoint an IPv6 address; DstPrefix from container_iface_prefix', async () => {
    await w.driver.createNetwork(v6net());
    await w.driver.createEndpoint(endpointSpec({ networkId: NET_B, ipv4: '10.20.0.2/24', ipv6: 'fd00:20::2/64' }));
    await w.driver.createEndpoint(endpointSpec({ networkId: NET_B, endpointId: EP_2, ipv4: '10.20.0.3/24' }));
    expect(await w.driver.join(NET_B, EP_1)).toEqual({ srcName: peerVethName(EP_1), dstPrefix: 'net', gateway: '10.20.0.1', gatewayIpv6: 'fd00:20::1', staticRoutes: [] });
    expect((await w.driver.join(NET_B, EP_2)).gatewayIpv6).toBe('');
  });

  test('no gateway at all on an internal network', async () => {
    await w.driver.createNetwork(networkSpec({ internal: true }));
    await w.driver.createEndpoint(endpointSpec());
    const j = await w.driver.join(NET_A, EP_1);
    expect(j.gateway).toBe('');
    expect(j.gatewayIpv6).toBe('');
  });

  test('inhibit_ipv4 keeps the gateway off the bridge, not out of Join (a router on the segment holds it, as with Docker)', async () => {
    await w.driver.createNetwork(networkSpec({ inhibitIpv4: true }));
    await w.driver.createEndpoint(endpointSpec());
    expect((await w.driver.join(NET_A, EP_1)).gateway).toBe('10.10.0.1');
  });

  test('join of an unknown endpoint is UNKNOWN_ENDPOINT, of an unknown network UNKNOWN_NETWORK', async () => {
    await w.driver.createNetwork(networkSpec());
    expect(await codeOf(w.driver.join(NET_A, EP_3))).toBe('UNKNOWN_ENDPOINT');
    expect(await codeOf(w.driver.join(NET_B, EP_3))).toBe('UNKNOWN_NETWORK');
  });

  test('leave clears joined, is idempotent and tolerates unknown IDs', async () => {
    await w.driver.createNetwork(networkSpec());
    await w.driver.createEndpoint(endpointSpec());
    await w.driver.join(NET_A, EP_1);
    await w.driver.leave(NET_A, EP_1);
    expect(w.db.state.endpoints[EP_1]!.joined).toBe(false);
    expect(w.store.saved?.endpoints[EP_1]?.joined).toBe(false);
    const after = everything(w);
    await w.driver.leave(NET_A, EP_1);
    await w.driver.leave(NET_A, EP_3);
    await w.driver.leave(NET_B, EP_1);
    expect(everything(w)).toEqual(after);
  });
});

describe('published ports', () => {
  beforeEach(async () => {
    w = makeWorld({ host: new FakeHost({ ephemeral: [49152, 49155], listeners: [{ proto: 'tcp', ip: '', port: 49152 }] }) });
    await w.driver.createNetwork(networkSpec());
    await w.driver.createEndpoint(endpointSpec());
    await w.driver.createEndpoint(endpointSpec({ endpointId: EP_2, ipv4: '10.10.0.3/24' }));
  });

  const ports = () => w.kernel.snapshot().firewall.ports;

  test('programs the requested ports and saves them', async () => {
    const m = await w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(80, 8080), portReq(53, 5353, { proto: 'udp', hostIp: '127.0.0.1' })]);
    expect(m).toEqual([
      { proto: 'tcp', hostIp: '', hostPort: 8080, containerPort: 80 },
      { proto: 'udp', hostIp: '127.0.0.1', hostPort: 5353, containerPort: 53 },
    ]);
    expect(ports()).toEqual(['tcp 0.0.0.0:8080 -> 10.10.0.2:80', 'udp 127.0.0.1:5353 -> 10.10.0.2:53']);
    expect(w.db.state.endpoints[EP_1]!.ports).toEqual(m);
    expect(w.store.saved?.endpoints[EP_1]?.ports).toEqual(m);
    expect(w.kernel.conntrackFlushes).toEqual([{ proto: 'udp', hostPort: 5353 }]);
  });

  test('HostPort 0 picks a free port from the ephemeral range, skipping a host listener and ports already published', async () => {
    const [a] = await w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(80, 0)]);
    const [b] = await w.driver.programExternalConnectivity(NET_A, EP_2, [portReq(80, 0)]);
    expect(a!.hostPort).toBe(49153);
    expect(b!.hostPort).toBe(49154);
  });

  test('HostPort 0 with the whole ephemeral range taken is NO_FREE_PORT', async () => {
    w.host.ephemeral = [49152, 49153];
    w.host.listeners.push({ proto: 'tcp', ip: '0.0.0.0', port: 49153 });
    expect(await codeOf(w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(80, 0)]))).toBe('NO_FREE_PORT');
  });

  test('a port published by another endpoint is PORT_IN_USE and nothing changes', async () => {
    await w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(80, 8080)]);
    const before = everything(w);
    expect(await codeOf(w.driver.programExternalConnectivity(NET_A, EP_2, [portReq(81, 8081), portReq(80, 8080)]))).toBe('PORT_IN_USE');
    expect(everything(w)).toEqual(before);
  });

  test('a port a host process listens on is PORT_IN_USE and nothing changes', async () => {
    w.host.listeners.push({ proto: 'tcp', ip: '0.0.0.0', port: 22 });
    const before = everything(w);
    expect(await codeOf(w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(22, 22)]))).toBe('PORT_IN_USE');
    expect(everything(w)).toEqual(before);
  });

  test.each([
    ['127.0.0.1', '', true],
    ['', '127.0.0.1', true],
    ['127.0.0.1', '0.0.0.0', true],
    ['127.0.0.1', '127.0.0.1', true],
    ['127.0.0.1', '127.0.0.2', false],
    ['127.0.0.1', '::', false],
    ['::', '', true],
    ['::', '0.0.0.0', false],
  ])('published on %j, then requested on %j: conflict=%s', async (first, second, conflict) => {
    await w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(80, 8080, { hostIp: first })]);
    const again = w.driver.programExternalConnectivity(NET_A, EP_2, [portReq(80, 8080, { hostIp: second })]);
    if (conflict) expect(await codeOf(again)).toBe('PORT_IN_USE');
    else expect((await again)[0]!.hostPort).toBe(8080);
  });

  test('the same port number of another protocol is no conflict', async () => {
    await w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(53, 53)]);
    await expect(w.driver.programExternalConnectivity(NET_A, EP_2, [portReq(53, 53, { proto: 'udp' })])).resolves.toHaveLength(1);
  });

  test('host_binding_ipv4 is the address of ports requested without one', async () => {
    await w.driver.createNetwork(networkSpec({ id: NET_B, bridge: 'tsb-bbbb0000000', hostBindingIpv4: '192.0.2.7', ipv4: [{ subnet: '10.20.0.0/24', gateway: '10.20.0.1/24' }] }));
    await w.driver.createEndpoint(endpointSpec({ networkId: NET_B, endpointId: EP_3, ipv4: '10.20.0.2/24' }));
    const [m] = await w.driver.programExternalConnectivity(NET_B, EP_3, [portReq(80, 8080)]);
    expect(m!.hostIp).toBe('192.0.2.7');
  });

  test('an internal network publishes nothing', async () => {
    await w.driver.createNetwork(networkSpec({ id: NET_B, bridge: 'tsb-bbbb0000000', internal: true, ipv4: [{ subnet: '10.20.0.0/24', gateway: '10.20.0.1/24' }] }));
    await w.driver.createEndpoint(endpointSpec({ networkId: NET_B, endpointId: EP_3, ipv4: '10.20.0.2/24' }));
    expect(await w.driver.programExternalConnectivity(NET_B, EP_3, [portReq(80, 8080)])).toEqual([]);
    expect(ports()).toEqual([]);
  });

  test('the firewall failing to add leaves no port published and none saved', async () => {
    const before = everything(w);
    w.kernel.failNext('addPorts', { partial: true });
    expect(await codeOf(w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(80, 8080)]))).toBe('KERNEL');
    expect(everything(w)).toEqual(before);
  });

  test('a failed re-program leaves the kernel and the state agreeing on what is published', async () => {
    await w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(80, 8080)]);
    w.kernel.failNext('addPorts');
    expect(await codeOf(w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(81, 8081)]))).toBe('KERNEL');
    expect(w.db.state.endpoints[EP_1]!.ports).toEqual([{ proto: 'tcp', hostIp: '', hostPort: 8080, containerPort: 80 }]);
    expect(ports()).toEqual(['tcp 0.0.0.0:8080 -> 10.10.0.2:80']);
    const { kernel, state } = firewallAgrees(w);
    expect(kernel).toEqual(state);
    expect(w.store.saved?.endpoints[EP_1]?.ports).toEqual(w.db.state.endpoints[EP_1]!.ports);
  });

  test('revoke removes exactly that endpoint’s ports, and is idempotent', async () => {
    await w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(80, 8080), portReq(53, 5353, { proto: 'udp' })]);
    await w.driver.programExternalConnectivity(NET_A, EP_2, [portReq(80, 9090)]);
    await w.driver.revokeExternalConnectivity(NET_A, EP_1);
    expect(ports()).toEqual(['tcp 0.0.0.0:9090 -> 10.10.0.3:80']);
    expect(w.db.state.endpoints[EP_1]!.ports).toEqual([]);
    expect(w.db.state.endpoints[EP_2]!.ports).toHaveLength(1);
    expect(w.store.saved).toEqual(w.db.state);
    expect(w.kernel.conntrackFlushes).toContainEqual({ proto: 'udp', hostPort: 5353 });
    const after = everything(w);
    await w.driver.revokeExternalConnectivity(NET_A, EP_1);
    await w.driver.revokeExternalConnectivity(NET_A, EP_3);
    expect(everything(w)).toEqual(after);
  });

  test('a revoked port can be published by another endpoint', async () => {
    await w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(80, 8080)]);
    await w.driver.revokeExternalConnectivity(NET_A, EP_1);
    await w.driver.programExternalConnectivity(NET_A, EP_2, [portReq(80, 8080)]);
    expect(ports()).toEqual(['tcp 0.0.0.0:8080 -> 10.10.0.3:80']);
  });

  test('deleting an endpoint unpublishes its ports', async () => {
    await w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(80, 8080)]);
    await w.driver.deleteEndpoint(NET_A, EP_1);
    await w.driver.settle();
    expect(ports()).toEqual([]);
    expect(w.kernel.snapshot().veths.map((v) => v.host)).toEqual([hostVethName(EP_2)]);
  });
});

test("a container's lifecycle: two durable saves (CreateEndpoint's, ReleaseAddress's), each syncing the lazy ones before it; a network's addresses are durable at once", async () => {
  const w = makeWorld();
  const { poolId } = await w.ipam.requestPool({ pool: '10.10.0.0/24', subPool: '', v6: false, overlay: '' });
  await w.ipam.requestAddress(poolId, '10.10.0.1', 'gateway');
  await w.ipam.requestAddress(poolId, '10.10.0.200', 'aux');
  expect(w.store.lazy.slice(-3)).toEqual([false, false, false]); // the pool, the gateway, the auxiliary address
  await w.driver.createNetwork(networkSpec());
  const from = w.store.lazy.length;
  const calls: string[] = [];
  const step = async (name: string, fn: () => Promise<unknown>) => {
    const before = w.store.lazy.length;
    await fn();
    for (const lazy of w.store.lazy.slice(before)) calls.push(`${name}${lazy ? ' (synced later)' : ''}`);
  };
  let addr = '';
  await step('RequestAddress', async () => (addr = await w.ipam.requestAddress(poolId, '', 'endpoint')));
  await step('CreateEndpoint', () => w.driver.createEndpoint(endpointSpec({ ipv4: addr })));
  await step('Join', () => w.driver.join(NET_A, EP_1));
  await step('ProgramExternalConnectivity', () => w.driver.programExternalConnectivity(NET_A, EP_1, []));
  await step('RevokeExternalConnectivity', () => w.driver.revokeExternalConnectivity(NET_A, EP_1));
  await step('Leave', () => w.driver.leave(NET_A, EP_1));
  await step('DeleteEndpoint', () => w.driver.deleteEndpoint(NET_A, EP_1));
  await step('ReleaseAddress', () => w.ipam.releaseAddress(poolId, addr.split('/')[0]!));
  expect(w.store.lazy.length - from).toBe(6);
  // RequestAddress's is synced by CreateEndpoint's; Join's, Leave's and DeleteEndpoint's by
  // ReleaseAddress's: what a machine crash could lose in between, start-up rebuilds from the
  // kernel, or Docker gives back at its next start.
  expect(calls).toEqual(['RequestAddress (synced later)', 'CreateEndpoint', 'Join (synced later)', 'Leave (synced later)', 'DeleteEndpoint (synced later)', 'ReleaseAddress']);
});
