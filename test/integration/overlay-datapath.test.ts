/**
 * The overlay's datapath on this kernel, with the real `ip`, `bridge` and `nft`, in throwaway
 * namespaces: two "hosts" A and B on an underlay bridge, each with a bridge holding the same
 * anycast gateway (address and MAC), a VXLAN device (learning off, ARP/ND proxy on) enslaved to
 * it, one "container" each, and static FDB + neighbour entries for the remote container — as the
 * overlay programs them from etcd. A third host R plays an unregistered VTEP.
 *
 * What it proves (kernel facts the overlay is built on):
 * - ping, TCP and UDP between containers on different hosts, with an MTU of underlay − 50;
 * - ARP for a remote container and for the gateway is answered on the local host: no ARP frame
 *   ever arrives through the tunnel (counted on the underlay, inside the VXLAN packets: a counter
 *   on the VXLAN device itself would also count the answers its own ARP proxy injects there);
 *   broadcasts are not flooded across hosts either;
 * - the VTEP allow-list (an nftables set) drops VXLAN from an address not in it, and lets it in
 *   once it is added.
 * Needs root, iproute2, nftables, busybox (ping) and node.
 */
import { randomBytes } from 'node:crypto';
import { Cleanup } from '../lib/cleanup.js';
import { createNetns, listNetns, startPeerRecorder, type Netns } from '../lib/netns.js';
import { requireRoot, sh } from '../lib/run.js';
import { ping, seenAs, tcpFrom, udpFrom } from './helpers/lab.js';

const cleanup = new Cleanup();
const made: string[] = [];
afterAll(async () => {
  await cleanup.run();
  expect((await listNetns()).filter((n) => made.includes(n))).toEqual([]);
});

const VNI = 4242;
const GW_MAC = '02:74:73:00:10:92';
const octet = () => 200 + (randomBytes(1)[0]! % 50);
const UL = `10.${octet()}.${randomBytes(1)[0]! % 250}`; // underlay /24
const OV = `10.${octet()}.${randomBytes(1)[0]! % 250}`; // overlay /24

interface Host {
  ns: Netns;
  vtep: string;
  container: Netns;
  ip: string;
  mac: string;
}

let ul: Netns;
let a: Host;
let b: Host;
let r: Host;

const inNs = (ns: Netns, args: string[]) => sh('ip', ['-n', ns.name, ...args]);

async function ns(prefix: string): Promise<Netns> {
  const n = await createNetns(prefix);
  made.push(n.name);
  cleanup.add(() => n.delete(), `netns ${n.name}`);
  return n;
}

/** One overlay host: underlay port, bridge with the anycast gateway, VXLAN device, one container. */
async function host(name: string, index: number, allow: string[], proxy = true): Promise<Host> {
  const h = await ns(`ov${name}`);
  const vtep = `${UL}.${10 + index}`;
  await inNs(ul, ['link', 'add', `p${name}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', h.name]);
  await inNs(ul, ['link', 'set', `p${name}`, 'master', 'ul0', 'up']);
  await inNs(h, ['addr', 'add', `${vtep}/24`, 'dev', 'eth0']);
  await inNs(h, ['link', 'set', 'eth0', 'up']);
  await inNs(h, ['link', 'add', 'br0', 'address', GW_MAC, 'mtu', '1450', 'type', 'bridge']);
  await inNs(h, ['addr', 'add', `${OV}.1/24`, 'dev', 'br0']);
  await inNs(h, ['link', 'set', 'br0', 'up']);
  await inNs(h, ['link', 'add', 'vx0', 'mtu', '1450', 'type', 'vxlan', 'id', String(VNI), 'local', vtep, 'dstport', '4789', 'nolearning', ...(proxy ? ['proxy'] : [])]);
  await inNs(h, ['link', 'set', 'vx0', 'master', 'br0', 'up']);
  // the bridge does not learn MACs behind the VXLAN port either: its entries are the static ones
  await sh('bridge', ['-n', h.name, 'link', 'set', 'dev', 'vx0', 'learning', 'off']);
  // the VTEP allow-list
  await h.exec('nft', ['-f', '-'], {
    input: [
      'table inet ovl {',
      `  set vteps { type ipv4_addr; ${allow.length ? `elements = { ${allow.join(', ')} }` : ''} }`,
      '  counter dropped { }',
      '  counter vxlan { }',
      '  counter vxlanarp { }',
      '  chain input {',
      '    type filter hook input priority filter; policy accept;',
      // what arrives through the tunnel, and which of it is ARP: the inner ethertype sits 28
      // bytes into the UDP header (8 UDP + 8 VXLAN + 12 of Ethernet addresses)
      '    udp dport 4789 counter name "vxlan"',
      '    udp dport 4789 @th,224,16 0x0806 counter name "vxlanarp"',
      '    udp dport 4789 ip saddr != @vteps counter name "dropped" drop',
      '  }',
      '}',
    ].join('\n'),
  });
  const c = await ns(`ovc${name}`);
  const ip = `${OV}.${10 + index}`;
  const mac = `02:42:0a:00:00:${(10 + index).toString(16).padStart(2, '0')}`;
  await inNs(h, ['link', 'add', 've0', 'mtu', '1450', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', c.name]);
  await inNs(h, ['link', 'set', 've0', 'master', 'br0', 'up']);
  await inNs(c, ['link', 'set', 'eth0', 'address', mac, 'up']);
  await inNs(c, ['addr', 'add', `${ip}/24`, 'dev', 'eth0']);
  await inNs(c, ['route', 'add', 'default', 'via', `${OV}.1`]);
  return { ns: h, vtep, container: c, ip, mac };
}

/** What the overlay programs on `on` for an endpoint of `peer`. */
async function program(on: Host, peer: Host): Promise<void> {
  await sh('bridge', ['-n', on.ns.name, 'fdb', 'replace', peer.mac, 'dev', 'vx0', 'dst', peer.vtep, 'self', 'permanent']);
  await sh('bridge', ['-n', on.ns.name, 'fdb', 'replace', peer.mac, 'dev', 'vx0', 'master', 'static']);
  await inNs(on.ns, ['neigh', 'replace', peer.ip, 'lladdr', peer.mac, 'dev', 'vx0', 'nud', 'permanent']);
}

async function counter(h: Host, name: 'vxlan' | 'vxlanarp' | 'dropped'): Promise<number> {
  const out = await h.ns.exec('nft', ['list', 'counter', 'inet', 'ovl', name]);
  return Number(/packets (\d+)/.exec(out)![1]);
}

beforeAll(async () => {
  requireRoot('test/integration/overlay-datapath.test.ts');
  ul = await ns('ovul');
  await inNs(ul, ['link', 'add', 'ul0', 'type', 'bridge']);
  await inNs(ul, ['link', 'set', 'ul0', 'up']);
  a = await host('a', 1, [`${UL}.12`]);
  b = await host('b', 2, [`${UL}.11`]);
  // R is built the way the overlay must not be: no ARP proxy, and a flooding entry towards A
  r = await host('r', 3, [`${UL}.11`, `${UL}.12`], false);
  await sh('bridge', ['-n', r.ns.name, 'fdb', 'append', '00:00:00:00:00:00', 'dev', 'vx0', 'dst', a.vtep, 'self', 'permanent']);
  await program(a, b);
  await program(b, a);
});

test('containers on two hosts reach each other over VXLAN: ping (full MTU), TCP and UDP', async () => {
  expect(await ping(a.container, b.ip)).toBe(true);
  // 1450 − 20 (IP) − 8 (ICMP) = 1422 bytes of payload: the largest packet the containers send
  // whole; with the 50 bytes of VXLAN around it, it is exactly the underlay's 1500
  const big = await a.container.execOk('busybox', ['ping', '-c', '1', '-W', '2', '-s', '1422', b.ip]);
  expect(big.exitCode).toBe(0);
  const rec = await startPeerRecorder(b.container, 7070);
  cleanup.add(() => rec.stop(), 'recorder');
  expect(seenAs(await tcpFrom(a.container, b.ip, 7070))).toBe(a.ip);
  expect(seenAs(await udpFrom(a.container, b.ip, 7070, 'x'))).toBe(a.ip);
});

test('ARP for the remote container and for the gateway is answered locally: no ARP frame crosses the tunnel', async () => {
  const arpAtB = await counter(b, 'vxlanarp');
  const framesAtB = await counter(b, 'vxlan');
  await inNs(a.container, ['neigh', 'flush', 'all']);
  expect(await ping(a.container, b.ip)).toBe(true);
  expect(await ping(a.container, `${OV}.1`)).toBe(true);
  const neigh = await inNs(a.container, ['neigh', 'show', 'dev', 'eth0']);
  expect(neigh).toContain(`${b.ip} lladdr ${b.mac}`);
  expect(neigh).toContain(`${OV}.1 lladdr ${GW_MAC}`);
  expect(await counter(b, 'vxlanarp')).toBe(arpAtB);
  expect(await counter(b, 'vxlan')).toBeGreaterThan(framesAtB); // the pings did cross
  // the gateway is local on each host, with the same address and MAC
  expect(await ping(b.container, `${OV}.1`)).toBe(true);
  expect(await inNs(b.container, ['neigh', 'show', `${OV}.1`])).toContain(GW_MAC);
  expect(await counter(a, 'vxlanarp')).toBe(0);
  // the counter does see ARP when it crosses: R floods its ARP requests to A
  await r.container.execOk('busybox', ['ping', '-c', '1', '-W', '1', a.ip]);
  expect(await counter(a, 'vxlanarp')).toBeGreaterThan(0);
});

test('an address nobody programmed gets no ARP answer and nothing is flooded to the other hosts', async () => {
  const framesAtB = await counter(b, 'vxlan');
  expect(await ping(a.container, `${OV}.99`)).toBe(false);
  await a.container.execOk('busybox', ['ping', '-b', '-c', '1', '-W', '1', `${OV}.255`]);
  expect(await counter(b, 'vxlan')).toBe(framesAtB);
});

test('the VTEP allow-list drops VXLAN from an underlay address not in it, and lets it in once added', async () => {
  await program(r, a);
  await program(a, r); // A knows R's endpoint (as if etcd said so) but does not allow R's VTEP yet
  await inNs(r.container, ['neigh', 'replace', a.ip, 'lladdr', a.mac, 'dev', 'eth0', 'nud', 'permanent']); // R has no ARP proxy
  const before = await counter(a, 'dropped');
  expect(await ping(r.container, a.ip)).toBe(false);
  expect(await counter(a, 'dropped')).toBeGreaterThan(before);
  await a.ns.exec('nft', ['add', 'element', 'inet', 'ovl', 'vteps', `{ ${r.vtep} }`]);
  expect(await ping(r.container, a.ip)).toBe(true);
});
