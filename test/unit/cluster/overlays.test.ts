/** Overlay config agreement, VNI allocation, membership and release, over the in-memory etcd. */
import { isTsbridgeError } from '../../../src/errors.js';
import { silentLogger } from '../../../src/logging.js';
import type { Cluster } from '../../../src/cluster/context.js';
import { Keys } from '../../../src/cluster/keys.js';
import { gatewayMacFor, joinOverlay, leaveOverlay, overlayRequest, VNI_RANGE } from '../../../src/cluster/overlays.js';
import type { ClusterStore, Compare, Op } from '../../../src/cluster/store.js';
import { MemoryEtcd, type MemoryStore } from '../../fakes/memory-etcd.js';

const keys = new Keys();
const HOSTS = ['aaaaaaaaaaaaaaa1', 'aaaaaaaaaaaaaaa2', 'aaaaaaaaaaaaaaa3'];

/** A store that runs `hook` once, just before its next transaction (to interleave another host). */
class Interleaving implements ClusterStore {
  hook: (() => Promise<void>) | undefined;
  constructor(readonly inner: MemoryStore) {}
  get = (k: string) => this.inner.get(k);
  list = (p: string) => this.inner.list(p);
  grantLease = (t: number) => this.inner.grantLease(t);
  watch: ClusterStore['watch'] = (p, r, h) => this.inner.watch(p, r, h);
  close = () => this.inner.close();
  async txn(c: Compare[], s: Op[], f?: Op[]) {
    const h = this.hook;
    this.hook = undefined;
    await h?.();
    return this.inner.txn(c, s, f);
  }
}

function cluster(store: ClusterStore, hostId: string): Cluster {
  return { store, keys, hostId, endpoints: 'memory', timeoutMs: 1000, log: silentLogger() };
}

async function host(etcd: MemoryEtcd, i: number) {
  const store = new Interleaving(etcd.client(`h${i}`));
  const lease = await store.grantLease(10);
  return { c: cluster(store, HOSTS[i]!), store, lease: lease.id, vtep: `192.168.50.${i + 1}` };
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'no error';
  } catch (e) {
    return isTsbridgeError(e) ? e.code : String(e);
  }
}

describe('overlay requests', () => {
  test('names, subnets and gateways are checked and made canonical', () => {
    expect(overlayRequest('blue', '10.20.0.0/16')).toEqual({ name: 'blue', subnet: '10.20.0.0/16' });
    expect(overlayRequest('blue', '10.20.0.0/16', '10.20.255.254')).toEqual({ name: 'blue', subnet: '10.20.0.0/16', gateway: '10.20.255.254' });
    expect(() => overlayRequest('bad/name', '10.20.0.0/16')).toThrow(/io.tsbridge.overlay/);
    expect(() => overlayRequest('blue', '10.20.0.1/16')).toThrow(/host bits/);
    expect(() => overlayRequest('blue', 'fd00::/64')).toThrow(/IPv4/);
    expect(() => overlayRequest('blue', '10.20.0.0/31')).toThrow(/at least a \/30/);
    expect(() => overlayRequest('blue', '10.20.0.0/16', '10.20.0.0')).toThrow(/host address/);
    expect(() => overlayRequest('blue', '10.20.0.0/16', '10.21.0.1')).toThrow(/host address/);
  });

  test('the gateway MAC is locally administered, unicast, and names the VNI', () => {
    expect(gatewayMacFor(4096)).toBe('02:74:73:00:10:00');
    expect(gatewayMacFor(0xabcdef)).toBe('02:74:73:ab:cd:ef');
  });
});

describe('joining and leaving', () => {
  test('the first host creates the overlay with the lowest free VNI; others join it with the same subnet', async () => {
    const etcd = new MemoryEtcd();
    const [h1, h2] = [await host(etcd, 0), await host(etcd, 1)];
    const j1 = await joinOverlay(h1.c, overlayRequest('blue', '10.20.0.0/16'), h1.lease, h1.vtep);
    expect(j1.config).toEqual({ vni: VNI_RANGE.min, subnet: '10.20.0.0/16', gateway: '10.20.0.1', gatewayMac: gatewayMacFor(VNI_RANGE.min) });
    const j2 = await joinOverlay(h2.c, overlayRequest('blue', '10.20.0.0/16'), h2.lease, h2.vtep);
    expect(j2).toEqual(j1);
    const red = await joinOverlay(h2.c, overlayRequest('red', '10.30.0.0/24'), h2.lease, h2.vtep);
    expect(red.config.vni).toBe(VNI_RANGE.min + 1);
    expect(etcd.dump(keys.vnis())).toEqual({ [keys.vni(4096)]: 'blue', [keys.vni(4097)]: 'red' });
    expect(Object.keys(etcd.dump(keys.members('blue')))).toEqual([keys.member('blue', HOSTS[0]!), keys.member('blue', HOSTS[1]!)]);
    // joining again changes nothing but the config's revision
    await joinOverlay(h1.c, overlayRequest('blue', '10.20.0.0/16'), h1.lease, h1.vtep);
    expect(Object.keys(etcd.dump(keys.members('blue')))).toHaveLength(2);
  });

  test('another subnet, gateway or VNI for an existing overlay is refused and changes nothing', async () => {
    const etcd = new MemoryEtcd();
    const [h1, h2] = [await host(etcd, 0), await host(etcd, 1)];
    await joinOverlay(h1.c, overlayRequest('blue', '10.20.0.0/16'), h1.lease, h1.vtep);
    const before = etcd.dump();
    expect(await codeOf(joinOverlay(h2.c, overlayRequest('blue', '10.21.0.0/16'), h2.lease, h2.vtep))).toBe('OVERLAY_MISMATCH');
    expect(await codeOf(joinOverlay(h2.c, overlayRequest('blue', '10.20.0.0/16', '10.20.0.9'), h2.lease, h2.vtep))).toBe('OVERLAY_MISMATCH');
    expect(await codeOf(joinOverlay(h2.c, { ...overlayRequest('blue', '10.20.0.0/16'), vni: 5000 }, h2.lease, h2.vtep))).toBe('OVERLAY_MISMATCH');
    expect(etcd.dump()).toEqual(before);
    await expect(joinOverlay(h2.c, overlayRequest('blue', '10.21.0.0/16'), h2.lease, h2.vtep)).rejects.toThrow(
      'overlay blue already exists with subnet 10.20.0.0/16, not 10.21.0.0/16',
    );
  });

  test('three hosts creating one overlay at once end up with one config and one VNI', async () => {
    const etcd = new MemoryEtcd();
    const hs = [await host(etcd, 0), await host(etcd, 1), await host(etcd, 2)];
    const joined = await Promise.all(hs.map((h) => joinOverlay(h.c, overlayRequest('blue', '10.20.0.0/16'), h.lease, h.vtep)));
    expect(new Set(joined.map((j) => j.config.vni)).size).toBe(1);
    expect(new Set(joined.map((j) => j.createRevision)).size).toBe(1);
    expect(Object.keys(etcd.dump(keys.vnis()))).toHaveLength(1);
    expect(Object.keys(etcd.dump(keys.members('blue')))).toHaveLength(3);
  });

  test('a host that is not the last leaves the overlay as it is; the last one releases config, addresses and VNI', async () => {
    const etcd = new MemoryEtcd();
    const [h1, h2] = [await host(etcd, 0), await host(etcd, 1)];
    const j = await joinOverlay(h1.c, overlayRequest('blue', '10.20.0.0/16'), h1.lease, h1.vtep);
    await joinOverlay(h2.c, overlayRequest('blue', '10.20.0.0/16'), h2.lease, h2.vtep);
    await h1.store.txn([], [{ put: keys.address('blue', '10.20.0.2'), value: JSON.stringify({ host: HOSTS[0], mac: '', endpoint: '' }), lease: h1.lease }]);
    expect(await leaveOverlay(h1.c, 'blue')).toBe('left');
    expect(Object.keys(etcd.dump(keys.overlay('blue')))).toEqual([keys.config('blue'), keys.member('blue', HOSTS[1]!)]);
    expect(await leaveOverlay(h2.c, 'blue')).toBe('released');
    expect(etcd.dump(keys.overlay('blue'))).toEqual({});
    expect(etcd.dump(keys.vni(j.config.vni))).toEqual({});
    expect(await leaveOverlay(h2.c, 'blue')).toBe('absent');
  });

  test('a host joining while the last one leaves: the leaver sees it and only leaves, the overlay stays', async () => {
    const etcd = new MemoryEtcd();
    const [h1, h2] = [await host(etcd, 0), await host(etcd, 1)];
    const j = await joinOverlay(h1.c, overlayRequest('blue', '10.20.0.0/16'), h1.lease, h1.vtep);
    // h2 joins between the leaver's look at the members and its release transaction
    h1.store.hook = async () => void (await joinOverlay(h2.c, overlayRequest('blue', '10.20.0.0/16'), h2.lease, h2.vtep));
    expect(await leaveOverlay(h1.c, 'blue')).toBe('left');
    expect(etcd.dump(keys.overlay('blue'))).toEqual({
      [keys.config('blue')]: expect.any(String),
      [keys.member('blue', HOSTS[1]!)]: expect.any(String),
    });
    expect(Object.keys(etcd.dump(keys.vnis()))).toEqual([keys.vni(j.config.vni)]);
  });

  test('a host that read the config just before the last one released it creates the overlay again', async () => {
    const etcd = new MemoryEtcd();
    const [h1, h2] = [await host(etcd, 0), await host(etcd, 1)];
    const first = await joinOverlay(h1.c, overlayRequest('blue', '10.20.0.0/16'), h1.lease, h1.vtep);
    h2.store.hook = async () => void expect(await leaveOverlay(h1.c, 'blue')).toBe('released');
    const again = await joinOverlay(h2.c, overlayRequest('blue', '10.20.0.0/16'), h2.lease, h2.vtep);
    expect(again.createRevision).toBeGreaterThan(first.createRevision);
    expect(Object.keys(etcd.dump(keys.overlay('blue')))).toEqual([keys.config('blue'), keys.member('blue', HOSTS[1]!)]);
    expect(Object.values(etcd.dump(keys.vnis()))).toEqual(['blue']);
  });

  test('a member whose lease expired counts for nobody: the remaining host releases the overlay', async () => {
    const etcd = new MemoryEtcd();
    const [h1, h2] = [await host(etcd, 0), await host(etcd, 1)];
    await joinOverlay(h1.c, overlayRequest('blue', '10.20.0.0/16'), h1.lease, h1.vtep);
    await joinOverlay(h2.c, overlayRequest('blue', '10.20.0.0/16'), h2.lease, h2.vtep);
    h2.store.inner.partition(true); // h2 dies: nothing keeps its lease alive
    etcd.tick(11_000);
    expect(Object.keys(etcd.dump(keys.members('blue')))).toEqual([keys.member('blue', HOSTS[0]!)]);
    expect(await leaveOverlay(h1.c, 'blue')).toBe('released');
  });

  test('etcd down: joining fails with CLUSTER_UNAVAILABLE naming the endpoints and what was done', async () => {
    const etcd = new MemoryEtcd();
    const h1 = await host(etcd, 0);
    etcd.stop();
    await expect(joinOverlay(h1.c, overlayRequest('blue', '10.20.0.0/16'), h1.lease, h1.vtep)).rejects.toThrow(
      /^etcd is unreachable \(memory\): joining overlay blue failed: .*endpoints already made keep working, new ones need etcd$/,
    );
  });
});
