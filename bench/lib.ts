/**
 * What the bench scripts share: statistics, the machine line printed above every figure, a
 * tsbridge process started for the bench (its logged call times, its metrics, its RSS), and
 * calls on its socket the way Docker makes them.
 */
import { execa, type ResultPromise } from 'execa';
import http from 'node:http';
import { existsSync, readFileSync } from 'node:fs';
import { cpus, loadavg, release } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The repository: the nearest folder above this file with a package.json — this file runs as
 * dist/bench/lib.js (the bench) and as bench/lib.ts (the tests, through ts-jest), at different depths.
 */
export const ROOT = ((): string => {
  for (let d = path.dirname(fileURLToPath(import.meta.url)); ; d = path.dirname(d)) {
    if (existsSync(path.join(d, 'package.json'))) return d;
    if (path.dirname(d) === d) throw new Error('bench/lib: no package.json above this file');
  }
})();

/** The value after a flag, or the default. */
export function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(name);
  if (i < 0) return dflt;
  const v = Number(process.argv[i + 1]);
  if (!Number.isFinite(v) || v < 0) throw new Error(`${name} needs a number, got "${process.argv[i + 1] ?? ''}"`);
  return v;
}

export function flag(name: string): boolean {
  return process.argv.includes(name);
}

export function strArg(name: string, dflt: string): string {
  const i = process.argv.indexOf(name);
  return i < 0 ? dflt : (process.argv[i + 1] ?? dflt);
}

export function quantile(xs: number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo]! + (s[hi]! - s[lo]!) * (pos - lo);
}

export const median = (xs: number[]) => quantile(xs, 0.5);
export const p90 = (xs: number[]) => quantile(xs, 0.9);
export const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

export function fmt(n: number, digits = 1): string {
  return Number.isFinite(n) ? n.toFixed(digits) : '-';
}

export function ratio(a: number, b: number): string {
  return Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}x` : '-';
}

/** Cores, kernel, CPU model, load and date: printed above every set of figures. */
export function machine(): string {
  const c = cpus();
  const model = c[0]?.model.trim() ?? 'unknown CPU';
  const load = loadavg().map((x) => x.toFixed(2)).join(' ');
  return `${c.length} cores (${model}), kernel ${release()}, node ${process.version}, load ${load}, ${new Date().toISOString()}`;
}

export function loadNow(): number {
  return loadavg()[0]!;
}

/** One call the plugin answered, as it logged it. */
export interface LoggedCall {
  call: string;
  ms: number;
  /** The plugin process's CPU time during the call (its log's `cpuMs`). */
  cpuMs: number;
  ok: boolean;
  /** When its log line arrived (ms since the epoch): about when the call ended. */
  at: number;
}

export interface PluginOptions {
  socket: string;
  stateDir: string;
  /** Extra environment. */
  env?: Record<string, string>;
  /** Print the plugin's warnings and errors (default true). */
  echoProblems?: boolean;
  /** Options for node itself (e.g. --cpu-prof when profiling by hand). */
  nodeArgs?: string[];
}

/**
 * A tsbridge plugin process started by a bench: its logged calls (in order), its metrics
 * listener (when TSBRIDGE_METRICS_ADDR is set, the address it logged), its RSS.
 */
/**
 * node's options in every launcher of the plugin (the systemd unit, config.json, the Dockerfile,
 * scripts/start.sh; test/unit/launchers.test.ts keeps them in step): `npm run bench` starts the
 * plugin as users do.
 */
export const LAUNCHER_NODE_FLAGS = ['--max-semi-space-size=1', '--heap-growing-percent=25'];

export class BenchPlugin {
  readonly calls: LoggedCall[] = [];
  metricsAddress: string | null = null;
  private proc: ResultPromise | null = null;

  constructor(readonly opts: PluginOptions) {}

  get pid(): number {
    return this.proc?.pid ?? 0;
  }

  async start(): Promise<void> {
    const proc = execa(process.execPath, [...(this.opts.nodeArgs ?? []), path.join(ROOT, 'dist', 'src', 'main.js')], {
      env: { TSBRIDGE_SOCKET: this.opts.socket, TSBRIDGE_STATE_DIR: this.opts.stateDir, TSBRIDGE_LOG_LEVEL: 'info', ...this.opts.env },
      stdin: 'ignore',
      stdout: 'pipe',
      stderr: 'inherit',
      buffer: false,
      reject: false,
    });
    this.proc = proc;
    let partial = '';
    proc.stdout!.on('data', (d: Buffer) => {
      const lines = (partial + d.toString()).split('\n');
      partial = lines.pop()!;
      for (const l of lines) this.line(l);
    });
    for (let i = 0; i < 300; i++) {
      if (proc.exitCode !== null) throw new Error(`the plugin exited at start (code ${proc.exitCode})`);
      if (existsSync(this.opts.socket) && (await this.call('Plugin.Activate').then((r) => r.status === 200, () => false))) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error('the plugin did not answer within 30 s');
  }

  private line(l: string): void {
    let o: { call?: string; ms?: number; cpuMs?: number; level?: string; message?: string; address?: string };
    try {
      o = JSON.parse(l) as typeof o;
    } catch {
      if (l.trim()) console.error(`[plugin] ${l}`);
      return;
    }
    if (o.call && typeof o.ms === 'number') this.calls.push({ call: o.call, ms: o.ms, cpuMs: o.cpuMs ?? NaN, ok: o.level !== 'error', at: Date.now() });
    if (o.message === 'metrics listening' && o.address) this.metricsAddress = o.address;
    if ((o.level === 'error' || o.level === 'warn') && this.opts.echoProblems !== false) console.error(`[plugin] ${l}`);
  }

  /** Logged milliseconds of one call since log entry `from` (successful calls only). */
  ms(call: string, from = 0): number[] {
    return this.calls.slice(from).filter((c) => c.ok && c.call === call).map((c) => c.ms);
  }

  /** The plugin's CPU milliseconds during each of those calls (their log's `cpuMs`). */
  callCpuMs(call: string, from = 0): number[] {
    return this.calls.slice(from).filter((c) => c.ok && c.call === call).map((c) => c.cpuMs);
  }

  /** VmRSS of the node process, in MiB. */
  rssMiB(): number {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${this.pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  }

  /**
   * CPU time the node process has used so far (user + system), in ms — unlike wall time, hardly
   * moved by what else runs on the machine. (Its `ip`/`nft` children are not counted.)
   */
  cpuMs(): number {
    const stat = readFileSync(`/proc/${this.pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields 14 and 15 (utime, stime) in clock ticks; 100 per second on Linux
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100;
  }

  /** The metrics as name{labels} → value (needs TSBRIDGE_METRICS_ADDR). */
  async metrics(): Promise<Map<string, number>> {
    if (!this.metricsAddress) throw new Error('the plugin serves no metrics (TSBRIDGE_METRICS_ADDR)');
    const [host, port] = [this.metricsAddress.replace(/:\d+$/, '').replace(/^\[|\]$/g, ''), Number(/:(\d+)$/.exec(this.metricsAddress)![1])];
    const text = await new Promise<string>((resolve, reject) => {
      http.get({ host, port, path: '/metrics' }, (res) => {
        let t = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (t += d));
        res.on('end', () => resolve(t));
        res.on('error', reject);
      }).on('error', reject);
    });
    const out = new Map<string, number>();
    for (const l of text.split('\n')) {
      if (!l || l.startsWith('#')) continue;
      const at = l.lastIndexOf(' ');
      out.set(l.slice(0, at), Number(l.slice(at + 1)));
    }
    return out;
  }

  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

  /** A call on the socket as Docker makes it (keep-alive, no Content-Type). */
  call<T = Record<string, unknown>>(method: string, body?: unknown): Promise<{ status: number; body: T }> {
    const payload = body === undefined ? '' : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = http.request(
        {
          socketPath: this.opts.socket,
          agent: this.agent,
          method: 'POST',
          path: `/${method}`,
          headers: { Accept: 'application/vnd.docker.plugins.v1.2+json', 'Content-Length': Buffer.byteLength(payload) },
        },
        (res) => {
          let raw = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (raw += d));
          res.on('end', () => {
            try {
              resolve({ status: res.statusCode ?? 0, body: JSON.parse(raw) as T });
            } catch {
              resolve({ status: res.statusCode ?? 0, body: {} as T });
            }
          });
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
  }

  /** A call that must succeed. */
  async ok<T = Record<string, unknown>>(method: string, body?: unknown): Promise<T> {
    const r = await this.call<T>(method, body);
    if (r.status !== 200) throw new Error(`${method} failed: ${JSON.stringify(r.body)}`);
    return r.body;
  }

  async stop(): Promise<void> {
    this.agent.destroy();
    if (!this.proc) return;
    this.proc.kill('SIGTERM');
    await this.proc;
    this.proc = null;
  }
}

/** Sum of counters whose name (with labels) starts with `prefix`, between two scrapes. */
export function delta(before: Map<string, number>, after: Map<string, number>, prefix: string): number {
  let n = 0;
  for (const [k, v] of after) if (k.startsWith(prefix)) n += v - (before.get(k) ?? 0);
  return n;
}

/** Per-label deltas of a counter: label value → increase. */
export function deltaBy(before: Map<string, number>, after: Map<string, number>, name: string, label: string): Record<string, number> {
  const out: Record<string, number> = {};
  const re = new RegExp(`^${name}\\{.*${label}="([^"]*)"`);
  for (const [k, v] of after) {
    const m = re.exec(k);
    if (!m) continue;
    const d = v - (before.get(k) ?? 0);
    if (d) out[m[1]!] = (out[m[1]!] ?? 0) + d;
  }
  return out;
}

/** Runs a command, throwing with its stderr on failure. */
export async function run(cmd: string, args: string[], opts: { input?: string; env?: Record<string, string> } = {}): Promise<string> {
  const r = await execa(cmd, args, { input: opts.input ?? '', reject: false, env: opts.env });
  if (r.exitCode !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${String(r.stderr || r.stdout).trim()}`);
  return String(r.stdout).trim();
}

/** The plugin calls of one container's life, in the order Docker makes them. */
/** `docker ARGS`: its stdout, trimmed; throws on failure. */
export async function docker(args: string[]): Promise<string> {
  return (await execa('docker', args)).stdout.trim();
}

/** Milliseconds `docker ARGS` took. */
export async function timeRun(args: string[]): Promise<number> {
  const t = process.hrtime.bigint();
  await execa('docker', args);
  return Number(process.hrtime.bigint() - t) / 1e6;
}

export const LIFECYCLE = [
  'IpamDriver.RequestAddress',
  'NetworkDriver.CreateEndpoint',
  'NetworkDriver.Join',
  'NetworkDriver.ProgramExternalConnectivity',
  'NetworkDriver.RevokeExternalConnectivity',
  'NetworkDriver.Leave',
  'NetworkDriver.DeleteEndpoint',
  'IpamDriver.ReleaseAddress',
] as const;

/**
 * `docker network rm NAME`, through Docker 20.10's drifting endpoint count. After many
 * containers at once Docker 20.10 may answer "has active endpoints" for a while, and sometimes
 * for good with no container left on the network (its count drifted, moby issue 42119: seen here
 * after 50 parallel runs and after this bench's 400 containers). Tried again for 20 s; then, when
 * the network has no container, dockerd is restarted to recount — only one scripts/docker-up.sh
 * started (it refuses any other) — and tried once more, saying so. A network that does not exist
 * counts as removed. Shared by the bench and the e2e tests (test/lib/docker.ts).
 */
export async function removeDockerNetwork(name: string): Promise<{ ok: boolean; stderr: string }> {
  const rm = () => execa('docker', ['network', 'rm', name], { reject: false, timeout: 60_000 });
  let r = await rm();
  for (const t0 = Date.now(); r.exitCode !== 0 && /has active endpoints/.test(r.stderr) && Date.now() - t0 < 20_000; ) {
    await new Promise((done) => setTimeout(done, 1000));
    r = await rm();
  }
  if (r.exitCode !== 0 && /has active endpoints/.test(r.stderr)) {
    const on = await execa('docker', ['network', 'inspect', '-f', '{{len .Containers}}', name], { reject: false, timeout: 60_000 });
    if (on.exitCode === 0 && on.stdout.trim() === '0') {
      console.warn(`docker network rm ${name}: "has active endpoints" with no container on it (Docker's endpoint count drifted): restarting dockerd, which recounts`);
      const up = await execa('bash', [path.join(ROOT, 'scripts', 'docker-up.sh'), '--restart-dockerd'], { reject: false, all: true, timeout: 120_000 });
      if (up.exitCode !== 0) console.warn(`  dockerd not restarted: ${String(up.all).trim().split('\n').pop()}`);
      r = await rm();
    }
  }
  const ok = r.exitCode === 0 || /no such network|not found/i.test(r.stderr);
  return { ok, stderr: r.stderr.trim() };
}

/** The bench's networks at the end: a failure is said, not thrown (the figures are printed). */
export async function removeNetwork(name: string): Promise<void> {
  const r = await removeDockerNetwork(name);
  if (!r.ok) console.log(`could not remove network ${name}: ${r.stderr}`);
}
