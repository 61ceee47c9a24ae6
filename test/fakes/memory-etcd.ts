/**
 * An in-memory etcd for the unit tier, with the semantics tsbridge relies on: one revision counter,
 * create/mod revisions and versions per key, transactions (compare → success | failure, applied at
 * one revision), leases whose keys go with them, and watches that replay history from a revision.
 * Time is explicit (`tick`), so lease expiry is deterministic.
 *
 *   const etcd = new MemoryEtcd();
 *   const a = etcd.client('a'), b = etcd.client('b');   // one ClusterStore per host
 *   a.partition(true);       // this client cannot reach etcd: its calls fail, its lease is not kept alive
 *   etcd.stop(); etcd.start();   // the server goes away and comes back (leases renewed, as etcd does)
 *   etcd.tick(5000);         // time passes: leases not kept alive expire, their keys are deleted
 */
import {
  StoreUnavailable,
  type ClusterStore,
  type Compare,
  type KeyValue,
  type Lease,
  type Op,
  type TxnResult,
  type Watch,
  type WatchEvent,
  type WatchHandler,
} from '../../src/cluster/store.js';

interface Entry {
  value: string;
  createRevision: number;
  modRevision: number;
  version: number;
  lease: string;
}

interface LeaseState {
  id: string;
  ttlMs: number;
  expiresAt: number;
  owner: MemoryStore;
  released: boolean;
  lost: ((err: Error) => void)[];
}

interface WatchState {
  prefix: string;
  /** The next revision to deliver. */
  next: number;
  handler: WatchHandler;
  owner: MemoryStore;
  cancelled: boolean;
}

export class MemoryEtcd {
  revision = 1;
  compacted = 0;
  now = 0;
  private running = true;
  private readonly data = new Map<string, Entry>();
  private readonly history: { revision: number; events: WatchEvent[] }[] = [];
  private readonly leases = new Map<string, LeaseState>();
  private readonly watches = new Set<WatchState>();
  private nextLease = 0x1000;
  /** Every transaction, for assertions (compare count, which branch ran). */
  readonly txns: { client: string; succeeded: boolean }[] = [];

  client(name = 'client'): MemoryStore {
    return new MemoryStore(this, name);
  }

  get up(): boolean {
    return this.running;
  }

  /** etcd goes away: every call fails, no lease expires meanwhile. */
  stop(): void {
    this.running = false;
  }

  /** etcd is back: like a restarted etcd, it renews every lease's TTL. Watches resume. */
  start(): void {
    this.running = true;
    for (const l of this.leases.values()) l.expiresAt = this.now + l.ttlMs;
    this.deliver();
  }

  /** Time passes: leases of reachable clients are kept alive; the others expire with their keys. */
  tick(ms: number): void {
    this.now += ms;
    if (!this.running) return;
    for (const l of [...this.leases.values()]) {
      if (!l.released && l.owner.reachable) l.expiresAt = this.now + l.ttlMs;
      else if (this.now >= l.expiresAt) this.expire(l, 'expired');
    }
  }

  /** Discards history before `revision`: watches from earlier revisions fail. */
  compact(revision: number): void {
    this.compacted = revision;
    while (this.history.length && this.history[0]!.revision < revision) this.history.shift();
  }

  /** Every key and value (for assertions). */
  dump(prefix = ''): Record<string, string> {
    return Object.fromEntries([...this.data.entries()].filter(([k]) => k.startsWith(prefix)).sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, e]) => [k, e.value]));
  }

  leaseIds(): string[] {
    return [...this.leases.keys()];
  }

  // ---- used by MemoryStore ----

  check(client: MemoryStore, op: string): void {
    if (!this.running) throw new StoreUnavailable(op, 'etcd is down (memory fake)');
    if (!client.reachable) throw new StoreUnavailable(op, `client ${client.name} is cut off (memory fake)`);
  }

  read(key: string): KeyValue | undefined {
    const e = this.data.get(key);
    return e && { key, value: e.value, createRevision: e.createRevision, modRevision: e.modRevision, lease: e.lease };
  }

  range(key: string, prefix: boolean): KeyValue[] {
    if (!prefix) {
      const kv = this.read(key);
      return kv ? [kv] : [];
    }
    return [...this.data.keys()].filter((k) => k.startsWith(key)).sort().map((k) => this.read(k)!);
  }

  txn(client: MemoryStore, compare: Compare[], success: Op[], failure: Op[]): TxnResult {
    const ok = compare.every((c) => this.holds(c));
    const ops = ok ? success : failure;
    for (const op of ops) {
      if ('put' in op && op.lease && op.lease !== '0' && !this.leases.has(op.lease)) {
        throw new Error(`etcdserver: requested lease not found (${op.lease})`);
      }
    }
    const events: WatchEvent[] = [];
    const gets: KeyValue[][] = [];
    const rev = this.revision + 1;
    for (const op of ops) {
      if ('get' in op) gets.push(this.range(op.get, op.prefix ?? false));
      else if ('put' in op) {
        const old = this.data.get(op.put);
        const e: Entry = {
          value: op.value,
          createRevision: old?.createRevision ?? rev,
          modRevision: rev,
          version: (old?.version ?? 0) + 1,
          lease: op.lease ?? '0',
        };
        this.data.set(op.put, e);
        events.push({ type: 'put', kv: this.read(op.put)! });
      } else {
        for (const kv of this.range(op.delete, op.prefix ?? false)) {
          this.data.delete(kv.key);
          events.push({ type: 'delete', kv: { ...kv, value: '', modRevision: rev } });
        }
      }
    }
    this.txns.push({ client: client.name, succeeded: ok });
    if (events.length) this.commit(rev, events);
    return { succeeded: ok, revision: this.revision, gets };
  }

  grant(owner: MemoryStore, ttlSec: number): LeaseState {
    const id = (this.nextLease++).toString(16);
    const l: LeaseState = { id, ttlMs: ttlSec * 1000, expiresAt: this.now + ttlSec * 1000, owner, released: false, lost: [] };
    this.leases.set(id, l);
    return l;
  }

  revoke(l: LeaseState): void {
    if (this.leases.has(l.id)) this.expire(l, 'revoked');
  }

  addWatch(w: WatchState): void {
    if (w.next <= this.compacted) {
      queueMicrotask(() => w.handler.onError(new Error(`etcdserver: mvcc: required revision has been compacted (${w.next} ≤ ${this.compacted})`)));
      return;
    }
    this.watches.add(w);
    this.deliver();
  }

  removeWatch(w: WatchState): void {
    this.watches.delete(w);
  }

  /** Sends pending events to every watch whose client can be reached. */
  deliver(): void {
    queueMicrotask(() => {
      if (!this.running) return;
      for (const w of this.watches) {
        if (w.cancelled || !w.owner.reachable || w.next > this.revision) continue;
        if (w.next <= this.compacted) {
          this.watches.delete(w);
          w.handler.onError(new Error('etcdserver: mvcc: required revision has been compacted'));
          continue;
        }
        const events = this.history.filter((h) => h.revision >= w.next).flatMap((h) => h.events.filter((e) => e.kv.key.startsWith(w.prefix)));
        w.next = this.revision + 1;
        if (events.length) w.handler.onEvents(events);
      }
    });
  }

  private holds(c: Compare): boolean {
    const e = this.data.get(c.key);
    const actual: number | string =
      c.target === 'value' ? (e?.value ?? '') : c.target === 'create' ? (e?.createRevision ?? 0) : c.target === 'mod' ? (e?.modRevision ?? 0) : (e?.version ?? 0);
    // etcd: a value compare on a missing key fails whatever the operator.
    if (c.target === 'value' && !e) return false;
    switch (c.op) {
      case '=':
        return actual === c.value;
      case '!=':
        return actual !== c.value;
      case '<':
        return (actual as number) < (c.value as number);
      case '>':
        return (actual as number) > (c.value as number);
    }
  }

  private commit(rev: number, events: WatchEvent[]): void {
    this.revision = rev;
    this.history.push({ revision: rev, events });
    this.deliver();
  }

  private expire(l: LeaseState, why: string): void {
    this.leases.delete(l.id);
    const rev = this.revision + 1;
    const events: WatchEvent[] = [];
    for (const [k, e] of [...this.data.entries()].sort(([a], [b]) => (a < b ? -1 : 1))) {
      if (e.lease !== l.id) continue;
      this.data.delete(k);
      events.push({ type: 'delete', kv: { key: k, value: '', createRevision: e.createRevision, modRevision: rev, lease: l.id } });
    }
    if (events.length) this.commit(rev, events);
    if (!l.released) for (const cb of l.lost.splice(0)) cb(new Error(`lease ${l.id} ${why}`));
  }
}

export class MemoryStore implements ClusterStore {
  reachable = true;
  closed = false;
  constructor(
    private readonly server: MemoryEtcd,
    readonly name: string,
  ) {}

  /** Cuts this client off from etcd (true) or reconnects it (false). */
  partition(cut: boolean): void {
    this.reachable = !cut;
    if (!cut) this.server.deliver();
  }

  async get(key: string): Promise<KeyValue | undefined> {
    this.server.check(this, 'get');
    return this.server.read(key);
  }

  async list(prefix: string): Promise<{ kvs: KeyValue[]; revision: number }> {
    this.server.check(this, 'list');
    return { kvs: this.server.range(prefix, true), revision: this.server.revision };
  }

  async txn(compare: Compare[], success: Op[], failure: Op[] = []): Promise<TxnResult> {
    this.server.check(this, 'txn');
    return this.server.txn(this, compare, success, failure);
  }

  async grantLease(ttlSec: number): Promise<Lease> {
    this.server.check(this, 'lease grant');
    const server = this.server;
    const state = server.grant(this, ttlSec);
    return {
      id: state.id,
      ttlSec,
      onLost: (cb) => void state.lost.push(cb),
      async revoke() {
        state.released = true;
        server.revoke(state);
      },
      release() {
        state.released = true;
      },
    };
  }

  watch(prefix: string, fromRevision: number, handler: WatchHandler): Watch {
    const w: WatchState = { prefix, next: fromRevision, handler, owner: this, cancelled: false };
    this.server.addWatch(w);
    return {
      cancel: async () => {
        w.cancelled = true;
        this.server.removeWatch(w);
      },
    };
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}
