/** What every cluster operation works with, and the one place store failures become catalogue errors. */
import { fail, isTsbridgeError } from '../errors.js';
import type { Logger } from '../logging.js';
import type { Keys } from './keys.js';
import type { ClusterStore } from './store.js';

export interface Cluster {
  store: ClusterStore;
  keys: Keys;
  /** This host's id (16 hex digits, kept in its state directory). */
  hostId: string;
  /** The etcd endpoints, as given, for error messages. */
  endpoints: string;
  /** How long one store call may take before it counts as unreachable (ms). */
  timeoutMs: number;
  log: Logger;
}

/**
 * Runs one store call (or a few) with a deadline. Catalogue errors pass through; anything else —
 * unreachable, timed out, refused by etcd — is CLUSTER_UNAVAILABLE naming what was being done.
 */
export async function guarded<T>(c: Cluster, op: string, fn: () => Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${c.timeoutMs} ms`)), c.timeoutMs);
  });
  try {
    return await Promise.race([fn(), deadline]);
  } catch (e) {
    if (isTsbridgeError(e)) throw e;
    const detail = e instanceof Error ? e.message : String(e);
    fail('CLUSTER_UNAVAILABLE', { endpoints: c.endpoints, op, detail }, e);
  } finally {
    clearTimeout(timer);
  }
}
