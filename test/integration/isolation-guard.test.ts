/**
 * What keeps containers of one network in their place, with real packets in network namespaces
 * (helpers/lab.ts): anti-spoofing on the bridge (a container sends only with its own MAC and
 * addresses, and claims only its own addresses in ARP and neighbour advertisements), internal
 * networks (nothing in or out, not even the host), and enable_icc=false with published ports.
 * Each "blocked" is paired with a control showing the same packet does get through without
 * tsbridge's rule — so the test proves the rule, not a broken probe.
 *
 * Needs: root, iproute2, nftables, iptables, conntrack, busybox, node and python3.
 */
import { Cleanup } from '../lib/cleanup.js';
import { waitFor } from '../lib/docker.js';
import { listNetns, startPeerRecorder, type Netns } from '../lib/netns.js';
import { parsePeerReply } from '../lib/probe.js';
import { requireRoot, sh, shOk } from '../lib/run.js';
import { Lab, haveBinary, ping, reaches, requireLabTools, tcpFrom } from './helpers/lab.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

beforeAll(async () => {
  requireRoot('test/integration/isolation-guard.test.ts');
  await requireLabTools();
  if (!(await haveBinary('python3'))) throw new Error('python3 is needed (it sends the crafted neighbour advertisement)');
});

afterAll(async () => {
  await cleanup.run();
  expect((await listNetns()).filter((n) => Lab.created.includes(n))).toEqual([]);
});

const T = 60_000;
const port = () => 20000 + Math.floor(Math.random() * 10000);

/* One UDP datagram from a chosen source address (which must be on an interface of the namespace). */
const UDP_FROM = `
const dgram = require('node:dgram'), net = require('node:net');
const [src, dst, port] = [process.argv[1], process.argv[2], Number(process.argv[3])];
const s = dgram.createSocket(net.isIPv6(dst) ? 'udp6' : 'udp4');
s.bind({ address: src, port: 0 }, () => s.send('spoof', port, dst, (e) => { if (e) { console.error(e.message); process.exit(1); } s.close(); }));
`;

async function udpFromAddress(ns: Netns, src: string, dst: string, p: number): Promise<void> {
  await sh('ip', ['netns', 'exec', ns.name, process.execPath, '-e', UDP_FROM, src, dst, String(p)]);
}

/* An unsolicited neighbour advertisement (override flag) claiming TARGET for this interface's MAC. */
const NA = `
import socket, struct, sys
ifname, target, mac = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3].replace(':', ''))
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
na = struct.pack('!BBHI', 136, 0, 0, 0x20000000) + socket.inet_pton(socket.AF_INET6, target) + bytes([2, 1]) + mac
s.sendto(na, ('ff02::1', 0, 0, socket.if_nametoindex(ifname)))
`;

/** H's neighbour entry for an address on the bridge: its MAC, or null. */
async function neighbour(lab: Lab, addr: string, bridge: string): Promise<string | null> {
  const out = await lab.ipH([addr.includes(':') ? '-6' : '-4', 'neigh', 'show', addr, 'dev', bridge]);
  return /lladdr (\S+)/.exec(out)?.[1] ?? null;
}

async function dropBridgeTable(lab: Lab): Promise<void> {
  await lab.host.exec('nft', ['delete', 'table', 'bridge', 'tsbridge']);
}

describe('anti-spoofing', () => {
  test("IPv4 and IPv6: a container that takes another one's address cannot send from it; with its own it can", async () => {
    const lab = await Lab.create(cleanup);
    const net = await lab.network({ v6: true });
    const [c1, c2, c3] = [await lab.attach(net), await lab.attach(net), await lab.attach(net)];
    const rec = await startPeerRecorder(c3.ns, 9000);
    const seen = () => rec.peers.map((p) => p.address);

    // A datagram from each address until it is seen: one alone can be lost to a neighbour
    // resolution still under way (a loaded host), which would prove nothing either way.
    const sendUntilSeen = (pairs: [string, string][], what: string) =>
      waitFor(
        async () => {
          for (const [src, dst] of pairs) if (!seen().includes(src)) await udpFromAddress(c1.ns, src, dst, rec.port);
          return pairs.every(([src]) => seen().includes(src));
        },
        30_000,
        { what, intervalMs: 500 },
      );
    // c1's own addresses work (and show that c3 records what arrives, the paths resolved)
    await sendUntilSeen([[c1.ipv4, c3.ipv4], [c1.ipv6!, c3.ipv6!]], "c1's own datagrams");
    // c1 adds c2's addresses (what `docker run --cap-add NET_ADMIN` allows) and sends from them
    await sh('ip', ['-n', c1.ns.name, 'addr', 'add', `${c2.ipv4}/32`, 'dev', c1.ifname]);
    await sh('ip', ['-n', c1.ns.name, '-6', 'addr', 'add', `${c2.ipv6}/128`, 'dev', c1.ifname, 'nodad']);
    for (let i = 0; i < 3; i++) {
      await udpFromAddress(c1.ns, c2.ipv4, c3.ipv4, rec.port);
      await udpFromAddress(c1.ns, c2.ipv6!, c3.ipv6!, rec.port);
    }
    await new Promise((r) => setTimeout(r, 1000));
    expect(seen()).not.toContain(c2.ipv4);
    expect(seen()).not.toContain(c2.ipv6);
    // nor towards the host or the outside: the guard is on the bridge port, whatever the destination
    expect(await reaches(c1.ns, net.gateway4)).toBe(true);

    // control: without tsbridge's bridge table the very same datagrams arrive
    await dropBridgeTable(lab);
    await sendUntilSeen([[c2.ipv4, c3.ipv4], [c2.ipv6!, c3.ipv6!]], 'the spoofed datagrams, unguarded');
  }, T);

  test('a container that changes its MAC is cut off until it takes its own back', async () => {
    const lab = await Lab.create(cleanup);
    const net = await lab.network();
    const [c1, c2] = [await lab.attach(net), await lab.attach(net)];
    expect(await reaches(c1.ns, c2.ipv4)).toBe(true);
    await sh('ip', ['-n', c1.ns.name, 'link', 'set', c1.ifname, 'address', '02:00:00:0b:ad:01']);
    await sh('ip', ['-n', c2.ns.name, 'neigh', 'flush', 'dev', c2.ifname]);
    expect(await ping(c1.ns, c2.ipv4)).toBe(false);
    expect(await ping(c1.ns, net.gateway4)).toBe(false);
    await sh('ip', ['-n', c1.ns.name, 'link', 'set', c1.ifname, 'address', c1.mac]);
    expect(await reaches(c1.ns, c2.ipv4)).toBe(true);
  }, T);

  test("ARP and neighbour advertisements claiming another container's address do not reach the host", async () => {
    const lab = await Lab.create(cleanup);
    const net = await lab.network({ v6: true });
    const [c1, c2] = [await lab.attach(net), await lab.attach(net)];
    const mac1 = c1.mac;
    const mac2 = c2.mac;
    // H learns c2 (the entries a poisoning would rewrite)
    expect(await reaches(lab.host, c2.ipv4)).toBe(true);
    expect(await reaches(lab.host, c2.ipv6!)).toBe(true);
    expect(await neighbour(lab, c2.ipv4, net.bridge)).toBe(mac2);
    expect(await neighbour(lab, c2.ipv6!, net.bridge)).toBe(mac2);

    const poison = async () => {
      await new Promise((r) => setTimeout(r, 1100)); // past the kernel's ARP locktime (1 s)
      // gratuitous ARP "c2's address is at c1's MAC", as an answer and as a request
      for (const mode of ['-A', '-U']) {
        await shOk('ip', ['netns', 'exec', c1.ns.name, 'busybox', 'arping', mode, '-c', '2', '-w', '2', '-I', c1.ifname, '-s', c2.ipv4, c2.ipv4]);
      }
      await sh('ip', ['netns', 'exec', c1.ns.name, 'python3', '-c', NA, c1.ifname, c2.ipv6!, mac1]);
      await new Promise((r) => setTimeout(r, 300));
    };
    await sh('ip', ['-n', c1.ns.name, 'addr', 'add', `${c2.ipv4}/32`, 'dev', c1.ifname]); // arping's -s needs it local
    await poison();
    expect(await neighbour(lab, c2.ipv4, net.bridge)).toBe(mac2);
    expect(await neighbour(lab, c2.ipv6!, net.bridge)).toBe(mac2);

    // control: unguarded, the same frames do rewrite H's entries
    await dropBridgeTable(lab);
    await poison();
    expect(await neighbour(lab, c2.ipv4, net.bridge)).toBe(mac1);
    expect(await neighbour(lab, c2.ipv6!, net.bridge)).toBe(mac1);
  }, T);

  test('the guard follows endpoints: a new endpoint is guarded at once, a removed one leaves nothing behind', async () => {
    const lab = await Lab.create(cleanup);
    const net = await lab.network();
    const c1 = await lab.attach(net);
    const c2 = await lab.attach(net);
    const elements = async () => lab.host.exec('nft', ['list', 'table', 'bridge', 'tsbridge']);
    expect(await elements()).toContain(c2.mac);
    // publishing and revoking ports never touches the guard (the port calls use scope 'ports')
    await lab.publish(c2, port());
    await lab.driver.revokeExternalConnectivity(net.id, c2.id);
    expect(await elements()).toContain(c2.mac);
    expect(await reaches(c2.ns, c1.ipv4)).toBe(true);
    await lab.driver.leave(net.id, c2.id);
    await lab.driver.deleteEndpoint(net.id, c2.id);
    const after = await elements();
    expect(after).not.toContain(c2.mac);
    expect(after).not.toContain(c2.ipv4);
    expect(after).toContain(c1.mac);
  }, T);
});

describe('internal networks', () => {
  test('containers reach each other and nothing else — not the outside, not the host; the host still reaches them', async () => {
    const lab = await Lab.create(cleanup);
    await lab.dockerLikeFirewall();
    const net = await lab.network({ internal: true });
    const open = await lab.network();
    // containers that route via the bridge anyway (Join gives them no gateway)
    const [c1, c2] = [await lab.attach(net, undefined, { forceGateway: true }), await lab.attach(net, undefined, { forceGateway: true })];
    const other = await lab.attach(open);
    const onHost = await startPeerRecorder(lab.host, 7071);
    const world = await startPeerRecorder(lab.outside, 7070);
    await startPeerRecorder(c1.ns, 80);

    expect(await reaches(c1.ns, c2.ipv4)).toBe(true);
    expect((await tcpFrom(c1.ns, net.gateway4, onHost.port, 1500)).reply).toBeUndefined();
    expect(await ping(c1.ns, net.gateway4)).toBe(false);
    expect((await tcpFrom(c1.ns, lab.hostAddr, onHost.port, 1500)).reply).toBeUndefined(); // another host address
    expect((await tcpFrom(c1.ns, lab.outAddr, world.port, 1500)).reply).toBeUndefined();
    expect(await ping(c1.ns, other.ipv4)).toBe(false);
    expect(await ping(other.ns, c1.ipv4)).toBe(false);
    expect(onHost.peers).toEqual([]);
    expect(world.peers).toEqual([]);

    // the host opens connections to them (health checks, debugging): replies come back
    expect(parsePeerReply((await tcpFrom(lab.host, c1.ipv4, 80)).reply ?? '').address).toBe(net.gateway4);
    // control: a container of an ordinary network reaches the host through its gateway
    expect(parsePeerReply((await tcpFrom(other.ns, open.gateway4, onHost.port)).reply ?? '').address).toBe(other.ipv4);
  }, T);
});

describe('enable_icc=false', () => {
  test('containers cannot reach each other; egress works; a published port answers other hosts and other networks', async () => {
    const lab = await Lab.create(cleanup);
    await lab.dockerLikeFirewall();
    const net = await lab.network({ icc: false });
    const elsewhere = await lab.network();
    const [c1, c2] = [await lab.attach(net), await lab.attach(net)];
    const c3 = await lab.attach(elsewhere);
    const world = await startPeerRecorder(lab.outside, 7070);
    await startPeerRecorder(c2.ns, 80);
    const P = port();
    await lab.publish(c2, P);

    expect(await ping(c1.ns, c2.ipv4)).toBe(false);
    expect((await tcpFrom(c1.ns, c2.ipv4, 80, 1500)).reply).toBeUndefined();
    expect(parsePeerReply((await tcpFrom(c1.ns, lab.outAddr, world.port)).reply ?? '').address).toBe(lab.hostAddr);
    expect(parsePeerReply((await tcpFrom(lab.outside, lab.hostAddr, P)).reply ?? '').address).toBe(lab.outAddr);
    expect(parsePeerReply((await tcpFrom(c3.ns, lab.hostAddr, P)).reply ?? '').address).toBe(net.gateway4);
    // Not through a host address from the same network either: with br_netfilter (Docker turns it
    // on) such a hairpin is bridged between the two ports, which enable_icc=false forbids — as on
    // Docker's bridge without its userland proxy (docs/options.md).
    expect((await tcpFrom(c1.ns, lab.hostAddr, P, 1500)).reply).toBeUndefined();
  }, T);
});
