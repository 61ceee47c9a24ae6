/**
 * The datapath tsbridge builds, with the real `ip`, `nft` and `iptables` — all inside throwaway
 * network namespaces (see helpers/lab.ts): H plays the host, O the outside world, C… containers.
 *
 * Needs: root, iproute2, nftables, iptables, conntrack, busybox (ping) and node.
 * Nothing here touches the machine's own links, routes, addresses or rulesets.
 */
import { hostVethName, peerVethName } from '../../src/domain/names.js';
import { Cleanup } from '../lib/cleanup.js';
import { listNetns, startPeerRecorder } from '../lib/netns.js';
import { parsePeerReply } from '../lib/probe.js';
import { requireRoot } from '../lib/run.js';
import { Lab, requireLabTools, conntrack, ping, reaches, tcpFrom, udpFrom, type LabEndpoint, seenAs } from './helpers/lab.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

beforeAll(async () => {
  requireRoot('test/integration/kernel-datapath.test.ts');
  await requireLabTools();
});

afterAll(async () => {
  await cleanup.run();
  const left = (await listNetns()).filter((n) => Lab.created.includes(n));
  expect(left).toEqual([]);
});

const T = 45_000;

async function expectIsolated(a: LabEndpoint, b: LabEndpoint): Promise<void> {
  expect(await ping(a.ns, b.ipv4)).toBe(false);
  expect(await ping(b.ns, a.ipv4)).toBe(false);
}

describe('links', () => {
  test('bridge and veth pair get the MTU, the gateway addresses, the MAC, hairpin and the bridge as master', async () => {
    const lab = await Lab.create(cleanup);
    const net = await lab.network({ mtu: 1400, v6: true });

    const br = await lab.linkDetails(net.bridge);
    expect(br.linkinfo?.info_kind).toBe('bridge');
    expect(br.mtu).toBe(1400);
    expect(br.flags).toContain('UP');
    const addrs = await lab.addresses(net.bridge);
    expect(addrs).toEqual(expect.arrayContaining([`${net.gateway4}/24`, `${net.gateway6}/64`]));

    const ep = await lab.endpoint(net);
    const hostSide = await lab.linkDetails(hostVethName(ep.id));
    const peer = await lab.linkDetails(peerVethName(ep.id));
    expect(hostSide.linkinfo?.info_kind).toBe('veth');
    expect(hostSide.mtu).toBe(1400);
    expect(hostSide.master).toBe(net.bridge);
    expect(hostSide.linkinfo?.info_slave_data?.hairpin).toBe(true);
    expect(hostSide.flags).toContain('UP');
    expect(peer.mtu).toBe(1400);
    expect(peer.address).toBe(ep.mac);
    expect(peer.master).toBeUndefined();

    // the sysctls the driver needs, set inside H
    expect(await lab.sysctl.get('net.ipv4.ip_forward')).toBe('1');
    expect(await lab.sysctl.get('net.ipv6.conf.all.forwarding')).toBe('1');
    expect(await lab.sysctl.get(`net.ipv4.conf.${net.bridge}.route_localnet`)).toBe('1');

    // Join hands out the peer; once Docker moved it, the container sees the same MTU and MAC
    const c = await lab.attach(net);
    expect(c.join).toEqual({ srcName: peerVethName(c.id), dstPrefix: 'eth', gateway: net.gateway4, gatewayIpv6: net.gateway6, staticRoutes: [] });
    const inside = await lab.linkDetails('eth0', c.ns);
    expect(inside.mtu).toBe(1400);
    expect(inside.address).toBe(c.mac);
    expect(await reaches(c.ns, net.gateway4)).toBe(true);
    expect(await reaches(c.ns, net.gateway6!)).toBe(true);
  }, T);

  test('inhibit_ipv4: the bridge holds no IPv4 address; Join still hands out the gateway (a router on the segment holds it, as with Docker)', async () => {
    const lab = await Lab.create(cleanup);
    const net = await lab.network({ inhibitIpv4: true });
    expect((await lab.addresses(net.bridge)).filter((a) => !a.includes(':'))).toEqual([]);
    const c = await lab.attach(net);
    expect(c.join.gateway).toBe(net.gateway4);
  }, T);

  test('a veth without a bridge (what a point-to-point kind asks for): the host end holds its addresses and routes lead through it; both go with the link', async () => {
    const lab = await Lab.create(cleanup);
    const [host, peer] = ['tsvp2p000000001', 'tscp2p000000001'];
    await lab.kernel.links.ensureVeth({ hostName: host, peerName: peer, master: null, mtu: 1450, mac: '02:00:00:00:0a:01', hostAddresses: ['10.213.250.1/32', 'fd5e:250::1/128'] });
    await lab.kernel.links.ensureRoutes([{ to: '10.213.250.2/32', dev: host }, { to: 'fd5e:250::2/128', dev: host }]);
    await lab.kernel.links.ensureRoutes([{ to: '10.213.250.2/32', dev: host }]); // again: no change, no error
    const h = await lab.linkDetails(host);
    expect(h.master).toBeUndefined();
    expect(h.mtu).toBe(1450);
    expect(h.flags).toContain('UP');
    expect(await lab.addresses(host)).toEqual(expect.arrayContaining(['10.213.250.1/32', 'fd5e:250::1/128']));
    const routes = async () => [
      ...(JSON.parse(await lab.ipH(['-j', 'route', 'show', 'dev', host])) as { dst: string; scope: string }[]),
      ...(JSON.parse(await lab.ipH(['-j', '-6', 'route', 'show', 'dev', host])) as { dst: string; scope?: string }[]),
    ].map((r) => r.dst);
    expect(await routes()).toEqual(expect.arrayContaining(['10.213.250.2', 'fd5e:250::2']));
    await lab.kernel.links.deleteLinks([host]);
    expect(await lab.tsbridgeLinks()).not.toContain(host);
    expect(JSON.parse(await lab.ipH(['-j', 'route', 'show', '10.213.250.2/32']))).toEqual([]);
  }, T);
});

describe('within one network', () => {
  test('two containers ping each other over IPv4 and IPv6', async () => {
    const lab = await Lab.create(cleanup);
    const net = await lab.network({ v6: true });
    const [c1, c2] = [await lab.attach(net), await lab.attach(net)];
    expect(await reaches(c1.ns, c2.ipv4)).toBe(true);
    expect(await reaches(c2.ns, c1.ipv4)).toBe(true);
    expect(await reaches(c1.ns, c2.ipv6!)).toBe(true);
  }, T);

  test('with icc=false two containers cannot reach each other, but each still reaches the gateway and the outside', async () => {
    const lab = await Lab.create(cleanup);
    const net = await lab.network({ icc: false });
    const [c1, c2] = [await lab.attach(net), await lab.attach(net)];
    const rec = await startPeerRecorder(lab.outside, 7070);

    await expectIsolated(c1, c2);
    expect(await reaches(c1.ns, net.gateway4)).toBe(true);
    expect(seenAs(await tcpFrom(c1.ns, lab.outAddr, rec.port))).toBe(lab.hostAddr);
    expect(seenAs(await tcpFrom(c2.ns, lab.outAddr, rec.port))).toBe(lab.hostAddr);

    // control: it is tsbridge's bridge table that keeps them apart
    await lab.host.exec('nft', ['delete', 'table', 'bridge', 'tsbridge']);
    expect(await reaches(c1.ns, c2.ipv4)).toBe(true);
  }, T);
});

describe('egress', () => {
  test('a container reaches the outside world masqueraded as the host address (IPv4 and IPv6)', async () => {
    const lab = await Lab.create(cleanup);
    const net = await lab.network({ v6: true });
    const c1 = await lab.attach(net);
    const rec = await startPeerRecorder(lab.outside, 7070);

    expect(await reaches(c1.ns, lab.outAddr)).toBe(true);
    expect(seenAs(await tcpFrom(c1.ns, lab.outAddr, rec.port))).toBe(lab.hostAddr);
    expect(seenAs(await tcpFrom(c1.ns, lab.outAddr6, rec.port))).toBe(lab.hostAddr6);
    expect(rec.peers.map((p) => p.address)).toEqual([lab.hostAddr, lab.hostAddr6]);

    // H's conntrack shows the translation: original source the container, reply to H's address
    const ct = await conntrack(lab.host, ['-p', 'tcp', '--dport', String(rec.port), '-s', c1.ipv4]);
    expect(ct.length).toBeGreaterThan(0);
    expect(ct[0]).toContain(`src=${c1.ipv4} dst=${lab.outAddr}`);
    expect(ct[0]).toContain(`src=${lab.outAddr} dst=${lab.hostAddr}`);
  }, T);

  test("with Docker's FORWARD policy DROP in H, the TSBRIDGE-FORWARD shim (jumped to from DOCKER-USER) lets the traffic through", async () => {
    const lab = await Lab.create(cleanup);
    await lab.dockerLikeFirewall();
    const net = await lab.network();
    const [c1, c2] = [await lab.attach(net), await lab.attach(net)];
    const rec = await startPeerRecorder(lab.outside, 7070);

    const rules = await lab.iptablesRules();
    expect(rules).toContain('-P FORWARD DROP');
    expect(rules.filter((r) => r.startsWith('-A DOCKER-USER'))).toEqual(['-A DOCKER-USER -j TSBRIDGE-FORWARD', '-A DOCKER-USER -j RETURN']);
    expect(rules.filter((r) => r.endsWith('-j TSBRIDGE-FORWARD'))).toEqual(['-A DOCKER-USER -j TSBRIDGE-FORWARD']);
    expect(rules).toEqual(expect.arrayContaining([`-A TSBRIDGE-FORWARD -i ${net.bridge} -j ACCEPT`, `-A TSBRIDGE-FORWARD -o ${net.bridge} -j ACCEPT`]));

    expect(await reaches(c1.ns, c2.ipv4)).toBe(true); // bridged, but br_netfilter sends it through FORWARD
    expect(seenAs(await tcpFrom(c1.ns, lab.outAddr, rec.port))).toBe(lab.hostAddr);

    // Control: without the jump, the DROP policy really applies (to bridged and routed traffic) ...
    await lab.host.exec('iptables', ['-w', '5', '-D', 'DOCKER-USER', '-j', 'TSBRIDGE-FORWARD']);
    expect(await ping(c1.ns, c2.ipv4)).toBe(false);
    expect((await tcpFrom(c1.ns, lab.outAddr, rec.port, 1500)).reply).toBeUndefined();

    // ... and the next full apply (here: another network being created) puts the jump back.
    await lab.network();
    expect((await lab.iptablesRules()).filter((r) => r.endsWith('-j TSBRIDGE-FORWARD'))).toEqual(['-A DOCKER-USER -j TSBRIDGE-FORWARD']);
    expect(await reaches(c1.ns, c2.ipv4)).toBe(true);
    expect(seenAs(await tcpFrom(c1.ns, lab.outAddr, rec.port))).toBe(lab.hostAddr);
  }, T);
});

describe('egress options', () => {
  test('enable_ip_masquerade=false: the outside sees the container address', async () => {
    const lab = await Lab.create(cleanup);
    const net = await lab.network({ masquerade: false });
    const c1 = await lab.attach(net);
    const rec = await startPeerRecorder(lab.outside, 7070);
    expect(seenAs(await tcpFrom(c1.ns, lab.outAddr, rec.port))).toBe(c1.ipv4);
  }, T);

  test('host_ipv4: egress is SNATed to the configured host address', async () => {
    const lab = await Lab.create(cleanup);
    const extra = await lab.addHostAddress();
    const net = await lab.network({ snatIpv4: extra });
    const c1 = await lab.attach(net);
    const rec = await startPeerRecorder(lab.outside, 7070);
    expect(seenAs(await tcpFrom(c1.ns, lab.outAddr, rec.port))).toBe(extra);
  }, T);
});

describe('published ports', () => {
  test("the outside reaches a container's server through H's address, with its own source address; revoke closes it", async () => {
    const lab = await Lab.create(cleanup);
    await lab.dockerLikeFirewall();
    const net = await lab.network();
    const c1 = await lab.attach(net);
    const server = await startPeerRecorder(c1.ns, 80);
    const P = 20000 + Math.floor(Math.random() * 10000);

    expect(await lab.publish(c1, P)).toEqual([{ proto: 'tcp', hostIp: '', hostPort: P, containerPort: 80 }]);
    expect(await lab.host.exec('nft', ['list', 'map', 'inet', 'tsbridge', 'ports4'])).toContain(`tcp . ${P} : ${c1.ipv4} . 80`);

    const r = await tcpFrom(lab.outside, lab.hostAddr, P);
    expect(seenAs(r)).toBe(lab.outAddr); // no SNAT on the way in
    expect(server.peers.map((p) => p.address)).toEqual([lab.outAddr]);

    // an unpublished port of the same host is not forwarded
    expect((await tcpFrom(lab.outside, lab.hostAddr, P + 1)).reply).toBeUndefined();

    await lab.driver.revokeExternalConnectivity(net.id, c1.id);
    expect(await lab.host.exec('nft', ['list', 'map', 'inet', 'tsbridge', 'ports4'])).not.toContain(`${P}`);
    const after = await tcpFrom(lab.outside, lab.hostAddr, P, 1500);
    expect(after.reply).toBeUndefined();
    expect(after.error).toMatch(/ECONNREFUSED|timeout/);
    expect(server.peers).toHaveLength(1);

    // the outside cannot reach the container directly either (H routes 10.213.x, but nothing is published)
    expect((await tcpFrom(lab.outside, c1.ipv4, 80, 1500)).reply).toBeUndefined();
  }, T);

  test('deleting the endpoint removes its published port', async () => {
    const lab = await Lab.create(cleanup);
    const net = await lab.network();
    const c1 = await lab.attach(net);
    await startPeerRecorder(c1.ns, 80);
    const P = 20000 + Math.floor(Math.random() * 10000);
    await lab.publish(c1, P);
    expect(seenAs(await tcpFrom(lab.outside, lab.hostAddr, P))).toBe(lab.outAddr);

    await lab.driver.leave(net.id, c1.id);
    await lab.driver.deleteEndpoint(net.id, c1.id);
    expect(await lab.host.exec('nft', ['list', 'map', 'inet', 'tsbridge', 'ports4'])).not.toContain(`${P}`);
    expect((await tcpFrom(lab.outside, lab.hostAddr, P, 1500)).reply).toBeUndefined();
  }, T);
});

describe('published ports, other paths', () => {
  test('from H itself: through its own address and through 127.0.0.1 (route_localnet + masquerade)', async () => {
    const lab = await Lab.create(cleanup);
    await lab.dockerLikeFirewall();
    const net = await lab.network();
    const c1 = await lab.attach(net);
    await startPeerRecorder(c1.ns, 80);
    const P = 20000 + Math.floor(Math.random() * 10000);
    await lab.publish(c1, P);

    expect(seenAs(await tcpFrom(lab.host, lab.hostAddr, P))).toBe(lab.hostAddr);
    expect(seenAs(await tcpFrom(lab.host, '127.0.0.1', P))).toBe(net.gateway4);
  }, T);

  // Docker enables br_netfilter (bridge-nf-call-iptables=1, also the default in a fresh netns
  // here): a DNAT back into the same bridge is then bridged, and its POSTROUTING pass has no
  // input interface, so a hairpin rule matching `iifname` never fires.
  test('hairpin: containers of the network, the publishing one included, reach the port through the host address', async () => {
    const lab = await Lab.create(cleanup);
    await lab.dockerLikeFirewall();
    await lab.dockerLikeFirewall('ip6tables');
    const net = await lab.network({ v6: true });
    const c1 = await lab.attach(net);
    const c2 = await lab.attach(net);
    await startPeerRecorder(c1.ns, 80);
    const P = 20000 + Math.floor(Math.random() * 10000);
    await lab.publish(c1, P);
    expect(await lab.sysctl.get('net.bridge.bridge-nf-call-iptables')).toBe('1');

    expect(seenAs(await tcpFrom(c2.ns, lab.hostAddr, P))).toBe(net.gateway4);
    expect(seenAs(await tcpFrom(c1.ns, lab.hostAddr, P))).toBe(net.gateway4);
    expect(seenAs(await tcpFrom(c1.ns, lab.hostAddr6, P))).toBe(net.gateway6);
  }, T);

  test('IPv6 and UDP bindings: the outside reaches the container over both, with its own address', async () => {
    const lab = await Lab.create(cleanup);
    await lab.dockerLikeFirewall();
    await lab.dockerLikeFirewall('ip6tables');
    const net = await lab.network({ v6: true });
    const c1 = await lab.attach(net);
    const server = await startPeerRecorder(c1.ns, 80);
    const P = 20000 + Math.floor(Math.random() * 10000);
    const got = await lab.driver.programExternalConnectivity(net.id, c1.id, [
      { proto: 'tcp', containerPort: 80, hostIp: '', hostPort: P, hostPortEnd: 0 },
      { proto: 'udp', containerPort: 80, hostIp: '', hostPort: P, hostPortEnd: 0 },
    ]);
    expect(got).toEqual([
      { proto: 'tcp', hostIp: '', hostPort: P, containerPort: 80 },
      { proto: 'udp', hostIp: '', hostPort: P, containerPort: 80 },
    ]);

    expect(seenAs(await tcpFrom(lab.outside, lab.hostAddr6, P))).toBe(lab.outAddr6);
    const u4 = await udpFrom(lab.outside, lab.hostAddr, P, 'hello4');
    expect(parsePeerReply(u4.reply ?? '')).toMatchObject({ address: lab.outAddr, payload: 'hello4' });
    const u6 = await udpFrom(lab.outside, lab.hostAddr6, P, 'hello6');
    expect(parsePeerReply(u6.reply ?? '')).toMatchObject({ address: lab.outAddr6, payload: 'hello6' });

    await lab.driver.revokeExternalConnectivity(net.id, c1.id);
    const n = server.peers.length;
    expect((await udpFrom(lab.outside, lab.hostAddr, P, 'late', 1000)).reply).toBeUndefined();
    expect((await tcpFrom(lab.outside, lab.hostAddr6, P, 1000)).reply).toBeUndefined();
    expect(server.peers).toHaveLength(n);
  }, T);

  test('a binding to one host address answers on that address only', async () => {
    const lab = await Lab.create(cleanup);
    const extra = await lab.addHostAddress();
    const net = await lab.network();
    const c1 = await lab.attach(net);
    await startPeerRecorder(c1.ns, 80);
    const P = 20000 + Math.floor(Math.random() * 10000);
    expect(await lab.publish(c1, P, { hostIp: extra })).toEqual([{ proto: 'tcp', hostIp: extra, hostPort: P, containerPort: 80 }]);

    expect(seenAs(await tcpFrom(lab.outside, extra, P))).toBe(lab.outAddr);
    expect((await tcpFrom(lab.outside, lab.hostAddr, P, 1000)).reply).toBeUndefined();
  }, T);
});

describe('isolation', () => {
  test('an internal network: containers reach each other, never the outside, and the outside never reaches them', async () => {
    const lab = await Lab.create(cleanup);
    await lab.dockerLikeFirewall();
    const net = await lab.network({ internal: true });
    // a container that routes via the bridge anyway (Join gives it no gateway)
    const [c1, c2] = [await lab.attach(net, undefined, { forceGateway: true }), await lab.attach(net, undefined, { forceGateway: true })];
    expect(c1.join.gateway).toBe('');
    const rec = await startPeerRecorder(lab.outside, 7070);

    expect(await reaches(c1.ns, c2.ipv4)).toBe(true);
    expect(await ping(c1.ns, lab.outAddr)).toBe(false);
    expect((await tcpFrom(c1.ns, lab.outAddr, rec.port, 1500)).reply).toBeUndefined();
    expect(await ping(lab.outside, c1.ipv4)).toBe(false);
    expect(rec.peers).toEqual([]);
  }, T);

  test('two networks: a container on one cannot reach a container on the other; both reach the outside', async () => {
    const lab = await Lab.create(cleanup);
    const [a, b] = [await lab.network(), await lab.network()];
    const c1 = await lab.attach(a);
    const c3 = await lab.attach(b);
    const rec = await startPeerRecorder(lab.outside, 7070);
    await startPeerRecorder(c3.ns, 8080);

    await expectIsolated(c1, c3);
    expect((await tcpFrom(c1.ns, c3.ipv4, 8080, 1500)).reply).toBeUndefined();
    expect(seenAs(await tcpFrom(c1.ns, lab.outAddr, rec.port))).toBe(lab.hostAddr);
    expect(seenAs(await tcpFrom(c3.ns, lab.outAddr, rec.port))).toBe(lab.hostAddr);

    // control: it is tsbridge's forward chain that keeps them apart (H routes between the bridges)
    await lab.host.exec('nft', ['delete', 'table', 'inet', 'tsbridge']);
    expect(await reaches(c1.ns, c3.ipv4)).toBe(true);
  }, T);
});

describe('an IPv6-only network (Docker 28: --ipv4=false --ipv6)', () => {
  test('no IPv4 anywhere; containers reach each other and the outside over IPv6 (masqueraded); the outside reaches a published port over IPv6 only', async () => {
    const lab = await Lab.create(cleanup);
    await lab.dockerLikeFirewall();
    await lab.dockerLikeFirewall('ip6tables');
    const net = await lab.network({ v6: true, v4: false });
    const addrs = await lab.addresses(net.bridge);
    expect(addrs).toContain(`${net.gateway6}/64`);
    expect(addrs.filter((a) => !a.includes(':'))).toEqual([]);

    const [c1, c2] = [await lab.attach(net), await lab.attach(net)];
    expect({ gateway: c1.join.gateway, gatewayIpv6: c1.join.gatewayIpv6 }).toEqual({ gateway: '', gatewayIpv6: net.gateway6 });
    expect(c1.ipv4).toBe('');
    expect(await reaches(c1.ns, c2.ipv6!)).toBe(true);
    expect(await reaches(c1.ns, net.gateway6!)).toBe(true);

    const rec = await startPeerRecorder(lab.outside, 7071);
    expect(seenAs(await tcpFrom(c1.ns, lab.outAddr6, rec.port))).toBe(lab.hostAddr6);

    await startPeerRecorder(c2.ns, 80);
    const P = 20000 + Math.floor(Math.random() * 10000);
    await lab.driver.programExternalConnectivity(net.id, c2.id, [{ proto: 'tcp', containerPort: 80, hostIp: '', hostPort: P, hostPortEnd: 0 }]);
    expect(seenAs(await tcpFrom(lab.outside, lab.hostAddr6, P))).toBe(lab.outAddr6);
    expect((await tcpFrom(lab.outside, lab.hostAddr, P, 1000)).reply).toBeUndefined(); // nothing is published on IPv4
  }, T);
});
