import path from 'node:path';
import { execa } from 'execa';
import { TsbridgeError } from '../../errors.js';
import { LineShell, type ShellProgram } from './shell.js';

export type { ShellProgram };

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

/** Runs one command with an argument array (never a shell) and a timeout. */
export interface Runner {
  run(cmd: string, args: string[], opts?: { input?: string; allowFail?: boolean }): Promise<RunResult>;
  /**
   * Runs a script as `ip -batch -` or `nft -f -` would: for nft, one transaction of simple
   * statements (no blocks); for ip, its lines, all of them even after one failed (exit code 1
   * then). A runner without it is given the script as a command's input.
   */
  batch?(program: ShellProgram, script: string, opts?: BatchOptions): Promise<RunResult>;
  /** The next batch of that program runs on a new long-lived process. */
  restartBatch?(program: ShellProgram): void;
}

export interface BatchOptions {
  allowFail?: boolean;
  /**
   * Batches of one lane run in order, one at a time; another lane of the same program runs
   * beside it (its own long-lived process): link deletions, slow in the kernel and made off the
   * reply path, do not hold up link creations queued after them.
   */
  lane?: 'delete';
}

/** `runner.batch` where it has one, else the script as the input of `ip -force -batch -` / `nft -f -`. */
export function runBatch(runner: Runner, program: ShellProgram, script: string, opts: BatchOptions = {}): Promise<RunResult> {
  if (runner.batch) return runner.batch(program, script, opts);
  return runner.run(program, program === 'ip' ? ['-force', '-batch', '-'] : ['-f', '-'], { input: script, allowFail: opts.allowFail });
}

/**
 * Told about every command run: its program name, how long it took, whether it failed
 * (a non-zero exit the caller allowed is not a failure) or hit the timeout, and whether it
 * started a process. For metrics.
 */
export type CommandObserver = (e: { command: string; seconds: number; outcome: 'ok' | 'failed' | 'timeout'; spawned: boolean }) => void;

export class ExecRunner implements Runner {
  /** Long-lived processes by program and lane. */
  private readonly shells = new Map<string, LineShell>();

  constructor(
    private readonly timeoutMs: number,
    private readonly observer?: CommandObserver,
    /** Long-lived `ip` and `nft` for batches (./shell.ts); false: a process per batch. */
    private readonly longLived = true,
  ) {}

  /** Scripts larger than this go to a process of their own (a huge line gains nothing from a running nft). */
  static readonly LONG_LIVED_MAX_BYTES = 256 * 1024;

  batch(program: ShellProgram, script: string, opts: BatchOptions = {}): Promise<RunResult> {
    if (!this.longLived || script.length > ExecRunner.LONG_LIVED_MAX_BYTES) {
      return this.run(program, program === 'ip' ? ['-force', '-batch', '-'] : ['-f', '-'], { input: script, allowFail: opts.allowFail });
    }
    const key = `${program}:${opts.lane ?? ''}`;
    let shell = this.shells.get(key);
    if (!shell) this.shells.set(key, (shell = new LineShell(program, this.timeoutMs, this.observer)));
    return shell.run(script, opts);
  }

  restartBatch(program: ShellProgram): void {
    for (const [key, s] of this.shells) if (key.startsWith(`${program}:`)) s.close();
  }

  /** Ends the long-lived processes (shutdown). */
  close(): void {
    for (const s of this.shells.values()) s.close();
  }

  async run(cmd: string, args: string[], opts: { input?: string; allowFail?: boolean } = {}): Promise<RunResult> {
    if (!this.observer) return this.exec(cmd, args, opts);
    const started = process.hrtime.bigint();
    let outcome: 'ok' | 'failed' | 'timeout' = 'failed';
    try {
      const r = await this.exec(cmd, args, opts);
      outcome = 'ok';
      return r;
    } catch (e) {
      if (e instanceof TsbridgeError && e.code === 'TIMEOUT') outcome = 'timeout';
      throw e;
    } finally {
      this.observer({ command: path.basename(cmd), seconds: Number(process.hrtime.bigint() - started) / 1e9, outcome, spawned: true });
    }
  }

  private async exec(cmd: string, args: string[], opts: { input?: string; allowFail?: boolean }): Promise<RunResult> {
    // Each command leads its own process group, and the deadline kills the whole group:
    // killing only the child would leave a grandchild holding the pipes open, and the
    // call would wait for it anyway.
    const sub = execa(cmd, args, {
      input: opts.input ?? '',
      detached: true,
      reject: false,
      stripFinalNewline: true,
      env: { LC_ALL: 'C' },
    });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        if (sub.pid !== undefined) process.kill(-sub.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }, this.timeoutMs);
    const r = await sub;
    clearTimeout(timer);
    const op = `${cmd} ${args.join(' ')}`.slice(0, 200);
    if (timedOut) throw new TsbridgeError('TIMEOUT', { op, ms: this.timeoutMs });
    if (r.failed && r.exitCode === undefined) {
      throw new TsbridgeError('KERNEL', { op, detail: r.shortMessage ?? 'could not run' });
    }
    const result = { stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? ''), exitCode: r.exitCode ?? -1 };
    if (result.exitCode !== 0 && !opts.allowFail) {
      throw new TsbridgeError('KERNEL', { op, detail: (result.stderr || result.stdout || `exit ${result.exitCode}`).trim() });
    }
    return result;
  }
}
