/**
 * Composition root: configuration, logger, the real kernel, state, reconcile,
 * then listen on the Unix socket. Runs in the foreground.
 */
import { promises as fs, readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import type { Server } from 'node:http';
import { loadConfig, type Config, type MetricsAddr } from './config.js';
import { createLogger, type Logger } from './logging.js';
import { FileStore } from './state/store.js';
import { Db } from './state/db.js';
import { ExecRunner } from './kernel/real/exec.js';
import { Health } from './metrics/health.js';
import { Metrics } from './metrics/metrics.js';
import { lockStateDir } from './server/lock.js';
import { IpLinks } from './kernel/real/links.js';
import { NftFirewall } from './kernel/real/firewall.js';
import { NftMonitor } from './kernel/real/nft-monitor.js';
import { IpInspect } from './kernel/real/inspect.js';
import { Doctor } from './driver/doctor.js';
import { detectIptables } from './kernel/real/iptables-variant.js';
import { ProcSysctl } from './kernel/real/sysctl.js';
import { ProcHost } from './kernel/real/host.js';
import type { Kernel } from './kernel/types.js';
import { ownerFor } from './kernel/owner.js';
import { DriverService, kindsRuntime } from './driver/service.js';
import { KINDS } from './kinds/registry.js';
import { Reconciler } from './driver/reconcile.js';
import { Convergence, convergeOnce, DEFAULT_CONFIRM_MS, isEmpty } from './driver/converge.js';
import { DockerClient } from './docker/client.js';
import { IpamService } from './ipam/service.js';
import { DEFAULT_POOLS, parseDefaultPools } from './ipam/pools.js';
import { createApp, jsonClientErrors } from './server/app.js';
import { startCluster } from './cluster/start.js';
import { clusterReport } from './cluster/report.js';
import { overlayClaims } from './kinds/overlay/claims.js';

export async function start(config: Config, log: Logger): Promise<{ stop: (signal: string) => Promise<void>; metricsAddress: string | null }> {
  // Before anything touches the kernel: another tsbridge on this state directory, or another
  // process serving this socket, owns this instance.
  const lock = await lockStateDir(config.stateDir, { pid: process.pid, instance: config.instance, socket: config.socket });
  if (lock.warning) log.warn('state directory lock', { stateDir: config.stateDir, warning: lock.warning });
  try {
    return await startLocked(config, log, lock.release);
  } catch (e) {
    await lock.release();
    throw e;
  }
}

async function startLocked(config: Config, log: Logger, releaseLock: () => Promise<void>): Promise<{ stop: (signal: string) => Promise<void>; metricsAddress: string | null }> {
  await removeStaleSocket(config.socket, log);
  const version = packageVersion();
  // The state's counts are read at scrape time, once `db` exists (the listener starts after it).
  const metrics = new Metrics({ state: () => db.state, info: { instance: config.instance, version }, processMetrics: true });
  const store = new FileStore(config.stateDir, (e) => metrics.stateWrite(e));
  const state = await store.load(); // a corrupt file throws: never start empty over it
  const db = new Db(store, state);
  const health = new Health(
    { instance: config.instance, version, socket: config.socket, stateDir: config.stateDir, sweepIntervalSeconds: config.gcIntervalSec },
    () => ({ callsInFlight: db.busy, networks: Object.keys(db.state.networks).length, endpoints: Object.keys(db.state.endpoints).length }),
  );
  const runner = new ExecRunner(config.commandTimeoutMs, (e) => metrics.command(e));
  const owner = ownerFor(config.instance);
  const iptables = await detectIptables(runner, config.iptables);
  health.iptables = { variant: iptables.variant, why: iptables.why };
  log.info('iptables variant', { variant: iptables.variant, commands: [iptables.v4, iptables.v6], why: iptables.why });
  const kernel: Kernel = {
    links: new IpLinks(runner, '/sys/class/net', owner.linkAlias),
    firewall: new NftFirewall(runner, log, { v4: iptables.v4, v6: iptables.v6 }, owner, {
      mark: config.fwmark,
      onReapply: (reason) => metrics.rulesReapplied(reason),
    }),
    sysctl: new ProcSysctl(config.sysctlRoot),
    inspect: new IpInspect(runner, config.sysctlRoot, owner.linkAlias),
  };
  const host = new ProcHost();
  const pools = config.defaultPools.trim() ? parseDefaultPools(config.defaultPools) : DEFAULT_POOLS;
  // Overlays: this host in the etcd cluster (registering and watching in the background).
  const cluster = config.etcd.endpoints.length ? await startCluster(config.etcd, config.stateDir, runner, log, () => overlayClaims(db.state)) : undefined;
  const ipam = new IpamService(db, host, () => pools, undefined, undefined, cluster ? { cluster, log } : undefined);
  // The kinds of network, and the long-running work of networks: one for the driver and the reconciler.
  const runtime = kindsRuntime(kernel, log, KINDS, { db, cluster });
  const driver = new DriverService(db, kernel, host, log, runtime);
  const reconciler = new Reconciler(db, kernel, log, runtime);
  // Convergence with Docker: the sweep asks Docker when TSBRIDGE_DOCKER_SOCKET names its socket;
  // `tsbridge gc` brings Docker's answer through the admin call either way.
  const convergence = new Convergence(driver, log, { graceMs: config.gcGraceSec * 1000, confirmMs: DEFAULT_CONFIRM_MS });
  const dockerEngine = config.dockerSocket ? new DockerClient(config.dockerSocket, 5000) : null;

  const t0 = Date.now();
  let report;
  try {
    report = await reconciler.startup();
  } catch (e) {
    metrics.reconcile({ ok: false, seconds: (Date.now() - t0) / 1000, counts: {} });
    throw e;
  }
  const counts = { ...report, staleLinksRemoved: report.staleLinksRemoved.length };
  metrics.reconcile({ ok: true, seconds: (Date.now() - t0) / 1000, counts });
  health.reconciled({ ok: true, seconds: (Date.now() - t0) / 1000, counts });
  log.info('reconciled', { ...report, ms: Date.now() - t0, networks: Object.keys(db.state.networks).length, endpoints: Object.keys(db.state.endpoints).length });

  // Before the socket: a metrics address that cannot be served fails the start before Docker sees the plugin.
  const metricsServer = config.metrics ? await serveMetrics(config.metrics, metrics, log) : null;
  await fs.mkdir(path.dirname(config.socket), { recursive: true });
  const overlaysHere = () => Object.values(db.state.pools).flatMap((p) => (p.overlay ? [p.overlay.name] : []));
  const healthReport = () => ({ ...health.report(), ...(cluster ? { cluster: clusterReport(cluster, overlaysHere()) } : {}) });
  const doctor = new Doctor(db, kernel, runtime.kinds, config.instance, convergence);
  const app = createApp({ driver, ipam, log, metrics, health: healthReport, convergence, doctor, repair: () => reconciler.startup() });
  const server: Server = await new Promise((resolve, reject) => {
    const s = app.listen(config.socket, () => resolve(s));
    s.on('error', reject);
  });
  // Docker's plugin client keeps its connections with no idle limit, and a call whose connection
  // the server closed meanwhile is sent again with its body already consumed: empty. So an idle
  // connection is never closed from this side (Node's default closes it after 5 s).
  server.keepAliveTimeout = 0;
  jsonClientErrors(server, log);
  await fs.chmod(config.socket, 0o660);
  log.info('listening', { socket: config.socket, stateDir: config.stateDir, instance: owner.instance, table: owner.table });

  let dockerWhy: string | null = null; // why Docker did not answer the last sweep (logged when it changes)
  const withDocker = async () => {
    if (!dockerEngine) return;
    const { report, unreachable } = await convergeOnce(dockerEngine, convergence);
    if (unreachable !== dockerWhy) {
      if (unreachable) log.warn('sweep: Docker did not answer, convergence skipped', { dockerSocket: config.dockerSocket, error: unreachable });
      else log.info('sweep: Docker answers, converging', { dockerSocket: config.dockerSocket });
      dockerWhy = unreachable;
    }
    if (report && !isEmpty(report.confirming)) log.debug('convergence: waiting to confirm', { confirming: report.confirming });
  };
  const sweep = async () => {
    const t = Date.now();
    try {
      await withDocker();
      const endpointsRemoved = await reconciler.sweep();
      const r = { ok: true, seconds: (Date.now() - t) / 1000, endpointsRemoved };
      metrics.sweep(r);
      health.swept(r);
    } catch (e) {
      const r = { ok: false, seconds: (Date.now() - t) / 1000, endpointsRemoved: 0, error: e instanceof Error ? e.message : String(e) };
      metrics.sweep(r);
      health.swept(r);
      log.warn('sweep failed', { error: r.error });
    }
  };
  const timer = config.gcIntervalSec > 0 ? setInterval(() => void sweep(), config.gcIntervalSec * 1000) : null;
  timer?.unref();

  // Someone else's hands on the rules: noticed at once by `nft monitor` (the sweep checks as well).
  let checking: Promise<void> | null = null;
  let again = false;
  const check = (why: string) => {
    if (checking) {
      again = true;
      return;
    }
    log.debug('nft monitor: rules touched by a transaction, checking', { why });
    checking = reconciler
      .checkFirewall()
      .catch((e: unknown) => {
        log.warn('firewall check failed', { error: e instanceof Error ? e.message : String(e) });
      })
      .finally(() => {
        checking = null;
        if (again) {
          again = false;
          check('more changes meanwhile');
        }
      });
  };
  const monitor = config.firewallWatch === 'monitor' ? new NftMonitor({ table: owner.table, forwardChain: owner.forwardChain, log, onChange: check }) : null;
  monitor?.start();

  let stopping = false;
  return {
    stop: async (signal: string) => {
      if (stopping) return;
      stopping = true;
      log.info('stopping', { signal, inFlight: db.busy });
      if (timer) clearInterval(timer);
      await monitor?.stop();
      // Stop accepting, let calls in flight finish (each rolls back on its own failure).
      const closed = new Promise<void>((r) => server.close(() => r()));
      server.closeIdleConnections?.();
      await db.drain();
      await driver.settle();
      await db.settle(); // a snapshot being written
      runner.close(); // the long-lived ip and nft
      await driver.shutdown();
      // The lease is not revoked: peers keep this host's endpoints through a restart within its TTL.
      await cluster?.stop().catch((e: unknown) => log.warn('stopping the cluster client failed', { error: String(e) }));
      await Promise.race([closed, new Promise((r) => setTimeout(r, 2000))]);
      await fs.rm(config.socket, { force: true });
      if (metricsServer) await new Promise<void>((r) => metricsServer.server.close(() => r()));
      await releaseLock();
      log.info('stopped', { signal });
    },
    metricsAddress: metricsServer?.address ?? null,
  };
}

/**
 * The opt-in metrics listener: plain HTTP, `GET /metrics` only. It reads the state's counts
 * without its lock (a scrape never waits for a Docker call, nor delays one).
 */
async function serveMetrics(addr: MetricsAddr, metrics: Metrics, log: Logger): Promise<{ server: http.Server; address: string }> {
  const server = http.createServer((req, res) => {
    const url = (req.url ?? '').split('?')[0];
    if (url !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('tsbridge serves GET /metrics here\n');
      return;
    }
    metrics.text().then(
      (text) => res.writeHead(200, { 'Content-Type': metrics.contentType }).end(req.method === 'HEAD' ? undefined : text),
      (e) => res.writeHead(500, { 'Content-Type': 'text/plain' }).end(`${e instanceof Error ? e.message : String(e)}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) => reject(new Error(`cannot serve metrics on TSBRIDGE_METRICS_ADDR ${addr.host}:${addr.port}: ${e.message}`)));
    server.listen(addr.port, addr.host, () => resolve());
  });
  server.unref();
  const a = server.address() as net.AddressInfo;
  const address = `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
  log.info('metrics listening', { address, path: '/metrics' });
  return { server, address };
}

function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/** A socket file left by a crashed run: remove it if nothing answers on it; refuse if something does. */
async function removeStaleSocket(socket: string, log: Logger): Promise<void> {
  try {
    await fs.stat(socket);
  } catch {
    return;
  }
  const alive = await new Promise<boolean>((resolve) => {
    const c = net.connect(socket);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
  if (alive) throw new Error(`another process is already serving ${socket}`);
  await fs.rm(socket, { force: true });
  log.info('removed stale socket', { socket });
}

async function main(): Promise<void> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (e) {
    console.error(`tsbridge: ${(e as Error).message}`);
    process.exit(2);
  }
  const log = createLogger(config.logLevel);
  let running: Awaited<ReturnType<typeof start>>;
  try {
    running = await start(config, log);
  } catch (e) {
    log.error('cannot start', { error: e instanceof Error ? e.message : String(e) });
    console.error(`tsbridge: cannot start: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  }
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    process.on(sig, () => {
      running.stop(sig).then(
        () => process.exit(0),
        (e) => {
          log.error('shutdown failed', { error: String(e) });
          process.exit(1);
        },
      );
    });
  }
}

const isEntry = process.argv[1] && path.resolve(process.argv[1]) === new URL(import.meta.url).pathname;
if (isEntry) void main();
