/**
 * Docker's routed gateway mode on the bridge kind (`com.docker.network.bridge.gateway_mode_ipv4`,
 * `_ipv6`): how the options parse and what they refuse, the rules a routed family renders, how
 * ports are allocated for it (no host port), and the driver over the strict fake kernel — after
 * every operation nftables holds exactly the state's full ruleset.
 */
import { hostSide } from '../../src/cli/ports.js';
import { allocatePorts, type PortContext } from '../../src/driver/ports.js';
import type { PortRequest } from '../../src/domain/types.js';
import { bridgeKind } from '../../src/kinds/bridge/index.js';
import { routedSet } from '../../src/kinds/bridge/rules.js';
import { parseCreateNetwork } from '../../src/protocol/network.js';
import { EP_1, EP_2, NET_A, endpointSpec, errorOf, firewallAgrees, makeWorld, networkSpec, portReq, type World } from '../fakes/world.js';

const MODE4 = 'com.docker.network.bridge.gateway_mode_ipv4';
const MODE6 = 'com.docker.network.bridge.gateway_mode_ipv6';
const ID = '7a11000000000000000000000000000000000000000000000000000000000001';

function create(generic: Record<string, string>, opts: { v6?: boolean; v4?: boolean } = {}) {
  return {
    NetworkID: ID,
    Options: {
      'com.docker.network.enable_ipv6': !!opts.v6,
      ...(opts.v4 === false ? { 'com.docker.network.enable_ipv4': false } : {}),
      'com.docker.network.generic': generic,
    },
    IPv4Data: [{ AddressSpace: 'local', Gateway: '10.99.0.1/24', Pool: '10.99.0.0/24' }],
    IPv6Data: opts.v6 ? [{ AddressSpace: 'local', Gateway: 'fd5e:99::1/64', Pool: 'fd5e:99::/64' }] : [],
  };
}

describe('options', () => {
  test('routed per family is stored; nat (the default) stores nothing, so it equals no option at all', () => {
    expect(parseCreateNetwork(create({ [MODE4]: 'routed' })).settings).toMatchObject({ gatewayModeIpv4: 'routed' });
    expect(parseCreateNetwork(create({ [MODE6]: 'routed' }, { v6: true })).settings).toMatchObject({ gatewayModeIpv6: 'routed' });
    expect(parseCreateNetwork(create({ [MODE4]: 'nat', [MODE6]: 'nat' }, { v6: true }))).toEqual(parseCreateNetwork(create({}, { v6: true })));
    expect(parseCreateNetwork(create({})).settings).not.toHaveProperty('gatewayModeIpv4');
  });

  test.each([
    [MODE4, 'nat-unprotected', /not supported: it opens every container port/],
    [MODE4, 'isolated', /not supported: an --internal tsbridge network already/],
    [MODE4, 'ROUTED', /the gateway modes are nat and routed/],
    [MODE6, 'nat-unprotected', /not supported/],
  ])('%s=%s is refused, saying why', (option, value, why) => {
    const e = errorOf(() => parseCreateNetwork(create({ [option]: value }, { v6: true })));
    expect(e.code).toBe('BAD_OPTION');
    expect(e.message).toMatch(new RegExp(`^invalid option ${option}=${value}: `));
    expect(e.message).toMatch(why);
  });

  test('routed for a family the network does not have is refused', () => {
    expect(errorOf(() => parseCreateNetwork(create({ [MODE6]: 'routed' }))).message).toBe(`invalid option ${MODE6}=routed: the network has no IPv6 (create it with --ipv6)`);
    expect(errorOf(() => parseCreateNetwork(create({ [MODE4]: 'routed' }, { v6: true, v4: false }))).message).toBe(`invalid option ${MODE4}=routed: the network has no IPv4`);
  });

  test('IPv4 NAT options beside routed IPv4 would do nothing: refused', () => {
    expect(errorOf(() => parseCreateNetwork(create({ [MODE4]: 'routed', 'com.docker.network.host_ipv4': '192.0.2.9' }))).message).toMatch(/no NAT in routed mode: com.docker.network.host_ipv4 would have no effect/);
    expect(errorOf(() => parseCreateNetwork(create({ [MODE4]: 'routed', 'com.docker.network.bridge.host_binding_ipv4': '127.0.0.1' }))).message).toMatch(/no host ports in routed mode/);
    // …but not beside routed IPv6 alone, where IPv4 is still NATed.
    expect(parseCreateNetwork(create({ [MODE6]: 'routed', 'com.docker.network.host_ipv4': '192.0.2.9' }, { v6: true })).settings).toMatchObject({ snatIpv4: '192.0.2.9', gatewayModeIpv6: 'routed' });
  });
});

const dual = () => networkSpec({ enableIpv6: true, ipv6: [{ subnet: 'fd5e:10::/64', gateway: 'fd5e:10::1/64' }], gatewayModeIpv4: 'routed', gatewayModeIpv6: 'routed' });

describe('rules', () => {
  test('a routed family: no masquerade, no hairpin; into the network replies, DNAT, ICMP and the published container ports', () => {
    const n = { ...dual(), phase: 'ready' as const };
    const r = bridgeKind.rules(n);
    const br = '"tsb-aaaa0000000"';
    expect(r.chains['inet postrouting']).toBeUndefined();
    expect(r.chains['inet forward']).toEqual([
      `oifname ${br} iifname != ${br} ct state established,related accept`,
      `oifname ${br} iifname != ${br} ct status dnat accept`,
      `oifname ${br} iifname != ${br} meta l4proto icmp accept`,
      `oifname ${br} iifname != ${br} ip daddr . meta l4proto . th dport @routed4_aaaa00000000 accept`,
      `oifname ${br} iifname != ${br} meta l4proto ipv6-icmp accept`,
      `oifname ${br} iifname != ${br} ip6 daddr . meta l4proto . th dport @routed6_aaaa00000000 accept`,
      `oifname ${br} iifname != ${br} drop`,
    ]);
    expect(r.sets).toEqual([
      { set: 'inet routed4_aaaa00000000', type: 'ipv4_addr . inet_proto . inet_service' },
      { set: 'inet routed6_aaaa00000000', type: 'ipv6_addr . inet_proto . inet_service' },
    ]);
    // No 127.0.0.1 path without host ports: route_localnet stays off.
    expect(bridgeKind.network(n).sysctls.map((s) => s.key)).toEqual(['net.ipv4.ip_forward', 'net.ipv6.conf.all.forwarding']);
  });

  test('IPv6 routed beside IPv4 nat: IPv4 masqueraded and hairpinned as ever, IPv6 not', () => {
    const n = { ...networkSpec({ enableIpv6: true, ipv6: [{ subnet: 'fd5e:10::/64', gateway: 'fd5e:10::1/64' }], gatewayModeIpv6: 'routed' }), phase: 'ready' as const };
    const r = bridgeKind.rules(n);
    expect(r.chains['inet postrouting']).toEqual([
      'oifname "tsb-aaaa0000000" ip saddr 10.10.0.0/24 ct status dnat masquerade',
      'ip saddr 10.10.0.0/24 oifname != "tsb-aaaa0000000" masquerade',
    ]);
    expect(r.chains['inet forward']!.join('\n')).not.toContain('routed4');
    expect(r.sets.map((s) => s.set)).toEqual(['inet routed6_aaaa00000000']);
    expect(bridgeKind.network(n).sysctls.map((s) => s.key)).toContain('net.ipv4.conf.tsb-aaaa0000000.route_localnet');
  });

  test('internal: routed changes nothing (nothing leaves an internal network, nothing is published)', () => {
    const routedInternal = { ...dual(), internal: true, phase: 'ready' as const };
    const plain = { ...networkSpec({ enableIpv6: true, ipv6: [{ subnet: 'fd5e:10::/64', gateway: 'fd5e:10::1/64' }], internal: true }), phase: 'ready' as const };
    expect(bridgeKind.rules(routedInternal)).toEqual(bridgeKind.rules(plain));
    expect(bridgeKind.publishing(routedInternal)).toBeNull();
  });
});

describe('allocatePorts in a routed family', () => {
  const req = (over: Partial<PortRequest> = {}): PortRequest => ({ proto: 'tcp', containerPort: 80, hostIp: '', hostPort: 8080, hostPortEnd: 0, ...over });
  const both = { v4: true, v6: true };
  const ctx = (over: Partial<PortContext> = {}): PortContext => ({ taken: [], listening: [], ephemeral: [49152, 49155], defaultHostIp: '', families: both, routed: both, ...over });

  test('no host port: the container port in each family the endpoint has, the host port given unused', () => {
    expect(allocatePorts([req()], ctx())).toEqual([
      { proto: 'tcp', hostIp: '0.0.0.0', hostPort: 0, containerPort: 80 },
      { proto: 'tcp', hostIp: '::', hostPort: 0, containerPort: 80 },
    ]);
    expect(allocatePorts([req({ hostIp: '::' })], ctx())).toEqual([{ proto: 'tcp', hostIp: '::', hostPort: 0, containerPort: 80 }]);
    expect(allocatePorts([req()], ctx({ families: { v4: true, v6: false } }))).toEqual([{ proto: 'tcp', hostIp: '0.0.0.0', hostPort: 0, containerPort: 80 }]);
  });

  test('a host port a process listens on, or another endpoint published, is no conflict: none is taken', () => {
    const listening = [{ proto: 'tcp' as const, ip: '', port: 8080 }];
    const taken = [{ mapping: { proto: 'tcp' as const, hostIp: '', hostPort: 8080, containerPort: 80 }, owner: 'endpoint x' }];
    expect(allocatePorts([req()], ctx({ listening, taken }))).toHaveLength(2);
  });

  test('the same container port twice (-p 8080:80 -p 8081:80) is one mapping per family', () => {
    expect(allocatePorts([req(), req({ hostPort: 8081 })], ctx())).toHaveLength(2);
  });

  test('a specific host address in a routed family is refused (Docker would open the port to everyone, ignoring it)', () => {
    const e = errorOf(() => allocatePorts([req({ hostIp: '127.0.0.1' })], ctx()));
    expect(e.code).toBe('BAD_ADDRESS');
    expect(e.message).toMatch(/^invalid address "127.0.0.1": the network publishes this family in routed mode/);
  });

  test('IPv6 routed, IPv4 nat: the request splits — the container port for IPv6, a host port for IPv4', () => {
    const routed = { v4: false, v6: true };
    expect(allocatePorts([req()], ctx({ routed }))).toEqual([
      { proto: 'tcp', hostIp: '::', hostPort: 0, containerPort: 80 },
      { proto: 'tcp', hostIp: '0.0.0.0', hostPort: 8080, containerPort: 80 },
    ]);
    expect(allocatePorts([req({ hostIp: '127.0.0.1' })], ctx({ routed }))).toEqual([{ proto: 'tcp', hostIp: '127.0.0.1', hostPort: 8080, containerPort: 80 }]);
    // An IPv6-only container: nothing to publish on an IPv4 host port.
    expect(allocatePorts([req()], ctx({ routed, families: { v4: false, v6: true } }))).toEqual([{ proto: 'tcp', hostIp: '::', hostPort: 0, containerPort: 80 }]);
  });
});

describe('through the driver', () => {
  let w: World;
  beforeEach(() => {
    w = makeWorld();
  });
  afterEach(() => {
    const { kernel, state } = firewallAgrees(w);
    expect(kernel).toEqual(state);
  });

  const ep = (over = {}) => endpointSpec({ ipv6: 'fd5e:10::2/64', ...over });

  test('publishing opens the container ports in the routed sets; revoking closes them; no DNAT map element', async () => {
    await w.driver.createNetwork(dual());
    await w.driver.createEndpoint(ep());
    const got = await w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(80, 8080), portReq(53, 5353, { proto: 'udp', hostIp: '0.0.0.0' })]);
    expect(got.every((m) => m.hostPort === 0)).toBe(true);
    const snap = w.kernel.snapshot();
    expect(snap.firewall.ports).toEqual([]);
    expect(snap.nft['inet tsbridge']!.sets.routed4_aaaa00000000!.elements).toEqual(['10.10.0.2 . tcp . 80', '10.10.0.2 . udp . 53']);
    expect(snap.nft['inet tsbridge']!.sets.routed6_aaaa00000000!.elements).toEqual(['fd5e:10::2 . tcp . 80']);
    await w.driver.revokeExternalConnectivity(NET_A, EP_1);
    expect(w.kernel.snapshot().nft['inet tsbridge']!.sets.routed4_aaaa00000000!.elements).toEqual([]);
  });

  test('two containers publish the same container port with the same host port: no conflict (each opens its own address)', async () => {
    await w.driver.createNetwork(dual());
    await w.driver.createEndpoint(ep());
    await w.driver.createEndpoint(ep({ endpointId: EP_2, ipv4: '10.10.0.3/24', ipv6: 'fd5e:10::3/64' }));
    await w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(80, 8080)]);
    await w.driver.programExternalConnectivity(NET_A, EP_2, [portReq(80, 8080)]);
    expect(w.kernel.snapshot().nft['inet tsbridge']!.sets.routed4_aaaa00000000!.elements).toEqual(['10.10.0.2 . tcp . 80', '10.10.0.3 . tcp . 80']);
    // Deleting one endpoint removes its elements only.
    await w.driver.deleteEndpoint(NET_A, EP_1);
    expect(w.kernel.snapshot().nft['inet tsbridge']!.sets.routed4_aaaa00000000!.elements).toEqual(['10.10.0.3 . tcp . 80']);
  });

  test('a failed publish leaves the routed sets as they were', async () => {
    await w.driver.createNetwork(dual());
    await w.driver.createEndpoint(ep());
    const before = w.kernel.snapshot();
    w.kernel.failNext('addPorts');
    await expect(w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(80, 8080)])).rejects.toThrow();
    expect(w.kernel.snapshot()).toEqual(before);
    expect(w.db.state.endpoints[EP_1]!.ports).toEqual([]);
  });

  test('the routed set is named by the network', () => {
    expect(routedSet({ ...dual(), phase: 'ready' }, 6)).toBe('inet routed6_aaaa00000000');
  });

  test('a network with routed IPv6 and one with nat stay apart; deleting the routed one removes its sets and rules', async () => {
    await w.driver.createNetwork(dual());
    await w.driver.createNetwork(networkSpec({ id: 'bbbb000000000000000000000000000000000000000000000000000000000002', bridge: 'tsb-bbbb0000000', ipv4: [{ subnet: '10.20.0.0/24', gateway: '10.20.0.1/24' }] }));
    await w.driver.deleteNetwork(NET_A);
    const sets = Object.keys(w.kernel.snapshot().nft['inet tsbridge']!.sets);
    expect(sets.filter((s) => s.startsWith('routed'))).toEqual([]);
  });
});

test('tsbridge ports shows a mapping without a host port as routed', () => {
  const row = { networkId: NET_A, bridge: 'tsb-aaaa0000000', endpointId: EP_1, proto: 'tcp' as const, hostIp: '::', hostPort: 0, family: 6 as const, containerIp: 'fd5e:10::2', containerPort: 80 };
  expect(hostSide(row)).toBe('(routed)');
  expect(hostSide({ ...row, hostIp: '', hostPort: 8080 })).toBe('[::]:8080');
});
