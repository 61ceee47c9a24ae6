/**
 * IPv6-only networks (Docker 28: `docker network create --ipv4=false --ipv6`): no IPv4 subnet, no
 * IPv4 gateway, endpoints without an IPv4 address, Join without an IPv4 gateway, rules without
 * IPv4 parts, ports published on IPv6 only. The requests are hand-written in the shapes the
 * protocol notes give for Docker 28 (test/fixtures/docker/28-ipv6-only.handwritten.json).
 */
import { readFileSync } from 'node:fs';
import { hostVethName } from '../../src/domain/names.js';
import { silentLogger } from '../../src/logging.js';
import { parseCreateEndpoint, parseCreateNetwork } from '../../src/protocol/network.js';
import { routes } from '../../src/server/app.js';
import { FakeKernel } from '../fakes/kernel.js';
import { codeOf, endpointSpec, errorOf, firewallAgrees, makeWorld, networkSpec, portReq, type World } from '../fakes/world.js';

interface Fixture {
  network: string;
  endpoint: string;
  calls: { call: string; request: Record<string, any> }[];
}

const FIXTURE = JSON.parse(readFileSync(new URL('../fixtures/docker/28-ipv6-only.handwritten.json', import.meta.url), 'utf8')) as Fixture;
const request = (call: string) => structuredClone(FIXTURE.calls.find((c) => c.call === call)!.request);
const NET = FIXTURE.network;
const EP = FIXTURE.endpoint;
const BRIDGE = `tsb-${NET.slice(0, 11)}`;

describe('CreateNetwork: com.docker.network.enable_ipv4', () => {
  const body = (options: Record<string, unknown>, v4 = true) => ({
    NetworkID: NET,
    Options: { 'com.docker.network.generic': {}, ...options },
    IPv4Data: v4 ? [{ AddressSpace: 'LocalDefault', Pool: '10.99.0.0/24', Gateway: '10.99.0.1/24' }] : [],
    IPv6Data: [{ AddressSpace: 'LocalDefault', Pool: 'fd00:db8:28::/64', Gateway: 'fd00:db8:28::1/64' }],
  });

  test('false (Docker 28, --ipv4=false --ipv6): a network without IPv4', () => {
    expect(parseCreateNetwork(request('/NetworkDriver.CreateNetwork'))).toMatchObject({
      id: NET,
      kind: 'bridge',
      ipv4: [],
      ipv6: [{ subnet: 'fd00:db8:28::/64', gateway: 'fd00:db8:28::1/64' }],
      enableIpv6: true,
    });
    expect(parseCreateNetwork({ ...request('/NetworkDriver.CreateNetwork'), IPv4Data: null }).ipv4).toEqual([]);
  });

  test("false with IPv4Data given anyway: ignored, as Docker's bridge ignores it — the network has no IPv4", () => {
    expect(parseCreateNetwork(body({ 'com.docker.network.enable_ipv4': false, 'com.docker.network.enable_ipv6': true })).ipv4).toEqual([]);
  });

  test('true (Docker 28) or absent (older engines): IPv4 as before, IPv4Data required', () => {
    const v4 = [{ subnet: '10.99.0.0/24', gateway: '10.99.0.1/24' }];
    expect(parseCreateNetwork(body({ 'com.docker.network.enable_ipv4': true, 'com.docker.network.enable_ipv6': false })).ipv4).toEqual(v4);
    expect(parseCreateNetwork(body({ 'com.docker.network.enable_ipv6': false })).ipv4).toEqual(v4);
    expect(errorOf(() => parseCreateNetwork(body({ 'com.docker.network.enable_ipv4': true, 'com.docker.network.enable_ipv6': true }, false))).message).toContain(
      'IPv4Data must hold at least one subnet',
    );
  });

  test('neither family, or IPv6-only without an IPv6 subnet, is BAD_REQUEST; a value that is not a boolean is BAD_OPTION', () => {
    expect(errorOf(() => parseCreateNetwork(body({ 'com.docker.network.enable_ipv4': false, 'com.docker.network.enable_ipv6': false }))).code).toBe('BAD_REQUEST');
    const noV6 = { ...request('/NetworkDriver.CreateNetwork'), IPv6Data: [] };
    expect(errorOf(() => parseCreateNetwork(noV6)).message).toContain('IPv6Data must hold at least one subnet on a network without IPv4');
    expect(errorOf(() => parseCreateNetwork(body({ 'com.docker.network.enable_ipv4': 'nope', 'com.docker.network.enable_ipv6': true }))).code).toBe('BAD_OPTION');
    expect(parseCreateNetwork(body({ 'com.docker.network.enable_ipv4': 'false', 'com.docker.network.enable_ipv6': 'true' })).ipv4).toEqual([]);
  });

  test('CreateEndpoint on it: no IPv4 address', () => {
    expect(parseCreateEndpoint(request('/NetworkDriver.CreateEndpoint'))).toEqual({ networkId: NET, endpointId: EP, ipv4: null, ipv6: 'fd00:db8:28::2/64', mac: null });
  });
});

describe("Docker 28's calls for an IPv6-only network and a container publishing a port, end to end over the fakes", () => {
  let w: World;
  beforeEach(() => {
    // A host where IPv4 forwarding is off: an IPv6-only network must not turn it on.
    w = makeWorld({ kernel: new FakeKernel({ sysctls: { 'net.ipv4.ip_forward': '0', 'net.ipv6.conf.all.forwarding': '0' } }) });
  });

  test('every call succeeds; nothing of IPv4 is made; nothing is left afterwards', async () => {
    const table = routes({ driver: w.driver, ipam: w.ipam, log: silentLogger() });
    const replies: Record<string, unknown> = {};
    for (const { call, request: body } of FIXTURE.calls) {
      replies[call] = await table.get(call)!.handler(structuredClone(body));
      const { kernel, state } = firewallAgrees(w);
      expect({ call, nft: kernel }).toEqual({ call, nft: state });

      if (call === '/NetworkDriver.CreateEndpoint') {
        const snap = w.kernel.snapshot();
        expect(snap.bridges.map((b) => [b.name, b.addresses])).toEqual([[BRIDGE, ['fd00:db8:28::1/64']]]);
        expect(snap.sysctls).toEqual({ 'net.ipv4.ip_forward': '0', 'net.ipv6.conf.all.forwarding': '1' });
        const sets = snap.nft['bridge tsbridge']!.sets;
        expect(sets.addr4!.elements).toEqual([]);
        expect(sets.addr6!.elements).toEqual([`"${hostVethName(EP)}" . fd00:db8:28::2`]);
        expect(sets.guarded!.elements).toEqual([`"${hostVethName(EP)}"`]);
        const inet = snap.nft['inet tsbridge']!.chains;
        expect(inet.postrouting!.rules.filter((r) => r.includes(BRIDGE))).toEqual([
          `oifname "${BRIDGE}" ip6 saddr fd00:db8:28::/64 ct status dnat masquerade`,
          `ip6 saddr fd00:db8:28::/64 oifname != "${BRIDGE}" masquerade`,
        ]);
      }
      if (call === '/NetworkDriver.ProgramExternalConnectivity') {
        expect(w.kernel.snapshot().firewall.ports).toEqual(['tcp [::]:8080 -> [fd00:db8:28::2]:80']);
      }
    }
    expect(replies['/IpamDriver.RequestAddress']).toEqual({ Address: 'fd00:db8:28::2/64', Data: {} });
    const join = replies['/NetworkDriver.Join'] as Record<string, unknown>;
    expect(join).not.toHaveProperty('Gateway');
    expect(join.GatewayIPv6).toBe('fd00:db8:28::1');

    await w.driver.settle();
    const snap = w.kernel.snapshot();
    expect({ bridges: snap.bridges, veths: snap.veths, nft: snap.nft }).toEqual({ bridges: [], veths: [], nft: {} });
    expect(w.db.state).toEqual({ networks: {}, endpoints: {}, pools: {}, ulaBase: null });
  });
});

describe('an IPv6-only network in the driver', () => {
  let w: World;
  const v6only = () => networkSpec({ ipv4: [], enableIpv6: true, ipv6: [{ subnet: 'fd00:db8:28::/64', gateway: 'fd00:db8:28::1/64' }] });
  const ep = () => endpointSpec({ ipv4: null, ipv6: 'fd00:db8:28::2/64' });
  beforeEach(async () => {
    w = makeWorld();
    await w.driver.createNetwork(v6only());
    await w.driver.createEndpoint(ep());
  });
  afterEach(() => {
    const { kernel, state } = firewallAgrees(w);
    expect(kernel).toEqual(state);
  });

  test('an IPv4 address for its endpoint is refused', async () => {
    expect(await codeOf(w.driver.createEndpoint(endpointSpec({ endpointId: '2'.repeat(64), ipv4: '10.10.0.3/24', ipv6: 'fd00:db8:28::3/64' })))).toBe('BAD_REQUEST');
  });

  test('no route_localnet on its bridge (an IPv4 matter), and no IPv4 rule for it', () => {
    const snap = w.kernel.snapshot();
    expect(Object.keys(snap.sysctls).filter((k) => k.includes('route_localnet'))).toEqual([]);
    const rules = Object.values(snap.nft['inet tsbridge']!.chains).flatMap((c) => c.rules);
    expect(rules.filter((r) => r.includes('tsb-aaaa') && / ip (saddr|daddr) /.test(` ${r} `))).toEqual([]);
  });

  test('ports: every address means every IPv6 address; :: too; an IPv4 host address is refused; 0.0.0.0 publishes nothing', async () => {
    await w.driver.programExternalConnectivity('aaaa000000000000000000000000000000000000000000000000000000000001', endpointSpec().endpointId, [
      portReq(80, 8080),
      portReq(81, 8081, { hostIp: '::' }),
      portReq(82, 8082, { hostIp: '0.0.0.0' }),
    ]);
    expect(w.kernel.snapshot().firewall.ports).toEqual(['tcp [::]:8080 -> [fd00:db8:28::2]:80', 'tcp [::]:8081 -> [fd00:db8:28::2]:81']);
    const refused = w.driver.programExternalConnectivity('aaaa000000000000000000000000000000000000000000000000000000000001', endpointSpec().endpointId, [portReq(80, 9090, { hostIp: '192.0.2.7' })]);
    expect(await codeOf(refused)).toBe('BAD_ADDRESS');
  });

  test('Join: the IPv6 gateway, no IPv4 one', async () => {
    const j = await w.driver.join('aaaa000000000000000000000000000000000000000000000000000000000001', endpointSpec().endpointId);
    expect({ gateway: j.gateway, gatewayIpv6: j.gatewayIpv6 }).toEqual({ gateway: '', gatewayIpv6: 'fd00:db8:28::1' });
  });
});
