/**
 * Noticing at once when someone else removes or changes tsbridge's rules: a long-lived
 * `nft monitor` reports every nftables transaction on the host (iptables-nft's too), each as its
 * events followed by `# new generation N by process PID (COMM)`. A transaction that deleted or
 * flushed anything of tsbridge's tables, or of the filter chains its forward shim lives in
 * (FORWARD, DOCKER-USER, its own chain), calls `onChange` when its generation line arrives — the
 * check it triggers (the firewall's refresh under the state lock) finds out whether anything is
 * really missing and applies the rules again. tsbridge's own full applies delete and recreate its
 * tables too; their check finds nothing to do. Element changes are not watched here (every Docker
 * call makes some); the periodic sweep counts elements.
 *
 * iptables-legacy rules are not nftables: their removal is seen by the sweep only. If the monitor
 * cannot run (no `nft`), or keeps dying, the sweep is what is left; a monitor that exits is
 * started again after `restartMs`.
 */
import { spawn as nodeSpawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Logger } from '../../logging.js';

export type SpawnMonitor = (cmd: string, args: string[]) => ChildProcess;

export interface NftMonitorOptions {
  /** tsbridge's table name (both families). */
  table: string;
  /** Its iptables forward shim chain. */
  forwardChain: string;
  onChange: (why: string) => void;
  log: Logger;
  spawn?: SpawnMonitor;
  /** When no generation line follows relevant events (an older nft), fire this long after the last one. */
  settleMs?: number;
  restartMs?: number;
}

/** Whether one line of `nft monitor` output removes or changes something tsbridge's rules consist of. */
export function touchesOurs(line: string, table: string, forwardChain: string): boolean {
  const m = /^(delete|flush|replace) (table|chain|rule|set|map|ruleset)\b ?(\w+)? ?([\w-]+)? ?([\w-]+)?/.exec(line.trim());
  if (!m) return false;
  const [, , what, family, tbl, chain] = m;
  if (what === 'ruleset') return true;
  if ((family === 'inet' || family === 'bridge') && tbl === table) return true;
  if ((family === 'ip' || family === 'ip6') && tbl === 'filter') {
    if (what === 'table') return true;
    return chain === 'FORWARD' || chain === 'DOCKER-USER' || chain === forwardChain;
  }
  return false;
}

export class NftMonitor {
  private child: ChildProcess | null = null;
  private stopped = true;
  private pending: string | null = null;
  private settle: NodeJS.Timeout | null = null;
  private restart: NodeJS.Timeout | null = null;
  /** Transactions that touched tsbridge's rules, seen since start (for tests and logs). */
  seen = 0;

  constructor(private readonly opts: NftMonitorOptions) {}

  start(): void {
    this.stopped = false;
    this.spawnOnce();
  }

  private spawnOnce(): void {
    const { log } = this.opts;
    let child: ChildProcess;
    try {
      child = (this.opts.spawn ?? ((c, a) => nodeSpawn(c, a, { stdio: ['ignore', 'pipe', 'pipe'], env: { LC_ALL: 'C', PATH: process.env.PATH ?? '' } })))('nft', ['monitor']);
    } catch (e) {
      log.warn('nft monitor could not start: outside changes to the rules are noticed by the sweep only', { error: String(e) });
      return;
    }
    this.child = child;
    child.on('error', (e) => log.warn('nft monitor failed: outside changes to the rules are noticed by the sweep only', { error: e.message }));
    child.on('exit', (code, signal) => {
      if (this.child === child) this.child = null;
      if (this.stopped) return;
      log.warn('nft monitor exited; starting it again', { code, signal });
      this.restart = setTimeout(() => this.spawnOnce(), this.opts.restartMs ?? 1000);
      this.restart.unref?.();
    });
    if (child.stdout) createInterface({ input: child.stdout }).on('line', (l) => this.line(l));
  }

  /** One line of `nft monitor` output. */
  line(l: string): void {
    if (l.startsWith('# new generation')) {
      if (this.pending) this.fire();
      return;
    }
    if (!touchesOurs(l, this.opts.table, this.opts.forwardChain)) return;
    this.pending ??= l.trim();
    if (this.settle) clearTimeout(this.settle);
    this.settle = setTimeout(() => this.fire(), this.opts.settleMs ?? 50);
    this.settle.unref?.();
  }

  private fire(): void {
    if (this.settle) clearTimeout(this.settle);
    this.settle = null;
    const why = this.pending;
    this.pending = null;
    if (!why) return;
    this.seen++;
    this.opts.onChange(why);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.settle) clearTimeout(this.settle);
    if (this.restart) clearTimeout(this.restart);
    const c = this.child;
    this.child = null;
    if (!c || c.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      c.once('exit', () => resolve());
      c.kill('SIGTERM');
      setTimeout(() => resolve(), 2000).unref?.();
    });
  }
}
