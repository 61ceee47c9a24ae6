/**
 * A local copy of every key under a prefix, kept current by a watch: list once, then watch from the
 * revision after the list. When the watch cannot resume (history compacted, cancelled), it lists
 * again. While etcd is unreachable the copy stays as it was — what was programmed from it keeps
 * working — and catches up when etcd is back.
 */
import type { Logger } from '../logging.js';
import type { ClusterStore, KeyValue, Watch, WatchEvent } from './store.js';

export class PrefixMirror {
  readonly kvs = new Map<string, KeyValue>();
  /** The revision the copy is current at (0 until the first list). */
  revision = 0;
  private watch: Watch | undefined;
  private stopped = true;
  private timer: NodeJS.Timeout | undefined;
  private readonly listeners: (() => void)[] = [];
  private generation = 0;

  constructor(
    private readonly store: ClusterStore,
    readonly prefix: string,
    private readonly log: Logger,
    private readonly retryMs = 1000,
  ) {}

  /** True once the first list succeeded: before that the copy says nothing (not "empty"). */
  get loaded(): boolean {
    return this.revision > 0;
  }

  /** Called after every change of the copy (several events of one revision: one call). Returns the unsubscribe. */
  onChange(cb: () => void): () => void {
    this.listeners.push(cb);
    return () => {
      const i = this.listeners.indexOf(cb);
      if (i >= 0) this.listeners.splice(i, 1);
    };
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    void this.load();
  }

  /** Lists again now (after a reconnect, or to check the copy). */
  async resync(): Promise<void> {
    await this.load();
  }

  private async load(): Promise<void> {
    if (this.stopped) return;
    const gen = ++this.generation;
    clearTimeout(this.timer);
    await this.watch?.cancel().catch(() => undefined);
    this.watch = undefined;
    try {
      const { kvs, revision } = await this.store.list(this.prefix);
      if (gen !== this.generation || this.stopped) return;
      this.kvs.clear();
      for (const kv of kvs) this.kvs.set(kv.key, kv);
      this.revision = revision;
      this.watch = this.store.watch(this.prefix, revision + 1, {
        onEvents: (events) => gen === this.generation && this.apply(events),
        onError: (err) => {
          if (gen !== this.generation) return;
          this.log.warn('etcd watch interrupted; listing again', { prefix: this.prefix, error: err.message });
          this.later();
        },
      });
      this.emit();
    } catch (e) {
      if (gen !== this.generation) return;
      this.log.debug('etcd list failed; retrying', { prefix: this.prefix, error: e instanceof Error ? e.message : String(e) });
      this.later();
    }
  }

  private later(): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.load(), this.retryMs);
    this.timer.unref?.();
  }

  private apply(events: WatchEvent[]): void {
    for (const e of events) {
      if (e.kv.modRevision <= this.revision && this.kvs.get(e.kv.key)?.modRevision === e.kv.modRevision) continue;
      if (e.type === 'put') this.kvs.set(e.kv.key, e.kv);
      else this.kvs.delete(e.kv.key);
      this.revision = Math.max(this.revision, e.kv.modRevision);
    }
    this.emit();
  }

  private emit(): void {
    for (const l of this.listeners) {
      try {
        l();
      } catch (e) {
        this.log.error('mirror listener failed', { prefix: this.prefix, error: e instanceof Error ? e.message : String(e) });
      }
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.generation++;
    clearTimeout(this.timer);
    await this.watch?.cancel().catch(() => undefined);
    this.watch = undefined;
  }
}
