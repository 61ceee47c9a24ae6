/**
 * A cleanup stack for tests: register an undo right after creating something, run them all in
 * afterEach/afterAll. Undos run in reverse order; a failing undo is logged and the rest still run.
 *
 *   const cleanup = new Cleanup();
 *   afterEach(() => cleanup.run());
 *   const ns = await createNetns('x'); cleanup.add(() => ns.delete(), `netns ${ns.name}`);
 */
export type CleanupFn = () => unknown | Promise<unknown>;

export class Cleanup {
  private readonly stack: { fn: CleanupFn; label: string }[] = [];

  /** Registers an undo; returns it so callers can chain. */
  add(fn: CleanupFn, label = fn.name || 'cleanup'): CleanupFn {
    this.stack.push({ fn, label });
    return fn;
  }

  get size(): number {
    return this.stack.length;
  }

  /** Runs and removes every registered undo, newest first. Never throws; returns the errors. */
  async run(): Promise<Error[]> {
    const errors: Error[] = [];
    for (let item = this.stack.pop(); item; item = this.stack.pop()) {
      try {
        await item.fn();
      } catch (e) {
        const err = e instanceof Error ? e : new Error(String(e));
        errors.push(err);
        console.warn(`cleanup "${item.label}" failed: ${err.message}`);
      }
    }
    return errors;
  }
}
