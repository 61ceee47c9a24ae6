/**
 * Published ports without a kernel: host-port reservation (pure), the conntrack listing
 * parser, and the driver's port methods over the fake kernel — what a failure leaves, what
 * revoke removes, which flows are flushed.
 */
import { allocatePorts, hostIpsOverlap, type PortContext } from '../../src/driver/ports.js';
import { isTsbridgeError, type ErrorCode } from '../../src/errors.js';
import { conntrackDestPorts } from '../../src/kernel/real/firewall.js';
import type { PortMapping, PortRequest } from '../../src/domain/types.js';
import { FakeHost } from '../fakes/host.js';
import { codeOf, EP_1, EP_2, NET_A, endpointSpec, firewallAgrees, makeWorld, networkSpec, portReq, type World, errorOf } from '../fakes/world.js';

const req = (over: Partial<PortRequest> = {}): PortRequest => ({ proto: 'tcp', containerPort: 80, hostIp: '', hostPort: 8080, hostPortEnd: 0, ...over });
const ctx = (over: Partial<PortContext> = {}): PortContext => ({ taken: [], listening: [], ephemeral: [49152, 49155], defaultHostIp: '', ...over });
const mapping = (over: Partial<PortMapping> = {}): PortMapping => ({ proto: 'tcp', hostIp: '', hostPort: 8080, containerPort: 80, ...over });

describe('allocatePorts', () => {
  test('a fixed port is taken as asked', () => {
    expect(allocatePorts([req()], ctx())).toEqual([mapping()]);
  });

  test('a range request (-p 8000-8002:80) gets the first free port of the range', () => {
    const taken = [{ mapping: mapping({ hostPort: 8000 }), owner: 'endpoint a' }];
    const listening = [{ proto: 'tcp' as const, ip: '', port: 8001 }];
    expect(allocatePorts([req({ hostPort: 8000, hostPortEnd: 8002 })], ctx({ taken, listening }))[0]!.hostPort).toBe(8002);
  });

  test('a whole range busy is NO_FREE_PORT naming the range', () => {
    const listening = [8000, 8001].map((port) => ({ proto: 'tcp' as const, ip: '', port }));
    expect(errorOf(() => allocatePorts([req({ hostPort: 8000, hostPortEnd: 8001 })], ctx({ listening })))).toMatchObject({
      code: 'NO_FREE_PORT',
      message: 'no free host port for tcp in 8000-8001',
    });
  });

  test('a port range published one binding per port (-p 7000-7002:7000-7002) keeps each port', () => {
    const reqs = [7000, 7001, 7002].map((p) => req({ hostPort: p, hostPortEnd: p, containerPort: p }));
    expect(allocatePorts(reqs, ctx()).map((m) => `${m.hostPort}->${m.containerPort}`)).toEqual(['7000->7000', '7001->7001', '7002->7002']);
  });

  test('HostPort 0 (-p 80, -P) takes free ports from the ephemeral range, never one twice', () => {
    const listening = [{ proto: 'tcp' as const, ip: '0.0.0.0', port: 49152 }];
    const got = allocatePorts([req({ hostPort: 0 }), req({ hostPort: 0, containerPort: 81 }), req({ hostPort: 0, proto: 'udp' })], ctx({ listening }));
    expect(got.map((m) => `${m.proto}/${m.hostPort}`)).toEqual(['tcp/49153', 'tcp/49154', 'udp/49152']);
  });

  test('conflicts read like Docker\'s "port is already allocated", naming the owner', () => {
    const taken = [{ mapping: mapping(), owner: 'endpoint 0123456789ab' }];
    expect(errorOf(() => allocatePorts([req()], ctx({ taken })))).toMatchObject({
      code: 'PORT_IN_USE',
      message: 'host port 0.0.0.0:8080/tcp is already allocated (published by endpoint 0123456789ab)',
    });
    const listening = [{ proto: 'udp' as const, ip: '127.0.0.53', port: 53 }];
    expect(errorOf(() => allocatePorts([req({ proto: 'udp', hostPort: 53 })], ctx({ listening }))).message).toBe(
      'host port 0.0.0.0:53/udp is already allocated (a host process listens on it)',
    );
    expect(errorOf(() => allocatePorts([req({ hostIp: '2001:db8::1' }), req({ hostIp: '2001:db8::1' })], ctx())).message).toBe(
      'host port [2001:db8::1]:8080/tcp is already allocated (twice in this request)',
    );
  });

  test('host_binding_ipv4 applies to bindings without a host address', () => {
    expect(allocatePorts([req()], ctx({ defaultHostIp: '127.0.0.1' }))[0]!.hostIp).toBe('127.0.0.1');
    expect(allocatePorts([req({ hostIp: '0.0.0.0' })], ctx({ defaultHostIp: '127.0.0.1' }))[0]!.hostIp).toBe('0.0.0.0');
  });

  test('::1 is refused: IPv6 loopback cannot be served by kernel NAT', () => {
    const e = errorOf(() => allocatePorts([req({ hostIp: '::1' })], ctx()));
    expect(e.code).toBe('BAD_ADDRESS');
    expect(e.message).toMatch(/IPv6 loopback cannot be published by kernel NAT.*127\.0\.0\.1/);
  });

  test('a specific address of a family the container lacks is refused; the wildcards are not', () => {
    const v4only = { v4: true, v6: false };
    expect(errorOf(() => allocatePorts([req({ hostIp: '2001:db8::1' })], ctx({ families: v4only }))).message).toMatch(/no IPv6 address.*--ipv6/);
    expect(errorOf(() => allocatePorts([req({ hostIp: '127.0.0.1' })], ctx({ families: { v4: false, v6: true } }))).message).toMatch(/no IPv4 address/);
    expect(allocatePorts([req({ hostIp: '::' }), req({ hostIp: '0.0.0.0', hostPort: 8081 })], ctx({ families: v4only }))).toHaveLength(2);
  });
});

describe('hostIpsOverlap', () => {
  test.each([
    ['', '', true],
    ['', '::', true],
    ['0.0.0.0', '127.0.0.1', true],
    ['0.0.0.0', '::', false],
    ['::', '2001:db8::1', true],
    ['127.0.0.1', '127.0.0.2', false],
    ['2001:db8::1', '2001:db8::2', false],
    // a dual-stack socket bound to an IPv4 address shows in /proc/net/tcp6 as ::ffff:a.b.c.d
    ['::ffff:127.0.0.1', '127.0.0.1', true],
    ['::ffff:127.0.0.1', '0.0.0.0', true],
    ['::ffff:127.0.0.1', '::', false],
  ])('%j and %j: %s', (a, b, overlap) => {
    expect(hostIpsOverlap(a, b)).toBe(overlap);
    expect(hostIpsOverlap(b, a)).toBe(overlap);
  });
});

describe('conntrackDestPorts', () => {
  const listing = [
    'udp      17 29 src=127.0.0.1 dst=127.0.0.1 sport=37705 dport=5000 [UNREPLIED] src=127.0.0.1 dst=127.0.0.1 sport=5000 dport=37705 mark=0 use=1',
    'udp      17 24 src=fd5e::2 dst=fd5e::1 sport=40000 dport=5001 src=fd5e:1::2 dst=fd5e::2 sport=80 dport=40000 mark=0 use=1',
    'tcp      6 114 TIME_WAIT src=198.18.0.1 dst=198.18.0.1 sport=42662 dport=6000 src=10.0.0.2 dst=198.18.0.1 sport=80 dport=42662 [ASSURED] mark=0 use=1',
    'udp      17 29 src=10.0.0.3 dst=10.0.0.1 sport=1 dport=5000 src=10.0.0.1 dst=10.0.0.3 sport=5000 dport=1 mark=0 use=1',
    'conntrack v1.4.7 (conntrack-tools): 4 flow entries have been shown.',
  ].join('\n');

  test('the original direction destination port of each entry of the protocol, each once', () => {
    expect(conntrackDestPorts(listing, 'udp')).toEqual([5000, 5001]);
    expect(conntrackDestPorts(listing, 'sctp')).toEqual([]);
    expect(conntrackDestPorts('', 'udp')).toEqual([]);
  });
});

describe('the driver\'s port methods', () => {
  let w: World;
  const ports = () => w.kernel.snapshot().firewall.ports;

  beforeEach(async () => {
    w = makeWorld({ host: new FakeHost({ ephemeral: [49152, 49155] }) });
    await w.driver.createNetwork(networkSpec({ icc: false }));
    await w.driver.createEndpoint(endpointSpec());
    await w.driver.createEndpoint(endpointSpec({ endpointId: EP_2, ipv4: '10.10.0.3/24' }));
  });

  // Failed calls included, nftables holds what the state says.
  afterEach(() => {
    const { kernel, state } = firewallAgrees(w);
    expect(kernel).toEqual(state);
  });

  test('revoke removes the ports and nothing else: the endpoint stays isolated (icc=false)', async () => {
    const hostVeth = w.db.state.endpoints[EP_1]!.hostVeth;
    expect(w.kernel.snapshot().firewall.noIcc).toContain(hostVeth);
    await w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(80, 8080)]);
    await w.driver.revokeExternalConnectivity(NET_A, EP_1);
    expect(ports()).toEqual([]);
    expect(w.kernel.snapshot().firewall.noIcc).toContain(hostVeth);
  });

  test('re-programming replaces the ports and keeps the isolation', async () => {
    await w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(80, 8080)]);
    await w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(80, 9090)]);
    expect(ports()).toEqual(['tcp 0.0.0.0:9090 -> 10.10.0.2:80']);
    expect(w.kernel.snapshot().firewall.noIcc).toContain(w.db.state.endpoints[EP_1]!.hostVeth);
  });

  test('a failed re-program leaves the previous ports published, in the kernel, in memory and on disk', async () => {
    await w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(80, 8080)]);
    w.kernel.failNext('addPorts');
    expect(await codeOf(w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(81, 8081)]))).toBe('KERNEL');
    expect(ports()).toEqual(['tcp 0.0.0.0:8080 -> 10.10.0.2:80']);
    expect(w.db.state.endpoints[EP_1]!.ports).toEqual([mapping()]);
    expect(w.store.saved?.endpoints[EP_1]?.ports).toEqual([mapping()]);
  });

  test('a refused request (conflict, bad address) changes nothing at all', async () => {
    await w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(80, 8080)]);
    const before = { kernel: w.kernel.snapshot(), saved: structuredClone(w.store.saved), calls: w.kernel.calls.length };
    expect(await codeOf(w.driver.programExternalConnectivity(NET_A, EP_2, [portReq(80, 8080)]))).toBe('PORT_IN_USE');
    expect(await codeOf(w.driver.programExternalConnectivity(NET_A, EP_2, [portReq(80, 9000, { hostIp: '::1' })]))).toBe('BAD_ADDRESS');
    expect(await codeOf(w.driver.programExternalConnectivity(NET_A, EP_2, [portReq(80, 9000, { hostIp: '2001:db8::1' })]))).toBe('BAD_ADDRESS');
    expect({ kernel: w.kernel.snapshot(), saved: w.store.saved, calls: w.kernel.calls.length }).toEqual(before);
    expect(w.db.state.endpoints[EP_2]!.ports).toEqual([]);
  });

  test('UDP and SCTP flows are flushed for the new ports and for the ones a re-program dropped; TCP never', async () => {
    await w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(53, 5353, { proto: 'udp' }), portReq(80, 8080)]);
    expect(w.kernel.conntrackFlushes).toEqual([{ proto: 'udp', hostPort: 5353 }]);
    await w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(53, 5354, { proto: 'udp' }), portReq(9, 9999, { proto: 'sctp' })]);
    expect(w.kernel.conntrackFlushes.slice(1)).toEqual([
      { proto: 'udp', hostPort: 5353 },
      { proto: 'udp', hostPort: 5354 },
      { proto: 'sctp', hostPort: 9999 },
    ]);
    await w.driver.revokeExternalConnectivity(NET_A, EP_1);
    expect(w.kernel.conntrackFlushes.slice(4)).toEqual([
      { proto: 'udp', hostPort: 5354 },
      { proto: 'sctp', hostPort: 9999 },
    ]);
  });

  test('a container replaced by another on the same host port: the old one is revoked, the new one flushed', async () => {
    await w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(53, 5353, { proto: 'udp' })]);
    await w.driver.revokeExternalConnectivity(NET_A, EP_1);
    await w.driver.leave(NET_A, EP_1);
    await w.driver.deleteEndpoint(NET_A, EP_1);
    await w.driver.programExternalConnectivity(NET_A, EP_2, [portReq(53, 5353, { proto: 'udp' })]);
    expect(ports()).toEqual(['udp 0.0.0.0:5353 -> 10.10.0.3:53']);
    expect(w.kernel.conntrackFlushes).toEqual([
      { proto: 'udp', hostPort: 5353 },
      { proto: 'udp', hostPort: 5353 },
      { proto: 'udp', hostPort: 5353 },
    ]);
  });

  test('endpointInfo reports the mappings Docker cannot show', async () => {
    const m = await w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(80, 0)]);
    expect(w.driver.endpointInfo(NET_A, EP_1)).toMatchObject({ id: EP_1, ipv4: '10.10.0.2/24', ports: m });
    expect(m[0]!.hostPort).toBe(49152);
  });
});
