/**
 * Running commands from tests: argument arrays only (no shell), a default timeout, and errors
 * that carry the command line and its stderr.
 */
import { execa } from 'execa';

/** Default per-command timeout. */
export const DEFAULT_TIMEOUT_MS = 30_000;

export interface RunOptions {
  /** Kill the command after this long (default {@link DEFAULT_TIMEOUT_MS}). */
  timeoutMs?: number;
  /** Written to the command's stdin; stdin is closed (empty) otherwise. */
  input?: string;
  /** Extra environment variables (merged over process.env). */
  env?: Record<string, string>;
  cwd?: string;
}

export interface RunResult {
  /** The exit code; -1 when the command could not start or was killed by a signal/timeout. */
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** A command exited non-zero (or could not run). */
export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly args: readonly string[],
    readonly result: RunResult,
  ) {
    super(`${[command, ...args].join(' ')} failed (exit ${result.exitCode}): ${result.stderr.trim() || result.stdout.trim()}`);
    this.name = 'CommandError';
  }
  get exitCode(): number {
    return this.result.exitCode;
  }
  get stderr(): string {
    return this.result.stderr;
  }
}

/** Runs a command and returns its result whatever the exit code. Never throws. */
export async function shOk(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await execa(cmd, args, {
    reject: false,
    timeout: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    input: opts.input ?? '',
    env: opts.env,
    cwd: opts.cwd,
  });
  if (r.exitCode === undefined) {
    // did not start, killed by a signal, or timed out: say so in stderr
    return { exitCode: -1, stdout: r.stdout, stderr: `${r.stderr}\n${r.shortMessage}`.trim() };
  }
  return { exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr };
}

/** Runs a command and returns its stdout (final newline stripped); throws {@link CommandError} on failure. */
export async function sh(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<string> {
  const r = await shOk(cmd, args, opts);
  if (r.exitCode !== 0) throw new CommandError(cmd, args, r);
  return r.stdout;
}

/** Throws a clear error unless the tests run as root (they create namespaces, links, rules). */
export function requireRoot(what: string): void {
  if (process.getuid?.() !== 0) {
    throw new Error(`${what} needs root (it creates network namespaces and links); run the tests as root`);
  }
}
