/**
 * The overlay's coordination on a real etcd (started on loopback by the test) with three hosts,
 * each its own etcd client: VNI and config agreement, parallel allocation, leases expiring with a
 * dead host, the watch giving each host its peers, an etcd outage, and release by the last host.
 * Needs etcd-server (scripts/install-deps.sh).
 */
import { randomBytes } from 'node:crypto';
import { isTsbridgeError } from '../../src/errors.js';
import { silentLogger } from '../../src/logging.js';
import { EtcdStore } from '../../src/cluster/etcd.js';
import { ClusterService } from '../../src/cluster/service.js';
import type { LocalClaims } from '../../src/cluster/session.js';
import { requireEtcd, startEtcd, type EtcdServer } from '../lib/etcd.js';
import { eventually } from '../lib/store-contract.js';

const TTL = 2;
let etcd: EtcdServer;
let services: ClusterService[] = [];
let probe: EtcdStore;
let prefix: string;

beforeAll(async () => {
  await requireEtcd();
  etcd = await startEtcd();
  probe = new EtcdStore({ endpoints: [etcd.endpoint], callTimeoutMs: 2000 });
});
afterAll(async () => {
  await probe?.close();
  await etcd?.dispose();
});
beforeEach(() => {
  prefix = `/tsbt-${randomBytes(4).toString('hex')}/`;
});
afterEach(async () => {
  await Promise.all(services.map((s) => s.stop({ revoke: true }).catch(() => undefined)));
  services = [];
});

function host(i: number, claims: () => LocalClaims = () => ({ overlays: [], addresses: [] })): ClusterService {
  const s = new ClusterService(new EtcdStore({ endpoints: [etcd.endpoint], callTimeoutMs: 1500 }), {
    hostId: `${i}`.repeat(16),
    underlay: { vtep: `192.168.77.${i}`, dev: "eth0", mtu: 1500 },
    ttlSec: TTL,
    prefix,
    endpoints: etcd.endpoint,
    timeoutMs: 2000,
    reconcileSec: 0,
    retryMs: 200,
    claims,
    log: silentLogger(),
    hostname: `h${i}`,
  });
  services.push(s);
  s.start();
  return s;
}

async function keysUnder(p = prefix): Promise<string[]> {
  return (await probe.list(p)).kvs.map((kv) => kv.key.slice(prefix.length));
}

test('three hosts agree on one overlay and allocate 150 addresses in parallel, all distinct', async () => {
  const hs = [host(1), host(2), host(3)];
  await eventually(() => hs.every((h) => h.registered));
  const joined = await Promise.all(hs.map((h) => h.join('blue', '10.44.0.0/16')));
  expect(new Set(joined.map((j) => j.config.vni)).size).toBe(1);
  await expect(hs[0]!.join('blue', '10.45.0.0/16')).rejects.toThrow(/already exists with subnet 10.44.0.0\/16/);
  const got = await Promise.all(Array.from({ length: 150 }, (_, i) => hs[i % 3]!.allocate('blue')));
  expect(new Set(got).size).toBe(150);
  expect((await probe.list(`${prefix}v1/overlays/blue/addresses/`)).kvs).toHaveLength(150);
});

test('each host programs the others\' endpoints from its watch; a dead host\'s go when its lease expires', async () => {
  const [a, b, c] = [host(1), host(2), host(3)];
  await eventually(() => a.registered && b.registered && c.registered);
  for (const h of [a, b, c]) await h.join('blue', '10.44.0.0/16');
  const ips = [];
  for (const [i, h] of [a, b, c].entries()) {
    const ip = await h.allocate('blue');
    await h.attach('blue', ip, `02:42:0a:2c:00:0${i + 2}`, `ep${i}`);
    ips.push(ip);
  }
  await eventually(() => a.peers('blue')?.length === 2 && b.peers('blue')?.length === 2);
  expect(a.peers('blue')!.map((p) => [p.address, p.vtep])).toEqual([[ips[1], '192.168.77.2'], [ips[2], '192.168.77.3']]);
  expect(a.vteps()).toEqual(['192.168.77.2', '192.168.77.3']);

  // c dies: nothing renews its lease any more
  c.session.stop().catch(() => undefined);
  await c.mirror.stop();
  const t0 = Date.now();
  await eventually(() => a.peers('blue')?.length === 1 && b.vteps()?.length === 1);
  const waited = Date.now() - t0;
  expect(waited).toBeGreaterThan(TTL * 1000 * 0.5); // not before the lease could expire
  expect(await keysUnder(`${prefix}v1/hosts/`)).toHaveLength(2);
  // its address is free again
  const again = await Promise.all([a.allocate('blue', ips[2])]);
  expect(again).toEqual([ips[2]]);
});

test('etcd stopped: peers stay programmed, new allocations fail clearly; restarted: they succeed, no duplicates', async () => {
  const [a, b] = [host(1), host(2)];
  await eventually(() => a.registered && b.registered);
  await a.join('blue', '10.44.0.0/16');
  await b.join('blue', '10.44.0.0/16');
  const ip = await a.allocate('blue');
  await a.attach('blue', ip, '02:42:0a:2c:00:02', 'ep');
  await eventually(() => b.peers('blue')?.length === 1);

  await etcd.stop();
  const t0 = Date.now();
  const err = await b.allocate('blue').catch((e: unknown) => e);
  expect(isTsbridgeError(err, 'CLUSTER_UNAVAILABLE')).toBe(true);
  expect((err as Error).message).toMatch(new RegExp(`^etcd is unreachable \\(${etcd.endpoint.replace(/[.]/g, '\\.')}\\): allocating`));
  expect(Date.now() - t0).toBeLessThan(5000);
  expect(b.peers('blue')).toHaveLength(1); // the copy stays as it was

  await etcd.start();
  const got: string[] = [];
  for (let i = 0; i < 40 && got.length < 3; i++) {
    try {
      got.push(await b.allocate('blue'));
    } catch (e) {
      if (!isTsbridgeError(e, 'CLUSTER_UNAVAILABLE')) throw e;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  expect(got).toHaveLength(3);
  const held = (await probe.list(`${prefix}v1/overlays/blue/addresses/`)).kvs.map((kv) => kv.key.split('/').pop());
  expect(new Set(held).size).toBe(held.length);
  expect(held.sort()).toEqual([ip, ...got].sort());
  // the leases survived the outage: nobody re-registered with a new one
  await eventually(() => a.registered && b.registered);
  await eventually(() => a.view('blue').endpoints.length === 1 + got.length);
});

test('the overlay, its VNI and its addresses go when the last host leaves; nothing of it stays in etcd', async () => {
  const [a, b] = [host(1), host(2)];
  await eventually(() => a.registered && b.registered);
  const j = await a.join('blue', '10.44.0.0/16');
  await b.join('blue', '10.44.0.0/16');
  await a.allocate('blue');
  expect(await a.leave('blue')).toBe('left');
  expect(await keysUnder(`${prefix}v1/overlays/blue/`)).toEqual(['v1/overlays/blue/config', `v1/overlays/blue/members/${'2'.repeat(16)}`]);
  expect(await b.leave('blue')).toBe('released');
  expect(await keysUnder(`${prefix}v1/overlays/`)).toEqual([]);
  expect(await keysUnder(`${prefix}v1/vnis/`)).toEqual([]);
  // the VNI is free for the next overlay
  expect((await a.join('red', '10.46.0.0/24')).config.vni).toBe(j.config.vni);
  await a.stop({ revoke: true });
  await b.stop({ revoke: true });
  services = [];
  expect(await keysUnder()).toEqual(['v1/overlays/red/config', `v1/vnis/${j.config.vni}`]);
});
