import { promises as fs } from 'node:fs';
import path from 'node:path';
import { fail } from '../errors.js';
import { decodeState, encodeState } from './disk.js';
import { emptyState, type State } from './types.js';
import type { StateWriteEvent } from '../metrics/metrics.js';

/** Where state lives. The real one is a file; tests use MemoryStore. */
export interface StateStore {
  /** The saved state, or an empty one when nothing was ever saved. Throws STATE when unreadable. */
  load(): Promise<State>;
  save(state: State): Promise<void>;
}

export const STATE_FILE = 'state.json';

/**
 * state.json written atomically: write a temp file, fsync it, rename over the
 * old one, fsync the directory. A crash leaves either the old or the new file,
 * never a torn one; a stray temp file is ignored (and replaced) next time.
 *
 * A file of an older version is migrated on load (src/state/disk.ts) and written
 * in the current version at the next save; the original is kept beside it first,
 * as state.json.v<N>, for going back to that version of tsbridge.
 */
export class FileStore implements StateStore {
  readonly file: string;
  private readonly tmp: string;

  constructor(readonly dir: string, private readonly observer?: (e: StateWriteEvent) => void) {
    this.file = path.join(dir, STATE_FILE);
    this.tmp = path.join(dir, `.${STATE_FILE}.tmp`);
  }

  async load(): Promise<State> {
    let text: string;
    try {
      text = await fs.readFile(this.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return emptyState();
      return fail('STATE', { detail: `cannot read ${this.file}: ${(e as Error).message}` }, e);
    }
    const { state, migrated } = decodeState(parseJson(text, this.file), this.file);
    // Loading only reads (`tsbridge ports` loads too): the original is kept when it is first replaced.
    this.original = migrated === null ? null : { version: migrated, text };
    return state;
  }

  /** The older-version file last loaded, until it has been kept aside. */
  private original: { version: number; text: string } | null = null;

  async save(state: State): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    if (this.original) {
      const backup = `${this.file}.v${this.original.version}`;
      await fs.writeFile(backup, this.original.text, { flag: 'wx', mode: 0o600 }).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== 'EEXIST') fail('STATE', { detail: `cannot keep the version ${this.original!.version} file as ${backup}: ${e.message}` }, e);
      });
      this.original = null;
    }
    const data = JSON.stringify(encodeState(state), null, 1) + '\n';
    const fh = await fs.open(this.tmp, 'w', 0o600);
    try {
      await fh.writeFile(data, 'utf8');
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.rename(this.tmp, this.file);
    const dh = await fs.open(this.dir, 'r');
    try {
      await dh.sync();
    } finally {
      await dh.close();
    }
    this.observer?.({ kind: 'snapshot', bytes: Buffer.byteLength(data), syncs: 2 });
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
  return decodeState(parseJson(text, where), where).state;
}

/**
 * In-memory store for unit tests; can be told to fail the next save. What it keeps has been
 * through the disk format and back, as a real save and load would put it.
 */
export class MemoryStore implements StateStore {
  saved: State | null = null;
  saves = 0;
  failNextSave = false;

  async load(): Promise<State> {
    return this.saved ? structuredClone(this.saved) : emptyState();
  }

  async save(state: State): Promise<void> {
    if (this.failNextSave) {
      this.failNextSave = false;
      fail('STATE', { detail: 'injected save failure' });
    }
    this.saves++;
    this.saved = parseState(JSON.stringify(encodeState(state)));
  }
}
