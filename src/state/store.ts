import { promises as fs, writeSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { fail } from '../errors.js';
import type { StateWriteEvent } from '../metrics/metrics.js';
import { decodeRecords, encodeState, upgradeDoc, type StateFileV3 } from './disk.js';
import { applyChanges, JOURNAL_FILE, parseJournal, type Change } from './journal.js';
import { emptyState, type State } from './types.js';

/** Where state lives. The real one is a snapshot and a journal; tests use MemoryStore. */
export interface StateStore {
  /** The saved state, or an empty one when nothing was ever saved. Throws STATE when unreadable. */
  load(): Promise<State>;
  /**
   * Makes `changes` durable before it resolves. `state` is the whole in-memory state they lead
   * to: a store may write that whole instead (its first write, over a file of an older version).
   *
   * With `{ sync: false }` the changes are written (a killed process loses nothing) but not
   * synced to the disk before it resolves: the next durable commit syncs them with its own, and
   * a store syncs them on its own soon after when none comes (FileStore: SYNC_LATER_MS). Only
   * for changes whose loss in a machine crash start-up rebuilds from the kernel (the `joined`
   * flag: src/driver/reconcile.ts).
   */
  commit(changes: Change[], state: State, opts?: CommitOptions): Promise<void>;
  /** Writes the whole state (a snapshot). */
  save(state: State): Promise<void>;
  /** Told the state a Db starts from (what this store is taken to hold when it has saved nothing). */
  adopt?(state: State): void;
  /** Syncs what commits with `sync: false` wrote and nothing has synced yet. */
  sync?(): Promise<void>;
}

export interface CommitOptions {
  /** False: written, synced later (see StateStore.commit). Default true. */
  sync?: boolean;
}

/** A store whose journal is compacted into a new snapshot from time to time (FileStore). */
export interface Compacting {
  /** True when the journal has grown enough to be worth a new snapshot. */
  wantsCompaction(): boolean;
  /**
   * A snapshot of the state as it is now (call between operations): `write` puts it on disk
   * (operations may go on meanwhile), then `finish` (between operations again) drops the
   * journal entries it holds.
   */
  beginCompaction(state: State): { write: () => Promise<void>; finish: () => Promise<void> };
}

export function isCompacting(s: StateStore): s is StateStore & Compacting {
  return typeof (s as Partial<Compacting>).wantsCompaction === 'function';
}

export const STATE_FILE = 'state.json';

/** Default: the journal is compacted once it is larger than this and than twice the snapshot. */
const COMPACT_MIN_BYTES = 1 << 20;

/**
 * How long journal entries written without a sync (commit's `sync: false`) may wait for a durable
 * commit to sync them before the store syncs them itself (off the call path).
 */
export const SYNC_LATER_MS = 1000;

/**
 * The state on disk: state.json, a snapshot written atomically (temp file, fsync, rename, fsync
 * of the directory), and state.journal, to which each save appends one line holding only the
 * records it changed, made durable with one fdatasync (src/state/journal.ts) — or, for a commit
 * with `sync: false`, by the next durable commit's fdatasync (or the store's own, SYNC_LATER_MS
 * later): such a line is in the file (the page cache) when the commit resolves, so a killed
 * process loses nothing; only a machine crash in between can, and only what start-up rebuilds
 * from the kernel may be committed so. Loading reads the
 * snapshot and replays the journal entries that follow it. When the journal outgrows the
 * snapshot, a new snapshot is written — off the call path (Db schedules it between calls) — and
 * the journal is cut to what came after it: a crash at any point leaves a snapshot and a journal
 * that together hold every acknowledged save.
 *
 * A file of an older version is migrated on load (src/state/disk.ts) and written in the current
 * version at the first save; the original is kept beside it first, as state.json.v<N>, for going
 * back to that version of tsbridge. Loading only reads (`tsbridge ports` loads too).
 */
export class FileStore implements StateStore, Compacting {
  readonly file: string;
  readonly journal: string;
  private readonly tmp: string;
  private readonly journalTmp: string;

  constructor(
    readonly dir: string,
    private readonly observer?: (e: StateWriteEvent) => void,
    /** The journal is compacted once it is larger than this and than twice the snapshot. */
    private readonly compactAt = COMPACT_MIN_BYTES,
    /** How long entries written without a sync wait for a durable commit before the store syncs them. */
    private readonly syncLaterMs = SYNC_LATER_MS,
  ) {
    this.file = path.join(dir, STATE_FILE);
    this.journal = path.join(dir, JOURNAL_FILE);
    this.tmp = path.join(dir, `.${STATE_FILE}.tmp`);
    this.journalTmp = path.join(dir, `.${JOURNAL_FILE}.tmp`);
  }

  /** The last journal entry written (or held by the snapshot). */
  private seq = 0;
  /** The older-version file last loaded, until it has been kept aside. */
  private original: { version: number; text: string } | null = null;
  /** The first write must be a snapshot: nothing on disk yet, or a file of an older version. */
  private needSnapshot = true;
  /** Bytes of the journal up to its last whole line (a torn line after it is cut before appending). */
  private journalValid = 0;
  private journalFd: FileHandle | null = null;
  private journalBytes = 0;
  private snapshotBytes = 0;
  /** Counts journal replacements (a compaction started before one must not cut the new journal). */
  private generation = 0;
  /** Writes in order: one at a time, and appends that queue up while one syncs share the next sync. */
  /** `ops`: the entry's changes as JSON (its seq is given when it is written), null for a sync alone. */
  private queue: { ops: string | null; sync: boolean; done: (e?: unknown) => void }[] = [];
  private writing: Promise<void> | null = null;
  /** Entries are in the journal that no fdatasync has covered yet. */
  private unsynced = false;
  /** The store's own sync of them, pending (SYNC_LATER_MS). */
  private syncTimer: ReturnType<typeof setTimeout> | null = null;

  async load(): Promise<State> {
    let text: string;
    try {
      text = await fs.readFile(this.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') return fail('STATE', { detail: `cannot read ${this.file}: ${(e as Error).message}` }, e);
      text = '';
    }
    let doc: StateFileV3;
    let migrated: number | null = null;
    if (text === '') {
      doc = encodeState(emptyState());
    } else {
      ({ doc, migrated } = upgradeDoc(parseJson(text, this.file), this.file));
      doc = structuredClone(doc);
    }
    let journalText: string | null = null;
    try {
      journalText = await fs.readFile(this.journal, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') return fail('STATE', { detail: `cannot read ${this.journal}: ${(e as Error).message}` }, e);
    }
    if (journalText !== null && journalText.length > 0 && (text === '' || migrated !== null)) {
      fail('STATE', { detail: `${this.journal} goes with a version 3 ${STATE_FILE}, and ${text === '' ? 'there is none' : `this one is version ${migrated}`}; refusing to start — move one of them` });
    }
    this.seq = doc.seq;
    if (journalText) {
      const j = parseJournal(journalText, doc.seq, this.journal);
      for (const e of j.entries) applyChanges(doc, e.ops, this.journal);
      this.seq = j.last;
      this.journalValid = Buffer.byteLength(journalText.slice(0, j.valid));
    } else {
      this.journalValid = 0;
    }
    const state = decodeRecords(doc, this.file);
    // Loading only reads (`tsbridge ports` loads too): the original is kept when it is first replaced.
    this.original = migrated === null ? null : { version: migrated, text };
    this.needSnapshot = text === '' || migrated !== null;
    this.snapshotBytes = Buffer.byteLength(text);
    this.journalBytes = this.journalValid;
    return state;
  }

  async commit(changes: Change[], state: State, opts: CommitOptions = {}): Promise<void> {
    if (this.needSnapshot) {
      await this.save(state);
      return;
    }
    if (changes.length === 0) return;
    await this.enqueue(JSON.stringify(changes), opts.sync !== false);
  }

  private enqueue(ops: string | null, sync: boolean): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ ops, sync, done: (e) => (e === undefined ? resolve() : reject(e)) });
      this.writing ??= this.drainQueue();
    });
  }

  private async drainQueue(): Promise<void> {
    // Never to the end without a pause: `enqueue` assigns `writing` when this returns, so a run
    // that ended synchronously (a sync alone with the journal closed: nothing to do) would leave
    // `writing` set for good — every later save queued behind a drain that never comes.
    await Promise.resolve();
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0);
      const sync = batch.some((b) => b.sync);
      // Entries are numbered as they are written: one that fails leaves no gap in the numbers
      // (the next start would refuse a journal with entries missing).
      const seqBefore = this.seq;
      let linesStay = false;
      try {
        const data = batch.map((b) => (b.ops === null ? '' : `{"seq":${++this.seq},"ops":${b.ops}}\n`)).join('');
        const bytes = Buffer.byteLength(data);
        // A sync alone needs the journal open: closed, it is being replaced by one synced whole.
        const fd = bytes > 0 ? await this.openJournal() : this.unsynced ? this.journalFd : null;
        if (fd) {
          const before = this.journalBytes;
          let written = 0;
          try {
            // An append to the page cache takes microseconds: written here, not on the thread
            // pool (a round trip that costs more than the write, and milliseconds on a busy host).
            const buf = Buffer.from(data, 'utf8');
            while (written < buf.length) written += writeSync(fd.fd, buf, written, buf.length - written);
            if (sync) await fd.datasync();
          } catch (e) {
            // Nothing half-written may stay in front of the next append. (If even that fails, the
            // lines stay, numbered: a load replays them, and the failed operation's rollback,
            // committed after them, puts back what they changed.)
            if (written > 0 && !(await fd.truncate(before).then(() => true, () => false))) {
              linesStay = true;
              this.journalBytes = (await fd.stat().catch(() => null))?.size ?? before + bytes;
            }
            throw e;
          }
          this.journalBytes += bytes;
          this.observer?.({ kind: 'journal', bytes, syncs: sync ? 1 : 0 });
        }
        // An fdatasync covers every line written before it, those written without one too.
        if (sync && fd) this.synced();
        else if (bytes > 0) this.syncLater();
        for (const b of batch) b.done();
      } catch (e) {
        if (!linesStay) this.seq = seqBefore;
        const err = stateError(`cannot append to ${this.journal}`, e);
        for (const b of batch) b.done(err);
      }
    }
    this.writing = null;
  }

  /** Lines are written that no fdatasync covers: one comes within syncLaterMs, a durable commit's or the store's own. */
  private syncLater(): void {
    this.unsynced = true;
    if (this.syncTimer) return;
    this.syncTimer = setTimeout(() => {
      this.syncTimer = null;
      // A sync alone (no line) through the queue; its failure is retried by the next commit's.
      if (this.unsynced) this.enqueue(null, true).catch(() => undefined);
    }, this.syncLaterMs);
    this.syncTimer.unref(); // the page cache keeps them if the process ends first
  }

  private synced(): void {
    this.unsynced = false;
    if (this.syncTimer) clearTimeout(this.syncTimer);
    this.syncTimer = null;
  }

  /** Syncs what was written without a sync (shutdown, tests); resolves at once when nothing is. */
  async sync(): Promise<void> {
    await this.flushed();
    if (this.unsynced) await this.enqueue(null, true);
  }

  private async openJournal(): Promise<FileHandle> {
    if (this.journalFd) return this.journalFd;
    let created = false;
    try {
      const { size } = await fs.stat(this.journal);
      if (size !== this.journalValid) await fs.truncate(this.journal, this.journalValid); // a torn last line
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      created = true;
    }
    this.journalFd = await fs.open(this.journal, 'a', 0o600);
    if (created) await syncDir(this.dir); // the new file's name must survive a crash too
    return this.journalFd;
  }

  private async closeJournal(): Promise<void> {
    const fd = this.journalFd;
    this.journalFd = null;
    await fd?.close();
  }

  /** Waits for the appends queued so far. */
  private async flushed(): Promise<void> {
    while (this.writing) await this.writing;
  }

  /** Writes the whole state as a snapshot holding every entry so far, and empties the journal. */
  async save(state: State): Promise<void> {
    await this.flushed();
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    if (this.original) {
      const backup = `${this.file}.v${this.original.version}`;
      await fs.writeFile(backup, this.original.text, { flag: 'wx', mode: 0o600 }).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== 'EEXIST') fail('STATE', { detail: `cannot keep the version ${this.original!.version} file as ${backup}: ${e.message}` }, e);
      });
      this.original = null;
    }
    this.seq++;
    await this.writeSnapshot(snapshotText(state, this.seq));
    // Everything is in the snapshot: the journal starts empty.
    await this.closeJournal();
    await this.replaceJournal('');
    this.needSnapshot = false;
  }

  /** Snapshots are written one at a time (a compaction's may be under way when a save comes). */
  private snapshots: Promise<void> = Promise.resolve();

  private writeSnapshot(data: string): Promise<void> {
    const next = this.snapshots.then(() => this.writeSnapshotNow(data));
    this.snapshots = next.catch(() => undefined);
    return next;
  }

  private async writeSnapshotNow(data: string): Promise<void> {
    const fh = await fs.open(this.tmp, 'w', 0o600);
    try {
      await fh.writeFile(data, 'utf8');
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.rename(this.tmp, this.file);
    await syncDir(this.dir);
    this.snapshotBytes = Buffer.byteLength(data);
    this.observer?.({ kind: 'snapshot', bytes: this.snapshotBytes, syncs: 2 });
  }

  /** Atomically replaces the journal with `text` (the entries a new snapshot does not hold). */
  private async replaceJournal(text: string): Promise<void> {
    const fh = await fs.open(this.journalTmp, 'w', 0o600);
    try {
      if (text) await fh.writeFile(text, 'utf8');
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.rename(this.journalTmp, this.journal);
    await syncDir(this.dir);
    this.generation++;
    this.synced(); // the new journal was synced whole, and the old one's lines are in the snapshot
    this.journalValid = Buffer.byteLength(text);
    this.journalBytes = this.journalValid;
  }

  wantsCompaction(): boolean {
    return !this.needSnapshot && this.journalBytes > Math.max(this.compactAt, 2 * this.snapshotBytes);
  }

  beginCompaction(state: State): { write: () => Promise<void>; finish: () => Promise<void> } {
    // Called between operations: every entry so far is on disk, and ends at journalBytes.
    const seq = this.seq;
    const at = this.journalBytes;
    const generation = this.generation;
    const text = snapshotText(state, seq);
    return {
      write: () => this.writeSnapshot(text),
      finish: async () => {
        // The snapshot holds every entry up to `seq`: keep only those written after it.
        await this.flushed();
        if (this.generation !== generation) return; // the journal was replaced meanwhile
        await this.closeJournal();
        const fh = await fs.open(this.journal, 'r');
        let tail: Buffer;
        try {
          const { size } = await fh.stat();
          tail = Buffer.alloc(Math.max(0, size - at));
          if (tail.length > 0) await fh.read(tail, 0, tail.length, at);
        } finally {
          await fh.close();
        }
        await this.replaceJournal(tail.toString('utf8'));
      },
    };
  }
}

function snapshotText(state: State, seq: number): string {
  return JSON.stringify(encodeState(state, seq), null, 1) + '\n';
}

async function syncDir(dir: string): Promise<void> {
  const dh = await fs.open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

function stateError(what: string, e: unknown): Error {
  try {
    return fail('STATE', { detail: `${what}: ${e instanceof Error ? e.message : String(e)}` }, e);
  } catch (err) {
    return err as Error;
  }
}

function parseJson(text: string, where: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    return fail('STATE', { detail: `${where} is not valid JSON (${(e as Error).message}); refusing to start with an empty state — fix or move the file` }, e);
  }
}

/** Parses and checks a state document of any known version; a bad one is an error, never an empty state. */
export function parseState(text: string, where = 'state'): State {
  const { doc } = upgradeDoc(parseJson(text, where), where);
  return decodeRecords(doc, where);
}

/**
 * In-memory store for unit tests; can be told to fail the next save. What it keeps has been
 * through the disk format and the journal's changes, as a real save and load would put it — and
 * every commit is checked: the saved document with the journal's changes applied must equal the
 * whole in-memory state, so a change a save leaves out (made outside what the Db tracks) fails
 * the test that made it.
 */
export class MemoryStore implements StateStore {
  saved: State | null = null;
  saves = 0;
  failNextSave = false;
  /** Journal changes committed, in order (for tests that look at what a call wrote). */
  readonly changes: Change[][] = [];
  private doc: StateFileV3 | null = null;

  async load(): Promise<State> {
    return this.saved ? structuredClone(this.saved) : emptyState();
  }

  async save(state: State): Promise<void> {
    this.injected();
    this.saves++;
    this.doc = structuredClone(encodeState(state));
    this.saved = this.mine = parseState(JSON.stringify(this.doc));
  }

  /** The `saved` this store last set (a test may set another one). */
  private mine: State | null = null;

  adopt(state: State): void {
    if (this.saved === null) this.doc = structuredClone(encodeState(state));
  }

  /** Commits made with `sync: false`, in order (true) among all (for tests of which saves may wait for a sync). */
  readonly lazy: boolean[] = [];

  async commit(changes: Change[], state: State, opts: CommitOptions = {}): Promise<void> {
    this.injected();
    if (this.saved !== this.mine) this.doc = structuredClone(encodeState(this.saved ?? emptyState()));
    this.doc ??= structuredClone(encodeState(emptyState()));
    const next = structuredClone(this.doc);
    applyChanges(next, structuredClone(changes), 'memory journal');
    const want = JSON.parse(JSON.stringify(encodeState(state))) as StateFileV3;
    const got = JSON.parse(JSON.stringify(next)) as StateFileV3;
    const diff = firstDifference(got, want);
    if (diff) throw new Error(`MemoryStore: the saved state would differ from the state in memory at ${diff} (a change the Db did not see)`);
    this.saves++;
    this.changes.push(structuredClone(changes));
    this.lazy.push(opts.sync === false);
    this.doc = next;
    this.saved = this.mine = parseState(JSON.stringify(next));
  }

  private injected(): void {
    if (this.failNextSave) {
      this.failNextSave = false;
      fail('STATE', { detail: 'injected save failure' });
    }
  }
}

function firstDifference(a: unknown, b: unknown, at = '$'): string | null {
  if (a === b) return null;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null || Array.isArray(a) !== Array.isArray(b)) return at;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  for (const k of new Set([...ka, ...kb])) {
    const d = firstDifference((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], `${at}.${k}`);
    if (d) return d;
  }
  return null;
}
