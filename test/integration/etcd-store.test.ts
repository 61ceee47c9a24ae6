/**
 * The etcd ClusterStore against a real etcd (Debian's etcd-server, started on loopback by the
 * test): the same contract the in-memory fake keeps, plus what only a real server shows — calls
 * failing fast while etcd is down, and a watch resuming by itself when it is back.
 * Needs etcd-server (scripts/install-deps.sh).
 */
import { randomBytes } from 'node:crypto';
import { EtcdStore } from '../../src/cluster/etcd.js';
import type { ClusterStore, WatchEvent } from '../../src/cluster/store.js';
import { requireEtcd, startEtcd, type EtcdServer } from '../lib/etcd.js';
import { eventually, storeContract } from '../lib/store-contract.js';


let etcd: EtcdServer;
const clients: ClusterStore[] = [];
const client = () => {
  const c = new EtcdStore({ endpoints: [etcd.endpoint], callTimeoutMs: 2000 });
  clients.push(c);
  return c;
};

beforeAll(async () => {
  await requireEtcd();
  etcd = await startEtcd();
});
afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await etcd?.dispose();
});

describe('EtcdStore on a real etcd', () => {
  storeContract(() => ({
    client,
    prefix: `/t-${randomBytes(4).toString('hex')}/`,
    elapse: (ms) => new Promise((r) => setTimeout(r, ms)),
  }));

  test('while etcd is down calls fail within their deadline; a watch resumes from where it was once it is back', async () => {
    const a = client();
    const b = client();
    const p = `/outage-${randomBytes(4).toString('hex')}/`;
    const { revision } = await a.list(p);
    const events: WatchEvent[] = [];
    const w = b.watch(p, revision + 1, { onEvents: (e) => events.push(...e), onError: (e) => { throw e; } });
    try {
      await a.txn([], [{ put: `${p}1`, value: 'before' }]);
      await eventually(() => events.length === 1);
      await etcd.stop();
      const t0 = Date.now();
      await expect(a.get(`${p}1`)).rejects.toThrow();
      expect(Date.now() - t0).toBeLessThan(5000);
      await etcd.start();
      // The first calls after a restart may meet a connection being re-made.
      for (let i = 0; ; i++) {
        try {
          await a.txn([], [{ put: `${p}2`, value: 'after' }]);
          break;
        } catch (e) {
          if (i > 20) throw e;
          await new Promise((r) => setTimeout(r, 250));
        }
      }
      await eventually(() => events.length === 2);
      expect(events.map((e) => e.kv.value)).toEqual(['before', 'after']);
    } finally {
      await w.cancel();
    }
  });
});
