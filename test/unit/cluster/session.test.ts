/**
 * A host in the cluster over the in-memory etcd: registration while etcd comes and goes, the lease
 * lost and taken again, reconcile from local state, and the peer set other hosts see from their
 * watch.
 */
import { isTsbridgeError } from '../../../src/errors.js';
import { silentLogger } from '../../../src/logging.js';
import { Keys, parseAddress } from '../../../src/cluster/keys.js';
import { gatewayMacFor } from '../../../src/cluster/overlays.js';
import { releaseAddress } from '../../../src/cluster/addresses.js';
import { ClusterService } from '../../../src/cluster/service.js';
import type { LocalClaims } from '../../../src/cluster/session.js';
import { MemoryEtcd, type MemoryStore } from '../../fakes/memory-etcd.js';
import { eventually } from '../../lib/store-contract.js';

const keys = new Keys();
const TTL = 5;
const BLUE = { vni: 4200, subnet: '10.20.0.0/24', gateway: '10.20.0.1', gatewayMac: gatewayMacFor(4200) };

interface Node {
  svc: ClusterService;
  store: MemoryStore;
  claims: LocalClaims;
}

const nodes: Node[] = [];
afterEach(async () => {
  await Promise.all(nodes.splice(0).map((n) => n.svc.stop()));
});

function node(etcd: MemoryEtcd, i: number, claims: LocalClaims = { overlays: [], addresses: [] }, freshMs = 0): Node {
  const store = etcd.client(`h${i}`);
  const n: Node = {
    store,
    claims,
    svc: new ClusterService(store, {
      hostId: `c0ffee000000000${i}`,
      underlay: { vtep: `192.168.50.${i}`, dev: "eth0", mtu: 1500 },
      ttlSec: TTL,
      endpoints: 'memory',
      timeoutMs: 500,
      reconcileSec: 0,
      freshMs,
      retryMs: 10,
      claims: () => n.claims,
      log: silentLogger(),
      hostname: `host${i}`,
    }),
  };
  nodes.push(n);
  return n;
}

/** Keeps leases alive while the test waits on real timers (the fake's clock only moves on tick). */
async function settle(etcd: MemoryEtcd, check: () => boolean): Promise<void> {
  await eventually(() => {
    etcd.tick(100);
    return check();
  });
}

test('a host registers once etcd is there; until then what needs etcd fails clearly', async () => {
  const etcd = new MemoryEtcd();
  etcd.stop();
  const a = node(etcd, 1);
  a.svc.start();
  await new Promise((r) => setTimeout(r, 50));
  expect(a.svc.registered).toBe(false);
  await expect(a.svc.join('blue', '10.20.0.0/24')).rejects.toThrow(/^etcd is unreachable \(memory\): joining overlay blue failed: this host is not registered in etcd \(yet\)/);
  etcd.start();
  await settle(etcd, () => a.svc.registered);
  expect(JSON.parse(etcd.dump()[keys.host(a.svc.hostId)]!)).toMatchObject({ vtep: '192.168.50.1', hostname: 'host1' });
});

test('registering puts back what the local state has: the overlay (same VNI), its member key, its endpoints', async () => {
  const etcd = new MemoryEtcd();
  const a = node(etcd, 1, {
    overlays: [{ name: 'blue', config: BLUE }],
    addresses: [{ overlay: 'blue', address: '10.20.0.7', mac: '02:42:0a:14:00:07', endpoint: 'ep7' }],
  });
  a.svc.start();
  await settle(etcd, () => a.svc.registered);
  const dump = etcd.dump();
  expect(JSON.parse(dump[keys.config('blue')]!)).toEqual(BLUE);
  expect(dump[keys.vni(4200)]).toBe('blue');
  expect(dump[keys.member('blue', a.svc.hostId)]).toBeDefined();
  expect(parseAddress(dump[keys.address('blue', '10.20.0.7')]!)).toEqual({ host: a.svc.hostId, mac: '02:42:0a:14:00:07', endpoint: 'ep7' });
});

test('a lost lease takes the host\'s keys with it; the host registers again and restores them', async () => {
  const etcd = new MemoryEtcd();
  const a = node(etcd, 1, { overlays: [{ name: 'blue', config: BLUE }], addresses: [{ overlay: 'blue', address: '10.20.0.7', mac: '02:42:0a:14:00:07', endpoint: 'ep7' }] });
  const seen: boolean[] = [];
  a.svc.session.onRegistration((up) => seen.push(up));
  a.svc.start();
  await settle(etcd, () => a.svc.registered);
  const before = etcd.dump();
  a.store.partition(true);
  etcd.tick(TTL * 1000);
  expect(etcd.dump(keys.overlay('blue'))).toEqual({ [keys.config('blue')]: expect.any(String) });
  expect(a.svc.registered).toBe(false);
  a.store.partition(false);
  await settle(etcd, () => a.svc.registered && Object.keys(etcd.dump()).length === Object.keys(before).length);
  expect(seen).toEqual([true, false, true]);
  expect(Object.keys(etcd.dump())).toEqual(Object.keys(before));
});

test('reconcile removes this host\'s keys the local state no longer has, and reports addresses another host took', async () => {
  const etcd = new MemoryEtcd();
  const a = node(etcd, 1, { overlays: [{ name: 'blue', config: BLUE }], addresses: [] });
  const b = node(etcd, 2, { overlays: [{ name: 'blue', config: BLUE }], addresses: [] });
  a.svc.start();
  b.svc.start();
  await settle(etcd, () => a.svc.registered && b.svc.registered);
  const orphan = await a.svc.allocate('blue'); // as if the state file never got it (crash)
  const taken = await b.svc.allocate('blue');
  a.claims = { overlays: [{ name: 'blue', config: BLUE }], addresses: [{ overlay: 'blue', address: taken, mac: '02:42:0a:14:00:09', endpoint: 'ep' }] };
  const r = await a.svc.session.reconcile();
  expect(r.removed).toEqual([keys.address('blue', orphan)]);
  expect(r.conflicts).toEqual([`address ${taken} of overlay blue is held by host ${b.svc.hostId} in etcd, and used here`]);
  expect(parseAddress(etcd.dump()[keys.address('blue', taken)]!)!.host).toBe(b.svc.hostId);
  // the network went while etcd was away: the next reconcile leaves the overlay; the last host releases it
  a.claims = { overlays: [], addresses: [] };
  expect((await a.svc.session.reconcile()).removed).toEqual([keys.member('blue', a.svc.hostId)]);
  expect(etcd.dump(keys.member('blue', a.svc.hostId))).toEqual({});
  b.claims = { overlays: [], addresses: [] };
  await releaseAddress(b.svc.cluster, 'blue', taken);
  await b.svc.session.reconcile();
  expect(etcd.dump(keys.overlays())).toEqual({});
  expect(etcd.dump(keys.vnis())).toEqual({});
});

test('an address this process just took is not removed by a reconcile before the IPAM has recorded it', async () => {
  const etcd = new MemoryEtcd();
  const a = node(etcd, 1, { overlays: [{ name: 'blue', config: BLUE }], addresses: [] }, 60_000);
  a.svc.start();
  await settle(etcd, () => a.svc.registered);
  const taken = await a.svc.allocate('blue'); // the IPAM has not saved it yet: the claims lack it
  const r = await a.svc.session.reconcile();
  expect(r.removed).toEqual([]);
  expect(parseAddress(etcd.dump()[keys.address('blue', taken)]!)!.host).toBe(a.svc.hostId);
});

test('peers see each other\'s endpoints and VTEPs through the watch, and drop them when the lease goes', async () => {
  const etcd = new MemoryEtcd();
  const a = node(etcd, 1);
  const b = node(etcd, 2);
  expect(b.svc.peers('blue')).toBeUndefined(); // nothing known yet is not "no peers"
  a.svc.start();
  b.svc.start();
  await settle(etcd, () => a.svc.registered && b.svc.registered);
  await a.svc.join('blue', '10.20.0.0/24');
  await b.svc.join('blue', '10.20.0.0/24');
  const addr = await a.svc.allocate('blue');
  await settle(etcd, () => b.svc.vteps()?.length === 1);
  expect(b.svc.peers('blue')).toEqual([]); // reserved, no MAC yet: nothing to program
  await a.svc.attach('blue', addr, '02:42:0a:14:00:02', 'ep-a');
  await settle(etcd, () => b.svc.peers('blue')?.length === 1);
  expect(b.svc.peers('blue')).toEqual([{ address: addr, mac: '02:42:0a:14:00:02', vtep: '192.168.50.1', host: a.svc.hostId }]);
  expect(b.svc.vteps()).toEqual(['192.168.50.1']);
  expect(a.svc.peers('blue')).toEqual([]); // its own endpoints are not peers
  const view = b.svc.view('blue');
  expect(view.hosts.map((h) => [h.hostname, h.member, h.endpoints])).toEqual([['host1', true, 1], ['host2', true, 0]]);

  a.store.partition(true); // a dies
  etcd.tick(TTL * 1000);
  await eventually(() => b.svc.peers('blue')?.length === 0 && b.svc.vteps()?.length === 0);
});

test('a watch that cannot resume (history compacted) lists again and stays right', async () => {
  const etcd = new MemoryEtcd();
  const a = node(etcd, 1);
  const b = node(etcd, 2);
  a.svc.start();
  await settle(etcd, () => a.svc.registered);
  b.store.partition(true);
  b.svc.mirror.start();
  await a.svc.join('blue', '10.20.0.0/24');
  b.store.partition(false);
  await eventually(() => b.svc.mirror.loaded);
  b.store.partition(true);
  const addr = await a.svc.allocate('blue');
  await a.svc.attach('blue', addr, '02:42:0a:14:00:02', 'ep');
  etcd.compact(etcd.revision);
  b.store.partition(false);
  await b.svc.mirror.resync();
  await eventually(() => b.svc.peers('blue')?.length === 1);
});

test('a clean stop keeps the keys for the TTL (a restart keeps peers programmed); revoke removes them at once', async () => {
  const etcd = new MemoryEtcd();
  const a = node(etcd, 1, { overlays: [{ name: 'blue', config: BLUE }], addresses: [] });
  a.svc.start();
  await settle(etcd, () => a.svc.registered);
  await a.svc.session.stop();
  expect(etcd.dump()[keys.host(a.svc.hostId)]).toBeDefined();
  etcd.tick(TTL * 1000);
  expect(etcd.dump()[keys.host(a.svc.hostId)]).toBeUndefined();

  const b = node(etcd, 2, { overlays: [{ name: 'blue', config: BLUE }], addresses: [] });
  b.svc.start();
  await settle(etcd, () => b.svc.registered);
  await b.svc.session.stop({ revoke: true });
  expect(etcd.dump(keys.hosts())).toEqual({});
  expect(etcd.dump(keys.members('blue'))).toEqual({});
});

test('every failure is a catalogue error', async () => {
  const etcd = new MemoryEtcd();
  const a = node(etcd, 1);
  a.svc.start();
  await settle(etcd, () => a.svc.registered);
  await a.svc.join('blue', '10.20.0.0/24');
  etcd.stop();
  const e = await a.svc.allocate('blue').catch((err: unknown) => err);
  expect(isTsbridgeError(e, 'CLUSTER_UNAVAILABLE')).toBe(true);
});
