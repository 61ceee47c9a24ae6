/**
 * The point-to-point kind (`-o io.tsbridge.mode=p2p`) with real packets: tsbridge's real kernel
 * layer acting in a throwaway namespace H (helpers/lab.ts), containers as namespaces joined the way
 * Docker joins them (Join's gateway and static routes applied).
 *
 * No bridge: a veth per container whose host end holds the gateway, a /32 and /128 route per
 * container, proxy ARP (IPv4) and Join's routes via the gateway (IPv6) between containers,
 * an unreachable route for the subnet, masquerade, published ports on every path, icc, internal
 * networks, isolation and anti-spoofing — each with a control where the rule's effect is not
 * self-evident — then start-up after a "reboot" and removal leaving nothing in H.
 *
 * Needs: root, iproute2, nftables, iptables, conntrack, node, busybox.
 */
import { Cleanup } from '../lib/cleanup.js';
import { listNetns, startPeerRecorder, type PeerRecorder } from '../lib/netns.js';
import { requireRoot, sh } from '../lib/run.js';
import { Lab, ping, reaches, requireLabTools, seenAs, tcpFrom, udpFrom, type LabEndpoint, type LabNetwork, type TcpProbeResult } from './helpers/lab.js';

const T = 60_000;

beforeAll(async () => {
  requireRoot('test/integration/kinds-p2p.test.ts');
  await requireLabTools();
});

afterAll(async () => {
  const left = (await listNetns()).filter((n) => Lab.created.includes(n));
  expect(left).toEqual([]);
});

/** Retries a probe a few times: the very first packets may wait for neighbour discovery. */
async function settled(probe: () => Promise<TcpProbeResult>, tries = 3): Promise<TcpProbeResult> {
  let r: TcpProbeResult = {};
  for (let i = 0; i < tries; i++) {
    r = await probe();
    if (r.reply !== undefined) return r;
  }
  return r;
}

/** H's routes of a family, one line each, without the kernel's own link-local and proto noise. */
async function routes(lab: Lab, family: '-4' | '-6'): Promise<string[]> {
  const out = await lab.ipH([family, 'route', 'show']);
  return out.split('\n').filter((l) => l && !l.startsWith('fe80::') && !l.includes(lab.hostIf)).map((l) => l.replace(/ metric \d+| pref medium| proto kernel| linkdown/g, '').trim());
}

describe('a point-to-point network, IPv4 and IPv6', () => {
  const cleanup = new Cleanup();
  let lab: Lab;
  let net: LabNetwork;
  let a: LabEndpoint;
  let b: LabEndpoint;
  let onA: PeerRecorder;
  let onB: PeerRecorder;
  let outside: PeerRecorder;
  const P = 24000 + Math.floor(Math.random() * 400) * 2; // P: all addresses; P+1: 127.0.0.1 only

  beforeAll(async () => {
    lab = await Lab.create(cleanup);
    await lab.dockerLikeFirewall();
    await lab.dockerLikeFirewall('ip6tables');
    net = await lab.network({ mode: 'p2p', v6: true });
    a = await lab.attach(net);
    b = await lab.attach(net);
    onA = await startPeerRecorder(a.ns, 80);
    onB = await startPeerRecorder(b.ns, 80);
    outside = await startPeerRecorder(lab.outside, 7070);
    const tcp = (hostPort: number, hostIp = '') => ({ proto: 'tcp' as const, containerPort: 80, hostIp, hostPort, hostPortEnd: 0 });
    const udp = (hostPort: number) => ({ proto: 'udp' as const, containerPort: 80, hostIp: '', hostPort, hostPortEnd: 0 });
    await lab.driver.programExternalConnectivity(net.id, a.id, [tcp(P), udp(P), tcp(P + 1, '127.0.0.1')]);
  }, T);

  afterAll(() => cleanup.run());

  test('no bridge: each host end holds the gateway (/32, /128), a route per container, an unreachable route for the subnet', async () => {
    expect((await lab.tsbridgeLinks()).sort()).toEqual([a.join.srcName.replace('tsc', 'tsv'), b.join.srcName.replace('tsc', 'tsv')].sort());
    for (const ep of [a, b]) {
      const host = ep.join.srcName.replace('tsc', 'tsv');
      expect((await lab.addresses(host)).filter((x) => !x.startsWith('fe80:'))).toEqual([`${net.gateway4}/32`, `${net.gateway6}/128`]);
      expect((await lab.linkDetails(host)).master).toBeUndefined();
      expect(await lab.sysctl.get(`net.ipv4.conf.${host}.proxy_arp`)).toBe('1');
      expect(await lab.sysctl.get(`net.ipv4.neigh.${host}.proxy_delay`)).toBe('0');
    }
    const v4 = await routes(lab, '-4');
    expect(v4).toContain(`unreachable ${net.net4}.0/24`);
    expect(v4).toContain(`${a.ipv4} dev ${a.join.srcName.replace('tsc', 'tsv')} scope link`);
    expect(v4).toContain(`${b.ipv4} dev ${b.join.srcName.replace('tsc', 'tsv')} scope link`);
    const v6 = await routes(lab, '-6');
    expect(v6).toContain(`unreachable ${net.net6}::/64 dev lo`);
    expect(v6).toContain(`${a.ipv6} dev ${a.join.srcName.replace('tsc', 'tsv')}`);
    // Join: the gateways, and for IPv6 the gateway on the link and both halves of the subnet through it.
    expect(a.join).toMatchObject({ gateway: net.gateway4, gatewayIpv6: net.gateway6 });
    expect(a.join.staticRoutes).toEqual([
      { destination: `${net.gateway6}/128`, type: 'connected', nextHop: '' },
      { destination: `${net.net6}::/65`, type: 'via', nextHop: net.gateway6 },
      { destination: `${net.net6}:0:8000::/65`, type: 'via', nextHop: net.gateway6 },
    ]);
  }, T);

  test('containers reach the gateway and each other through the host (proxy ARP; IPv6 via the gateway)', async () => {
    expect(await reaches(a.ns, net.gateway4)).toBe(true);
    expect(await reaches(a.ns, net.gateway6!)).toBe(true);
    expect(seenAs(await settled(() => tcpFrom(a.ns, b.ipv4, 80)))).toBe(a.ipv4);
    expect(seenAs(await settled(() => tcpFrom(a.ns, b.ipv6!, 80)))).toBe(a.ipv6);
    expect(seenAs(await settled(() => tcpFrom(b.ns, a.ipv4, 80)))).toBe(b.ipv4);
    // A's neighbour for B is the host's end of A's own link: B is one routed hop away, not on A's link.
    const hostMac = (await lab.linkDetails(a.join.srcName.replace('tsc', 'tsv'))).address;
    expect(await a.ns.exec('ip', ['neigh', 'show', b.ipv4])).toContain(hostMac);
  }, T);

  test('an address of the subnet no container holds is unreachable — not answered, not sent out of the host', async () => {
    const nobody = `${net.net4}.200`;
    expect(await ping(a.ns, nobody)).toBe(false);
    expect(await a.ns.exec('ip', ['neigh', 'show', nobody])).not.toContain('lladdr');
    // H itself: refused at once by the unreachable route, never towards the outside link.
    expect((await lab.host.execOk('ip', ['route', 'get', nobody])).stderr).toMatch(/unreachable|No route/);
  }, T);

  test('egress is masqueraded to the host address, IPv4 and IPv6', async () => {
    expect(seenAs(await settled(() => tcpFrom(a.ns, lab.outAddr, 7070)))).toBe(lab.hostAddr);
    expect(seenAs(await settled(() => tcpFrom(a.ns, lab.outAddr6, 7070)))).toBe(lab.hostAddr6);
  }, T);

  test('another host reaches a container only through published ports, and sees its own address', async () => {
    expect(seenAs(await settled(() => tcpFrom(lab.outside, lab.hostAddr, P)))).toBe(lab.outAddr);
    expect(seenAs(await settled(() => udpFrom(lab.outside, lab.hostAddr, P)))).toBe(lab.outAddr);
    expect(seenAs(await settled(() => tcpFrom(lab.outside, lab.hostAddr6, P)))).toBe(lab.outAddr6);
    // Directly at the container's address (the outside routes everything via H): dropped.
    expect((await tcpFrom(lab.outside, a.ipv4, 80, 1500)).reply).toBeUndefined();
    expect((await tcpFrom(lab.outside, a.ipv6!, 80, 1500)).reply).toBeUndefined();
    expect(onA.peers.filter((p) => p.address === lab.outAddr && p.proto === 'tcp').length).toBe(1);
  }, T);

  test('from the host: through its own address, and through 127.0.0.1 (masqueraded to the gateway)', async () => {
    expect(seenAs(await settled(() => tcpFrom(lab.host, lab.hostAddr, P)))).toBe(lab.hostAddr);
    expect(seenAs(await settled(() => tcpFrom(lab.host, '127.0.0.1', P)))).toBe(net.gateway4);
    expect(seenAs(await settled(() => tcpFrom(lab.host, '127.0.0.1', P + 1)))).toBe(net.gateway4);
    expect(seenAs(await settled(() => tcpFrom(lab.host, a.ipv4, 80)))).toBe(net.gateway4); // directly: the host's address on that link
  }, T);

  test('hairpin: another container and the container itself, through a host address (masqueraded to the gateway)', async () => {
    expect(seenAs(await settled(() => tcpFrom(b.ns, lab.hostAddr, P)))).toBe(net.gateway4);
    expect(seenAs(await settled(() => tcpFrom(b.ns, lab.hostAddr6, P)))).toBe(net.gateway6);
    expect(seenAs(await settled(() => tcpFrom(a.ns, lab.hostAddr, P)))).toBe(net.gateway4);
    expect(seenAs(await settled(() => udpFrom(a.ns, lab.hostAddr, P)))).toBe(net.gateway4);
  }, T);

  test('anti-spoofing: a container sending from another container\'s address gets nothing through (control: its own address does)', async () => {
    const before = outside.peers.length;
    await a.ns.exec('ip', ['addr', 'add', `${b.ipv4}/32`, 'dev', a.ifname]);
    await a.ns.exec('ip', ['-6', 'addr', 'add', `${b.ipv6}/128`, 'dev', a.ifname, 'nodad']);
    try {
      const from = async (src: string, dst: string) => {
        const script = `const s=require('node:net').connect({host:'${dst}',port:7070,localAddress:'${src}'});s.on('error',()=>process.exit(1));s.on('connect',()=>s.end());setTimeout(()=>process.exit(0),800);`;
        await a.ns.execOk(process.execPath, ['-e', script]);
      };
      await from(b.ipv4, lab.outAddr);
      await from(b.ipv6!, lab.outAddr6);
      await new Promise((r) => setTimeout(r, 300));
      expect(outside.peers.length).toBe(before); // nothing arrived
      await from(a.ipv4, lab.outAddr); // the control
      await outside.waitForPeer((p) => outside.peers.indexOf(p) >= before);
    } finally {
      await a.ns.exec('ip', ['addr', 'del', `${b.ipv4}/32`, 'dev', a.ifname]);
      await a.ns.exec('ip', ['-6', 'addr', 'del', `${b.ipv6}/128`, 'dev', a.ifname]);
    }
    const guard = await lab.host.exec('nft', ['list', 'chain', 'inet', 'tsbridge', 'guard']);
    expect(guard).toContain('type filter hook prerouting priority raw');
  }, T);

  test('start-up after a reboot (routes and tables gone, veths of unjoined endpoints too) brings everything back', async () => {
    const unjoined = await lab.endpoint(net);
    const host = `tsv${unjoined.id.slice(0, 12)}`;
    await lab.ipH(['route', 'del', 'unreachable', `${net.net4}.0/24`]);
    await lab.ipH(['-6', 'route', 'del', 'unreachable', `${net.net6}::/64`]);
    await lab.ipH(['link', 'del', host]);
    await lab.host.exec('nft', ['delete', 'table', 'inet', 'tsbridge']);
    const report = await lab.reconciler().startup();
    expect(report).toMatchObject({ vethsRecreated: 1, endpointsDropped: 0 });
    expect(await routes(lab, '-4')).toContain(`unreachable ${net.net4}.0/24`);
    expect(await routes(lab, '-4')).toContain(`${unjoined.ipv4} dev ${host} scope link`);
    expect((await lab.addresses(host)).filter((x) => !x.startsWith('fe80:'))).toEqual([`${net.gateway4}/32`, `${net.gateway6}/128`]);
    expect(seenAs(await settled(() => tcpFrom(lab.outside, lab.hostAddr, P)))).toBe(lab.outAddr);
    await lab.driver.deleteEndpoint(net.id, unjoined.id);
    await lab.driver.settle();
  }, T);

  test('removing the network leaves nothing in H: no link, no route, no table, no shim', async () => {
    await lab.driver.revokeExternalConnectivity(net.id, a.id);
    for (const ep of [a, b]) {
      await lab.driver.leave(net.id, ep.id);
      await lab.driver.deleteEndpoint(net.id, ep.id);
    }
    await lab.driver.settle();
    await lab.driver.deleteNetwork(net.id);
    // The containers still hold their ends (Docker deletes those with the sandbox): gone with H's ends here.
    expect(await lab.tsbridgeLinks()).toEqual([]);
    expect(await routes(lab, '-4')).toEqual([]);
    expect(await routes(lab, '-6')).toEqual([]);
    expect((await lab.nftTables()).filter((t) => t.includes('tsbridge'))).toEqual([]);
    expect((await lab.iptablesRules()).filter((r) => r.includes('TSBRIDGE'))).toEqual([]);
  }, T);
});

describe('enable_icc=false, internal, and isolation from other networks', () => {
  const cleanup = new Cleanup();
  let lab: Lab;
  afterAll(() => cleanup.run());

  beforeAll(async () => {
    lab = await Lab.create(cleanup);
    await lab.dockerLikeFirewall();
  }, T);

  test('icc=false: containers do not reach each other directly, but do through a published port on a host address', async () => {
    const net = await lab.network({ mode: 'p2p', icc: false });
    const a = await lab.attach(net);
    const b = await lab.attach(net);
    await startPeerRecorder(a.ns, 80);
    const P = 24900 + Math.floor(Math.random() * 50);
    await lab.publish(a, P);
    expect((await tcpFrom(b.ns, a.ipv4, 80, 1500)).reply).toBeUndefined();
    expect(await ping(b.ns, a.ipv4)).toBe(false);
    expect(seenAs(await settled(() => tcpFrom(b.ns, lab.hostAddr, P)))).toBe(net.gateway4);
    expect(await reaches(b.ns, net.gateway4)).toBe(true); // the host still
    // The control: the same network with icc on.
    const open = await lab.network({ mode: 'p2p' });
    const c = await lab.attach(open);
    const d = await lab.attach(open);
    await startPeerRecorder(c.ns, 80);
    expect(seenAs(await settled(() => tcpFrom(d.ns, c.ipv4, 80)))).toBe(d.ipv4);
  }, T);

  test('internal: containers reach each other and nothing else — not the host, not the outside', async () => {
    const net = await lab.network({ mode: 'p2p', internal: true });
    const a = await lab.attach(net, undefined, { forceGateway: true });
    const b = await lab.attach(net, undefined, { forceGateway: true });
    expect(a.join.gateway).toBe('');
    await startPeerRecorder(b.ns, 80);
    expect(seenAs(await settled(() => tcpFrom(a.ns, b.ipv4, 80)))).toBe(a.ipv4);
    expect(await ping(a.ns, net.gateway4)).toBe(false);
    expect(await ping(a.ns, lab.outAddr)).toBe(false);
    expect(await ping(lab.outside, b.ipv4)).toBe(false);
  }, T);

  test('a p2p network and a NAT bridge network do not reach each other directly, either way', async () => {
    const p2p = await lab.network({ mode: 'p2p' });
    const bridged = await lab.network();
    const a = await lab.attach(p2p);
    const c = await lab.attach(bridged);
    await startPeerRecorder(a.ns, 80);
    await startPeerRecorder(c.ns, 80);
    expect((await tcpFrom(c.ns, a.ipv4, 80, 1500)).reply).toBeUndefined();
    expect((await tcpFrom(a.ns, c.ipv4, 80, 1500)).reply).toBeUndefined();
    // Both still reach the outside (the control: routing between them works).
    expect(await reaches(a.ns, lab.outAddr)).toBe(true);
    expect(await reaches(c.ns, lab.outAddr)).toBe(true);
  }, T);

  test('two p2p networks do not reach each other directly', async () => {
    const one = await lab.network({ mode: 'p2p' });
    const two = await lab.network({ mode: 'p2p' });
    const a = await lab.attach(one);
    const b = await lab.attach(two);
    await startPeerRecorder(b.ns, 80);
    expect((await tcpFrom(a.ns, b.ipv4, 80, 1500)).reply).toBeUndefined();
    expect(await ping(a.ns, b.ipv4)).toBe(false);
    expect(await sh('ip', ['-n', lab.host.name, 'route', 'get', b.ipv4])).toContain(`dev tsv${b.id.slice(0, 12)}`); // routed, but dropped
  }, T);
});

describe('unreachable routes through the real IpLinks', () => {
  const cleanup = new Cleanup();
  afterAll(() => cleanup.run());

  test('made, replaced, deleted; deleting what is gone (or went with its link) is fine', async () => {
    const lab = await Lab.create(cleanup);
    const links = lab.kernel.links;
    const routes = [{ to: '10.213.250.0/24', unreachable: true as const }, { to: 'fd5e:213:250::/64', unreachable: true as const }];
    await links.ensureRoutes(routes);
    await links.ensureRoutes(routes); // replace: idempotent
    expect(await lab.ipH(['-4', 'route', 'show', 'type', 'unreachable'])).toContain('unreachable 10.213.250.0/24');
    expect(await lab.ipH(['-6', 'route', 'show', 'type', 'unreachable'])).toContain('unreachable fd5e:213:250::/64');
    await links.deleteRoutes(routes);
    expect(await lab.ipH(['-4', 'route', 'show', 'type', 'unreachable'])).toBe('');
    expect(await lab.ipH(['-6', 'route', 'show', 'type', 'unreachable'])).toBe('');
    await links.deleteRoutes([...routes, { to: '10.213.251.2/32', dev: 'tsvnosuchlink0' }]);
  }, T);
});
