import { promises as fs } from 'node:fs';
import path from 'node:path';
import { fail } from '../errors.js';
import { emptyState, type State } from './types.js';

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
 */
export class FileStore implements StateStore {
  readonly file: string;
  private readonly tmp: string;

  constructor(readonly dir: string) {
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
    return parseState(text, this.file);
  }

  async save(state: State): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    const data = JSON.stringify(state, null, 1) + '\n';
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
  }
}

/** Parses and sanity-checks a state document; a bad one is an error, never an empty state. */
export function parseState(text: string, where = 'state'): State {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    return fail('STATE', { detail: `${where} is not valid JSON (${(e as Error).message}); refusing to start with an empty state — fix or move the file` }, e);
  }
  const s = doc as Partial<State> | null;
  if (
    !s || typeof s !== 'object' || s.version !== 1 ||
    !isObject(s.networks) || !isObject(s.endpoints) || !isObject(s.pools)
  ) {
    return fail('STATE', { detail: `${where} is not a tsbridge version 1 state document; refusing to start — fix or move the file` });
  }
  return { version: 1, networks: s.networks!, endpoints: s.endpoints!, pools: s.pools!, ulaBase: s.ulaBase ?? null };
}

function isObject(v: unknown): boolean {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** In-memory store for unit tests; can be told to fail the next save. */
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
    this.saved = structuredClone(state);
  }
}
