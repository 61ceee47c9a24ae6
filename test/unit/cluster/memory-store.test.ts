/** The in-memory etcd of the unit tier keeps the contract a real etcd keeps (test/lib/store-contract.ts). */
import { MemoryEtcd } from '../../fakes/memory-etcd.js';
import { storeContract } from '../../lib/store-contract.js';

describe('MemoryEtcd', () => {
  storeContract(() => {
    const etcd = new MemoryEtcd();
    return {
      client: () => etcd.client(),
      prefix: '/t/',
      elapse: async (ms) => {
        for (let t = 0; t < ms; t += 500) etcd.tick(Math.min(500, ms - t));
      },
    };
  });

  test('a compacted revision cannot be watched from', async () => {
    const etcd = new MemoryEtcd();
    const c = etcd.client();
    await c.txn([], [{ put: '/a', value: '1' }]);
    await c.txn([], [{ put: '/a', value: '2' }]);
    etcd.compact(etcd.revision);
    const err = await new Promise<Error>((resolve) => c.watch('/', 1, { onEvents: () => undefined, onError: resolve }));
    expect(err.message).toMatch(/compacted/);
  });

  test('a cut-off client fails its calls and its lease expires; a stopped etcd renews leases when it starts', async () => {
    const etcd = new MemoryEtcd();
    const a = etcd.client('a');
    const lease = await a.grantLease(3);
    const lost: string[] = [];
    lease.onLost((e) => lost.push(e.message));
    await a.txn([], [{ put: '/k', value: 'v', lease: lease.id }]);
    etcd.stop();
    etcd.tick(10_000); // etcd is down: no lease expires
    etcd.start();
    expect(Object.keys(etcd.dump())).toEqual(['/k']);
    a.partition(true);
    await expect(a.get('/k')).rejects.toThrow(/cut off/);
    etcd.tick(2000);
    expect(lost).toEqual([]);
    etcd.tick(1000);
    expect(lost).toEqual([`lease ${lease.id} expired`]);
    expect(etcd.dump()).toEqual({});
  });
});
