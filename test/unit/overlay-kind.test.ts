/**
 * The overlay kind through the real driver, IPAM and reconciler, on two or three "hosts" — each
 * its own state, strict fake kernel and cluster client — sharing one in-memory etcd: what each
 * host's kernel and firewall hold after Docker's calls, and how they follow the cluster.
 */
import { silentLogger } from '../../src/logging.js';
import { ClusterService } from '../../src/cluster/service.js';
import { Keys } from '../../src/cluster/keys.js';
import { gatewayMacFor } from '../../src/cluster/overlays.js';
import { DriverService, kindsRuntime, type KindsRuntime } from '../../src/driver/service.js';
import { Reconciler } from '../../src/driver/reconcile.js';
import { IpamService } from '../../src/ipam/service.js';
import { KINDS } from '../../src/kinds/registry.js';
import { overlayClaims } from '../../src/kinds/overlay/claims.js';
import { settingsOf } from '../../src/kinds/overlay/settings.js';
import { parseCreateEndpoint, parseCreateNetwork } from '../../src/protocol/network.js';
import { Db } from '../../src/state/db.js';
import { MemoryStore } from '../../src/state/store.js';
import { emptyState } from '../../src/state/types.js';
import { MemoryEtcd, type MemoryStore as EtcdClient } from '../fakes/memory-etcd.js';
import { FakeHost } from '../fakes/host.js';
import { FakeKernel } from '../fakes/kernel.js';
import { codeOf, rulesOf } from '../fakes/world.js';
import { eventually } from '../lib/store-contract.js';

const keys = new Keys();
const NET = (i: number) => `${i}`.repeat(4) + 'ee'.repeat(30);
const EP = (h: number, n: number) => `e${h}${n.toString(16).padStart(3, '0')}`.padEnd(64, '0');

interface Host {
  i: number;
  etcd: EtcdClient;
  db: Db;
  state: MemoryStore;
  kernel: FakeKernel;
  cluster: ClusterService;
  runtime: KindsRuntime;
  driver: DriverService;
  ipam: IpamService;
}

const hosts: Host[] = [];
let etcd: MemoryEtcd;
let ticker: NodeJS.Timeout;

beforeEach(() => {
  etcd = new MemoryEtcd();
  // Leases of reachable hosts are kept alive as real time passes.
  ticker = setInterval(() => etcd.tick(100), 20);
});
afterEach(async () => {
  clearInterval(ticker);
  for (const h of hosts.splice(0)) {
    await h.driver.shutdown();
    await h.cluster.stop();
  }
});

function newHost(i: number, state = new MemoryStore(), dbState = emptyState()): Host {
  const log = silentLogger();
  const client = etcd.client(`h${i}`);
  const db = new Db(state, dbState);
  const kernel = new FakeKernel({ sysctls: { 'net.ipv4.ip_forward': '1' } });
  const cluster = new ClusterService(client, {
    hostId: `00000000000000a${i}`,
    underlay: { vtep: `192.168.60.${i}`, dev: 'eth0', mtu: 1500 },
    ttlSec: 2,
    endpoints: 'memory',
    timeoutMs: 500,
    reconcileSec: 0,
    retryMs: 10,
    claims: () => overlayClaims(db.state),
    log,
  });
  const runtime = kindsRuntime(kernel, log, KINDS, { db, cluster });
  const fakeHost = new FakeHost();
  const h: Host = {
    i,
    etcd: client,
    db,
    state,
    kernel,
    cluster,
    runtime,
    driver: new DriverService(db, kernel, fakeHost, log, runtime),
    ipam: new IpamService(db, fakeHost, () => [{ base: '10.210.0.0/16', size: 24 }], undefined, undefined, { cluster, log }),
  };
  cluster.start();
  hosts.push(h);
  return h;
}

async function up(...hs: Host[]): Promise<void> {
  await eventually(() => hs.every((h) => h.cluster.registered));
}

/** What Docker does for `docker network create -d tsbridge --ipam-driver tsbridge -o/--ipam-opt io.tsbridge.overlay=NAME --subnet S`. */
async function createNetwork(h: Host, name: string, subnet = '10.77.0.0/24', extra: Record<string, string> = {}) {
  const { poolId, pool } = await h.ipam.requestPool({ pool: subnet, subPool: '', v6: false, overlay: name });
  const gw = await h.ipam.requestAddress(poolId, '', 'gateway');
  await h.driver.createNetwork(
    parseCreateNetwork({
      NetworkID: NET(h.i),
      Options: { 'com.docker.network.enable_ipv6': false, 'com.docker.network.generic': { 'io.tsbridge.overlay': name, ...extra } },
      IPv4Data: [{ AddressSpace: 'local', Pool: pool, Gateway: gw }],
      IPv6Data: [],
    }),
  );
  return { poolId, gw };
}

/** What Docker does for `docker run --network NAME`: an address, the endpoint, the join. */
async function run(h: Host, poolId: string, n: number, want = '') {
  const address = await h.ipam.requestAddress(poolId, want, 'endpoint');
  const { mac } = await h.driver.createEndpoint(parseCreateEndpoint({ NetworkID: NET(h.i), EndpointID: EP(h.i, n), Interface: { Address: address } }));
  await h.driver.join(NET(h.i), EP(h.i, n));
  return { address: address.split('/')[0]!, mac, id: EP(h.i, n) };
}

function vtepElements(h: Host): string[] {
  const id = NET(h.i).slice(0, 12);
  const t = `inet ${h.kernel.table}`;
  return [...h.kernel.nft.elements(t, `vteps4_${id}`), ...h.kernel.nft.elements(t, `vteps6_${id}`)].sort();
}

test('a network on one host: bridge with the anycast gateway, VXLAN device, MTU from the underlay, the VNI in etcd', async () => {
  const a = newHost(1);
  await up(a);
  const { gw } = await createNetwork(a, 'blue');
  expect(gw).toBe('10.77.0.1/24');
  const snap = a.kernel.snapshot();
  const s = settingsOf(a.db.state.networks[NET(1)]!);
  expect(s).toMatchObject({ overlay: 'blue', vni: 4096, gatewayMac: gatewayMacFor(4096), vtep: '192.168.60.1', mtu: 1450, vteps: [] });
  expect(snap.bridges).toEqual([{ name: s.bridge, mtu: 1450, mac: gatewayMacFor(4096), addresses: ['10.77.0.1/24'] }]);
  expect(snap.vxlans).toEqual([{ name: `tsx${NET(1).slice(0, 12)}`, vni: 4096, local: '192.168.60.1', port: 4789, mtu: 1450, master: s.bridge, remotes: [] }]);
  // The VTEP allow-list: VXLAN of this VNI only from the members' addresses (none yet).
  const input = snap.nft[`inet ${a.kernel.table}`]!.chains.input!.rules.join('\n');
  expect(input).toContain('udp dport 4789 @th,96,24 4096 ip saddr != @vteps4_');
  expect(input).toContain('udp dport 4789 @th,96,24 4096 ip6 saddr != @vteps6_');
  expect(snap.nft).toEqual(rulesOf(a.db.state, KINDS, a.kernel.table));
  expect(JSON.parse(etcd.dump()[keys.config('blue')]!)).toEqual({ vni: 4096, subnet: '10.77.0.0/24', gateway: '10.77.0.1', gatewayMac: gatewayMacFor(4096) });
});

test('two hosts: each programs the other\'s endpoints (FDB + neighbour) and allows the other\'s VTEP', async () => {
  const [a, b] = [newHost(1), newHost(2)];
  await up(a, b);
  const pa = await createNetwork(a, 'blue');
  const pb = await createNetwork(b, 'blue');
  const ca = await run(a, pa.poolId, 1);
  const cb = await run(b, pb.poolId, 1);
  expect(ca.address).not.toBe(cb.address);
  await eventually(() => a.kernel.snapshot().vxlans[0]!.remotes.length === 1 && b.kernel.snapshot().vxlans[0]!.remotes.length === 1 && vtepElements(a).length === 1 && vtepElements(b).length === 1);
  expect(a.kernel.snapshot().vxlans[0]!.remotes).toEqual([{ address: cb.address, mac: cb.mac, vtep: '192.168.60.2' }]);
  expect(b.kernel.snapshot().vxlans[0]!.remotes).toEqual([{ address: ca.address, mac: ca.mac, vtep: '192.168.60.1' }]);
  expect(vtepElements(a)).toEqual(['192.168.60.2']);
  expect(a.kernel.nft.dump()).toEqual(rulesOf(a.db.state, KINDS, a.kernel.table));
  // The endpoint's frames are guarded on its own host, as on a NAT bridge.
  expect(a.kernel.snapshot().firewall.guarded).toEqual([`tsv${ca.id.slice(0, 12)}`]);
});

test('an address taken again on another host keeps its MAC (02:42 + the IPv4 bytes): stale ARP caches stay right', async () => {
  const [a, b] = [newHost(1), newHost(2)];
  await up(a, b);
  const pa = await createNetwork(a, 'blue');
  const pb = await createNetwork(b, 'blue');
  const first = await run(a, pa.poolId, 1);
  const hex = first.address.split('.').map((x) => Number(x).toString(16).padStart(2, '0')).join(':');
  expect(first.mac).toBe(`02:42:${hex}`);
  await a.driver.leave(NET(a.i), first.id);
  await a.driver.deleteEndpoint(NET(a.i), first.id);
  await a.ipam.releaseAddress(pa.poolId, first.address);
  const again = await run(b, pb.poolId, 1, first.address);
  expect(again.address).toBe(first.address);
  expect(again.mac).toBe(first.mac);
});

test('fifty containers over three hosts get fifty distinct addresses', async () => {
  const hs = [newHost(1), newHost(2), newHost(3)];
  await up(...hs);
  const pools: string[] = [];
  for (const h of hs) pools.push((await createNetwork(h, 'blue')).poolId);
  const got = await Promise.all(Array.from({ length: 50 }, (_, n) => run(hs[n % 3]!, pools[n % 3]!, n)));
  expect(new Set(got.map((g) => g.address)).size).toBe(50);
  await eventually(() => hs.every((h) => h.kernel.snapshot().vxlans[0]!.remotes.length >= 33));
  const counts = hs.map((h) => h.kernel.snapshot().vxlans[0]!.remotes.length);
  expect(counts.reduce((x, y) => x + y, 0)).toBe(100); // each endpoint programmed on the two other hosts
});

test('another subnet for an existing overlay is refused at RequestPool and leaves nothing', async () => {
  const [a, b] = [newHost(1), newHost(2)];
  await up(a, b);
  await createNetwork(a, 'blue');
  expect(await codeOf(b.ipam.requestPool({ pool: '10.78.0.0/24', subPool: '', v6: false, overlay: 'blue' }))).toBe('OVERLAY_MISMATCH');
  expect(b.db.state.pools).toEqual({});
  expect(Object.keys(etcd.dump(keys.members('blue')))).toEqual([keys.member('blue', a.cluster.hostId)]);
});

test('the same host asking for an overlay it has, with another subnet, is told the overlay\'s subnet; nothing changes', async () => {
  const [a] = [newHost(1)];
  await up(a);
  await createNetwork(a, 'blue');
  const before = structuredClone(a.db.state.pools);
  const e = await a.ipam.requestPool({ pool: '10.78.0.0/24', subPool: '', v6: false, overlay: 'blue' }).then(() => null, (x: unknown) => x as Error);
  expect(e?.message).toMatch(/^overlay blue already exists with subnet \S+, not 10\.78\.0\.0\/24$/);
  expect(a.db.state.pools).toEqual(before);
});

test('without tsbridge\'s IPAM for the overlay, the network is refused (addresses would collide across hosts)', async () => {
  const a = newHost(1);
  await up(a);
  const spec = parseCreateNetwork({
    NetworkID: NET(1),
    Options: { 'com.docker.network.generic': { 'io.tsbridge.overlay': 'blue' } },
    IPv4Data: [{ Pool: '10.77.0.0/24', Gateway: '10.77.0.1/24' }],
  });
  await expect(a.driver.createNetwork(spec)).rejects.toThrow(/--ipam-driver tsbridge --ipam-opt io.tsbridge.overlay=blue/);
  expect(a.kernel.snapshot().bridges).toEqual([]);
});

test('a host that dies: the others remove its endpoints and its VTEP once its lease expires', async () => {
  const [a, b] = [newHost(1), newHost(2)];
  await up(a, b);
  const pa = await createNetwork(a, 'blue');
  const pb = await createNetwork(b, 'blue');
  await run(a, pa.poolId, 1);
  await run(b, pb.poolId, 1);
  await eventually(() => a.kernel.snapshot().vxlans[0]!.remotes.length === 1 && vtepElements(a).length === 1);
  b.etcd.partition(true); // b is gone: nothing renews its lease
  await eventually(() => a.kernel.snapshot().vxlans[0]!.remotes.length === 0 && vtepElements(a).length === 0);
  expect(a.kernel.nft.dump()).toEqual(rulesOf(a.db.state, KINDS, a.kernel.table));
});

test('etcd down: existing endpoints stay programmed, a new one fails with CLUSTER_UNAVAILABLE and leaves nothing; back: it works', async () => {
  const [a, b] = [newHost(1), newHost(2)];
  await up(a, b);
  const pa = await createNetwork(a, 'blue');
  const pb = await createNetwork(b, 'blue');
  await run(a, pa.poolId, 1);
  await run(b, pb.poolId, 1);
  await eventually(() => a.kernel.snapshot().vxlans[0]!.remotes.length === 1);
  etcd.stop();
  const before = { kernel: a.kernel.snapshot(), pools: structuredClone(a.db.state.pools) };
  expect(await codeOf(run(a, pa.poolId, 2))).toBe('CLUSTER_UNAVAILABLE');
  expect(a.kernel.snapshot()).toEqual(before.kernel);
  expect(a.db.state.pools).toEqual(before.pools);
  etcd.start();
  const c = await run(a, pa.poolId, 3);
  await eventually(() => b.kernel.snapshot().vxlans[0]!.remotes.some((r) => r.address === c.address));
  const held = Object.keys(etcd.dump(keys.addresses('blue')));
  expect(held).toHaveLength(3);
});

test('removal on one host leaves the overlay on the others; the last one releases it: nothing left in etcd', async () => {
  const [a, b] = [newHost(1), newHost(2)];
  await up(a, b);
  const pa = await createNetwork(a, 'blue');
  const pb = await createNetwork(b, 'blue');
  const ca = await run(a, pa.poolId, 1);
  await run(b, pb.poolId, 1);
  // What Docker does for docker rm -f and docker network rm on a.
  await a.driver.leave(NET(1), ca.id);
  await a.driver.deleteEndpoint(NET(1), ca.id);
  await a.ipam.releaseAddress(pa.poolId, ca.address);
  await a.driver.deleteNetwork(NET(1));
  await a.ipam.releaseAddress(pa.poolId, pa.gw.split('/')[0]!);
  await a.ipam.releasePool(pa.poolId);
  await a.driver.settle();
  expect(a.kernel.snapshot()).toMatchObject({ bridges: [], vxlans: [], veths: [] });
  expect(etcd.dump(keys.config('blue'))).not.toEqual({});
  await eventually(() => b.kernel.snapshot().vxlans[0]!.remotes.length === 0 && vtepElements(b).length === 0);
  // b goes too
  const cb = Object.values(b.db.state.endpoints)[0]!;
  await b.driver.deleteEndpoint(NET(2), cb.id);
  await b.ipam.releaseAddress(pb.poolId, cb.ipv4!.split('/')[0]!);
  await b.driver.deleteNetwork(NET(2));
  await b.ipam.releasePool(pb.poolId);
  expect(etcd.dump(keys.overlays())).toEqual({});
  expect(etcd.dump(keys.vnis())).toEqual({});
});

test('a plugin restart: start-up brings the network back and the watch programs the peers again', async () => {
  const [a, b] = [newHost(1), newHost(2)];
  await up(a, b);
  const pa = await createNetwork(a, 'blue');
  const pb = await createNetwork(b, 'blue');
  await run(a, pa.poolId, 1);
  const cb = await run(b, pb.poolId, 1);
  await eventually(() => a.kernel.snapshot().vxlans[0]?.remotes.length === 1);
  // a's plugin stops; the host reboots (a fresh kernel); a new plugin starts from the saved state.
  await a.driver.shutdown();
  await a.cluster.stop();
  hosts.splice(hosts.indexOf(a), 1);
  const again = newHost(1, a.state, await a.state.load());
  await new Reconciler(again.db, again.kernel, silentLogger(), again.runtime).startup();
  await up(again);
  await eventually(() => again.kernel.snapshot().vxlans[0]?.remotes.length === 1);
  expect(again.kernel.snapshot().vxlans[0]!.remotes).toEqual([{ address: cb.address, mac: cb.mac, vtep: '192.168.60.2' }]);
  expect(again.kernel.nft.dump()).toEqual(rulesOf(again.db.state, KINDS, again.kernel.table));
});
