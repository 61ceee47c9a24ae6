import { Mutex } from './mutex.js';
import { encodeEndpoint, encodeNetwork } from './disk.js';
import { applyAddresses, type AddrChange, type Change } from './journal.js';
import { isCompacting, type CommitOptions, type StateStore } from './store.js';
import type { State } from './types.js';
import type { AllocKind, PoolRecord } from '../ipam/types.js';

const COLLECTIONS = ['networks', 'endpoints', 'pools'] as const;
type Collection = (typeof COLLECTIONS)[number];
/** A record of the state: one entry of a collection, or the root field ulaBase. */
type Key = `${Collection}\0${string}` | 'ulaBase';

const ABSENT = Symbol('absent');

/** A pool's addresses as they were before the operation changed them in place (Db.addresses). */
interface AddressesBefore {
  allocated: Map<string, AllocKind | typeof ABSENT>;
  since: Map<string, number | typeof ABSENT>;
  cursor: string | null;
  /** The pool had no `since` map before. */
  noSince: boolean;
}

/** What one operation changed: each record touched, as it was before (for the rollback). */
class Changes {
  readonly before = new Map<Key, unknown>();
  /** Pools whose addresses were changed in place, by pool ID (a pool also in `before` is not here). */
  readonly addresses = new Map<string, AddressesBefore>();
  /** Proxies handed out, per object and record (the same object read twice is the same proxy). */
  readonly proxies = new WeakMap<object, Map<Key, object>>();
  open = true;
  /** The operation has committed something (its rollback must commit what it puts back). */
  committed = false;
}

/** Proxies of this module → their targets (to store plain objects, never proxies). */
const targets = new WeakMap<object, object>();

function isObject(v: unknown): v is object {
  return typeof v === 'object' && v !== null;
}

/** The plain value to store: proxies replaced by their targets, at any depth. */
function unwrap<T>(v: T, seen = new Set<object>()): T {
  if (!isObject(v)) return v;
  const t = targets.get(v);
  if (t) return t as T;
  if (seen.has(v)) return v;
  seen.add(v);
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    const c = o[k];
    if (isObject(c)) {
      const u = unwrap(c, seen);
      if (u !== c) o[k] = u;
    }
  }
  return v;
}

/**
 * A deep copy of state data (plain JSON-like values) — also of what an operation read through
 * its tracked state, which structuredClone refuses (proxies).
 */
export function plainCopy<T>(v: T): T {
  if (!isObject(v)) return v;
  const t = targets.get(v) ?? v;
  if (Array.isArray(t)) return t.map((x: unknown) => plainCopy(x)) as T;
  const o: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(t)) o[k] = plainCopy(x);
  return o as T;
}

function clone<T>(v: T): T {
  return isObject(v) ? structuredClone(v) : v;
}

/**
 * The in-memory state and its store. Every change goes through `tx`: one operation at a time,
 * and on failure the in-memory state is put back as it was (what was already saved is
 * reconciled at the next start, and what the rollback put back is committed too).
 *
 * Inside `tx`, the state handed to the operation sees every change made through it — at any
 * depth, records replaced, added or deleted — so `save` writes only the records this operation
 * changed (one journal entry, whatever the size of the state) and the rollback puts back only
 * those. Change the state through that object (or what was read from it): an object put into the
 * state and changed later through a reference of your own is saved by the saves of the same
 * operation, never by later ones. (Unit tests run on MemoryStore, which checks every commit
 * against the whole in-memory state, so a change the Db did not see fails them.)
 */
export class Db {
  private readonly mutex = new Mutex();
  private inFlight = 0;
  private current: Changes | null = null;
  /** Pools as last committed, to write a pool's address changes rather than the whole pool. */
  private readonly committedPools = new Map<string, PoolRecord>();
  private compaction: ReturnType<typeof setTimeout> | null = null;

  constructor(private readonly store: StateStore, public state: State) {
    for (const [id, p] of Object.entries(state.pools)) this.committedPools.set(id, clone(p));
    store.adopt?.(state);
  }

  async tx<T>(fn: (s: State) => Promise<T>): Promise<T> {
    this.inFlight++;
    try {
      return await this.mutex.run(async () => {
        const changes = new Changes();
        this.current = changes;
        try {
          return await fn(this.track(changes));
        } catch (e) {
          await this.rollback(changes);
          throw e;
        } finally {
          changes.open = false;
          this.current = null;
        }
      });
    } finally {
      this.inFlight--;
      this.maybeCompact();
    }
  }

  /**
   * Commits what the current operation changed so far (call inside tx): durable when it
   * resolves. `{ sync: false }`: written when it resolves (a killed process loses nothing), made
   * durable by the next durable save or soon after (StateStore.commit) — only for changes whose
   * loss in a machine crash start-up rebuilds from the kernel.
   */
  async save(opts: CommitOptions = {}): Promise<void> {
    const c = this.current;
    if (!c) throw new Error('Db.save outside a transaction');
    const ops = this.changesOf(c);
    await this.store.commit(ops, this.state, opts);
    c.committed = true;
    this.remember(ops);
  }

  /** Resolves once every operation that had started has finished. */
  async drain(): Promise<void> {
    await this.mutex.run(async () => undefined);
  }

  get busy(): number {
    return this.inFlight;
  }

  // ------------------------------------------------------------------ rollback

  private async rollback(c: Changes): Promise<void> {
    for (const [id, b] of c.addresses) {
      const pool = this.state.pools[id];
      if (pool) undoAddresses(pool, b);
    }
    for (const [key, before] of c.before) {
      if (key === 'ulaBase') {
        this.state.ulaBase = before as string | null;
        continue;
      }
      const [coll, id] = key.split('\0') as [Collection, string];
      const map = this.state[coll] as Record<string, unknown>;
      if (before === ABSENT) delete map[id];
      else map[id] = before;
    }
    // What this operation committed before it failed is on disk: put the old values there too.
    if (c.committed && (c.before.size > 0 || c.addresses.size > 0)) {
      const ops = this.changesOf(c);
      try {
        await this.store.commit(ops, this.state);
        this.remember(ops);
      } catch {
        // The next start reconciles what the disk holds.
      }
    }
  }

  // ------------------------------------------------------------------- changes

  /** The journal changes that bring the disk to the current value of every record `c` touched. */
  private changesOf(c: Changes): Change[] {
    const ops: Change[] = [];
    for (const key of c.before.keys()) {
      if (key === 'ulaBase') {
        ops.push({ t: 'ula', v: this.state.ulaBase });
        continue;
      }
      const [coll, id] = key.split('\0') as [Collection, string];
      const has = Object.hasOwn(this.state[coll], id);
      // The store serialises (or copies) what it is given before anything can change it.
      if (coll === 'networks') ops.push({ t: 'net', id, v: has ? encodeNetwork(this.state.networks[id]!) : null });
      else if (coll === 'endpoints') ops.push({ t: 'ep', id, v: has ? encodeEndpoint(this.state.endpoints[id]!) : null });
      else ops.push(this.poolChange(id, has ? this.state.pools[id]! : null));
    }
    for (const [id, b] of c.addresses) {
      const now = this.state.pools[id];
      if (now) ops.push(addressChange(id, now, b));
    }
    return ops;
  }

  /**
   * Takes and gives back addresses of a pool in place (inside tx): the IPAM's change for one
   * container. Replacing the pool record instead costs as much as the pool holds — the record
   * copied for the rollback, compared for the save; this costs as much as the addresses named.
   * `set`: taken (with `since`, their allocation times); `del`: given back (their times too);
   * `cursor`: the round robin's new position, when it moves.
   */
  addresses(poolId: string, change: { set?: Record<string, AllocKind>; since?: Record<string, number>; del?: string[]; cursor?: string | null }): void {
    const c = this.current;
    if (!c || !c.open) throw new Error('Db.addresses outside a transaction');
    const pool = this.state.pools[poolId];
    if (!pool) throw new Error(`Db.addresses: no pool ${poolId}`);
    // A pool the operation already changed as a whole: its rollback and save cover this too.
    let b = c.before.has(`pools\0${poolId}`) ? null : c.addresses.get(poolId);
    if (b === undefined) {
      b = { allocated: new Map(), since: new Map(), cursor: pool.cursor, noSince: pool.since === undefined };
      c.addresses.set(poolId, b);
    }
    const keep = (a: string) => {
      if (!b) return;
      if (!b.allocated.has(a)) b.allocated.set(a, Object.hasOwn(pool.allocated, a) ? pool.allocated[a]! : ABSENT);
      if (!b.since.has(a)) b.since.set(a, pool.since && Object.hasOwn(pool.since, a) ? pool.since[a]! : ABSENT);
    };
    for (const a of change.del ?? []) {
      keep(a);
      delete pool.allocated[a];
      if (pool.since) delete pool.since[a];
    }
    for (const [a, kind] of Object.entries(change.set ?? {})) {
      keep(a);
      pool.allocated[a] = kind;
    }
    for (const [a, t] of Object.entries(change.since ?? {})) {
      keep(a);
      (pool.since ??= {})[a] = t;
    }
    if (change.cursor !== undefined) pool.cursor = change.cursor;
  }

  /**
   * A pool's change: its addresses taken and released (with their allocation times and the
   * cursor) when only those changed; the whole pool otherwise (a claim, its creation time).
   */
  private poolChange(id: string, now: PoolRecord | null): Change {
    const was = this.committedPools.get(id);
    const whole: Change = { t: 'pool', id, v: clone(now) };
    if (!now || !was) return whole;
    const { allocated: wa, cursor: _wc, since: ws, ...wrest } = was;
    const { allocated: na, cursor: _nc, since: ns, ...nrest } = now;
    if (JSON.stringify(wrest) !== JSON.stringify(nrest)) return whole;
    const set: Record<string, AllocKind> = {};
    const del: string[] = [];
    for (const [a, k] of Object.entries(na)) if (wa[a] !== k) set[a] = k;
    for (const a of Object.keys(wa)) if (!Object.hasOwn(na, a)) del.push(a);
    const op: Change = { t: 'addr', id, set, del, cursor: now.cursor };
    if (ns === undefined) return ws === undefined ? op : whole;
    // Allocation times: those set or changed go along; one that went must be of a released address.
    const sinceSet: Record<string, number> = {};
    for (const [a, t] of Object.entries(ns)) if (ws?.[a] !== t) sinceSet[a] = t;
    const released = new Set(del);
    for (const a of Object.keys(ws ?? {})) if (!Object.hasOwn(ns, a) && !released.has(a)) return whole;
    for (const a of del) if (Object.hasOwn(ns, a)) return whole;
    if (ws === undefined || Object.keys(sinceSet).length > 0) op.since = sinceSet;
    return op;
  }

  /** Keeps the committed pools in step with what was just committed. */
  private remember(ops: Change[]): void {
    for (const op of ops) {
      if (op.t === 'pool') {
        if (op.v) this.committedPools.set(op.id, clone(op.v));
        else this.committedPools.delete(op.id);
      } else if (op.t === 'addr') {
        applyAddresses(this.committedPools.get(op.id)!, op);
      }
    }
  }

  // ------------------------------------------------------------------ tracking

  /** The state as the operation sees it: reads pass through; writes are recorded first. */
  private track(c: Changes): State {
    const touch = (key: Key, current: unknown) => {
      if (!c.open) throw new Error('the state was changed after its operation ended (a reference kept past Db.tx)');
      if (c.before.has(key)) return;
      const before = current === ABSENT ? ABSENT : clone(current);
      // A pool whose addresses this operation changed in place: what it was before those.
      const poolId = key.startsWith('pools\0') ? key.slice(6) : null;
      const addressed = poolId === null ? undefined : c.addresses.get(poolId);
      if (addressed && before !== ABSENT) {
        undoAddresses(before as PoolRecord, addressed);
        c.addresses.delete(poolId!);
      }
      c.before.set(key, before);
    };
    const recordOf = (coll: Collection, id: string): Key => `${coll}\0${id}`;
    const current = (coll: Collection, id: string) => (Object.hasOwn(this.state[coll], id) ? (this.state[coll] as Record<string, unknown>)[id] : ABSENT);

    /** A proxy of `target`, an object inside record `key`: its writes touch that record. */
    const deep = (target: object, key: Key, touchRecord: () => void): object => {
      let byKey = c.proxies.get(target);
      const have = byKey?.get(key);
      if (have) return have;
      const p = new Proxy(target, {
        get: (t, prop, recv) => {
          const v = Reflect.get(t, prop, recv);
          return isObject(v) && typeof prop === 'string' && Object.hasOwn(t, prop) ? deep(v, key, touchRecord) : v;
        },
        set: (t, prop, v) => {
          touchRecord();
          return Reflect.set(t, prop, unwrap(v));
        },
        deleteProperty: (t, prop) => {
          touchRecord();
          return Reflect.deleteProperty(t, prop);
        },
        defineProperty: (t, prop, desc) => {
          touchRecord();
          return Reflect.defineProperty(t, prop, 'value' in desc ? { ...desc, value: unwrap(desc.value) } : desc);
        },
      });
      targets.set(p, target);
      if (!byKey) c.proxies.set(target, (byKey = new Map()));
      byKey.set(key, p);
      return p;
    };

    const collection = (coll: Collection): object => {
      const map = this.state[coll] as Record<string, unknown>;
      const p = new Proxy(map, {
        get: (t, prop, recv) => {
          const v = Reflect.get(t, prop, recv);
          if (typeof prop !== 'string' || !isObject(v) || !Object.hasOwn(t, prop)) return v;
          const key = recordOf(coll, prop);
          return deep(v, key, () => touch(key, current(coll, prop)));
        },
        set: (_t, prop, v) => {
          if (typeof prop !== 'string') return false;
          touch(recordOf(coll, prop), current(coll, prop));
          map[prop] = unwrap(v);
          return true;
        },
        deleteProperty: (_t, prop) => {
          if (typeof prop !== 'string') return false;
          touch(recordOf(coll, prop), current(coll, prop));
          delete map[prop];
          return true;
        },
        defineProperty: (_t, prop, desc) => {
          if (typeof prop !== 'string') return false;
          touch(recordOf(coll, prop), current(coll, prop));
          return Reflect.defineProperty(map, prop, 'value' in desc ? { ...desc, value: unwrap(desc.value) } : desc);
        },
      });
      targets.set(p, map);
      return p;
    };

    const colls = new Map<Collection, object>(COLLECTIONS.map((k) => [k, collection(k)]));
    const root = new Proxy(this.state, {
      get: (t, prop, recv) => (colls.get(prop as Collection) ?? Reflect.get(t, prop, recv)),
      set: (t, prop, v) => {
        if (prop === 'ulaBase') {
          touch('ulaBase', t.ulaBase);
          t.ulaBase = v as string | null;
          return true;
        }
        throw new Error(`the state's ${String(prop)} is changed record by record, never replaced`);
      },
      deleteProperty: (_t, prop) => {
        throw new Error(`the state's ${String(prop)} cannot be deleted`);
      },
    });
    targets.set(root, this.state);
    return root;
  }

  // ---------------------------------------------------------------- compaction

  /**
   * When the store's journal has grown enough, a new snapshot is written between calls: the
   * state is serialised while no operation runs (the lock), written while calls go on, and the
   * journal is cut between calls again. Waits for a quiet moment (no call in flight) unless the
   * journal has grown far beyond.
   */
  private maybeCompact(): void {
    const store = this.store;
    if (this.compaction || !isCompacting(store) || !store.wantsCompaction()) return;
    let waited = 0;
    const attempt = () => {
      if (this.inFlight > 0 && waited++ < 50) {
        this.compaction = setTimeout(attempt, 20);
        return;
      }
      // Held until the job ends: no second compaction meanwhile.
      this.compaction = setTimeout(() => undefined, 0x7fffffff);
      void (async () => {
        try {
          const job = await this.mutex.run(async () => store.beginCompaction(this.state));
          await job.write();
          await this.mutex.run(job.finish);
        } catch {
          // The journal keeps everything; the next attempt comes after the next call.
        } finally {
          clearTimeout(this.compaction!);
          this.compaction = null;
        }
      })();
    };
    this.compaction = setTimeout(attempt, 20);
  }

  /** Resolves when no compaction is pending and every save is synced (shutdown, tests). */
  async settle(): Promise<void> {
    while (this.compaction) await new Promise((r) => setTimeout(r, 10));
    await this.drain();
    await this.store.sync?.();
  }
}

/** Puts a pool's addresses back as they were before in-place changes (Db.addresses). */
function undoAddresses(pool: PoolRecord, b: AddressesBefore): void {
  for (const [a, k] of b.allocated) {
    if (k === ABSENT) delete pool.allocated[a];
    else pool.allocated[a] = k;
  }
  if (b.noSince) delete pool.since;
  else {
    const since = (pool.since ??= {});
    for (const [a, t] of b.since) {
      if (t === ABSENT) delete since[a];
      else since[a] = t;
    }
  }
  pool.cursor = b.cursor;
}

/** The journal change for a pool's in-place address changes: the addresses named, as they are now. */
function addressChange(id: string, now: PoolRecord, b: AddressesBefore): AddrChange {
  const set: Record<string, AllocKind> = {};
  const del: string[] = [];
  for (const a of b.allocated.keys()) {
    if (Object.hasOwn(now.allocated, a)) set[a] = now.allocated[a]!;
    else del.push(a);
  }
  const op: AddrChange = { t: 'addr', id, set, del, cursor: now.cursor };
  if (now.since) {
    const since: Record<string, number> = {};
    for (const a of b.since.keys()) if (Object.hasOwn(now.since, a)) since[a] = now.since[a]!;
    op.since = since;
  }
  return op;
}
