/**
 * The ClusterStore on a real etcd v3 cluster (the `etcd3` client over gRPC). Unary calls carry a
 * deadline; a host that fails is skipped for a second, then tried again; watches resume from
 * their last revision after a disconnection, backing off to at most two seconds between attempts.
 */
import { Etcd3, type IKeyValue, type IRequestOp, type ICompare, type Lease as EtcdLease } from 'etcd3';
import { circuitBreaker, ConsecutiveBreaker, ExponentialBackoff, handleAll, retry } from 'cockatiel';
import {
  StoreUnavailable,
  type ClusterStore,
  type Compare,
  type KeyValue,
  type Lease,
  type Op,
  type TxnResult,
  type Watch,
  type WatchHandler,
} from './store.js';

export interface EtcdSettings {
  /** Client URLs, e.g. http://10.0.0.1:2379 (https:// with TLS). */
  endpoints: string[];
  /** TLS: the CA that signed the servers' certificates, and this client's certificate and key (PEM). */
  tls?: { ca: Buffer; cert?: Buffer; key?: Buffer };
  /** Deadline of one call (ms). */
  callTimeoutMs: number;
}

/** The key range [prefix, end) etcd uses for "every key under prefix". */
export function rangeEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]!++;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

function toKv(kv: IKeyValue): KeyValue {
  return {
    key: kv.key.toString(),
    value: kv.value.toString(),
    createRevision: Number(kv.create_revision),
    modRevision: Number(kv.mod_revision),
    lease: String(kv.lease ?? '0'),
  };
}

const TARGETS = { create: 'Create', mod: 'Mod', version: 'Version', value: 'Value' } as const;
const RESULTS = { '=': 'Equal', '!=': 'NotEqual', '<': 'Less', '>': 'Greater' } as const;

function toCompare(c: Compare): ICompare {
  const base: ICompare = { key: Buffer.from(c.key), target: TARGETS[c.target], result: RESULTS[c.op] };
  if (c.target === 'value') return { ...base, value: Buffer.from(c.value) };
  if (c.target === 'create') return { ...base, create_revision: c.value };
  if (c.target === 'mod') return { ...base, mod_revision: c.value };
  return { ...base, version: c.value };
}

function toOp(op: Op): IRequestOp {
  if ('put' in op) return { request_put: { key: Buffer.from(op.put), value: Buffer.from(op.value), lease: op.lease ?? '0' } };
  if ('delete' in op) {
    const key = Buffer.from(op.delete);
    return { request_delete_range: op.prefix ? { key, range_end: rangeEnd(key) } : { key } };
  }
  const key = Buffer.from(op.get);
  return { request_range: op.prefix ? { key, range_end: rangeEnd(key) } : { key } };
}

export class EtcdStore implements ClusterStore {
  private readonly client: Etcd3;

  constructor(settings: EtcdSettings) {
    const timeout = settings.callTimeoutMs;
    this.client = new Etcd3({
      hosts: settings.endpoints,
      ...(settings.tls ? { credentials: { rootCertificate: settings.tls.ca, privateKey: settings.tls.key, certChain: settings.tls.cert } } : {}),
      dialTimeout: timeout,
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeout }),
      faultHandling: {
        host: () => circuitBreaker(handleAll, { halfOpenAfter: 1000, breaker: new ConsecutiveBreaker(3) }),
        global: retry(handleAll, { maxAttempts: 1 }),
        // The client keeps the backoff it reached (it never resets it): keep the ceiling low.
        watchBackoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 2000 }).next(),
      },
    });
  }

  private async call<T>(op: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw new StoreUnavailable(op, e instanceof Error ? e.message : String(e), { cause: e });
    }
  }

  async get(key: string): Promise<KeyValue | undefined> {
    const res = await this.call('get', () => this.client.kv.range({ key: Buffer.from(key) }));
    return res.kvs[0] && toKv(res.kvs[0]);
  }

  async list(prefix: string): Promise<{ kvs: KeyValue[]; revision: number }> {
    const key = Buffer.from(prefix);
    const res = await this.call('list', () => this.client.kv.range({ key, range_end: rangeEnd(key) }));
    return { kvs: res.kvs.map(toKv), revision: Number(res.header.revision) };
  }

  async txn(compare: Compare[], success: Op[], failure: Op[] = []): Promise<TxnResult> {
    const res = await this.call('txn', () =>
      this.client.kv.txn({ compare: compare.map(toCompare), success: success.map(toOp), failure: failure.map(toOp) }),
    );
    const branch = res.succeeded ? success : failure;
    const gets: KeyValue[][] = [];
    branch.forEach((op, i) => {
      if ('get' in op) gets.push((res.responses[i]?.response_range?.kvs ?? []).map(toKv));
    });
    return { succeeded: res.succeeded, revision: Number(res.header.revision), gets };
  }

  async grantLease(ttlSec: number): Promise<Lease> {
    const lease: EtcdLease = this.client.lease(ttlSec, { autoKeepAlive: true });
    // The client reports a failed grant both ways; the rejection is what we act on.
    lease.on('lost', () => undefined);
    let id: string;
    try {
      id = await this.call('lease grant', () => lease.grant());
    } catch (e) {
      lease.release();
      throw e;
    }
    let lostOnce = false;
    return {
      id,
      ttlSec,
      onLost(cb) {
        lease.on('lost', (err: Error) => {
          if (lostOnce) return;
          lostOnce = true;
          cb(err);
        });
      },
      revoke: () => this.call('lease revoke', () => lease.revoke()),
      release: () => lease.release(),
    };
  }

  watch(prefix: string, fromRevision: number, handler: WatchHandler): Watch {
    let cancelled = false;
    const watcher = this.client.watch().prefix(prefix).startRevision(String(fromRevision)).create();
    watcher
      .then((w) => {
        if (cancelled) return void w.cancel().catch(() => undefined);
        w.on('data', (res) => {
          const events = res.events.map((e) => ({ type: e.type === 'Put' ? ('put' as const) : ('delete' as const), kv: toKv(e.kv) }));
          if (events.length) handler.onEvents(events);
        });
        w.on('error', (err) => handler.onError(err));
      })
      .catch((err: Error) => !cancelled && handler.onError(err));
    return {
      cancel: async () => {
        cancelled = true;
        const w = await watcher.catch(() => undefined);
        await w?.cancel().catch(() => undefined);
      },
    };
  }

  async close(): Promise<void> {
    this.client.close();
  }
}
