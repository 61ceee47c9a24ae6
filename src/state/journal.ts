/**
 * The state journal (state.journal, next to the state.json snapshot): one line per save, holding
 * only the records that save changed, so a Docker call writes a few hundred bytes whatever the
 * size of the state. A line is `{"seq":N,"ops":[…]}` and ends with a newline; N counts up by one
 * from the snapshot's `seq`.
 *
 *   {"t":"net","id":ID,"v":RECORD|null}    a network record (null: removed)
 *   {"t":"ep","id":ID,"v":RECORD|null}     an endpoint record
 *   {"t":"pool","id":ID,"v":RECORD|null}   a whole pool record
 *   {"t":"addr","id":ID,"set":{ADDR:KIND},"del":[ADDR],"cursor":ADDR|null,"since":{ADDR:MS}}
 *                                          addresses taken and released in a pool (the rest of it
 *                                          unchanged); `since` (optional): allocation times set;
 *                                          a released address's time goes with it
 *   {"t":"ula","v":PREFIX|null}            the IPv6 unique-local /48
 *
 * Every op sets a value outright, so replaying an entry twice changes nothing. Only the last line
 * can be torn (a crash in the middle of a write, before its fdatasync and so before any reply):
 * it is ignored, and cut off before the next append. Anything else that cannot be read stops the
 * start, as a corrupt state.json does.
 */
import { fail } from '../errors.js';
import type { AllocKind, PoolRecord } from '../ipam/types.js';
import type { EndpointRecordV2, NetworkRecordV2, StateFileV3 } from './disk.js';

export const JOURNAL_FILE = 'state.journal';

export type Change =
  | { t: 'net'; id: string; v: NetworkRecordV2 | null }
  | { t: 'ep'; id: string; v: EndpointRecordV2 | null }
  | { t: 'pool'; id: string; v: PoolRecord | null }
  | AddrChange
  | { t: 'ula'; v: string | null };

export interface AddrChange {
  t: 'addr';
  id: string;
  set: Record<string, AllocKind>;
  del: string[];
  cursor: string | null;
  since?: Record<string, number>;
}

/** A pool after an `addr` change (in place). */
export function applyAddresses(pool: PoolRecord, op: AddrChange): void {
  for (const a of op.del) delete pool.allocated[a];
  Object.assign(pool.allocated, op.set);
  pool.cursor = op.cursor;
  if (pool.since || op.since) {
    const since = (pool.since ??= {});
    for (const a of op.del) delete since[a];
    Object.assign(since, op.since ?? {});
  }
}

export interface JournalEntry {
  seq: number;
  ops: Change[];
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Sets or deletes an own key (a null value deletes). */
function put<T>(map: Record<string, T>, key: string, v: T | null): void {
  if (v === null) delete map[key];
  else map[key] = v;
}

/** Applies one entry's changes to a current-version document (in place). */
export function applyChanges(doc: StateFileV3, ops: Change[], where: string): void {
  for (const op of ops) {
    const bad = (what: string) => fail('STATE', { detail: `${where}: ${what}; refusing to start — fix or move the file` });
    if (!isObject(op)) bad('a journal change is not an object');
    switch (op.t) {
      case 'net':
        put(doc.networks, op.id, op.v);
        break;
      case 'ep':
        put(doc.endpoints, op.id, op.v);
        break;
      case 'pool':
        put(doc.pools, op.id, op.v);
        break;
      case 'addr': {
        const pool = Object.hasOwn(doc.pools, op.id) ? doc.pools[op.id] : undefined;
        if (!pool || !isObject(op.set) || !Array.isArray(op.del) || (op.since !== undefined && !isObject(op.since))) {
          bad(`a journal change of addresses in pool ${op.id}, which it does not hold`);
        }
        const next: PoolRecord = { ...pool!, allocated: { ...pool!.allocated }, ...(pool!.since ? { since: { ...pool!.since } } : {}) };
        applyAddresses(next, op);
        doc.pools[op.id] = next;
        break;
      }
      case 'ula':
        doc.ulaBase = op.v;
        break;
      default:
        bad(`a journal change of an unknown type "${String((op as { t?: unknown }).t)}"`);
    }
  }
}

/**
 * The entries of a journal's text that come after the snapshot (`after`: its seq), checked to
 * follow on from it one by one. `valid` is the length of the text up to the last whole line; a
 * last line that is not whole (no newline, or not JSON) is `torn` and left out.
 */
export function parseJournal(text: string, after: number, where: string): { entries: JournalEntry[]; valid: number; torn: boolean; last: number } {
  const entries: JournalEntry[] = [];
  let pos = 0;
  let last = after;
  let torn = false;
  while (pos < text.length) {
    const nl = text.indexOf('\n', pos);
    const line = nl < 0 ? text.slice(pos) : text.slice(pos, nl);
    let entry: JournalEntry | null = null;
    try {
      const o = JSON.parse(line) as JournalEntry;
      if (isObject(o) && Number.isSafeInteger(o.seq) && Array.isArray(o.ops)) entry = o;
    } catch {
      entry = null;
    }
    if (entry === null || nl < 0) {
      // Only the last line may be unreadable: a write a crash interrupted. Zeros a file system
      // left after it count as that write too.
      const rest = nl < 0 ? '' : text.slice(nl + 1);
      if (rest.replace(/\0/g, '').trim() === '') {
        torn = line.length > 0 || rest.length > 0;
        break;
      }
      fail('STATE', { detail: `${where}: line ${entries.length + 1} is not a journal entry, and entries follow it; refusing to start — fix or move the file` });
    }
    if (entry!.seq > after) {
      if (entry!.seq !== last + 1) {
        fail('STATE', { detail: `${where}: entry ${entry!.seq} follows entry ${last} (entries are missing); refusing to start — fix or move the file` });
      }
      entries.push(entry!);
      last = entry!.seq;
    }
    pos = nl + 1;
  }
  return { entries, valid: torn ? pos : text.length, torn, last };
}
