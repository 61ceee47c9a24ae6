/**
 * What tsbridge relies on from a ClusterStore, as one suite run against both implementations:
 * the in-memory fake (unit tier) and a real etcd (integration tier). If the fake drifts from etcd,
 * the same test fails on one side only.
 */
import type { ClusterStore, WatchEvent } from '../../src/cluster/store.js';

export interface StoreHarness {
  /** A new client of the same store (one per simulated host), under a fresh key prefix. */
  client(): ClusterStore;
  /** A key prefix no other test uses. */
  prefix: string;
  /** Lets `ms` of time pass (the fake ticks its clock; a real etcd is waited for). */
  elapse(ms: number): Promise<void>;
}

/** Polls `check` until it holds (real watches are asynchronous); the deadline is a bound on hanging (a loaded CI host is slow), not a figure. */
export async function eventually(check: () => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

export function storeContract(make: () => Promise<StoreHarness> | StoreHarness): void {
  let h: StoreHarness;
  let a: ClusterStore;
  let b: ClusterStore;
  beforeEach(async () => {
    h = await make();
    a = h.client();
    b = h.client();
  });
  afterEach(async () => {
    await a.close();
    await b.close();
  });
  const k = (s: string) => `${h.prefix}${s}`;

  test('put, get and list carry revisions; list is in key order and stays under its prefix', async () => {
    const r1 = await a.txn([], [{ put: k('x/2'), value: 'two' }]);
    const r2 = await a.txn([], [{ put: k('x/1'), value: 'one' }, { put: k('y'), value: 'why' }]);
    expect(r2.revision).toBeGreaterThan(r1.revision);
    const one = await b.get(k('x/1'));
    expect(one).toEqual({ key: k('x/1'), value: 'one', createRevision: r2.revision, modRevision: r2.revision, lease: '0' });
    const { kvs, revision } = await b.list(k('x/'));
    expect(kvs.map((kv) => kv.value)).toEqual(['one', 'two']);
    expect(revision).toBeGreaterThanOrEqual(r2.revision);
    await a.txn([], [{ put: k('x/1'), value: 'uno' }]);
    const again = await b.get(k('x/1'));
    expect(again!.createRevision).toBe(r2.revision);
    expect(again!.modRevision).toBeGreaterThan(r2.revision);
    expect(await b.get(k('nothing'))).toBeUndefined();
  });

  test('a transaction runs one branch: create == 0 lets exactly one of two writers win', async () => {
    const claim = (c: ClusterStore, who: string) =>
      c.txn([{ key: k('lock'), target: 'create', op: '=', value: 0 }], [{ put: k('lock'), value: who }], [{ get: k('lock') }]);
    const [ra, rb] = await Promise.all([claim(a, 'a'), claim(b, 'b')]);
    expect([ra.succeeded, rb.succeeded].sort()).toEqual([false, true]);
    const loser = ra.succeeded ? rb : ra;
    expect(loser.gets[0]![0]!.value).toBe(ra.succeeded ? 'a' : 'b');
  });

  test('mod revision compares detect a change in between; a value compare on a missing key fails', async () => {
    await a.txn([], [{ put: k('cfg'), value: 'v1' }]);
    const seen = (await a.get(k('cfg')))!;
    await b.txn([], [{ put: k('cfg'), value: 'v1' }]); // same value, new revision
    const r = await a.txn([{ key: k('cfg'), target: 'mod', op: '=', value: seen.modRevision }], [{ delete: k('cfg') }]);
    expect(r.succeeded).toBe(false);
    expect(await a.get(k('cfg'))).toBeDefined();
    const v = await a.txn([{ key: k('missing'), target: 'value', op: '!=', value: 'x' }], [{ put: k('z'), value: '1' }]);
    expect(v.succeeded).toBe(false);
  });

  test('a prefix delete removes every key under it and nothing else', async () => {
    await a.txn([], [{ put: k('o/a'), value: '1' }, { put: k('o/b'), value: '2' }, { put: k('p'), value: '3' }]);
    await a.txn([], [{ delete: k('o/'), prefix: true }]);
    expect((await b.list(k('o/'))).kvs).toEqual([]);
    expect(await b.get(k('p'))).toBeDefined();
  });

  test('keys on a lease go when it is revoked, and when it is no longer kept alive past its TTL', async () => {
    const l1 = await a.grantLease(2);
    await a.txn([], [{ put: k('l/1'), value: 'x', lease: l1.id }]);
    expect((await b.get(k('l/1')))!.lease).toBe(l1.id);
    await l1.revoke();
    expect(await b.get(k('l/1'))).toBeUndefined();

    const l2 = await a.grantLease(2);
    await a.txn([], [{ put: k('l/2'), value: 'y', lease: l2.id }]);
    await h.elapse(3000); // kept alive: still there
    expect(await b.get(k('l/2'))).toBeDefined();
    l2.release();
    await h.elapse(4500);
    expect(await b.get(k('l/2'))).toBeUndefined();
  });

  test('a put on a lease that is gone fails', async () => {
    const l = await a.grantLease(2);
    await l.revoke();
    await expect(a.txn([], [{ put: k('dead'), value: 'x', lease: l.id }])).rejects.toThrow();
  });

  test('a watch replays from its revision, then follows: puts, deletes, lease expiry', async () => {
    const r0 = await a.txn([], [{ put: k('w/early'), value: '0' }]);
    await a.txn([], [{ put: k('other'), value: 'not watched' }]);
    const events: WatchEvent[] = [];
    const w = b.watch(k('w/'), r0.revision, { onEvents: (e) => events.push(...e), onError: (e) => { throw e; } });
    try {
      await eventually(() => events.length === 1);
      expect(events[0]).toMatchObject({ type: 'put', kv: { key: k('w/early'), value: '0' } });
      const l = await a.grantLease(2);
      await a.txn([], [{ put: k('w/leased'), value: '1', lease: l.id }]);
      await a.txn([], [{ delete: k('w/early') }]);
      await l.revoke();
      await eventually(() => events.length === 4);
      expect(events.slice(1).map((e) => `${e.type} ${e.kv.key.slice(h.prefix.length)}`)).toEqual(['put w/leased', 'delete w/early', 'delete w/leased']);
      expect(events[3]!.kv.modRevision).toBeGreaterThan(events[2]!.kv.modRevision);
    } finally {
      await w.cancel();
    }
  });
}
