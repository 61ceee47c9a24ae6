/** Cluster-wide address allocation over the in-memory etcd. */
import { isTsbridgeError } from '../../../src/errors.js';
import { silentLogger } from '../../../src/logging.js';
import { allocateAddress, attachEndpoint, lowestFree, releaseAddress } from '../../../src/cluster/addresses.js';
import type { Cluster } from '../../../src/cluster/context.js';
import { Keys, parseAddress } from '../../../src/cluster/keys.js';
import { joinOverlay, leaveOverlay, overlayRequest, type JoinedOverlay } from '../../../src/cluster/overlays.js';
import { MemoryEtcd, type MemoryStore } from '../../fakes/memory-etcd.js';

const keys = new Keys();
const id = (i: number) => `bbbbbbbbbbbbbbb${i}`;

interface H {
  c: Cluster;
  store: MemoryStore;
  lease: string;
  joined: JoinedOverlay;
}

async function hosts(etcd: MemoryEtcd, n: number, subnet = '10.20.0.0/24'): Promise<H[]> {
  const out: H[] = [];
  for (let i = 0; i < n; i++) {
    const store = etcd.client(`h${i}`);
    const c: Cluster = { store, keys, hostId: id(i), endpoints: 'memory', timeoutMs: 1000, log: silentLogger() };
    const lease = (await store.grantLease(10)).id;
    const joined = await joinOverlay(c, overlayRequest('blue', subnet), lease, `192.168.50.${i + 1}`);
    out.push({ c, store, lease, joined });
  }
  return out;
}

const alloc = (h: H, want?: string) => allocateAddress(h.c, 'blue', h.joined, h.lease, want);

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'no error';
  } catch (e) {
    return isTsbridgeError(e) ? e.code : String(e);
  }
}

test('the lowest free address, skipping network, gateway and broadcast', async () => {
  const etcd = new MemoryEtcd();
  const [h] = await hosts(etcd, 1, '10.20.0.0/30');
  expect(await alloc(h!)).toBe('10.20.0.2');
  expect(await codeOf(alloc(h!))).toBe('POOL_EXHAUSTED');
  expect(lowestFree(h!.joined, new Set())).toBe('10.20.0.2');
  const rec = parseAddress(etcd.dump()[keys.address('blue', '10.20.0.2')]!);
  expect(rec).toEqual({ host: id(0), mac: '', endpoint: '' });
});

test('many allocations at once from three hosts are all distinct', async () => {
  const etcd = new MemoryEtcd();
  const hs = await hosts(etcd, 3);
  const got = await Promise.all(Array.from({ length: 50 }, (_, i) => alloc(hs[i % 3]!)));
  expect(new Set(got).size).toBe(50);
  expect(Object.keys(etcd.dump(keys.addresses('blue')))).toHaveLength(50);
  expect(etcd.txns.filter((t) => !t.succeeded).length).toBeGreaterThan(0); // they did race
});

test('a named address: taken once; the same host asking again gets it; another host is refused', async () => {
  const etcd = new MemoryEtcd();
  const [h1, h2] = await hosts(etcd, 2);
  expect(await alloc(h1!, '10.20.0.50')).toBe('10.20.0.50');
  expect(await alloc(h1!, '10.20.0.50')).toBe('10.20.0.50');
  await expect(alloc(h2!, '10.20.0.50')).rejects.toThrow(`address 10.20.0.50 is already in use in pool 10.20.0.0/24 (overlay blue, held by host ${id(0)})`);
  expect(await codeOf(alloc(h2!, '10.20.0.1'))).toBe('ADDRESS_IN_USE'); // the gateway
  expect(await codeOf(alloc(h2!, '10.20.1.1'))).toBe('ADDRESS_OUT_OF_POOL');
  expect(await codeOf(alloc(h2!, '10.20.0.255'))).toBe('ADDRESS_OUT_OF_POOL');
});

test('release gives back only this host\'s address', async () => {
  const etcd = new MemoryEtcd();
  const [h1, h2] = await hosts(etcd, 2);
  const a = await alloc(h1!);
  await releaseAddress(h2!.c, 'blue', a);
  expect(etcd.dump()[keys.address('blue', a)]).toBeDefined();
  await releaseAddress(h1!.c, 'blue', a);
  expect(etcd.dump()[keys.address('blue', a)]).toBeUndefined();
  await releaseAddress(h1!.c, 'blue', a); // idempotent
  expect(await alloc(h2!)).toBe(a);
});

test('attaching an endpoint records its MAC on the address; someone else\'s address is refused', async () => {
  const etcd = new MemoryEtcd();
  const [h1, h2] = await hosts(etcd, 2);
  const a = await alloc(h1!);
  await attachEndpoint(h1!.c, 'blue', h1!.joined, a, h1!.lease, { mac: '02:42:0a:14:00:02', endpoint: 'ep1' });
  expect(parseAddress(etcd.dump()[keys.address('blue', a)]!)).toEqual({ host: id(0), mac: '02:42:0a:14:00:02', endpoint: 'ep1' });
  expect(await codeOf(attachEndpoint(h2!.c, 'blue', h2!.joined, a, h2!.lease, { mac: '02:42:0a:14:00:09', endpoint: 'ep9' }))).toBe('ADDRESS_IN_USE');
});

test('a reservation lost with an expired lease between allocation and attach is taken again, unless another host took it', async () => {
  const etcd = new MemoryEtcd();
  const [h1, h2] = await hosts(etcd, 2);
  const a = await alloc(h1!);
  const b = await alloc(h1!);
  h1!.store.partition(true); // too loaded to renew: etcd drops its keys
  etcd.tick(10_000);
  expect(etcd.dump()[keys.address('blue', a)]).toBeUndefined();
  h1!.store.partition(false);
  const lease = (await h1!.store.grantLease(10)).id; // registered again
  await attachEndpoint(h1!.c, 'blue', h1!.joined, a, lease, { mac: '02:42:0a:14:00:01', endpoint: 'ep1' });
  expect(parseAddress(etcd.dump()[keys.address('blue', a)]!)).toEqual({ host: id(0), mac: '02:42:0a:14:00:01', endpoint: 'ep1' });
  expect(await codeOf(alloc(h2!, a))).toBe('ADDRESS_IN_USE');
  // b was taken by h2 while h1's reservation was gone: h1 may not have it
  expect(await alloc(h2!, b)).toBe(b);
  expect(await codeOf(attachEndpoint(h1!.c, 'blue', h1!.joined, b, lease, { mac: '02:42:0a:14:00:02', endpoint: 'ep2' }))).toBe('ADDRESS_IN_USE');
  expect(parseAddress(etcd.dump()[keys.address('blue', b)]!)?.host).toBe(id(1));
});

test('a dead host\'s addresses come back to the pool only once its lease is gone', async () => {
  const etcd = new MemoryEtcd();
  const [h1, h2] = await hosts(etcd, 2);
  const a = await alloc(h1!);
  h1!.store.partition(true); // h1 stops renewing its lease
  etcd.tick(9000);
  expect(await codeOf(alloc(h2!, a))).toBe('ADDRESS_IN_USE');
  etcd.tick(1000);
  expect(await alloc(h2!, a)).toBe(a);
});

test('an overlay released and made again meanwhile is not allocated into with the old incarnation', async () => {
  const etcd = new MemoryEtcd();
  const [h1, h2] = await hosts(etcd, 2);
  await leaveOverlay(h1!.c, 'blue');
  await leaveOverlay(h2!.c, 'blue');
  await joinOverlay(h2!.c, overlayRequest('blue', '10.20.0.0/24'), h2!.lease, '192.168.50.2');
  expect(await codeOf(alloc(h1!))).toBe('OVERLAY_MISMATCH');
});

test('etcd unreachable: allocation fails with CLUSTER_UNAVAILABLE and leaves nothing behind', async () => {
  const etcd = new MemoryEtcd();
  const [h1] = await hosts(etcd, 1);
  const before = etcd.dump();
  etcd.stop();
  expect(await codeOf(alloc(h1!))).toBe('CLUSTER_UNAVAILABLE');
  etcd.start();
  expect(etcd.dump()).toEqual(before);
  expect(await alloc(h1!)).toBe('10.20.0.2');
});
