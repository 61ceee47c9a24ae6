/**
 * Published ports with real packets, tsbridge's real kernel layer acting in a throwaway
 * namespace H ("the host"; see helpers/lab.ts): every path to a published port, TCP, UDP and
 * SCTP, IPv4 and IPv6, with and without br_netfilter in H (with it, a hairpinned packet is
 * bridged and netfilter sees no input interface in postrouting — the case that once broke
 * hairpin to self), 127.0.0.1-bound ports against the outside, UDP flows across a remap,
 * and H's firewall back to what it was once everything is gone.
 *
 * Needs: root, iproute2, nftables, iptables, conntrack, node, python3 (SCTP's raw packets).
 * Nothing here touches the machine's own links, routes, addresses or rulesets.
 */
import { Cleanup } from '../lib/cleanup.js';
import { listNetns, startPeerRecorder, type Netns, type PeerRecorder } from '../lib/netns.js';
import { parsePeerReply } from '../lib/probe.js';
import { requireRoot, shOk } from '../lib/run.js';
import { havePythonRaw, sctpProbe } from '../lib/sctp.js';
import { Lab, conntrack, tcpFrom, udpFrom, type LabEndpoint, type LabNetwork, type TcpProbeResult } from './helpers/lab.js';

const T = 60_000;

beforeAll(() => requireRoot('test/integration/ports-datapath.test.ts'));

afterAll(async () => {
  const left = (await listNetns()).filter((n) => Lab.created.includes(n));
  expect(left).toEqual([]);
});

/** The address the peer recorder / udp-echo answered with; throws with the error otherwise. */
function seenAs(r: TcpProbeResult): string {
  if (r.reply === undefined) throw new Error(`no answer: ${r.error}`);
  return parsePeerReply(r.reply).address;
}

/** Retries a probe a few times: the very first packets may wait for neighbour discovery. */
async function settled(probe: () => Promise<TcpProbeResult>, tries = 3): Promise<TcpProbeResult> {
  let r: TcpProbeResult = {};
  for (let i = 0; i < tries; i++) {
    r = await probe();
    if (r.reply !== undefined) return r;
  }
  return r;
}

/*
 * UDP client with a fixed source port (node, inside a namespace): the same 5-tuple every time,
 * so a conntrack entry made by an earlier datagram is the one later datagrams hit.
 */
const UDP_FIXED = `
const dgram = require('node:dgram'), net = require('node:net');
const [host, port, sport, ms] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3]), Number(process.argv[4])];
const done = (o) => { process.stdout.write(JSON.stringify(o) + '\\n'); process.exit(0); };
const s = dgram.createSocket({ type: net.isIPv6(host) ? 'udp6' : 'udp4', reuseAddr: true });
setTimeout(() => done({ error: 'timeout' }), ms);
s.on('error', (e) => done({ error: e.code || e.message }));
s.on('message', (m) => done({ reply: m.toString() }));
s.bind(sport, () => s.send('x', port, host));
`;

async function udpFixed(ns: Netns, host: string, port: number, sport: number, timeoutMs = 1500): Promise<TcpProbeResult> {
  const r = await shOk('ip', ['netns', 'exec', ns.name, process.execPath, '-e', UDP_FIXED, host, String(port), String(sport), String(timeoutMs)], { timeoutMs: timeoutMs + 10_000 });
  if (r.exitCode !== 0) return { error: `client failed: ${r.stderr.trim()}` };
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as TcpProbeResult;
}

for (const brnf of [true, false]) {
  describe(`every path to a published port (br_netfilter ${brnf ? 'on' : 'off'} in H)`, () => {
    const cleanup = new Cleanup();
    let lab: Lab;
    let net: LabNetwork;
    let net2: LabNetwork;
    let c1: LabEndpoint;
    let c2: LabEndpoint;
    let c3: LabEndpoint;
    let server: PeerRecorder;
    const P = 24000 + Math.floor(Math.random() * 400) * 2; // P: all addresses; P+1: 127.0.0.1 only

    beforeAll(async () => {
      lab = await Lab.create(cleanup);
      await lab.dockerLikeFirewall();
      await lab.dockerLikeFirewall('ip6tables');
      const v = brnf ? '1' : '0';
      await lab.host.exec('sysctl', ['-qw', `net.bridge.bridge-nf-call-iptables=${v}`, `net.bridge.bridge-nf-call-ip6tables=${v}`]);
      net = await lab.network({ v6: true });
      net2 = await lab.network();
      c1 = await lab.attach(net);
      c2 = await lab.attach(net);
      c3 = await lab.attach(net2);
      server = await startPeerRecorder(c1.ns, 80);
      const mk = (proto: 'tcp' | 'udp' | 'sctp', hostPort: number, hostIp = '') => ({ proto, containerPort: 80, hostIp, hostPort, hostPortEnd: 0 });
      const got = await lab.driver.programExternalConnectivity(net.id, c1.id, [mk('tcp', P), mk('udp', P), mk('sctp', P), mk('tcp', P + 1, '127.0.0.1'), mk('udp', P + 1, '127.0.0.1')]);
      expect(got.map((m) => `${m.proto} ${m.hostIp || '*'}:${m.hostPort}`)).toEqual([`tcp *:${P}`, `udp *:${P}`, `sctp *:${P}`, `tcp 127.0.0.1:${P + 1}`, `udp 127.0.0.1:${P + 1}`]);
    }, T);

    afterAll(() => cleanup.run());

    test('from another host: TCP, UDP, IPv6 — the container sees the client\'s own address', async () => {
      expect(seenAs(await settled(() => tcpFrom(lab.outside, lab.hostAddr, P)))).toBe(lab.outAddr);
      expect(seenAs(await settled(() => udpFrom(lab.outside, lab.hostAddr, P)))).toBe(lab.outAddr);
      expect(seenAs(await settled(() => tcpFrom(lab.outside, lab.hostAddr6, P)))).toBe(lab.outAddr6);
      expect(seenAs(await settled(() => udpFrom(lab.outside, lab.hostAddr6, P)))).toBe(lab.outAddr6);
    }, T);

    test('from the host through its own address: the source stays the host address', async () => {
      expect(seenAs(await settled(() => tcpFrom(lab.host, lab.hostAddr, P)))).toBe(lab.hostAddr);
      expect(seenAs(await settled(() => udpFrom(lab.host, lab.hostAddr, P)))).toBe(lab.hostAddr);
      expect(seenAs(await settled(() => tcpFrom(lab.host, lab.hostAddr6, P)))).toBe(lab.hostAddr6);
    }, T);

    test('from the host through 127.0.0.1: masqueraded to the bridge address; ::1 is refused at once', async () => {
      expect(seenAs(await settled(() => tcpFrom(lab.host, '127.0.0.1', P)))).toBe(net.gateway4);
      expect(seenAs(await settled(() => udpFrom(lab.host, '127.0.0.1', P)))).toBe(net.gateway4);
      expect(seenAs(await settled(() => tcpFrom(lab.host, '127.0.0.1', P + 1)))).toBe(net.gateway4);
      expect(seenAs(await settled(() => udpFrom(lab.host, '127.0.0.1', P + 1)))).toBe(net.gateway4);
      // IPv6 has no route_localnet: ::1 is not DNATed, so a client trying localhost as ::1
      // first is refused immediately and falls back to 127.0.0.1 (no hang).
      const t0 = Date.now();
      expect((await tcpFrom(lab.host, '::1', P)).error).toBe('ECONNREFUSED');
      expect(Date.now() - t0).toBeLessThan(1500);
    }, T);

    test('hairpin from another container of the network, IPv4 and IPv6: masqueraded to the gateway', async () => {
      expect(seenAs(await settled(() => tcpFrom(c2.ns, lab.hostAddr, P)))).toBe(net.gateway4);
      expect(seenAs(await settled(() => udpFrom(c2.ns, lab.hostAddr, P)))).toBe(net.gateway4);
      expect(seenAs(await settled(() => tcpFrom(c2.ns, lab.hostAddr6, P)))).toBe(net.gateway6);
      // through the gateway address (also a host address) as well
      expect(seenAs(await settled(() => tcpFrom(c2.ns, net.gateway4, P)))).toBe(net.gateway4);
    }, T);

    test('hairpin to itself: the container reaches its own published port through the host', async () => {
      expect(seenAs(await settled(() => tcpFrom(c1.ns, lab.hostAddr, P)))).toBe(net.gateway4);
      expect(seenAs(await settled(() => udpFrom(c1.ns, lab.hostAddr, P)))).toBe(net.gateway4);
      expect(seenAs(await settled(() => tcpFrom(c1.ns, lab.hostAddr6, P)))).toBe(net.gateway6);
    }, T);

    test('from a container on another tsbridge network: routed between bridges, masqueraded', async () => {
      expect(seenAs(await settled(() => tcpFrom(c3.ns, lab.hostAddr, P)))).toBe(net.gateway4);
      expect(seenAs(await settled(() => udpFrom(c3.ns, lab.hostAddr, P)))).toBe(net.gateway4);
    }, T);

    test('SCTP: an INIT from another host arrives at the container, DNATed, with the client\'s address', async () => {
      expect(await havePythonRaw()).toBe(true);
      const got = await sctpProbe(['ip', 'netns', 'exec', lab.outside.name], ['ip', 'netns', 'exec', c1.ns.name], lab.hostAddr, P);
      expect(got).toMatchObject({ src: lab.outAddr, dst: c1.ipv4, dport: 80, chunk: 1 });
      expect((await conntrack(lab.host, ['-p', 'sctp'])).join('\n')).toContain(`dst=${lab.hostAddr}`);
    }, T);

    test('a port bound to 127.0.0.1 is unreachable from another host, even one routing 127.0.0.1 via the host', async () => {
      // The outside host sends to 127.0.0.1 through H: its own loopback routes removed, a route via H added.
      await lab.outside.exec('ip', ['route', 'del', 'local', '127.0.0.0/8', 'dev', 'lo', 'table', 'local']);
      await lab.outside.execOk('ip', ['route', 'del', 'local', '127.0.0.1', 'dev', 'lo', 'table', 'local']);
      await lab.outside.exec('ip', ['route', 'add', '127.0.0.1/32', 'via', lab.hostAddr]);
      const before = server.peers.length;
      expect((await tcpFrom(lab.outside, '127.0.0.1', P + 1, 1500)).reply).toBeUndefined();
      expect((await udpFrom(lab.outside, '127.0.0.1', P + 1, 'x', 1500)).reply).toBeUndefined();
      expect((await tcpFrom(lab.outside, '127.0.0.1', P, 1500)).reply).toBeUndefined();
      // Not even the first packet arrived (without the drop, the SYN reached the server and only
      // its answer was lost on the way back).
      await new Promise((r) => setTimeout(r, 300));
      expect(server.peers.slice(before).filter((p) => p.address === lab.outAddr)).toEqual([]);
      expect((await conntrack(lab.host, ['-d', '127.0.0.1'])).filter((l) => l.includes(`src=${lab.outAddr}`))).toEqual([]);
    }, T);

    test("route_localnet on the bridge does not open H's loopback to containers", async () => {
      const hostLoopback = await startPeerRecorder(lab.host, 24990);
      cleanup.add(() => hostLoopback.stop(), 'H loopback recorder');
      expect(seenAs(await tcpFrom(lab.host, '127.0.0.1', 24990))).toBe('127.0.0.1'); // it listens
      await c2.ns.exec('ip', ['route', 'add', '127.0.0.2/32', 'via', net.gateway4]);
      await c2.ns.exec('ip', ['route', 'del', 'local', '127.0.0.2', 'dev', 'lo', 'table', 'local']).catch(() => undefined);
      await c2.ns.exec('ip', ['route', 'del', 'local', '127.0.0.0/8', 'dev', 'lo', 'table', 'local']);
      // Without the drop a datagram is delivered to H's loopback service (and a SYN reaches it;
      // only the answer, from a loopback source, is then lost in the container).
      expect((await udpFrom(c2.ns, '127.0.0.2', 24990, 'x', 1500)).reply).toBeUndefined();
      expect((await tcpFrom(c2.ns, '127.0.0.2', 24990, 1500)).reply).toBeUndefined();
      await new Promise((r) => setTimeout(r, 300));
      expect(hostLoopback.peers.filter((p) => p.address === c2.ipv4)).toEqual([]);
      expect((await conntrack(lab.host, ['-s', c2.ipv4, '-d', '127.0.0.2']))).toEqual([]);
    }, T);
  });
}

describe('UDP flows across publish, remap and replacement', () => {
  const cleanup = new Cleanup();
  afterAll(() => cleanup.run());

  test('a flow that started before the port was published, or went to a replaced container, follows the new mapping', async () => {
    const lab = await Lab.create(cleanup);
    const net = await lab.network();
    const a = await lab.attach(net);
    const b = await lab.attach(net);
    const onA = await startPeerRecorder(a.ns, 80);
    const onB = await startPeerRecorder(b.ns, 80);
    const P = 24500 + Math.floor(Math.random() * 200);
    const sport = 24800 + Math.floor(Math.random() * 100);
    const udp = (hostPort: number) => ({ proto: 'udp' as const, containerPort: 80, hostIp: '', hostPort, hostPortEnd: 0 });

    // Before publishing: the host itself answers (port unreachable); conntrack remembers the flow.
    expect((await udpFixed(lab.outside, lab.hostAddr, P, sport)).reply).toBeUndefined();
    expect((await conntrack(lab.host, ['-p', 'udp', '--dport', String(P)])).length).toBeGreaterThan(0);

    await lab.driver.programExternalConnectivity(net.id, a.id, [udp(P)]);
    expect(seenAs(await udpFixed(lab.outside, lab.hostAddr, P, sport))).toBe(lab.outAddr);
    expect(onA.peers.filter((p) => p.port === sport)).toHaveLength(1);

    // Replaced: A revoked, B takes the same host port; the same 5-tuple now reaches B.
    await lab.driver.revokeExternalConnectivity(net.id, a.id);
    await lab.driver.programExternalConnectivity(net.id, b.id, [udp(P)]);
    expect(seenAs(await udpFixed(lab.outside, lab.hostAddr, P, sport))).toBe(lab.outAddr);
    expect(onB.peers.filter((p) => p.port === sport)).toHaveLength(1);
    expect(onA.peers.filter((p) => p.port === sport)).toHaveLength(1);

    // Remapped: B re-programmed onto another host port; the old one stops, the new one works.
    await lab.driver.programExternalConnectivity(net.id, b.id, [udp(P + 1)]);
    expect((await udpFixed(lab.outside, lab.hostAddr, P, sport)).reply).toBeUndefined();
    expect(seenAs(await udpFixed(lab.outside, lab.hostAddr, P + 1, sport))).toBe(lab.outAddr);
    expect(onB.peers.filter((p) => p.port === sport)).toHaveLength(2);
  }, T);
});

describe('teardown', () => {
  const cleanup = new Cleanup();
  afterAll(() => cleanup.run());

  test("revoking one endpoint removes exactly its map elements; after everything, H's firewall is what it was", async () => {
    const lab = await Lab.create(cleanup);
    await lab.dockerLikeFirewall();
    await lab.dockerLikeFirewall('ip6tables');
    const baseline = { nft: await lab.nftRuleset(), ipt: await lab.iptablesSave() };
    const net = await lab.network({ v6: true });
    const a = await lab.attach(net);
    const b = await lab.attach(net);
    const tcp = (hostPort: number, hostIp = '') => ({ proto: 'tcp' as const, containerPort: 80, hostIp, hostPort, hostPortEnd: 0 });
    await lab.driver.programExternalConnectivity(net.id, a.id, [tcp(24001), tcp(24002, '127.0.0.1'), { ...tcp(24003), proto: 'udp' }]);
    await lab.driver.programExternalConnectivity(net.id, b.id, [tcp(24004), tcp(24005, '::')]);
    const maps = async () => {
      const out: string[] = [];
      for (const m of ['ports4', 'ports4_addr', 'ports6', 'ports6_addr']) {
        const text = await lab.host.exec('nft', ['-j', 'list', 'map', 'inet', 'tsbridge', m]);
        const doc = JSON.parse(text) as { nftables: { map?: { elem?: unknown[] } }[] };
        const elems = doc.nftables.find((x) => x.map)?.map?.elem ?? [];
        out.push(...elems.map((e) => `${m} ${JSON.stringify(e)}`));
      }
      return out.sort();
    };
    const all = await maps();
    expect(all).toHaveLength(3 + 2 + 3); // a: 3 in IPv4 + 2 in IPv6 (the 127.0.0.1 one is IPv4 only); b: 1 + 2
    await lab.driver.revokeExternalConnectivity(net.id, a.id);
    const left = await maps();
    expect(left).toHaveLength(3);
    expect(left.every((l) => l.includes(b.ipv4) || l.includes(b.ipv6!))).toBe(true);
    expect(all.filter((l) => !left.includes(l)).every((l) => l.includes(a.ipv4) || l.includes(a.ipv6!))).toBe(true);

    for (const e of [a, b]) {
      await lab.driver.revokeExternalConnectivity(net.id, e.id);
      await lab.driver.leave(net.id, e.id);
      await lab.driver.deleteEndpoint(net.id, e.id);
    }
    await lab.driver.deleteNetwork(net.id);
    await lab.driver.settle();
    expect(await lab.nftRuleset()).toEqual(baseline.nft);
    expect(await lab.iptablesSave()).toBe(baseline.ipt);
    expect(await lab.tsbridgeLinks()).toEqual([]);
  }, T);
});
