/**
 * The protocol edge: Docker's wire requests (recorded from Docker 20.10 where
 * possible) to validated domain values, and every refusal by its code.
 */
import { isTsbridgeError, type ErrorCode } from '../../src/errors.js';
import { readFileSync } from 'node:fs';
import { COMMON_OPTIONS, TSBRIDGE_OPTION_PREFIX, networkOptions, parseCreateEndpoint, parseCreateNetwork, parsePortBindings } from '../../src/protocol/network.js';
import { DOCKER_APPLIED_OPTIONS, REFUSED_OPTIONS } from '../../src/protocol/docker-options.js';
import { recordedOf, RECORDED_28_FILE } from '../fakes/recorded.js';
import { errorOf } from '../fakes/world.js';
import { KINDS } from '../../src/kinds/registry.js';

const NET = 'b428f65ce838648217a3c236a05ad428b2174f664bf9170615a85731a589d16f';
const EP = '7c2c3b27dce186ccd9b01b8aae898c7ee6153d21c40bae5a277588297e82da70';

/** A CreateNetwork body as Docker 20.10 sends it, with these `-o` options. */
function createNetwork(generic: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) {
  return {
    NetworkID: NET,
    Options: { 'com.docker.network.enable_ipv6': false, 'com.docker.network.generic': generic, ...extra },
    IPv4Data: [{ AddressSpace: 'local', Gateway: '10.99.0.1/24', Pool: '10.99.0.0/24' }],
    IPv6Data: [],
  };
}

describe('parseCreateNetwork', () => {
  const recorded = recordedOf('/NetworkDriver.CreateNetwork');

  test('the recordings hold the three CreateNetwork requests these tests rely on', () => {
    expect(recorded.length).toBeGreaterThanOrEqual(3);
  });

  test.each(recorded.map((r) => [r.line, r] as const))('recorded request on line %i parses', (_line, r) => {
    const spec = parseCreateNetwork(r.request);
    expect(spec.id).toBe(r.request!.NetworkID);
    expect(spec.ipv4.map((s) => s.subnet)).toEqual(r.request!.IPv4Data.map((d: { Pool: string }) => d.Pool));
    expect(spec.kind).toBe('bridge');
    expect(spec.settings.bridge).toBe(`tsb-${spec.id.slice(0, 11)}`);
    expect(spec.settings.bridgeNamedByUser).toBe(false);
  });

  test('the recorded rec1: MTU 1400, icc off, gateway with prefix length', () => {
    const r = recorded.find((x) => x.request!.NetworkID.startsWith('b428'))!;
    expect(parseCreateNetwork(r.request)).toEqual({
      id: NET,
      kind: 'bridge',
      mtu: 1400,
      internal: false,
      ifacePrefix: 'eth',
      enableIpv6: false,
      ipv4: [{ subnet: '10.99.0.0/24', gateway: '10.99.0.1/24' }],
      ipv6: [],
      settings: {
        bridge: 'tsb-b428f65ce83',
        bridgeNamedByUser: false,
        icc: false,
        masquerade: true,
        hostBindingIpv4: '',
        snatIpv4: '',
        inhibitIpv4: false,
      },
    });
  });

  test('the recorded --internal network is internal', () => {
    const r = recorded.find((x) => x.request!.Options['com.docker.network.internal'] === true)!;
    expect(parseCreateNetwork(r.request).internal).toBe(true);
  });

  test('the recorded dual-stack network carries its IPv6 subnet and gateway', () => {
    const r = recorded.find((x) => x.request!.Options['com.docker.network.enable_ipv6'] === true)!;
    const spec = parseCreateNetwork(r.request);
    expect(spec.enableIpv6).toBe(true);
    expect(spec.ipv6).toEqual([{ subnet: 'fd00:97::/64', gateway: 'fd00:97::1/64' }]);
    expect(spec.ipv4).toEqual([{ subnet: '10.97.0.0/24', gateway: '10.97.0.1/24' }]);
  });

  test('defaults without options', () => {
    const spec = parseCreateNetwork(createNetwork());
    expect(spec).toMatchObject({ kind: 'bridge', mtu: 1500, internal: false, ifacePrefix: 'eth', enableIpv6: false, settings: { icc: true, masquerade: true, inhibitIpv4: false } });
  });

  test('io.tsbridge.mode names the kind: bridge is the NAT bridge, also without it; an unknown mode is BAD_OPTION listing the modes', () => {
    expect(parseCreateNetwork(createNetwork({ [COMMON_OPTIONS.MODE]: 'bridge' }))).toEqual(parseCreateNetwork(createNetwork()));
    const e = errorOf(() => parseCreateNetwork(createNetwork({ 'io.tsbridge.mode': 'vxlan' })));
    expect(e.code).toBe('BAD_OPTION');
    expect(e.message).toBe(`invalid option io.tsbridge.mode=vxlan: the modes are ${KINDS.all.map((k) => k.name).join(', ')}`);
    expect(e.message).toMatch(/the modes are bridge, /);
  });

  test('every supported option', () => {
    const spec = parseCreateNetwork(
      createNetwork({
        'com.docker.network.bridge.name': 'my_br-0',
        'com.docker.network.driver.mtu': '9000',
        'com.docker.network.bridge.enable_icc': 'false',
        'com.docker.network.bridge.enable_ip_masquerade': 'F',
        'com.docker.network.bridge.host_binding_ipv4': '192.0.2.7',
        'com.docker.network.host_ipv4': '192.0.2.8',
        'com.docker.network.bridge.inhibit_ipv4': '1',
        'com.docker.network.container_iface_prefix': 'net',
      }),
    );
    expect(spec).toMatchObject({
      kind: 'bridge',
      mtu: 9000,
      ifacePrefix: 'net',
      settings: {
        bridge: 'my_br-0',
        bridgeNamedByUser: true,
        icc: false,
        masquerade: false,
        hostBindingIpv4: '192.0.2.7',
        snatIpv4: '192.0.2.8',
        inhibitIpv4: true,
      },
    });
  });

  test('host_binding_ipv4 0.0.0.0 means all addresses', () => {
    expect(parseCreateNetwork(createNetwork({ 'com.docker.network.bridge.host_binding_ipv4': '0.0.0.0' })).settings.hostBindingIpv4).toBe('');
  });

  test.each(['abc', '10', '67', '70000', '65536', '1500.5', '-1500', ' 1500', ''])('MTU %j is BAD_OPTION naming the option', (mtu) => {
    const e = errorOf(() => parseCreateNetwork(createNetwork({ 'com.docker.network.driver.mtu': mtu })));
    expect(e.code).toBe('BAD_OPTION');
    expect(e.message).toContain('com.docker.network.driver.mtu');
  });

  test.each(['68', '65535'])('MTU %s is accepted', (mtu) => {
    expect(parseCreateNetwork(createNetwork({ 'com.docker.network.driver.mtu': mtu })).mtu).toBe(Number(mtu));
  });

  test.each([
    ['16 characters', 'abcdefghijklmnop'],
    ['a dot', 'br.0'],
    ['a slash', 'br/0'],
    ['a space', 'br 0'],
    ['a shell character', 'br;rm'],
    ['empty', ''],
  ])('bridge name with %s is BAD_OPTION', (_what, name) => {
    expect(errorOf(() => parseCreateNetwork(createNetwork({ 'com.docker.network.bridge.name': name }))).code).toBe('BAD_OPTION');
  });

  test('a 15-character bridge name is accepted', () => {
    expect(parseCreateNetwork(createNetwork({ 'com.docker.network.bridge.name': 'abcdefghijklmno' })).settings.bridge).toBe('abcdefghijklmno');
  });

  test.each(['com.docker.network.bridge.default_bridge', 'com.docker.network.bridge.trusted_host_interfaces', 'io.tsbridge.anything', 'foo'])(
    'unknown option %s is UNSUPPORTED_OPTION naming it',
    (option) => {
      const e = errorOf(() => parseCreateNetwork(createNetwork({ [option]: 'true' })));
      expect(e.code).toBe('UNSUPPORTED_OPTION');
      expect(e.message).toContain(option);
    },
  );

  test.each([
    ['1', true], ['t', true], ['T', true], ['TRUE', true], ['true', true], ['True', true],
    ['0', false], ['f', false], ['F', false], ['FALSE', false], ['false', false], ['False', false],
  ])('Go boolean %j is %s', (text, value) => {
    expect(parseCreateNetwork(createNetwork({ 'com.docker.network.bridge.enable_icc': text })).settings.icc).toBe(value);
  });

  test.each(['yes', 'no', 'tRuE', 'on', '2', ''])('non-Go boolean %j is BAD_OPTION', (text) => {
    expect(errorOf(() => parseCreateNetwork(createNetwork({ 'com.docker.network.bridge.enable_icc': text }))).code).toBe('BAD_OPTION');
  });

  test('option values must be strings', () => {
    expect(errorOf(() => parseCreateNetwork(createNetwork({ 'com.docker.network.driver.mtu': 1500 }))).code).toBe('BAD_OPTION');
  });

  test.each([
    ['com.docker.network.bridge.host_binding_ipv4', '::1'],
    ['com.docker.network.host_ipv4', '192.0.2'],
    ['com.docker.network.container_iface_prefix', 'Eth'],
    ['com.docker.network.container_iface_prefix', 'averylongprefix'],
  ])('%s=%j is BAD_OPTION', (option, value) => {
    expect(errorOf(() => parseCreateNetwork(createNetwork({ [option]: value }))).code).toBe('BAD_OPTION');
  });

  test('internal and enable_ipv6 accept booleans and Go boolean strings', () => {
    expect(parseCreateNetwork(createNetwork({}, { 'com.docker.network.internal': true })).internal).toBe(true);
    expect(parseCreateNetwork(createNetwork({}, { 'com.docker.network.internal': 'false' })).internal).toBe(false);
    expect(parseCreateNetwork(createNetwork({}, { 'com.docker.network.enable_ipv6': 'true' })).enableIpv6).toBe(true);
    expect(errorOf(() => parseCreateNetwork(createNetwork({}, { 'com.docker.network.internal': 'maybe' }))).code).toBe('BAD_OPTION');
  });

  test('IPv6 data is canonicalised', () => {
    const body = { ...createNetwork({}, { 'com.docker.network.enable_ipv6': true }), IPv6Data: [{ Pool: 'FD00:0097:0000::/64', Gateway: 'fd00:97:0::1/64' }] };
    expect(parseCreateNetwork(body).ipv6).toEqual([{ subnet: 'fd00:97::/64', gateway: 'fd00:97::1/64' }]);
  });

  test.each([
    ['no IPv4 subnet', { IPv4Data: [] }],
    ['IPv4Data not a list', { IPv4Data: {} }],
    ['a pool with host bits', { IPv4Data: [{ Pool: '10.99.0.1/24' }] }],
    ['an IPv6 pool in IPv4Data', { IPv4Data: [{ Pool: 'fd00::/64' }] }],
    ['a gateway without prefix length', { IPv4Data: [{ Pool: '10.99.0.0/24', Gateway: '10.99.0.1' }] }],
    ['an IPv6 gateway on an IPv4 pool', { IPv4Data: [{ Pool: '10.99.0.0/24', Gateway: 'fd00::1/64' }] }],
    ['a NetworkID that is not hex', { NetworkID: '../../etc' }],
    ['a short NetworkID', { NetworkID: 'abc' }],
  ])('%s is BAD_REQUEST', (_what, patch) => {
    expect(errorOf(() => parseCreateNetwork({ ...createNetwork(), ...patch })).code).toBe('BAD_REQUEST');
  });

  test('a body that is not an object is BAD_REQUEST', () => {
    for (const body of [null, 'x', [], 3]) expect(errorOf(() => parseCreateNetwork(body)).code).toBe('BAD_REQUEST');
  });
});

describe('parseCreateEndpoint', () => {
  const recorded = recordedOf('/NetworkDriver.CreateEndpoint');

  test.each(recorded.map((r) => [r.line, r] as const))('recorded request on line %i parses', (_line, r) => {
    const spec = parseCreateEndpoint(r.request);
    expect(spec.networkId).toBe(r.request!.NetworkID);
    expect(spec.endpointId).toBe(r.request!.EndpointID);
    expect(spec.ipv4).toBe(r.request!.Interface.Address);
    expect(spec.ipv6).toBe(r.request!.Interface.AddressIPv6 || null);
    expect(spec.mac).toBeNull(); // Docker 20.10 leaves the MAC to the driver
  });

  test('a MAC given by Docker is kept (lower-case)', () => {
    const spec = parseCreateEndpoint({ NetworkID: NET, EndpointID: EP, Interface: { Address: '10.99.0.2/24', MacAddress: '02:42:0A:63:00:02' } });
    expect(spec.mac).toBe('02:42:0a:63:00:02');
  });

  test('no Interface at all: no addresses, no MAC', () => {
    expect(parseCreateEndpoint({ NetworkID: NET, EndpointID: EP })).toEqual({ networkId: NET, endpointId: EP, ipv4: null, ipv6: null, mac: null });
  });

  test("Docker's own keys and the user's other --driver-opt values pass (tsbridge has no endpoint option)", () => {
    const options = {
      'com.docker.network.portmap': [],
      'com.docker.network.endpoint.exposedports': [],
      'com.docker.network.endpoint.macaddress': 'AkIKYwAC',
      'com.docker.network.endpoint.sysctls': 'net.ipv4.conf.IFNAME.log_martians=1',
      foo: 'bar',
    };
    expect(parseCreateEndpoint({ NetworkID: NET, EndpointID: EP, Options: options }).endpointId).toBe(EP);
    expect(parseCreateEndpoint({ NetworkID: NET, EndpointID: EP, Options: null }).endpointId).toBe(EP);
  });

  test('a key under tsbridge\'s own prefix is UNSUPPORTED_OPTION naming it', () => {
    const e = errorOf(() => parseCreateEndpoint({ NetworkID: NET, EndpointID: EP, Options: { 'io.tsbridge.spoof_check': 'false' } }));
    expect(e).toEqual({ code: 'UNSUPPORTED_OPTION', message: 'option io.tsbridge.spoof_check is not supported by tsbridge', params: { option: 'io.tsbridge.spoof_check' } });
  });

  test('a network option given per endpoint is BAD_OPTION saying where it belongs', () => {
    const e = errorOf(() => parseCreateEndpoint({ NetworkID: NET, EndpointID: EP, Options: { 'com.docker.network.bridge.enable_icc': 'false' } }));
    expect(e.code).toBe('BAD_OPTION');
    expect(e.message).toContain('com.docker.network.bridge.enable_icc=false');
    expect(e.message).toContain('docker network create -o');
  });

  test('Options that are not an object are BAD_REQUEST', () => {
    expect(errorOf(() => parseCreateEndpoint({ NetworkID: NET, EndpointID: EP, Options: ['x'] })).code).toBe('BAD_REQUEST');
  });

  test.each([
    ['an address without prefix length', { Address: '10.99.0.2' }],
    ['an IPv6 address as Address', { Address: 'fd00::2/64' }],
    ['an IPv4 address as AddressIPv6', { AddressIPv6: '10.99.0.2/24' }],
    ['a bad MAC', { MacAddress: '02:42:0a:63:00' }],
    ['a non-string address', { Address: 5 }],
  ])('%s is BAD_REQUEST', (_what, iface) => {
    expect(errorOf(() => parseCreateEndpoint({ NetworkID: NET, EndpointID: EP, Interface: iface })).code).toBe('BAD_REQUEST');
  });
});

describe('parsePortBindings', () => {
  const withPorts = recordedOf('/NetworkDriver.ProgramExternalConnectivity').find((r) => r.request!.Options['com.docker.network.portmap'].length > 0)!;

  test('the recorded -p 8080:80 -p 127.0.0.1:5353:53/udp -p 7000-7001:7000-7001 -p 9000', () => {
    expect(parsePortBindings(withPorts.request!.Options)).toEqual([
      { proto: 'tcp', containerPort: 9000, hostIp: '', hostPort: 0, hostPortEnd: 0 },
      { proto: 'tcp', containerPort: 80, hostIp: '', hostPort: 8080, hostPortEnd: 8080 },
      { proto: 'tcp', containerPort: 7001, hostIp: '', hostPort: 7001, hostPortEnd: 7001 },
      { proto: 'tcp', containerPort: 7000, hostIp: '', hostPort: 7000, hostPortEnd: 7000 },
      { proto: 'udp', containerPort: 53, hostIp: '127.0.0.1', hostPort: 5353, hostPortEnd: 5353 },
    ]);
  });

  test('every recorded request with options parses (empty portmaps give no bindings)', () => {
    const all = [...recordedOf('/NetworkDriver.ProgramExternalConnectivity'), ...recordedOf('/NetworkDriver.CreateEndpoint'), ...recordedOf('/NetworkDriver.Join')];
    for (const r of all) expect(() => parsePortBindings(r.request!.Options)).not.toThrow();
    const empty = all.find((r) => Array.isArray(r.request!.Options?.['com.docker.network.portmap']) && r.request!.Options['com.docker.network.portmap'].length === 0)!;
    expect(parsePortBindings(empty.request!.Options)).toEqual([]);
  });

  test('no options, no portmap: no bindings', () => {
    expect(parsePortBindings(undefined)).toEqual([]);
    expect(parsePortBindings(null)).toEqual([]);
    expect(parsePortBindings({ foo: 'bar' })).toEqual([]);
  });

  test('sctp, an IPv6 host address (canonicalised) and a range', () => {
    const out = parsePortBindings({ 'com.docker.network.portmap': [{ Proto: 132, Port: 9, HostIP: '2001:DB8:0::1', HostPort: 9000, HostPortEnd: 9010 }] });
    expect(out).toEqual([{ proto: 'sctp', containerPort: 9, hostIp: '2001:db8::1', hostPort: 9000, hostPortEnd: 9010 }]);
  });

  const binding = (over: Record<string, unknown>) => ({ 'com.docker.network.portmap': [{ Proto: 6, Port: 80, HostIP: '', HostPort: 8080, HostPortEnd: 8080, ...over }] });

  test.each([
    ['Proto 1 (icmp)', { Proto: 1 }],
    ['Proto "tcp"', { Proto: 'tcp' }],
    ['no Proto', { Proto: undefined }],
    ['Port 0', { Port: 0 }],
    ['Port 65536', { Port: 65536 }],
    ['Port "80"', { Port: '80' }],
    ['Port 80.5', { Port: 80.5 }],
    ['HostPort -1', { HostPort: -1 }],
    ['HostPort 70000', { HostPort: 70000 }],
    ['HostPortEnd below HostPort', { HostPort: 8080, HostPortEnd: 8000 }],
    ['HostIP not an address', { HostIP: 'localhost' }],
    ['HostIP with a prefix length', { HostIP: '127.0.0.1/8' }],
  ])('%s is BAD_REQUEST', (_what, over) => {
    expect(errorOf(() => parsePortBindings(binding(over))).code).toBe('BAD_REQUEST');
  });

  test('a portmap that is not a list is BAD_REQUEST', () => {
    expect(errorOf(() => parsePortBindings({ 'com.docker.network.portmap': {} })).code).toBe('BAD_REQUEST');
  });
});

describe('docs/options.md', () => {
  const doc = readFileSync(new URL('../../docs/options.md', import.meta.url), 'utf8');
  /** The options in the table rows of the section under this heading. */
  const section = (heading: string) => {
    const start = doc.indexOf(`\n## ${heading}`);
    expect(start).toBeGreaterThan(0);
    const end = doc.indexOf('\n## ', start + 1);
    const text = doc.slice(start, end < 0 ? undefined : end);
    return [...text.matchAll(/^\| `(com\.docker\.network\.[a-z0-9_.]+)` \|/gm)].map((m) => m[1]);
  };

  test('lists every network option tsbridge accepts, and no other', () => {
    expect(section('Network options').sort()).toEqual(networkOptions().filter((o) => o.startsWith('com.docker.network.')).sort());
  });

  test("lists every other option of Docker 28's bridge, as docker-options.ts handles them, and no other", () => {
    const others = [...Object.keys(REFUSED_OPTIONS), ...Object.values(DOCKER_APPLIED_OPTIONS)];
    expect(section("Docker's other bridge options").sort()).toEqual(others.sort());
  });

  test("names tsbridge's own prefix and its own options", () => {
    expect(doc).toContain(`\`${TSBRIDGE_OPTION_PREFIX}…\``);
    const own = [...doc.matchAll(/^\| `(io\.tsbridge\.[a-z0-9_.]+)` \|/gm)].map((m) => m[1]);
    expect(own.sort()).toEqual(networkOptions().filter((o) => o.startsWith(TSBRIDGE_OPTION_PREFIX)).sort());
  });
});


/** Issue 10: what Docker 28.5 sent (test/fixtures/docker/28.5-requests.jsonl) parses like 20.10's. */
describe('requests recorded from Docker 28.5', () => {
  const networks = recordedOf('/NetworkDriver.CreateNetwork', RECORDED_28_FILE);
  const withV4 = networks.filter((r) => r.request!.IPv4Data.length > 0);

  test.each(withV4.map((r) => [r.line, r] as const))('CreateNetwork on line %i (enable_ipv4 at the top) parses', (_line, r) => {
    expect(r.request!.Options['com.docker.network.enable_ipv4']).toBe(true);
    const spec = parseCreateNetwork(r.request);
    expect(spec.ipv4.map((s) => s.subnet)).toEqual(r.request!.IPv4Data.map((d: { Pool: string }) => d.Pool));
    expect(spec.enableIpv6).toBe(r.request!.Options['com.docker.network.enable_ipv6']);
  });

  // IPv6-only networks (Docker 28 --ipv4=false --ipv6): an empty IPv4Data with enable_ipv4=false.
  test.each(networks.filter((r) => r.request!.IPv4Data.length === 0).map((r) => [r.line, r] as const))(
    'IPv6-only CreateNetwork on line %i (--ipv4=false --ipv6) parses',
    (_line, r) => {
      expect(r.request!.Options['com.docker.network.enable_ipv4']).toBe(false);
      expect(parseCreateNetwork(r.request).ipv6).toHaveLength(1);
    },
  );

  test.each(recordedOf('/NetworkDriver.CreateEndpoint', RECORDED_28_FILE).map((r) => [r.line, r] as const))('CreateEndpoint on line %i parses (endpoint.ifname, endpoint.sysctls accepted)', (_line, r) => {
    const spec = parseCreateEndpoint(r.request);
    expect(spec.endpointId).toBe(r.request!.EndpointID);
  });

  test('the endpoint options Docker 28 sends are among them', () => {
    const opts = recordedOf('/NetworkDriver.CreateEndpoint', RECORDED_28_FILE).flatMap((r) => Object.keys(r.request!.Options ?? {}));
    expect(opts).toEqual(expect.arrayContaining(['com.docker.network.endpoint.ifname', 'com.docker.network.endpoint.sysctls']));
  });

  test.each(recordedOf('/NetworkDriver.ProgramExternalConnectivity', RECORDED_28_FILE).map((r) => [r.line, r] as const))('ProgramExternalConnectivity on line %i (no_proxy_6to4) parses', (_line, r) => {
    expect(r.request!.Options).toHaveProperty(['com.docker.network.driver.private.no_proxy_6to4']);
    expect(parsePortBindings(r.request!.Options)).toHaveLength(r.request!.Options['com.docker.network.portmap'].length);
  });
});
