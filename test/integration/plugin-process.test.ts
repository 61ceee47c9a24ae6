/**
 * The real plugin process (`node dist/src/main.js`), each in a throwaway network namespace with
 * its socket and state in a temporary directory — no Docker needed:
 *  - two plugins on one state directory: the second refuses to start, naming the first; the
 *    lock goes with the first however it ends (SIGKILL included);
 *  - a TSBRIDGE_SOCKET that is not an absolute path is refused before anything listens;
 *  - metrics on TSBRIDGE_METRICS_ADDR, scraped over HTTP and parsed; Plugin.Health on the socket;
 *    the built `tsbridge health` and `tsbridge status` against it.
 * Needs root (namespaces) and the build.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { Cleanup } from '../lib/cleanup.js';
import { parseExposition, socketRequest } from '../lib/http.js';
import { createNetns, stopProcess, type Netns, type NetnsProcess } from '../lib/netns.js';
import { REPO_ROOT, pluginCall } from '../lib/plugin.js';
import { requireRoot } from '../lib/run.js';

const MAIN = path.join(REPO_ROOT, 'dist', 'src', 'main.js');
const CLI = path.join(REPO_ROOT, 'dist', 'src', 'cli.js');
const cleanup = new Cleanup();
let dir: string;
let ns: Netns;

beforeAll(async () => {
  requireRoot('test/integration/plugin-process.test.ts');
  if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: npm run build first`);
  ns = await createNetns('proc');
});
afterAll(async () => ns?.delete());
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'tsbridge-proc-'));
  cleanup.add(() => rmSync(dir, { recursive: true, force: true }));
});
afterEach(() => cleanup.run());

interface Plugin {
  proc: NetnsProcess;
  socket: string;
  lines: string[];
  stderr: () => string;
  exited: Promise<number | null>;
}

/** Starts main.js inside the namespace; resolves once it answers Plugin.Activate (or has exited). */
async function startPlugin(name: string, env: Record<string, string>): Promise<Plugin> {
  const socket = env.TSBRIDGE_SOCKET ?? path.join(dir, `${name}.sock`);
  const vars = { TSBRIDGE_SOCKET: socket, TSBRIDGE_SYSCTL_ROOT: path.join(dir, 'sys'), TSBRIDGE_LOG_LEVEL: 'debug', ...env };
  const proc = ns.spawn('env', [...Object.entries(vars).map(([k, v]) => `${k}=${v}`), process.execPath, MAIN]);
  const lines: string[] = [];
  let err = '';
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => lines.push(...d.split('\n').filter(Boolean)));
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = proc.then((r) => (r.exitCode === undefined ? null : r.exitCode));
  const p: Plugin = { proc, socket, lines, stderr: () => err, exited };
  cleanup.add(() => stopProcess(proc));
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) return p;
    if (await pluginCall(socket, 'Plugin.Activate', undefined, 1000).then((r) => r.status === 200, () => false)) return p;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`plugin ${name} did not start: ${err}\n${lines.join('\n')}`);
}

function logLine(p: Plugin, message: string): Record<string, any> | undefined {
  return p.lines.map((l) => JSON.parse(l) as Record<string, any>).find((l) => l.message === message);
}

test('a second plugin on the same state directory refuses to start, naming the first; the lock goes with the first, SIGKILL included', async () => {
  const state = path.join(dir, 'state');
  const first = await startPlugin('tsbt-lock-a', { TSBRIDGE_STATE_DIR: state });
  expect(first.proc.exitCode).toBeNull();
  const second = await startPlugin('tsbt-lock-b', { TSBRIDGE_STATE_DIR: state });
  expect(await second.exited).toBe(1);
  expect(second.stderr()).toContain(
    `tsbridge: cannot start: state directory ${state} is in use by another tsbridge: pid ${first.proc.pid}, instance "tsbt-lock-a", socket ${first.socket}`,
  );
  expect(existsSync(second.socket)).toBe(false); // it never listened

  first.proc.kill('SIGKILL');
  await first.exited;
  const third = await startPlugin('tsbt-lock-c', { TSBRIDGE_STATE_DIR: state });
  expect(third.proc.exitCode).toBeNull();
  expect((await pluginCall(third.socket, 'Plugin.Activate')).status).toBe(200);
  await stopProcess(third.proc);
  expect(await third.exited).toBe(0);
  expect(existsSync(path.join(state, '.tsbridge.lock'))).toBe(false);
});

// Docker's plugin client keeps connections open with no idle limit, and re-sends a call whose
// connection failed with the body it already consumed: empty. A server closing idle connections
// (Node's default: after 5 s) races with it — seen as a RevokeExternalConnectivity with an empty
// body during 400 parallel removals on Docker 20.10.
test('a kept-alive connection is not closed under an idle client', async () => {
  const p = await startPlugin('tsbt-keepalive', { TSBRIDGE_STATE_DIR: path.join(dir, 'state-ka') });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const call = () =>
    new Promise<{ status: number; reused: boolean }>((resolve, reject) => {
      const req = http.request({ socketPath: p.socket, path: '/Plugin.Activate', method: 'POST', agent }, (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, reused: req.reusedSocket }));
      });
      req.on('error', reject);
      req.end();
    });
  try {
    expect(await call()).toEqual({ status: 200, reused: false });
    await new Promise((r) => setTimeout(r, 6500)); // past Node's default keep-alive timeout
    expect(await call()).toEqual({ status: 200, reused: true });
  } finally {
    agent.destroy();
    await stopProcess(p.proc);
  }
}, 30_000);

test('TSBRIDGE_SOCKET that is a number (a TCP port to Express) is refused at start, exit 2', async () => {
  const p = await startPlugin('x', { TSBRIDGE_SOCKET: '9000', TSBRIDGE_STATE_DIR: path.join(dir, 'state') });
  expect(await p.exited).toBe(2);
  expect(p.stderr()).toBe('tsbridge: TSBRIDGE_SOCKET must be an absolute path to a Unix socket, such as /run/docker/plugins/tsbridge.sock (got "9000")\n');
});

test('metrics on TSBRIDGE_METRICS_ADDR, Plugin.Health on the socket, and the built tsbridge health / status', async () => {
  const state = path.join(dir, 'state');
  const p = await startPlugin('tsbt-metrics', { TSBRIDGE_STATE_DIR: state, TSBRIDGE_METRICS_ADDR: '127.0.0.1:0', TSBRIDGE_GC_INTERVAL: '1' });
  const address = logLine(p, 'metrics listening')?.address as string;
  expect(address).toMatch(/^127\.0\.0\.1:\d+$/);

  // Calls to count: a pool and an address, a refused pool, an unknown call.
  const pool = await pluginCall(p.socket, 'IpamDriver.RequestPool', { AddressSpace: 'local', Pool: '10.230.0.0/24', SubPool: '', Options: {}, V6: false });
  expect(pool.status).toBe(200);
  expect((await pluginCall(p.socket, 'IpamDriver.RequestAddress', { PoolID: pool.body.PoolID, Address: '', Options: null })).status).toBe(200);
  expect((await pluginCall(p.socket, 'IpamDriver.RequestPool', 'null')).status).toBe(500);
  await new Promise((r) => setTimeout(r, 1500)); // a sweep or two

  // Scraped from inside the namespace, where 127.0.0.1 is the plugin's.
  const scrape = `require('http').get('http://${address}/metrics', (r) => { let t = ''; r.on('data', (d) => t += d); r.on('end', () => { process.stdout.write(r.statusCode + ' ' + r.headers['content-type'] + '\\n' + t); }); }).on('error', (e) => { console.error(e.message); process.exit(1); });`;
  const text = await ns.exec(process.execPath, ['-e', scrape]);
  const [statusLine, ...body] = text.split('\n');
  expect(statusLine).toMatch(/^200 text\/plain; version=0\.0\.4/);
  const m = parseExposition(body.join('\n'));
  expect(m.get('tsbridge_info{instance="tsbt-metrics",version="0.1.0"}')).toBe(1);
  expect(m.get('tsbridge_calls_total{method="IpamDriver.RequestPool",outcome="ok"}')).toBe(1);
  expect(m.get('tsbridge_calls_total{method="IpamDriver.RequestPool",outcome="BAD_REQUEST"}')).toBe(1);
  expect(m.get('tsbridge_calls_total{method="IpamDriver.RequestAddress",outcome="ok"}')).toBe(1);
  expect(m.get('tsbridge_calls_total{method="Plugin.Activate",outcome="ok"}')).toBeGreaterThanOrEqual(1);
  expect(m.get('tsbridge_pools')).toBe(1);
  expect(m.get('tsbridge_networks')).toBe(0);
  expect(m.get('tsbridge_reconciles_total{outcome="ok"}')).toBe(1);
  expect(m.get('tsbridge_sweeps_total{outcome="ok"}')).toBeGreaterThanOrEqual(1);
  expect(m.get('tsbridge_sweep_last_success')).toBe(1);
  // The start-up ran real commands: `ip` to list links at least.
  expect(m.get('tsbridge_kernel_command_duration_seconds_count{command="ip"}')).toBeGreaterThanOrEqual(1);
  expect(m.get('process_resident_memory_bytes')).toBeGreaterThan(0);
  const notFound = await ns.exec(process.execPath, ['-e', `require('http').get('http://${address}/', (r) => console.log(r.statusCode))`]);
  expect(notFound).toBe('404');

  // Health on the socket, as the CLI and a watchdog ask it.
  const h = await socketRequest(p.socket, { method: 'GET', path: '/Plugin.Health' });
  expect(h.status).toBe(200);
  expect(h.body).toMatchObject({ serving: true, healthy: true, instance: 'tsbt-metrics', stateDir: state, pid: p.proc.pid, lastReconcile: { ok: true }, lastSweep: { ok: true } });
  const health = await execa(process.execPath, [CLI, 'health', '--socket', p.socket], { reject: false });
  expect(health.exitCode).toBe(0);
  expect(health.stdout).toMatch(/^tsbridge \(instance tsbt-metrics\): serving, healthy/);
  const status = await execa(process.execPath, [CLI, 'status', '--socket', p.socket, '--state-dir', state, '--no-docker'], { reject: false });
  expect(status.exitCode).toBe(0);
  expect(status.stdout).toContain('tsb-v4-10.230.0.0/24   10.230.0.0/24');
  expect(status.stdout).toContain('plugin      serving, healthy');

  await stopProcess(p.proc);
  expect(await p.exited).toBe(0);
  const down = await execa(process.execPath, [CLI, 'health', '--socket', p.socket], { reject: false });
  expect(down.exitCode).toBe(1);
  expect(down.stderr).toContain('not serving: no socket at');
});
