/**
 * Long-lived `ip -force -batch -` and `nft -i`: a kernel operation becomes a few lines written to
 * a process that is already running, instead of a process started for it (a process start costs
 * more than the work: 10–30 ms on a loaded 2-core machine, against well under 1 ms for a veth or
 * a set element through a running one).
 *
 * Both programs read commands line by line and report errors on stderr, which is unbuffered;
 * their stdout is buffered when it is a pipe, so it cannot tell when a command is done (and
 * tsbridge reads nothing from it). So after each operation a marker line is written that the
 * program is sure to refuse — an unknown object for `ip`, a syntax error for `nft` — and the
 * operation is done when the refusal of that marker appears on stderr; everything on stderr
 * before it is the operation's own. No `stdbuf`, no pseudo-terminal.
 *
 *   ip   `-force` keeps going after a failed line (without it the first error ends the
 *        process); each failed line says `Command failed -:LINE`, so the lines of the operation
 *        that failed are known. The operation fails if any of its lines did.
 *   nft  each line is one transaction: an operation's statements are joined into one line
 *        (`a; b; c`), all applied or none. An error is reported as `Error: …`.
 *
 * One operation at a time (they queue); each has the deadline of a command. A deadline missed
 * kills the process's whole group, as for a command, and the next operation starts a new one;
 * so does a process that exited. The process is started at the first operation, not before.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { TsbridgeError } from '../../errors.js';
import type { CommandObserver, RunResult } from './exec.js';

export type ShellProgram = 'ip' | 'nft';

interface Dialect {
  args: string[];
  /** The operation's script as the lines to write (one line for nft). */
  lines(script: string): string[];
  marker(token: string): string;
  /**
   * Looks for the end of the marker's refusal in `err`. Returns the operation's own stderr and
   * whether it failed, or null when the marker's refusal is not complete yet.
   */
  end(err: string, token: string, markerLine: number, firstLine: number): { stderr: string; failed: boolean } | null;
  /** Environment the process gets beside tsbridge's own (LC_ALL=C). */
  env: Record<string, string>;
  /** Operations one process serves before the next one starts a new process (0: no limit). */
  maxOps: number;
}

/**
 * `nft -i` is libedit's line editor: it loads `$HOME/.nft.history` when it starts, adds every
 * line to an in-memory history, and writes the whole history back when it exits. With the
 * operator's HOME that file grew with every operation tsbridge ever made (27 MB, 57,766 lines
 * after a day of this project's tests, written into root's home), and loading and growing it was
 * most of a transaction's cost: measured in a throwaway namespace, 1,600 one-line transactions
 * took 3.2 s with that file and 0.57 s without (0.36 ms each), and a start 1.1 s against 49 ms.
 * A HOME that is not a directory makes both the load and the save fail quietly, so no file is
 * read or written; a new process every few thousand operations bounds the in-memory history.
 */
const NFT_HOME = '/dev/null';
export const NFT_MAX_OPS = 5000;

const DIALECTS: Record<ShellProgram, Dialect> = {
  ip: {
    args: ['-force', '-batch', '-'],
    lines: (script) => script.split('\n').filter((l) => l.trim() !== ''),
    marker: (token) => token,
    end(err, _token, markerLine, firstLine) {
      const done = `Command failed -:${markerLine}\n`;
      const at = err.indexOf(done);
      if (at < 0) return null;
      // The marker's own refusal is the line before `done`: drop it.
      const own = err.slice(0, at).replace(/[^\n]*\n$/, '');
      const failed = [...own.matchAll(/Command failed -:(\d+)/g)].some((m) => Number(m[1]) >= firstLine && Number(m[1]) < markerLine);
      return { stderr: own, failed };
    },
    env: {},
    maxOps: 0,
  },
  nft: {
    args: ['-i'],
    lines: (script) => {
      const l = script.split('\n').map((x) => x.trim()).filter(Boolean);
      return l.length ? [l.join('; ')] : [];
    },
    marker: (token) => token,
    end(err, token) {
      // Error: syntax error, …\n<token>\n<spaces>^\n
      const at = err.indexOf(`\n${token}\n`);
      if (at < 0) return null;
      const caret = err.indexOf('\n', at + token.length + 2);
      if (caret < 0) return null;
      const errorLine = err.lastIndexOf('\n', at - 1); // start of the marker's "Error:" line
      const own = errorLine < 0 ? '' : err.slice(0, errorLine + 1);
      return { stderr: own, failed: /(^|\n)Error:/.test(own) };
    },
    env: { HOME: NFT_HOME },
    maxOps: NFT_MAX_OPS,
  },
};

interface Pending {
  lines: string[];
  resolve: (r: RunResult) => void;
  reject: (e: unknown) => void;
  allowFail: boolean;
}

export class LineShell {
  private readonly dialect: Dialect;
  private child: ChildProcessWithoutNullStreams | null = null;
  /** Operations the current process has served. */
  private served = 0;
  private linesWritten = 0;
  private tokens = 0;
  private queue: Pending[] = [];
  private busy = false;
  private stderr = '';
  private onStderr: (() => void) | null = null;
  private onExit: ((why: string) => void) | null = null;
  /** The process the operation in flight talks to (a killed one's late output is ignored). */
  private talking: ChildProcessWithoutNullStreams | null = null;

  constructor(
    readonly program: ShellProgram,
    private readonly timeoutMs: number,
    private readonly observer?: CommandObserver,
    /** A command the program runs under, e.g. `ip netns exec NS` (tests). */
    private readonly prefix: string[] = [],
    /** Overrides the dialect's operations per process (tests). */
    maxOps?: number,
  ) {
    this.dialect = maxOps === undefined ? DIALECTS[program] : { ...DIALECTS[program], maxOps };
  }

  /** Runs one operation (the lines of an `ip -batch` / `nft -f` script). */
  run(script: string, opts: { allowFail?: boolean } = {}): Promise<RunResult> {
    const lines = this.dialect.lines(script);
    if (lines.length === 0) return Promise.resolve({ stdout: '', stderr: '', exitCode: 0 });
    return new Promise((resolve, reject) => {
      this.queue.push({ lines, resolve, reject, allowFail: opts.allowFail ?? false });
      if (!this.busy) void this.next();
    });
  }

  /** Ends the process (shutdown); a later operation would start a new one. */
  close(): void {
    const c = this.child;
    this.child = null;
    if (c) c.stdin.end();
  }

  private start(): ChildProcessWithoutNullStreams {
    // Its own process group, so a missed deadline kills whatever it started too.
    const argv = [...this.prefix, this.program, ...this.dialect.args];
    const c = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...this.dialect.env, LC_ALL: 'C' } });
    this.child = c;
    this.served = 0;
    this.linesWritten = 0;
    this.stderr = '';
    c.stdout.resume(); // nothing is read from it, but it must not fill up
    c.stderr.setEncoding('utf8');
    c.stderr.on('data', (d: string) => {
      if (this.talking !== c) return;
      this.stderr += d;
      this.onStderr?.();
    });
    c.stdin.on('error', () => undefined); // EPIPE after an exit: reported through 'exit'
    const gone = (why: string) => {
      if (this.child === c) this.child = null;
      if (this.talking === c) this.onExit?.(why);
    };
    c.on('error', (e) => gone(`could not run: ${e.message}`));
    c.on('exit', (code, signal) => gone(`exited (${signal ?? `code ${code}`})`));
    // Never what keeps tsbridge's process alive.
    c.unref();
    for (const s of [c.stdin, c.stdout, c.stderr] as unknown as { unref?: () => void }[]) s.unref?.();
    return c;
  }

  private async next(): Promise<void> {
    const op = this.queue.shift();
    if (!op) {
      this.busy = false;
      return;
    }
    this.busy = true;
    const started = process.hrtime.bigint();
    let spawned = false;
    let outcome: 'ok' | 'failed' | 'timeout' = 'failed';
    try {
      let child = this.child;
      if (child && this.dialect.maxOps > 0 && this.served >= this.dialect.maxOps) {
        this.close(); // it exits at the end of its input; the next one starts afresh
        child = null;
      }
      if (!child) {
        child = this.start();
        spawned = true;
      }
      this.served++;
      const r = await this.exchange(child, op.lines);
      if (r.exitCode !== 0 && !op.allowFail) {
        throw new TsbridgeError('KERNEL', { op: `${this.program} ${op.lines.join('; ')}`.slice(0, 200), detail: r.stderr.trim() || 'failed' });
      }
      outcome = 'ok';
      op.resolve(r);
    } catch (e) {
      if (e instanceof TsbridgeError && e.code === 'TIMEOUT') outcome = 'timeout';
      op.reject(e);
    } finally {
      this.observer?.({ command: this.program, seconds: Number(process.hrtime.bigint() - started) / 1e9, outcome, spawned });
      void this.next();
    }
  }

  /** Writes the lines and the marker; resolves when the marker's refusal has come back. */
  private exchange(child: ChildProcessWithoutNullStreams, lines: string[]): Promise<RunResult> {
    const token = `tsbmark${++this.tokens}x${process.pid}`;
    const firstLine = this.linesWritten + 1;
    this.linesWritten += lines.length + 1;
    const markerLine = this.linesWritten;
    return new Promise<RunResult>((resolve, reject) => {
      const finish = (fn: () => void) => {
        clearTimeout(timer);
        this.onStderr = null;
        this.onExit = null;
        this.talking = null;
        fn();
      };
      const check = () => {
        const end = this.dialect.end(this.stderr, token, markerLine, firstLine);
        if (!end) return;
        this.stderr = '';
        finish(() => resolve({ stdout: '', stderr: end.stderr, exitCode: end.failed ? 1 : 0 }));
      };
      const op = `${this.program} ${lines.join('; ')}`.slice(0, 200);
      const timer = setTimeout(() => {
        this.kill(child);
        finish(() => reject(new TsbridgeError('TIMEOUT', { op, ms: this.timeoutMs })));
      }, this.timeoutMs);
      this.talking = child;
      this.stderr = '';
      this.onStderr = check;
      this.onExit = (why) => finish(() => reject(new TsbridgeError('KERNEL', { op, detail: `${this.stderr.trim()} (${this.program} ${why})`.trim() })));
      child.stdin.write(`${lines.join('\n')}\n${this.dialect.marker(token)}\n`);
      check();
    });
  }

  private kill(child: ChildProcessWithoutNullStreams): void {
    if (this.child === child) this.child = null;
    try {
      if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}
