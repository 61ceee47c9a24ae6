/**
 * Docker's routed gateway mode on the bridge kind (`com.docker.network.bridge.gateway_mode_ipv4`
 * / `_ipv6=routed`) with real packets: tsbridge's real kernel layer in a throwaway namespace H
 * (helpers/lab.ts), whose "outside world" O routes everything — the network's subnets too — via H.
 *
 * Docker's meaning: no NAT for the family; O reaches a container at its own address, on the
 * published container ports only (a host port given is not used) and ICMP; egress keeps the
 * container's address; a container of another network reaches the published ports directly as
 * well. A family left in nat mode beside it behaves as on any NAT bridge.
 *
 * Needs: root, iproute2, nftables, iptables, conntrack, node, busybox.
 */
import { Cleanup } from '../lib/cleanup.js';
import { listNetns, startPeerRecorder, type PeerRecorder } from '../lib/netns.js';
import { requireRoot } from '../lib/run.js';
import { Lab, ping, reaches, requireLabTools, seenAs, tcpFrom, udpFrom, type LabEndpoint, type LabNetwork, type TcpProbeResult } from './helpers/lab.js';

const T = 60_000;

beforeAll(async () => {
  requireRoot('test/integration/kinds-routed.test.ts');
  await requireLabTools();
});

afterAll(async () => {
  const left = (await listNetns()).filter((n) => Lab.created.includes(n));
  expect(left).toEqual([]);
});

async function settled(probe: () => Promise<TcpProbeResult>, tries = 3): Promise<TcpProbeResult> {
  let r: TcpProbeResult = {};
  for (let i = 0; i < tries; i++) {
    r = await probe();
    if (r.reply !== undefined) return r;
  }
  return r;
}

describe('routed in both families', () => {
  const cleanup = new Cleanup();
  let lab: Lab;
  let net: LabNetwork;
  let a: LabEndpoint;
  let onA80: PeerRecorder;
  let onA81: PeerRecorder;
  let outside: PeerRecorder;
  const P = 24000 + Math.floor(Math.random() * 400);

  beforeAll(async () => {
    lab = await Lab.create(cleanup);
    await lab.dockerLikeFirewall();
    await lab.dockerLikeFirewall('ip6tables');
    net = await lab.network({ v6: true, gatewayModeIpv4: 'routed', gatewayModeIpv6: 'routed' });
    a = await lab.attach(net);
    onA80 = await startPeerRecorder(a.ns, 80);
    onA81 = await startPeerRecorder(a.ns, 81);
    outside = await startPeerRecorder(lab.outside, 7070);
    const got = await lab.driver.programExternalConnectivity(net.id, a.id, [
      { proto: 'tcp', containerPort: 80, hostIp: '', hostPort: P, hostPortEnd: 0 },
      { proto: 'udp', containerPort: 80, hostIp: '', hostPort: P, hostPortEnd: 0 },
    ]);
    // No host port: the container port, in each family, on the container's own address.
    expect(got).toEqual([
      { proto: 'tcp', hostIp: '0.0.0.0', hostPort: 0, containerPort: 80 },
      { proto: 'tcp', hostIp: '::', hostPort: 0, containerPort: 80 },
      { proto: 'udp', hostIp: '0.0.0.0', hostPort: 0, containerPort: 80 },
      { proto: 'udp', hostIp: '::', hostPort: 0, containerPort: 80 },
    ]);
  }, T);

  afterAll(() => cleanup.run());

  test('another host reaches the published container port at the container\'s own address, and is seen as itself', async () => {
    expect(seenAs(await settled(() => tcpFrom(lab.outside, a.ipv4, 80)))).toBe(lab.outAddr);
    expect(seenAs(await settled(() => udpFrom(lab.outside, a.ipv4, 80)))).toBe(lab.outAddr);
    expect(seenAs(await settled(() => tcpFrom(lab.outside, a.ipv6!, 80)))).toBe(lab.outAddr6);
    expect(seenAs(await settled(() => udpFrom(lab.outside, a.ipv6!, 80)))).toBe(lab.outAddr6);
  }, T);

  test('a port not published is closed to it; the host port asked for is not opened on the host', async () => {
    expect((await tcpFrom(lab.outside, a.ipv4, 81, 1500)).reply).toBeUndefined();
    expect((await tcpFrom(lab.outside, a.ipv6!, 81, 1500)).reply).toBeUndefined();
    expect(onA81.peers).toEqual([]);
    expect((await tcpFrom(lab.outside, lab.hostAddr, P, 1500)).reply).toBeUndefined();
    // The host itself reaches every port of its containers (its own traffic is not forwarded).
    expect(seenAs(await settled(() => tcpFrom(lab.host, a.ipv4, 81)))).toBe(net.gateway4);
  }, T);

  test('ICMP passes, as Docker lets it', async () => {
    expect(await reaches(lab.outside, a.ipv4)).toBe(true);
    expect(await reaches(lab.outside, a.ipv6!)).toBe(true);
  }, T);

  test('egress keeps the container\'s address (no masquerade), IPv4 and IPv6', async () => {
    expect(seenAs(await settled(() => tcpFrom(a.ns, lab.outAddr, 7070)))).toBe(a.ipv4);
    expect(seenAs(await settled(() => tcpFrom(a.ns, lab.outAddr6, 7070)))).toBe(a.ipv6);
    expect(outside.peers.map((p) => p.address)).not.toContain(lab.hostAddr);
  }, T);

  test('a container of another (NAT) network reaches the published port directly, not the others', async () => {
    const other = await lab.network();
    const c = await lab.attach(other);
    expect(seenAs(await settled(() => tcpFrom(c.ns, a.ipv4, 80)))).toBe(net.gateway4); // masqueraded as its own network's egress
    expect((await tcpFrom(c.ns, a.ipv4, 81, 1500)).reply).toBeUndefined();
    // …while the routed container does not reach into the NAT network.
    await startPeerRecorder(c.ns, 80);
    expect((await tcpFrom(a.ns, c.ipv4, 80, 1500)).reply).toBeUndefined();
  }, T);

  test('unpublished, the port closes again; routed rules and sets go with the network', async () => {
    await lab.driver.revokeExternalConnectivity(net.id, a.id);
    expect((await tcpFrom(lab.outside, a.ipv4, 80, 1500)).reply).toBeUndefined();
    expect(onA80.peers.length).toBeGreaterThan(0);
    await lab.driver.leave(net.id, a.id);
    await lab.driver.deleteEndpoint(net.id, a.id);
    await lab.driver.settle();
    await lab.driver.deleteNetwork(net.id);
    const ruleset = (await lab.nftRuleset()).join('\n');
    expect(ruleset).not.toContain(`routed4_${net.id.slice(0, 12)}`);
  }, T);
});

describe('IPv4 nat, IPv6 routed', () => {
  const cleanup = new Cleanup();
  afterAll(() => cleanup.run());

  test('IPv4 through a host port and masqueraded; IPv6 at the container\'s address, not masqueraded', async () => {
    const lab = await Lab.create(cleanup);
    const net = await lab.network({ v6: true, gatewayModeIpv6: 'routed' });
    const a = await lab.attach(net);
    await startPeerRecorder(a.ns, 80);
    const outside = await startPeerRecorder(lab.outside, 7070);
    const P = 24500 + Math.floor(Math.random() * 400);
    const got = await lab.publish(a, P);
    expect(got).toEqual([
      { proto: 'tcp', hostIp: '::', hostPort: 0, containerPort: 80 },
      { proto: 'tcp', hostIp: '0.0.0.0', hostPort: P, containerPort: 80 },
    ]);
    expect(seenAs(await settled(() => tcpFrom(lab.outside, lab.hostAddr, P)))).toBe(lab.outAddr);
    expect((await tcpFrom(lab.outside, a.ipv4, 80, 1500)).reply).toBeUndefined();
    expect(await ping(lab.outside, a.ipv4)).toBe(false);
    expect(seenAs(await settled(() => tcpFrom(lab.outside, a.ipv6!, 80)))).toBe(lab.outAddr6);
    expect((await tcpFrom(lab.outside, lab.hostAddr6, P, 1500)).reply).toBeUndefined();
    expect(seenAs(await settled(() => tcpFrom(a.ns, lab.outAddr, 7070)))).toBe(lab.hostAddr);
    expect(seenAs(await settled(() => tcpFrom(a.ns, lab.outAddr6, 7070)))).toBe(a.ipv6);
    expect([...new Set(outside.peers.map((p) => p.address))]).toEqual([lab.hostAddr, a.ipv6]);
  }, T);
});

describe('the control: the same network in nat mode', () => {
  const cleanup = new Cleanup();
  afterAll(() => cleanup.run());

  test('another host does not reach the container at its own address, published or not', async () => {
    const lab = await Lab.create(cleanup);
    await lab.dockerLikeFirewall();
    const net = await lab.network({ v6: true });
    const a = await lab.attach(net);
    await startPeerRecorder(a.ns, 80);
    await lab.publish(a, 24950);
    expect(seenAs(await settled(() => tcpFrom(lab.outside, lab.hostAddr, 24950)))).toBe(lab.outAddr);
    expect((await tcpFrom(lab.outside, a.ipv4, 80, 1500)).reply).toBeUndefined();
    expect((await tcpFrom(lab.outside, a.ipv6!, 80, 1500)).reply).toBeUndefined();
    expect(await ping(lab.outside, a.ipv4)).toBe(false);
  }, T);
});
