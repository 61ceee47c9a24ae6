/**
 * Composition root: configuration, logger, the real kernel, state, reconcile,
 * then listen on the Unix socket. Runs in the foreground.
 */
import { promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Server } from 'node:http';
import { loadConfig, type Config } from './config.js';
import { createLogger, type Logger } from './logging.js';
import { FileStore } from './state/store.js';
import { Db } from './state/db.js';
import { ExecRunner } from './kernel/real/exec.js';
import { IpLinks } from './kernel/real/links.js';
import { NftFirewall } from './kernel/real/firewall.js';
import { detectIptables } from './kernel/real/iptables-variant.js';
import { ProcSysctl } from './kernel/real/sysctl.js';
import { ProcHost } from './kernel/real/host.js';
import type { Kernel } from './kernel/types.js';
import { instanceFromSocket, ownerFor } from './kernel/owner.js';
import { DriverService, kindsRuntime } from './driver/service.js';
import { KINDS } from './kinds/registry.js';
import { Reconciler } from './driver/reconcile.js';
import { IpamService } from './ipam/service.js';
import { DEFAULT_POOLS, parseDefaultPools } from './ipam/pools.js';
import { createApp } from './server/app.js';
import { startCluster } from './cluster/start.js';
import { overlayClaims } from './kinds/overlay/claims.js';

export async function start(config: Config, log: Logger): Promise<{ stop: (signal: string) => Promise<void> }> {
  // Before anything touches the kernel: another process serving this socket owns this instance.
  await removeStaleSocket(config.socket, log);
  const store = new FileStore(config.stateDir);
  const state = await store.load(); // a corrupt file throws: never start empty over it
  const db = new Db(store, state);
  const runner = new ExecRunner(config.commandTimeoutMs);
  const owner = ownerFor(instanceFromSocket(config.socket));
  const iptables = await detectIptables(runner, config.iptables);
  log.info('iptables variant', { variant: iptables.variant, commands: [iptables.v4, iptables.v6], why: iptables.why });
  const kernel: Kernel = {
    links: new IpLinks(runner, '/sys/class/net', owner.linkAlias),
    firewall: new NftFirewall(runner, log, { v4: iptables.v4, v6: iptables.v6 }, owner),
    sysctl: new ProcSysctl(config.sysctlRoot),
  };
  const host = new ProcHost();
  const pools = config.defaultPools.trim() ? parseDefaultPools(config.defaultPools) : DEFAULT_POOLS;
  // Overlays: this host in the etcd cluster (registering and watching in the background).
  const cluster = config.etcd.endpoints.length ? await startCluster(config.etcd, config.stateDir, runner, log, () => overlayClaims(db.state)) : undefined;
  const ipam = new IpamService(db, host, () => pools, undefined, cluster ? { cluster, log } : undefined);
  // The kinds of network, and the long-running work of networks: one for the driver and the reconciler.
  const runtime = kindsRuntime(kernel, log, KINDS, { db, cluster });
  const driver = new DriverService(db, kernel, host, log, runtime);
  const reconciler = new Reconciler(db, kernel, log, runtime);

  const t0 = Date.now();
  const report = await reconciler.startup();
  log.info('reconciled', { ...report, ms: Date.now() - t0, networks: Object.keys(db.state.networks).length, endpoints: Object.keys(db.state.endpoints).length });

  await fs.mkdir(path.dirname(config.socket), { recursive: true });
  const app = createApp({ driver, ipam, log });
  const server: Server = await new Promise((resolve, reject) => {
    const s = app.listen(config.socket, () => resolve(s));
    s.on('error', reject);
  });
  await fs.chmod(config.socket, 0o660);
  log.info('listening', { socket: config.socket, stateDir: config.stateDir, instance: owner.instance, table: owner.table });

  const timer = config.gcIntervalSec > 0
    ? setInterval(() => {
        reconciler.sweep().catch((e) => log.warn('sweep failed', { error: String(e) }));
      }, config.gcIntervalSec * 1000)
    : null;
  timer?.unref();

  let stopping = false;
  return {
    stop: async (signal: string) => {
      if (stopping) return;
      stopping = true;
      log.info('stopping', { signal, inFlight: db.busy });
      if (timer) clearInterval(timer);
      // Stop accepting, let calls in flight finish (each rolls back on its own failure).
      const closed = new Promise<void>((r) => server.close(() => r()));
      server.closeIdleConnections?.();
      await db.drain();
      await driver.settle();
      await driver.shutdown();
      // The lease is not revoked: peers keep this host's endpoints through a restart within its TTL.
      await cluster?.stop().catch((e: unknown) => log.warn('stopping the cluster client failed', { error: String(e) }));
      await Promise.race([closed, new Promise((r) => setTimeout(r, 2000))]);
      await fs.rm(config.socket, { force: true });
      log.info('stopped', { signal });
    },
  };
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
