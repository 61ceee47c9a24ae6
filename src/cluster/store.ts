/**
 * What tsbridge needs from etcd, and nothing more: keys with revisions, transactions that compare
 * revisions, leases, and a watch from a revision. The real implementation (./etcd.ts) speaks
 * etcd's v3 API; the unit tier uses an in-memory one with the same semantics
 * (test/fakes/memory-etcd.ts). Everything the overlay coordinates goes through these calls — no
 * consensus, locks or leader election of tsbridge's own.
 */

/** A key as etcd stores it. Revisions are etcd's (one counter for the whole store). */
export interface KeyValue {
  key: string;
  value: string;
  /** Revision of the transaction that created the key (0 = it does not exist). */
  createRevision: number;
  /** Revision of its last change. */
  modRevision: number;
  /** The lease it is attached to ('0' = none). */
  lease: string;
}

/** A condition of a transaction; all must hold for its success branch to run. */
export type Compare =
  | { key: string; target: 'create' | 'mod' | 'version'; op: '=' | '!=' | '<' | '>'; value: number }
  | { key: string; target: 'value'; op: '=' | '!='; value: string };

/** One operation of a transaction branch. */
export type Op =
  | { put: string; value: string; lease?: string }
  | { delete: string; prefix?: boolean }
  | { get: string; prefix?: boolean };

export interface TxnResult {
  succeeded: boolean;
  /** The store's revision after the transaction. */
  revision: number;
  /** What each `get` of the branch that ran found, in order. */
  gets: KeyValue[][];
}

export interface WatchEvent {
  type: 'put' | 'delete';
  /** For a delete: the key and the deleting revision (modRevision); value ''. */
  kv: KeyValue;
}

export interface WatchHandler {
  /** Events of one or more revisions, in order. */
  onEvents(events: WatchEvent[]): void;
  /**
   * The watch cannot go on from where it was (history compacted, cancelled by the server):
   * the caller lists again and watches anew. Transient disconnections are not reported: the
   * watch resumes by itself from the last revision it delivered.
   */
  onError(err: Error): void;
}

export interface Watch {
  cancel(): Promise<void>;
}

/** A lease of this client, kept alive until revoked or released. */
export interface Lease {
  readonly id: string;
  readonly ttlSec: number;
  /** Called once when etcd no longer has the lease (expired while unreachable, revoked elsewhere). */
  onLost(cb: (err: Error) => void): void;
  /** Revokes it: etcd deletes every key attached to it at once. */
  revoke(): Promise<void>;
  /** Stops keeping it alive without revoking it (it expires after its TTL). */
  release(): void;
}

export interface ClusterStore {
  get(key: string): Promise<KeyValue | undefined>;
  /** Every key under the prefix, in key order, and the revision they were read at. */
  list(prefix: string): Promise<{ kvs: KeyValue[]; revision: number }>;
  txn(compare: Compare[], success: Op[], failure?: Op[]): Promise<TxnResult>;
  grantLease(ttlSec: number): Promise<Lease>;
  /** Watches every key under the prefix, from `fromRevision` (inclusive). */
  watch(prefix: string, fromRevision: number, handler: WatchHandler): Watch;
  close(): Promise<void>;
}

/** etcd could not be reached or did not answer in time. */
export class StoreUnavailable extends Error {
  constructor(
    readonly op: string,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super(`${op}: ${detail}`, options);
    this.name = 'StoreUnavailable';
  }
}

/** The key range of a prefix: [prefix, rangeEnd). */
export function prefixRangeEnd(prefix: string): string {
  const b = Buffer.from(prefix);
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i]! < 0xff) {
      const end = Buffer.from(b.subarray(0, i + 1));
      end[i]!++;
      return end.toString('latin1');
    }
  }
  return '\0';
}
