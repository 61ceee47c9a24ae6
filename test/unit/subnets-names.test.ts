/**
 * Absurd subnets, addresses and bridge names (issue 11, "Hostile or absurd input"): each is
 * refused with a clear error before anything is saved or made, and what is refused is exactly
 * that — the neighbouring good values pass.
 */
import { hostVethName } from '../../src/domain/names.js';
import { parseRouteTable } from '../../src/kernel/real/host.js';
import { parseCreateNetwork } from '../../src/protocol/network.js';
import { FakeHost } from '../fakes/host.js';
import { codeOf, endpointSpec, errorOf, makeWorld, NET_A, NET_B, networkSpec, type World } from '../fakes/world.js';

const NET = 'b428f65ce838648217a3c236a05ad428b2174f664bf9170615a85731a589d16f';

function body(generic: Record<string, unknown> = {}, ipv4 = [{ Pool: '10.99.0.0/24', Gateway: '10.99.0.1/24' }], ipv6: unknown[] = []) {
  return {
    NetworkID: NET,
    Options: { 'com.docker.network.enable_ipv6': ipv6.length > 0, 'com.docker.network.generic': generic },
    IPv4Data: ipv4,
    IPv6Data: ipv6,
  };
}

function everything(w: World) {
  return { state: structuredClone(w.db.state), disk: structuredClone(w.store.saved), kernel: w.kernel.snapshot() };
}

describe('bridge names', () => {
  const option = 'com.docker.network.bridge.name';
  test.each([
    ['all', /reserved/],
    ['default', /reserved/],
    ['lo', /reserved \(the loopback interface\)/],
    ['-x', /must not start with "-"/],
    ['--help', /must not start with "-"/],
    ['tsb-mine', /starting with "tsb-" are those tsbridge gives its own links/],
    ['tsb-aaaa0000000', /starting with "tsb-"/],
    ['tsv1234', /starting with "tsv"/],
    ['tsv111100000000', /starting with "tsv"/],
    ['tsc111100000000', /starting with "tsc"/],
  ])('%s is refused', (name, why) => {
    const e = errorOf(() => parseCreateNetwork(body({ [option]: name })));
    expect(e.code).toBe('BAD_OPTION');
    expect(e.message).toContain(`${option}=${name}`);
    expect(e.message).toMatch(why);
  });

  test.each(['br-web', 'tsbt-mtubr', 'all0', 'lo1', 'x-', 'defaults', 'tsx0'])('%s is accepted', (name) => {
    expect(parseCreateNetwork(body({ [option]: name })).settings.bridge).toBe(name);
  });

  test('an existing interface of that name is refused and left alone', async () => {
    const w = makeWorld();
    w.kernel.addForeignLink('eth0');
    const before = everything(w);
    const e = await w.driver.createNetwork(networkSpec({ bridge: 'eth0', bridgeNamedByUser: true })).catch((x) => x);
    expect(e.code).toBe('BRIDGE_NAME_IN_USE');
    expect(e.message).toMatch(/eth0 .*another program/);
    expect(everything(w)).toEqual(before);
  });
});

describe('subnets and gateways of a network', () => {
  let w: World;
  beforeEach(() => {
    w = makeWorld();
  });

  async function refused(spec: ReturnType<typeof networkSpec>) {
    const before = everything(w);
    const e = await w.driver.createNetwork(spec).then(
      () => {
        throw new Error('expected a refusal');
      },
      (x) => x,
    );
    expect(everything(w)).toEqual(before);
    return e as { code: string; message: string };
  }

  test('a gateway outside its subnet', async () => {
    const e = await refused(networkSpec({ ipv4: [{ subnet: '10.10.0.0/24', gateway: '10.10.1.1/24' }] }));
    expect(e.code).toBe('BAD_ADDRESS');
    expect(e.message).toBe('invalid address "10.10.1.1": the gateway is outside subnet 10.10.0.0/24');
  });

  test('an IPv6 gateway outside its subnet', async () => {
    const e = await refused(networkSpec({ enableIpv6: true, ipv6: [{ subnet: 'fd10:1::/64', gateway: 'fd10:2::1/64' }] }));
    expect(e.code).toBe('BAD_ADDRESS');
    expect(e.message).toContain('outside subnet fd10:1::/64');
  });

  test('overlapping subnets within one network', async () => {
    const e = await refused(networkSpec({ ipv4: [{ subnet: '10.10.0.0/16', gateway: '10.10.0.1/16' }, { subnet: '10.10.5.0/24', gateway: '10.10.5.1/24' }] }));
    expect(e.code).toBe('POOL_OVERLAP');
    expect(e.message).toBe('subnet 10.10.5.0/24 overlaps 10.10.0.0/16, another subnet of the same network');
  });

  test('two subnets that do not overlap are fine', async () => {
    await w.driver.createNetwork(networkSpec({ ipv4: [{ subnet: '10.10.0.0/24', gateway: '10.10.0.1/24' }, { subnet: '10.10.1.0/24', gateway: '10.10.1.1/24' }] }));
    expect(w.kernel.snapshot().bridges[0]!.addresses).toEqual(['10.10.0.1/24', '10.10.1.1/24']);
  });

  test.each([
    ['0.0.0.0/0', '0.0.0.1/0', 4],
    ['::/0', '::1/0', 6],
  ])('a /0 (%s)', async (subnet, gateway, fam) => {
    const spec = fam === 4 ? networkSpec({ ipv4: [{ subnet, gateway }] }) : networkSpec({ enableIpv6: true, ipv6: [{ subnet, gateway }] });
    const e = await refused(spec);
    expect(e.code).toBe('BAD_CIDR');
    expect(e.message).toContain(`invalid subnet "${subnet}": a /0 would claim every address`);
  });

  describe('against the host', () => {
    const host = () =>
      new FakeHost({
        table: [
          { to: '0.0.0.0/0', via: '192.0.2.1', dev: 'eth0' },
          { to: '192.0.2.0/24', via: null, dev: 'eth0' },
          { to: '172.17.0.0/16', via: null, dev: 'docker0' },
          { to: '::/0', via: 'fd00::1', dev: 'eth0' },
          { to: 'fd00::/64', via: null, dev: 'eth0' },
        ],
        resolvers: ['10.255.255.53'],
      });
    beforeEach(() => {
      w = makeWorld({ host: host() });
    });

    test("a subnet holding the default route's next hop", async () => {
      const e = await refused(networkSpec({ ipv4: [{ subnet: '192.0.0.0/16', gateway: '192.0.0.1/16' }] }));
      expect(e.code).toBe('POOL_OVERLAP');
      expect(e.message).toBe("subnet 192.0.0.0/16 overlaps the next hop 192.0.2.1 of the host's default route (via eth0): the host would lose its way out");
    });

    test('the same for IPv6', async () => {
      const e = await refused(networkSpec({ enableIpv6: true, ipv6: [{ subnet: 'fd00::/16', gateway: 'fd00::2/16' }] }));
      expect(e.message).toContain("the next hop fd00::1 of the host's default route");
    });

    test("a subnet inside the host's uplink subnet", async () => {
      const e = await refused(networkSpec({ ipv4: [{ subnet: '192.0.2.128/25', gateway: '192.0.2.129/25' }] }));
      expect(e.code).toBe('POOL_OVERLAP');
      expect(e.message).toBe("subnet 192.0.2.128/25 overlaps 192.0.2.0/24, the subnet of the host's uplink eth0");
    });

    test("a subnet holding the host's nameserver", async () => {
      const e = await refused(networkSpec({ ipv4: [{ subnet: '10.255.255.0/24', gateway: '10.255.255.1/24' }] }));
      expect(e.code).toBe('POOL_OVERLAP');
      expect(e.message).toBe("subnet 10.255.255.0/24 overlaps the host's nameserver 10.255.255.53");
    });

    test("another interface's subnet (docker0) is not the uplink: allowed, as Docker's bridge allows it", async () => {
      await w.driver.createNetwork(networkSpec({ ipv4: [{ subnet: '172.17.5.0/24', gateway: '172.17.5.1/24' }] }));
      expect(Object.keys(w.db.state.networks)).toEqual([NET_A]);
    });

    test('a kind whose subnets are a host link\'s (sharesHostSubnet) skips these checks', async () => {
      const { makeRegistry } = await import('../../src/kinds/select.js');
      const { bridgeKind } = await import('../../src/kinds/bridge/index.js');
      const lan = { ...bridgeKind, name: 'lanlike', sharesHostSubnet: true };
      w = makeWorld({ host: host(), kinds: makeRegistry([bridgeKind, lan]) });
      const spec = { ...networkSpec({ ipv4: [{ subnet: '192.0.2.0/24', gateway: '192.0.2.1/24' }] }), kind: 'lanlike' };
      await w.driver.createNetwork(spec);
      expect(w.db.state.networks[NET_A]!.kind).toBe('lanlike');
    });

    test('routes through tsbridge\'s own bridges are not the host\'s: a second network beside the first is judged on the state', async () => {
      await w.driver.createNetwork(networkSpec());
      w.host.table.push({ to: '10.10.0.0/24', via: null, dev: 'tsb-aaaa0000000' }, { to: '0.0.0.0/0', via: '10.10.0.9', dev: 'tsb-aaaa0000000' });
      await w.driver.createNetwork(networkSpec({ id: NET_B, bridge: 'tsb-bbbb0000000', ipv4: [{ subnet: '10.20.0.0/24', gateway: '10.20.0.1/24' }] }));
      expect(Object.keys(w.db.state.networks).sort()).toEqual([NET_A, NET_B]);
    });
  });
});

describe('endpoint addresses', () => {
  let w: World;
  beforeEach(async () => {
    w = makeWorld();
    await w.driver.createNetwork(networkSpec({ enableIpv6: true, ipv6: [{ subnet: 'fd10:1::/64', gateway: 'fd10:1::1/64' }] }));
  });

  test.each([
    ['10.10.1.2/24', null, 'invalid address "10.10.1.2": it is in no subnet of the network (10.10.0.0/24)'],
    ['10.10.0.2/16', null, 'invalid address "10.10.0.2/16": its prefix length /16 is not that of subnet 10.10.0.0/24'],
    ['10.10.0.2/24', 'fd10:2::2/64', 'invalid address "fd10:2::2": it is in no subnet of the network (fd10:1::/64)'],
  ])('%s / %s is refused', async (ipv4, ipv6, message) => {
    const before = everything(w);
    const e = await w.driver.createEndpoint(endpointSpec({ ipv4, ipv6 })).catch((x) => x);
    expect(e.code).toBe('BAD_ADDRESS');
    expect(e.message).toBe(message);
    expect(everything(w)).toEqual(before);
    expect(w.kernel.snapshot().veths.map((v) => v.host)).not.toContain(hostVethName(endpointSpec().endpointId));
  });

  test('addresses inside the subnets are fine', async () => {
    await w.driver.createEndpoint(endpointSpec({ ipv4: '10.10.0.2/24', ipv6: 'fd10:1::2/64' }));
    expect(Object.keys(w.db.state.endpoints)).toHaveLength(1);
  });
});

describe("the host's routing table as /proc shows it", () => {
  test('default routes with next hop and device, connected subnets, IPv6 too; reject routes and lo left out', () => {
    const r4 = [
      'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT',
      'eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0',
      'eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0',
      'eth0\t0000000A\t00000000\t0201\t0\t0\t0\t000000FF\t0\t0\t0',
    ].join('\n');
    const r6 = [
      'fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000003 00000000 00000001     eth0',
      '00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000001 00000000 00000003     eth0',
      '00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo',
    ].join('\n');
    expect(parseRouteTable(r4, r6)).toEqual([
      { to: '0.0.0.0/0', via: '192.0.2.1', dev: 'eth0' },
      { to: '192.0.2.0/24', via: null, dev: 'eth0' },
      { to: 'fd00::/64', via: null, dev: 'eth0' },
      { to: '::/0', via: 'fd00::1', dev: 'eth0' },
    ]);
  });
});
