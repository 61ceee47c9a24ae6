import { Mutex } from './mutex.js';
import type { StateStore } from './store.js';
import type { State } from './types.js';

/**
 * The in-memory state and its store. Every change goes through `tx`: one
 * operation at a time, and on failure the in-memory state is put back as it
 * was (what was already saved is reconciled at the next start).
 */
export class Db {
  private readonly mutex = new Mutex();
  private inFlight = 0;

  constructor(private readonly store: StateStore, public state: State) {}

  async tx<T>(fn: (s: State) => Promise<T>): Promise<T> {
    this.inFlight++;
    try {
      return await this.mutex.run(async () => {
        const before = structuredClone(this.state);
        try {
          return await fn(this.state);
        } catch (e) {
          this.state = before;
          throw e;
        }
      });
    } finally {
      this.inFlight--;
    }
  }

  /** Persists the current in-memory state (call inside tx). */
  async save(): Promise<void> {
    await this.store.save(this.state);
  }

  /** Resolves once every operation that had started has finished. */
  async drain(): Promise<void> {
    await this.mutex.run(async () => undefined);
  }

  get busy(): number {
    return this.inFlight;
  }
}
