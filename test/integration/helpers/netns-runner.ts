/**
 * tsbridge's real kernel layer, pointed at a throwaway network namespace instead of the host.
 *
 * NetnsRunner wraps the production ExecRunner and prefixes every command with
 * `ip netns exec NS`, so IpLinks, NftFirewall (and its iptables shim) act on the namespace's own
 * links, nftables and iptables rulesets. NetnsSysctl sets sysctls inside the namespace with the
 * `sysctl` binary (net.* sysctls are per namespace); it falls back to `tee /proc/sys/...` where
 * procps is not installed.
 */
import { existsSync } from 'node:fs';
import { ExecRunner, type BatchOptions, type RunResult, type Runner, type ShellProgram } from '../../../src/kernel/real/exec.js';
import { LineShell } from '../../../src/kernel/real/shell.js';
import type { Sysctl } from '../../../src/kernel/types.js';

export interface RecordedCommand {
  cmd: string;
  args: string[];
  input?: string;
  exitCode: number;
}

export class NetnsRunner implements Runner {
  /** Every command run so far (for failure messages and assertions). */
  readonly log: RecordedCommand[] = [];
  private readonly inner: Runner;

  constructor(readonly netns: string, private readonly timeoutMs = 10_000, inner?: Runner) {
    this.inner = inner ?? new ExecRunner(timeoutMs);
  }

  async run(cmd: string, args: string[], opts: { input?: string; allowFail?: boolean } = {}): Promise<RunResult> {
    const entry: RecordedCommand = { cmd, args: [...args], exitCode: -1 };
    if (opts.input !== undefined) entry.input = opts.input;
    this.log.push(entry);
    const r = await this.inner.run('ip', ['netns', 'exec', this.netns, cmd, ...args], opts);
    entry.exitCode = r.exitCode;
    return r;
  }

  private readonly shells = new Map<string, LineShell>();

  /** Batches through long-lived `ip` / `nft` inside the namespace, as the plugin runs them on the host. */
  async batch(program: ShellProgram, script: string, opts: BatchOptions = {}): Promise<RunResult> {
    const entry: RecordedCommand = { cmd: program, args: ['(long-lived batch)'], input: script, exitCode: -1 };
    this.log.push(entry);
    const key = `${program}:${opts.lane ?? ''}`;
    let shell = this.shells.get(key);
    if (!shell) this.shells.set(key, (shell = new LineShell(program, this.timeoutMs, undefined, ['ip', 'netns', 'exec', this.netns])));
    try {
      const r = await shell.run(script, opts);
      entry.exitCode = r.exitCode;
      return r;
    } catch (e) {
      entry.exitCode = 1;
      throw e;
    }
  }

  restartBatch(program: ShellProgram): void {
    for (const [key, s] of this.shells) if (key.startsWith(`${program}:`)) s.close();
  }

  /** Ends the long-lived processes (before the namespace goes). */
  close(): void {
    for (const s of this.shells.values()) s.close();
  }

  /** The commands run so far, one per line, for debugging a failed test. */
  transcript(): string {
    return this.log.map((c) => `[${c.exitCode}] ${c.cmd} ${c.args.join(' ')}`).join('\n');
  }
}

const SYSCTL_BIN = ['/usr/sbin/sysctl', '/sbin/sysctl', '/usr/bin/sysctl'].find((p) => existsSync(p));

/** Sysctls inside a namespace: reads first and writes only when the value differs (like ProcSysctl). */
export class NetnsSysctl implements Sysctl {
  /** Every write made, in order, as `key=value` (dotted keys). */
  readonly writes: string[] = [];

  constructor(private readonly runner: Runner) {}

  async get(key: string): Promise<string> {
    const dotted = key.replace(/\//g, '.');
    if (SYSCTL_BIN) return (await this.runner.run(SYSCTL_BIN, ['-n', dotted])).stdout.trim();
    return (await this.runner.run('cat', [procPath(key)])).stdout.trim();
  }

  async ensure(key: string, value: string): Promise<void> {
    const dotted = key.replace(/\//g, '.');
    if ((await this.get(key)) === value) return;
    if (SYSCTL_BIN) await this.runner.run(SYSCTL_BIN, ['-q', '-w', `${dotted}=${value}`]);
    else await this.runner.run('tee', [procPath(key)], { input: value });
    this.writes.push(`${dotted}=${value}`);
  }
}

function procPath(key: string): string {
  return `/proc/sys/${key.includes('/') ? key : key.replace(/\./g, '/')}`;
}
